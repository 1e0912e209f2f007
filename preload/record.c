/*
 * ucxfault injector: the call log and the small lock-free tables beside it.
 *
 * The log is a ring of fixed-size records. A writer takes an index with one
 * fetch-add (recording is opt-in; when it is off no hook touches the ring),
 * fills the slot and stamps it; the Go reader copies a slot and keeps it only
 * when the stamp matches before and after, so a torn or overwritten record is
 * counted as lost, never returned.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ucxfault.h"
#include "record.h"

static struct ucxf_record *ucxf_ring;
static uint64_t ucxf_ring_mask;
static uint64_t ucxf_ring_head;

int ucxf_record_alloc(uint64_t capacity)
{
    uint64_t cap = 1;
    struct ucxf_record *ring;

    if (__atomic_load_n(&ucxf_ring, __ATOMIC_ACQUIRE) != NULL) {
        return 0; /* allocated once: hooks may be writing into it */
    }
    while (cap < capacity) {
        cap <<= 1;
    }
    ring = calloc(cap, sizeof(*ring));
    if (ring == NULL) {
        return -1;
    }
    ucxf_ring_mask = cap - 1;
    __atomic_store_n(&ucxf_ring, ring, __ATOMIC_RELEASE);
    return 0;
}

uint64_t ucxf_record_capacity(void)
{
    return ucxf_ring != NULL ? ucxf_ring_mask + 1 : 0;
}

uint64_t ucxf_record_head(void)
{
    return __atomic_load_n(&ucxf_ring_head, __ATOMIC_ACQUIRE);
}

