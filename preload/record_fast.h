/*
 * ucxfault injector: the call log's append for the recording fast half
 * (ucxf_rec_* in hooks_gen.c), inlined there: a recorded call that passes
 * then costs one read of the clock, the real call and a few stores, with
 * no call into record.c. The layout of a thread's segment is shared with
 * record.c, which owns it.
 */
#ifndef UCXFAULT_RECORD_FAST_H
#define UCXFAULT_RECORD_FAST_H

#include <stdint.h>

#include "ucxfault.h"
#include "record.h"
#include "endpoint.h"

/* The stamp of a slot being filled: never a record's. */
#define UCXF_REC_WRITING   UINT64_MAX
#define UCXF_REC_IDX_BITS  40
#define UCXF_REC_IDX_MASK  ((1ull << UCXF_REC_IDX_BITS) - 1)
#define UCXF_REC_SET(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)

/* One thread's part of the log. The first cache line is written by its
 * thread only, on every record; the second by the control side only. */
struct ucxf_recseg {
    struct ucxf_record *slot; /* next slot of the chunk, NULL when none */
    struct ucxf_record *end;  /* end of the chunk */
    uint64_t count;           /* records appended (kept or dropped) */
    uint64_t chunk;           /* the chunk held */
    void    *ep;              /* one-entry cache of endpoint ordinals */
    int32_t  ep_ordinal;
    uint32_t ep_gen;
    uint32_t id;
    uint32_t skip;            /* records to drop before trying for a chunk again */
    uint64_t pad1;
    /* Control side. */
    uint64_t floor __attribute__((aligned(64))); /* count at the last clear */
    struct ucxf_recseg *next_free;
} __attribute__((aligned(64)));

extern UCXF_HIDDEN __thread struct ucxf_recseg *ucxf_recseg __attribute__((tls_model("initial-exec")));
UCXF_HIDDEN void ucxf_seg_release_chunk(struct ucxf_recseg *s);
UCXF_HIDDEN void ucxf_record_pass_slow(int hook, void *ep, uint64_t size, uint64_t t0, int status, void *request);

/* Stamps the slot filled: the record is whole. */
static inline __attribute__((always_inline)) void ucxf_rec_commit(struct ucxf_recseg *s, struct ucxf_record *slot)
{
    uint64_t n = s->count;

    __atomic_store_n(&slot->seq, ((uint64_t)s->id << UCXF_REC_IDX_BITS) | ((n & UCXF_REC_IDX_MASK) + 1),
                     __ATOMIC_RELEASE);
    UCXF_REC_SET(s->count, n + 1);
    s->slot = slot + 1;
    if (UCXF_UNLIKELY(s->slot == s->end)) {
        ucxf_seg_release_chunk(s); /* full: another thread may take it now */
    }
}

/* Records ahead of the one being written that ucxf_rec_stamp asks the
 * cache for: the log writes a new cache line a call and, with the default
 * capacity (16 MiB), each is a miss; asking for it 8 records (about 8
 * calls) ahead hid most of it (putbench, fastest 50,000-put chunk, on the
 * 2-vCPU development VM: 29.3 to 26.4 ns a recorded put; 4, 8 and 16
 * records ahead gave 26.9, 26.5 and 26.4 ns). */
#define UCXF_REC_AHEAD 8

/* Marks slot, the segment's next, as being written (the stamp before the
 * fields: a reader that sees a field of this record then sees the stamp
 * changed), and asks for the line of a record ahead. Near the end of a
 * chunk that line is in the next chunk, maybe one another thread fills:
 * the hint reads it (gcc emits prefetcht0 without -mprfchw), as the control
 * side's reader does, and never writes it; testing for the chunk's end
 * instead cost 0.9 ns a call (27.4 against 26.5 ns). A hint past the
 * pool's end never faults. */
static inline __attribute__((always_inline)) void ucxf_rec_stamp(struct ucxf_record *slot)
{
    __builtin_prefetch(slot + UCXF_REC_AHEAD, 1, 3);
    UCXF_REC_SET(slot->seq, UCXF_REC_WRITING);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

/* Logs a call of this thread that ucxf_fast_record counted and let pass:
 * nothing injected, no request followed. Its duration is left unknown (0):
 * a second read of the counter cost as much as the rest of the record.
 * As ucxf_rec_begin (record.c) and ucxf_rec_commit when the segment has a
 * chunk (then the pool exists: it is never freed) and the endpoint is the
 * one its cache holds; else ucxf_record_pass_slow. */
static inline __attribute__((always_inline)) void ucxf_record_pass(int hook, void *ep, uint64_t size, uint64_t t0,
                                                                   int status, void *request)
{
    struct ucxf_recseg *s = ucxf_recseg;
    struct ucxf_thread *t = ucxf_self;
    struct ucxf_record *slot;

    if (UCXF_UNLIKELY(s == NULL) || UCXF_UNLIKELY((slot = s->slot) == NULL) ||
        ((!__builtin_constant_p(ep) || ep != NULL) &&
         UCXF_UNLIKELY(ep == NULL || s->ep != ep || s->ep_gen != __atomic_load_n(&ucxf_ep_renumbered, __ATOMIC_ACQUIRE)))) {
        ucxf_record_pass_slow(hook, ep, size, t0, status, request);
        return;
    }
    ucxf_rec_stamp(slot);
    UCXF_REC_SET(slot->t_ns, t0);
    UCXF_REC_SET(slot->duration_ns, 0);
    UCXF_REC_SET(slot->size, size);
    UCXF_REC_SET(slot->req, (uint64_t)(uintptr_t)request);
    UCXF_REC_SET(slot->thread, t->ordinal);
    UCXF_REC_SET(slot->tid, (uint32_t)t->tid);
    UCXF_REC_SET(slot->ep, ep != NULL ? s->ep_ordinal : -1);
    UCXF_REC_SET(slot->hook, (uint16_t)hook);
    UCXF_REC_SET(slot->status, (int8_t)status);
    UCXF_REC_SET(slot->flags, 0);
    ucxf_rec_commit(s, slot);
}

#endif