void ucxf_record_append(const struct ucxf_call *c, int status, void *request, uint64_t now)
{
    struct ucxf_record *ring = __atomic_load_n(&ucxf_ring, __ATOMIC_ACQUIRE);
    struct ucxf_record *slot;
    uint64_t i;

    if (ring == NULL) {
        return;
    }
    i    = __atomic_fetch_add(&ucxf_ring_head, 1, __ATOMIC_RELAXED);
    slot = &ring[i & ucxf_ring_mask];
    __atomic_store_n(&slot->seq, 0, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    slot->t_ns        = c->t0;
    slot->duration_ns = now > c->t0 ? now - c->t0 : 0;
    slot->size        = c->size;
    slot->req         = (uint64_t)(uintptr_t)(c->req != NULL ? c->req : request);
    slot->thread      = c->thread != NULL ? c->thread->ordinal : 0;
    slot->tid         = c->thread != NULL ? (uint32_t)c->thread->tid : 0;
    slot->ep          = c->ep != NULL ? ucxf_ep_ordinal(c->ep) : -1;
    slot->hook        = (uint16_t)c->hook;
    slot->status      = (int8_t)status;
    slot->flags       = (uint8_t)((c->injected ? UCXF_REC_INJECTED : 0) |
                                  (c->deferred_code ? UCXF_REC_DEFERRED : 0));
    __atomic_store_n(&slot->seq, i + 1, __ATOMIC_RELEASE);
}

/* Copies record index into out; returns 1 when it is whole and still the
 * record of that index, 0 when it was overwritten or is being written. */
int ucxf_record_read(uint64_t index, struct ucxf_record *out)
{
    struct ucxf_record *ring = __atomic_load_n(&ucxf_ring, __ATOMIC_ACQUIRE);
    struct ucxf_record *slot;

    if (ring == NULL) {
        return 0;
    }
    slot = &ring[index & ucxf_ring_mask];
    if (__atomic_load_n(&slot->seq, __ATOMIC_ACQUIRE) != index + 1) {
        return 0;
    }
    memcpy(out, slot, sizeof(*out));
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return __atomic_load_n(&slot->seq, __ATOMIC_RELAXED) == index + 1 && out->seq == index + 1;
}

/* ------------------------------------------------------------------ */
/* Replay cursors                                                       */
/* ------------------------------------------------------------------ */

static uint64_t ucxf_replay_global_cursor;
static uint64_t ucxf_replay_cursors[UCXF_NUM_HOOKS];

void ucxf_replay_reset(void)
{
    int h;

    __atomic_store_n(&ucxf_replay_global_cursor, 0, __ATOMIC_RELAXED);
    for (h = 0; h < UCXF_NUM_HOOKS; h++) {
        __atomic_store_n(&ucxf_replay_cursors[h], 0, __ATOMIC_RELAXED);
    }
}

/* Replay counts the calls of the whole process, not of each thread, so the
 * k-th call of a function gets the k-th recorded outcome whichever thread
 * makes it. This is the one shared counter on a hot path, and only while a
 * replay is loaded. */
uint64_t ucxf_record_replay_cursor_next(void)
{
    return __atomic_fetch_add(&ucxf_replay_global_cursor, 1, __ATOMIC_RELAXED);
}

uint64_t ucxf_replay_cursor_next(int hook)
{
    return __atomic_fetch_add(&ucxf_replay_cursors[hook], 1, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------------ */
/* Endpoint ordinals                                                    */
/* ------------------------------------------------------------------ */

#define UCXF_EP_SLOTS 4096
static void *ucxf_ep_keys[UCXF_EP_SLOTS];
static int32_t ucxf_ep_vals[UCXF_EP_SLOTS];
static int32_t ucxf_ep_next;

static inline uint64_t ucxf_ptr_hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

/* The ordinal of ep in order of first use. Lookups of known endpoints read
 * lines that are written once; only a new endpoint takes a CAS. */
int32_t ucxf_ep_ordinal(void *ep)
{
    uint64_t i = ucxf_ptr_hash(ep), n;
    int32_t v;

    for (n = 0; n < UCXF_EP_SLOTS; n++, i++) {
        void **key = &ucxf_ep_keys[i & (UCXF_EP_SLOTS - 1)];
        void *k    = __atomic_load_n(key, __ATOMIC_ACQUIRE);
        if (k == NULL) {
            void *expected = NULL;
            if (!__atomic_compare_exchange_n(key, &expected, ep, 0, __ATOMIC_ACQ_REL,
                                             __ATOMIC_ACQUIRE)) {
                k = expected;
            } else {
                v = __atomic_fetch_add(&ucxf_ep_next, 1, __ATOMIC_RELAXED);
                __atomic_store_n(&ucxf_ep_vals[i & (UCXF_EP_SLOTS - 1)], v + 1,
                                 __ATOMIC_RELEASE);
                return v;
            }
        }
        if (k == ep) {
            /* The inserting thread stores the value just after the key. */
            while ((v = __atomic_load_n(&ucxf_ep_vals[i & (UCXF_EP_SLOTS - 1)],
                                        __ATOMIC_ACQUIRE)) == 0) {
#if defined(__x86_64__)
                __builtin_ia32_pause();
#elif defined(__aarch64__)
                __asm__ volatile("yield");
#endif
            }
            return v - 1;
        }
    }
    return -1; /* table full: more than 4096 endpoints */
}

/* ------------------------------------------------------------------ */
/* Failures delivered on completion                                     */
/* ------------------------------------------------------------------ */

#define UCXF_DEFER_SLOTS 4096
#define UCXF_DEFER_TOMB  ((void *)1)
static void *ucxf_defer_keys[UCXF_DEFER_SLOTS];
static int8_t ucxf_defer_codes[UCXF_DEFER_SLOTS];
static uint64_t ucxf_defer_count;
static uint64_t ucxf_defer_lost;

/* Attaches code to a request the application now owns; the next completed
 * status query on it returns code. Returns -1 when the table is full. */
int ucxf_defer_put(void *request, int code)
{
    uint64_t i = ucxf_ptr_hash(request), n;

    ucxf_defer_take(request); /* a reused pointer drops the stale entry */
    for (n = 0; n < UCXF_DEFER_SLOTS; n++, i++) {
        uint64_t s = i & (UCXF_DEFER_SLOTS - 1);
        void *k    = __atomic_load_n(&ucxf_defer_keys[s], __ATOMIC_ACQUIRE);
        if (k == NULL || k == UCXF_DEFER_TOMB) {
            void *expected = k;
            __atomic_store_n(&ucxf_defer_codes[s], (int8_t)code, __ATOMIC_RELAXED);
            if (__atomic_compare_exchange_n(&ucxf_defer_keys[s], &expected, request, 0,
                                            __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
                __atomic_add_fetch(&ucxf_defer_count, 1, __ATOMIC_RELAXED);
                return 0;
            }
        }
    }
    __atomic_add_fetch(&ucxf_defer_lost, 1, __ATOMIC_RELAXED);
    return -1;
}

/* Removes the failure attached to request and returns it, or 0. */
int ucxf_defer_take(void *request)
{
    uint64_t i = ucxf_ptr_hash(request), n;

    if (__atomic_load_n(&ucxf_defer_count, __ATOMIC_RELAXED) == 0) {
        return 0;
    }
    for (n = 0; n < UCXF_DEFER_SLOTS; n++, i++) {
        uint64_t s = i & (UCXF_DEFER_SLOTS - 1);
        void *k    = __atomic_load_n(&ucxf_defer_keys[s], __ATOMIC_ACQUIRE);
        if (k == NULL) {
            return 0;
        }
        if (k == request) {
            int8_t code = __atomic_load_n(&ucxf_defer_codes[s], __ATOMIC_RELAXED);
            void *expected = request;
            if (__atomic_compare_exchange_n(&ucxf_defer_keys[s], &expected, UCXF_DEFER_TOMB, 0,
                                            __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
                __atomic_sub_fetch(&ucxf_defer_count, 1, __ATOMIC_RELAXED);
                return code;
            }
            return 0;
        }
    }
    return 0;
}

uint64_t ucxf_defer_pending(void)
{
    return __atomic_load_n(&ucxf_defer_count, __ATOMIC_RELAXED);
}

uint64_t ucxf_defer_overflow(void)
{
    return __atomic_load_n(&ucxf_defer_lost, __ATOMIC_RELAXED);
}

void ucxf_record_atfork_child(void)
{
    /* The ring and the tables are plain memory: the child keeps a copy and
     * goes on writing into it; nothing to unlock. */
}
