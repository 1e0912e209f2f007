/*
 * ucxfault injector: the call log, and what the observer is shown.
 *
 * The log is a pool of chunks of fixed-size records (one cache line each).
 * Each thread that logs has a segment of its own: the chunk it fills, the
 * next slot, its record count. Appending a record writes that segment and
 * the slot, nothing another thread writes: no lock, no atomic
 * read-modify-write, no cache line shared with another writer. A thread
 * takes a chunk from the pool for its first record and after its chunk is
 * full (one fetch-add and one compare-and-swap every chunk_len records),
 * the oldest chunk no thread is filling, so the pool keeps the newest
 * records of all threads and drops whole chunks of the oldest.
 *
 * A chunk has one writer at a time: a thread gives its chunk back as soon
 * as it is full, or when the thread exits, and only then may another take
 * it. A
 * slot's stamp (seq) names its record, segment and index in the segment;
 * the writer sets it to WRITING, fills the slot and stamps it; a reader
 * copies a slot and keeps it only when the stamp is the same before and
 * after, so a record being rewritten is never returned, and a record the
 * pool dropped before a dump is counted as lost from the segments' counts.
 *
 * Records are merged into one order per process when the log is read: by
 * time (the log's clock, ucxf_rec_now, one for all threads), which the Go
 * side sorts (recording.Build); a thread's own records keep its order.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ucxfault.h"
#include "record.h"
#include "record_fast.h"
#include "endpoint.h"

/* Segments live at once (threads logging at once); more drop their records. */
#define UCXF_REC_MAX_SEGS  4096
/* Chunks beyond the capacity: room for the chunks threads are filling
 * (a thread that logged a few records and went idle keeps the rest of its
 * chunk), so that the pool still holds `capacity` whole records: 16, and
 * one more for every 16 of the capacity (ucxf_record_alloc). */
#define UCXF_REC_SPARE     16
#define UCXF_REC_MAX_CHUNK 256

#define UCXF_REC_GET(dst, field) ((dst) = __atomic_load_n(&(field), __ATOMIC_RELAXED))

enum { UCXF_CHUNK_FREE = 0, UCXF_CHUNK_HELD = 1 };

_Static_assert(sizeof(struct ucxf_record) == 64, "a record is one cache line");

static struct ucxf_record *ucxf_pool;
static uint64_t ucxf_rec_cap;    /* records the log keeps, as asked */
static uint64_t ucxf_chunk_len;  /* records per chunk */
static uint64_t ucxf_nchunks;
static uint8_t *ucxf_chunk_state; /* UCXF_CHUNK_*, by chunk */
/* The next chunk to take, counted from 0: shared, but written once a chunk. */
static uint64_t ucxf_chunk_next __attribute__((aligned(64)));
/* Records dropped because a thread got no segment (more than
 * UCXF_REC_MAX_SEGS threads logging): rare, so one shared counter. */
static uint64_t ucxf_rec_unsegmented __attribute__((aligned(64)));

static struct ucxf_recseg *ucxf_segs[UCXF_REC_MAX_SEGS];
static uint32_t ucxf_nsegs;
static struct ucxf_recseg *ucxf_free_segs;
static pthread_mutex_t ucxf_segs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t ucxf_seg_key;
static pthread_once_t ucxf_seg_once = PTHREAD_ONCE_INIT;
UCXF_HIDDEN __thread struct ucxf_recseg *ucxf_recseg __attribute__((tls_model("initial-exec")));

/* The clock (record.h) and its calibration against CLOCK_MONOTONIC. */
UCXF_HIDDEN int ucxf_rec_tsc;
static uint64_t ucxf_cal_ticks, ucxf_cal_ns;

/* ------------------------------------------------------------------ */
/* The clock                                                           */
/* ------------------------------------------------------------------ */

/* The counter is the log's clock where the kernel's CLOCK_MONOTONIC is
 * made from it (clocksource tsc, or arch_sys_counter on arm64): then it
 * runs at a constant rate and agrees across CPUs, which the kernel checked
 * before choosing it. */
static void ucxf_rec_clock_init(void)
{
#if defined(__x86_64__) || defined(__aarch64__)
    char src[64] = "";
    FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "re");

    if (f != NULL) {
        if (fgets(src, sizeof(src), f) == NULL) {
            src[0] = 0;
        }
        fclose(f);
    }
#if defined(__x86_64__)
    ucxf_rec_tsc = strncmp(src, "tsc", 3) == 0;
#else
    ucxf_rec_tsc = strncmp(src, "arch_sys_counter", 16) == 0;
#endif
#endif
    ucxf_cal_ns    = ucxf_now_ns();
    ucxf_cal_ticks = ucxf_rec_now();
}

/* Nanoseconds per tick, from the calibration point of ucxf_record_alloc to
 * now; with wait, the interval is made at least 20 ms long first, so that
 * the two clock reads' jitter (tens of ns) stays under a few ppm. 1 when
 * the clock is CLOCK_MONOTONIC itself. */
static double ucxf_rec_scale(int wait)
{
    uint64_t ns, ticks;

    if (!ucxf_rec_tsc) {
        return 1;
    }
    ns = ucxf_now_ns();
    if (wait && ns - ucxf_cal_ns < 20000000ull) {
        uint64_t left     = 20000000ull - (ns - ucxf_cal_ns);
        struct timespec d = {0, (long)left};
        nanosleep(&d, NULL);
        ns = ucxf_now_ns();
    }
    ticks = ucxf_rec_now();
    if (ticks <= ucxf_cal_ticks || ns <= ucxf_cal_ns) {
        return 1;
    }
    return (double)(ns - ucxf_cal_ns) / (double)(ticks - ucxf_cal_ticks);
}

static uint64_t ucxf_rec_ns(uint64_t ticks, double scale)
{
    if (!ucxf_rec_tsc) {
        return ticks;
    }
    return ucxf_cal_ns + (uint64_t)((double)(int64_t)(ticks - ucxf_cal_ticks) * scale);
}

/* ------------------------------------------------------------------ */
/* Segments and chunks                                                 */
/* ------------------------------------------------------------------ */

/* Gives the segment's chunk back to the pool: its records stay there
 * until another thread takes the chunk. */
void ucxf_seg_release_chunk(struct ucxf_recseg *s)
{
    if (s->end != NULL) {
        __atomic_store_n(&ucxf_chunk_state[s->chunk], UCXF_CHUNK_FREE, __ATOMIC_RELEASE);
    }
    s->slot = s->end = NULL;
}

static void ucxf_seg_exit(void *arg)
{
    struct ucxf_recseg *s = arg;

    ucxf_seg_release_chunk(s);
    if (ucxf_recseg == s) {
        ucxf_recseg = NULL;
    }
    pthread_mutex_lock(&ucxf_segs_lock);
    s->next_free    = ucxf_free_segs;
    ucxf_free_segs  = s;
    pthread_mutex_unlock(&ucxf_segs_lock);
}

static void ucxf_seg_key_init(void)
{
    pthread_key_create(&ucxf_seg_key, ucxf_seg_exit);
}

/* This thread's segment, at its first record: a segment of an exited
 * thread (its count goes on), else a new one. NULL when
 * UCXF_REC_MAX_SEGS threads hold one, or out of memory. */
static struct ucxf_recseg *ucxf_seg_new(void)
{
    struct ucxf_recseg *s;

    pthread_once(&ucxf_seg_once, ucxf_seg_key_init);
    pthread_mutex_lock(&ucxf_segs_lock);
    s = ucxf_free_segs;
    if (s != NULL) {
        ucxf_free_segs = s->next_free;
    } else if (ucxf_nsegs < UCXF_REC_MAX_SEGS && (s = aligned_alloc(64, sizeof(*s))) != NULL) {
        memset(s, 0, sizeof(*s));
        s->id = ucxf_nsegs;
        __atomic_store_n(&ucxf_segs[s->id], s, __ATOMIC_RELEASE);
        __atomic_store_n(&ucxf_nsegs, ucxf_nsegs + 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&ucxf_segs_lock);
    if (s != NULL) {
        pthread_setspecific(ucxf_seg_key, s);
        ucxf_recseg = s;
    }
    return s;
}

/* Takes the oldest chunk no thread is filling; 0 when every chunk is
 * held (more threads logging than chunks). */
static int ucxf_seg_take_chunk(struct ucxf_recseg *s)
{
    uint64_t tries;

    for (tries = 0; tries < ucxf_nchunks; tries++) {
        uint64_t k  = __atomic_fetch_add(&ucxf_chunk_next, 1, __ATOMIC_RELAXED) % ucxf_nchunks;
        uint8_t  st = UCXF_CHUNK_FREE;
        if (__atomic_compare_exchange_n(&ucxf_chunk_state[k], &st, UCXF_CHUNK_HELD, 0, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED)) {
            s->chunk = k;
            s->slot  = &ucxf_pool[k * ucxf_chunk_len];
            s->end   = s->slot + ucxf_chunk_len;
            return 1;
        }
    }
    return 0;
}

/* The slot for this thread's next record, stamped as being written; NULL
 * when the record is dropped (counted: the segment's count goes on, or
 * ucxf_rec_unsegmented). */
static inline struct ucxf_record *ucxf_rec_begin(struct ucxf_recseg **sp)
{
    struct ucxf_recseg *s = ucxf_recseg;
    struct ucxf_record *slot;

    if (UCXF_UNLIKELY(s == NULL) && (s = ucxf_seg_new()) == NULL) {
        __atomic_fetch_add(&ucxf_rec_unsegmented, 1, __ATOMIC_RELAXED);
        return NULL;
    }
    if (UCXF_UNLIKELY(s->slot == NULL) && (s->skip != 0 || !ucxf_seg_take_chunk(s))) {
        /* Every chunk is being filled (more threads logging than the
         * pool's spare chunks cover): the record is dropped and counted,
         * and so are the next chunk_len, before the pool is searched
         * again, so that a thread never spins on a full pool. */
        s->skip = s->skip != 0 ? s->skip - 1 : (uint32_t)ucxf_chunk_len;
        UCXF_REC_SET(s->count, s->count + 1);
        return NULL;
    }
    slot = s->slot;
    ucxf_rec_stamp(slot);
    *sp = s;
    return slot;
}

/* The endpoint's ordinal through the segment's one-entry cache: a program
 * that keeps calling on one endpoint looks it up once. */
static inline int32_t ucxf_rec_ep(struct ucxf_recseg *s, void *ep)
{
    uint32_t gen;

    if (ep == NULL) {
        return -1;
    }
    gen = __atomic_load_n(&ucxf_ep_renumbered, __ATOMIC_ACQUIRE);
    if (s->ep != ep || s->ep_gen != gen) {
        s->ep_ordinal = ucxf_ep_ordinal(ep);
        s->ep         = ep;
        s->ep_gen     = gen;
    }
    return s->ep_ordinal;
}

int ucxf_record_alloc(uint64_t capacity)
{
    uint64_t len = UCXF_REC_MAX_CHUNK, n;
    uint8_t *state;
    void *pool;

    if (__atomic_load_n(&ucxf_pool, __ATOMIC_ACQUIRE) != NULL) {
        return 0; /* allocated once: hooks may be writing into it */
    }
    if (capacity == 0) {
        capacity = 1;
    }
    /* At least 64 chunks in the capacity, so that losing the oldest chunk
     * loses little of it; at most 256 records, so that a thread that went
     * idle keeps few slots from the others. */
    while (len > 1 && len * 64 > capacity) {
        len >>= 1;
    }
    n     = (capacity + len - 1) / len;
    n    += UCXF_REC_SPARE + n / 16;
    state = calloc(n, 1);
    /* Zero pages, all taken now (by the control side, which allocates):
     * otherwise the host's threads would take a page fault every 64
     * records of the log's first lap, about a microsecond each. */
    pool = mmap(NULL, n * len * sizeof(struct ucxf_record), PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (state == NULL || pool == MAP_FAILED) {
        free(state);
        if (pool != MAP_FAILED) {
            munmap(pool, n * len * sizeof(struct ucxf_record));
        }
        return -1;
    }
    ucxf_rec_cap     = capacity;
    ucxf_chunk_len   = len;
    ucxf_nchunks     = n;
    ucxf_chunk_state = state;
    ucxf_rec_clock_init();
    __atomic_store_n(&ucxf_pool, (struct ucxf_record *)pool, __ATOMIC_RELEASE);
    return 0;
}

/* The records the log keeps (as asked); 0 before ucxf_record_alloc. */
uint64_t ucxf_record_capacity(void)
{
    return __atomic_load_n(&ucxf_pool, __ATOMIC_ACQUIRE) != NULL ? ucxf_rec_cap : 0;
}

/* The slots of the pool, what ucxf_record_snapshot copies: the capacity
 * and the spare chunks. */
uint64_t ucxf_record_slots(void)
{
    return __atomic_load_n(&ucxf_pool, __ATOMIC_ACQUIRE) != NULL ? ucxf_nchunks * ucxf_chunk_len : 0;
}

static uint64_t ucxf_unseg_floor;

/* Records appended since the last ucxf_record_clear, by all threads, kept
 * or not. */
uint64_t ucxf_record_head(void)
{
    uint32_t i, n = __atomic_load_n(&ucxf_nsegs, __ATOMIC_ACQUIRE);
    uint64_t sum = __atomic_load_n(&ucxf_rec_unsegmented, __ATOMIC_RELAXED) -
                   __atomic_load_n(&ucxf_unseg_floor, __ATOMIC_RELAXED);

    for (i = 0; i < n; i++) {
        struct ucxf_recseg *s = __atomic_load_n(&ucxf_segs[i], __ATOMIC_ACQUIRE);
        sum += __atomic_load_n(&s->count, __ATOMIC_RELAXED) - __atomic_load_n(&s->floor, __ATOMIC_RELAXED);
    }
    return sum;
}

/* Forgets the records appended so far (record-clear): they stay in the
 * pool, below each segment's floor, and are no longer read. */
void ucxf_record_clear(void)
{
    uint32_t i, n = __atomic_load_n(&ucxf_nsegs, __ATOMIC_ACQUIRE);

    for (i = 0; i < n; i++) {
        struct ucxf_recseg *s = __atomic_load_n(&ucxf_segs[i], __ATOMIC_ACQUIRE);
        __atomic_store_n(&s->floor, __atomic_load_n(&s->count, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
    }
    __atomic_store_n(&ucxf_unseg_floor, __atomic_load_n(&ucxf_rec_unsegmented, __ATOMIC_RELAXED),
                     __ATOMIC_RELAXED);
}

void ucxf_record_append(const struct ucxf_call *c, int status, void *request, uint64_t now)
{
    struct ucxf_recseg *s;
    struct ucxf_record *slot;

    if (__atomic_load_n(&ucxf_pool, __ATOMIC_ACQUIRE) == NULL || (slot = ucxf_rec_begin(&s)) == NULL) {
        return;
    }
    /* Relaxed atomic stores: plain moves, but a reader copying the slot
     * while it is rewritten is not a data race (the stamp tells it to
     * drop what it read). */
    UCXF_REC_SET(slot->t_ns, c->t0);
    UCXF_REC_SET(slot->duration_ns, now > c->t0 ? now - c->t0 : 0);
    UCXF_REC_SET(slot->size, c->size);
    UCXF_REC_SET(slot->req, (uint64_t)(uintptr_t)(c->req != NULL ? c->req : request));
    UCXF_REC_SET(slot->thread, c->thread != NULL ? c->thread->ordinal : 0);
    UCXF_REC_SET(slot->tid, c->thread != NULL ? (uint32_t)c->thread->tid : 0);
    UCXF_REC_SET(slot->ep, ucxf_rec_ep(s, c->ep));
    UCXF_REC_SET(slot->hook, (uint16_t)c->hook);
    UCXF_REC_SET(slot->status, (int8_t)status);
    UCXF_REC_SET(slot->flags, (uint8_t)((c->injected ? UCXF_REC_INJECTED : 0) |
                                        (c->deferred_code ? UCXF_REC_DEFERRED : 0)));
    ucxf_rec_commit(s, slot);
}

/* ucxf_record_pass (record_fast.h) when the segment has no chunk yet or
 * its endpoint cache misses: the general way. */
void ucxf_record_pass_slow(int hook, void *ep, uint64_t size, uint64_t t0, int status, void *request)
{
    struct ucxf_thread *t = ucxf_self;
    struct ucxf_recseg *s;
    struct ucxf_record *slot;

    if (__atomic_load_n(&ucxf_pool, __ATOMIC_ACQUIRE) == NULL || (slot = ucxf_rec_begin(&s)) == NULL) {
        return;
    }
    UCXF_REC_SET(slot->t_ns, t0);
    UCXF_REC_SET(slot->duration_ns, 0);
    UCXF_REC_SET(slot->size, size);
    UCXF_REC_SET(slot->req, (uint64_t)(uintptr_t)request);
    UCXF_REC_SET(slot->thread, t->ordinal);
    UCXF_REC_SET(slot->tid, (uint32_t)t->tid);
    UCXF_REC_SET(slot->ep, ucxf_rec_ep(s, ep));
    UCXF_REC_SET(slot->hook, (uint16_t)hook);
    UCXF_REC_SET(slot->status, (int8_t)status);
    UCXF_REC_SET(slot->flags, 0);
    ucxf_rec_commit(s, slot);
}

/* Logs an outcome delivered on completion (ucxf_delivered): not a call, but
 * the final status of the operation of hook that returned request. */
void ucxf_record_delivery(int hook, int status, void *ep, uint64_t size, void *request, int mark, uint64_t now)
{
    struct ucxf_recseg *s;
    struct ucxf_record *slot;

    if (__atomic_load_n(&ucxf_pool, __ATOMIC_ACQUIRE) == NULL || (slot = ucxf_rec_begin(&s)) == NULL) {
        return;
    }
    UCXF_REC_SET(slot->t_ns, now);
    UCXF_REC_SET(slot->duration_ns, 0);
    UCXF_REC_SET(slot->size, size);
    UCXF_REC_SET(slot->req, (uint64_t)(uintptr_t)request);
    UCXF_REC_SET(slot->thread, ucxf_self != NULL ? ucxf_self->ordinal : 0);
    UCXF_REC_SET(slot->tid, ucxf_self != NULL ? (uint32_t)ucxf_self->tid : 0);
    UCXF_REC_SET(slot->ep, ucxf_rec_ep(s, ep));
    UCXF_REC_SET(slot->hook, (uint16_t)hook);
    UCXF_REC_SET(slot->status, (int8_t)status);
    UCXF_REC_SET(slot->flags, (uint8_t)(UCXF_REC_COMPLETION | ((mark & UCXF_MARK_INJECTED) ? UCXF_REC_INJECTED : 0) |
                                        ((mark & UCXF_MARK_UNLEARNED) ? UCXF_REC_UNLEARNED : 0)));
    ucxf_rec_commit(s, slot);
}

/* Logs an endpoint event (kind: UCXF_EPEV_*) when recording is on: a
 * creation, a close, a failure (a kill, cause UCXF_EPCAUSE_*, with its
 * in-flight code) or an error-handler call, at t_ns (the clock of the
 * calls' t0; 0 for now). Endpoint events are rare: no cost on the call
 * path. An event stamped with a call's start sorts before that call. */
void ucxf_record_ep_event(int32_t ordinal, int kind, int code, int cause, int inflight, uint64_t t_ns)
{
    const struct ucxf_config *cfg = ucxf_current();
    struct ucxf_recseg *s;
    struct ucxf_record *slot;

    if (cfg == NULL || !cfg->recording || ordinal < 0 || __atomic_load_n(&ucxf_pool, __ATOMIC_ACQUIRE) == NULL ||
        (slot = ucxf_rec_begin(&s)) == NULL) {
        return;
    }
    UCXF_REC_SET(slot->t_ns, t_ns != 0 ? t_ns : ucxf_rec_now());
    UCXF_REC_SET(slot->duration_ns, 0);
    UCXF_REC_SET(slot->size, (uint64_t)kind);
    UCXF_REC_SET(slot->req, (uint64_t)(uint8_t)(int8_t)inflight);
    UCXF_REC_SET(slot->thread, ucxf_self != NULL ? ucxf_self->ordinal : 0);
    UCXF_REC_SET(slot->tid, ucxf_self != NULL ? (uint32_t)ucxf_self->tid : 0);
    UCXF_REC_SET(slot->ep, ordinal);
    UCXF_REC_SET(slot->hook, (uint16_t)cause);
    UCXF_REC_SET(slot->status, (int8_t)code);
    UCXF_REC_SET(slot->flags, (uint8_t)(UCXF_REC_EP_EVENT | (cause != UCXF_EPCAUSE_NONE ? UCXF_REC_INJECTED : 0)));
    ucxf_rec_commit(s, slot);
}

/* Copies slot into out; returns its stamp when the record was whole and
 * unchanged across the copy, else 0 (out->seq 0 too). Times converted to
 * ns with scale. */
static uint64_t ucxf_rec_copy(const struct ucxf_record *slot, struct ucxf_record *o, double scale)
{
    uint64_t seq = __atomic_load_n(&slot->seq, __ATOMIC_ACQUIRE), t, d;

    memset(o, 0, sizeof(*o));
    if (seq == 0 || seq == UCXF_REC_WRITING) {
        return 0;
    }
    UCXF_REC_GET(t, slot->t_ns);
    UCXF_REC_GET(d, slot->duration_ns);
    UCXF_REC_GET(o->size, slot->size);
    UCXF_REC_GET(o->req, slot->req);
    UCXF_REC_GET(o->thread, slot->thread);
    UCXF_REC_GET(o->tid, slot->tid);
    UCXF_REC_GET(o->ep, slot->ep);
    UCXF_REC_GET(o->hook, slot->hook);
    UCXF_REC_GET(o->status, slot->status);
    UCXF_REC_GET(o->flags, slot->flags);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&slot->seq, __ATOMIC_RELAXED) != seq) {
        o->flags = 0;
        return 0;
    }
    o->t_ns        = ucxf_rec_ns(t, scale);
    o->duration_ns = (uint64_t)((double)d * scale);
    o->seq         = (seq & UCXF_REC_IDX_MASK);
    o->seg         = (uint32_t)(seq >> UCXF_REC_IDX_BITS);
    return seq;
}

/* Copies pool slot `slot` (0 to ucxf_record_slots() - 1) into out; returns
 * 1 when it holds a whole record: out->seq is its index in segment
 * out->seg, + 1. */
int ucxf_record_read(uint64_t slot, struct ucxf_record *out)
{
    struct ucxf_record *pool = __atomic_load_n(&ucxf_pool, __ATOMIC_ACQUIRE);

    memset(out, 0, sizeof(*out));
    if (pool == NULL || slot >= ucxf_nchunks * ucxf_chunk_len) {
        return 0;
    }
    return ucxf_rec_copy(&pool[slot], out, ucxf_rec_scale(0)) != 0;
}

/*
 * Copies the whole pool into out (ucxf_record_slots() records) in one pass,
 * the chunks in the order threads take them, the next to be taken (the
 * oldest) first: a reader copying many slots per writer's call stays ahead
 * of the writers, so only records overtaken before it reaches them are
 * lost. *head_out is ucxf_record_head() at the start, and the records
 * returned are those appended before the start and since the last clear:
 * out[k].seq is the record's index in its segment + 1, or 0 for a slot
 * with no such record (flags UCXF_REC_LATE when it held a record appended
 * after the start, in place of an older one). Returns the slots.
 */
uint64_t ucxf_record_snapshot(struct ucxf_record *out, uint64_t *head_out)
{
    struct ucxf_record *pool = __atomic_load_n(&ucxf_pool, __ATOMIC_ACQUIRE);
    uint64_t *heads, *floors, start, i, j, k = 0;
    uint32_t  n, s;
    double    scale;

    if (pool == NULL) {
        *head_out = ucxf_record_head();
        return 0;
    }
    scale  = ucxf_rec_scale(1);
    n      = __atomic_load_n(&ucxf_nsegs, __ATOMIC_ACQUIRE);
    heads  = calloc(n + 1, sizeof(*heads));
    floors = calloc(n + 1, sizeof(*floors));
    if (heads == NULL || floors == NULL) {
        free(heads);
        free(floors);
        *head_out = ucxf_record_head();
        return 0;
    }
    *head_out = __atomic_load_n(&ucxf_rec_unsegmented, __ATOMIC_RELAXED) -
                __atomic_load_n(&ucxf_unseg_floor, __ATOMIC_RELAXED);
    for (s = 0; s < n; s++) {
        struct ucxf_recseg *seg = __atomic_load_n(&ucxf_segs[s], __ATOMIC_ACQUIRE);
        heads[s]  = __atomic_load_n(&seg->count, __ATOMIC_ACQUIRE);
        floors[s] = __atomic_load_n(&seg->floor, __ATOMIC_RELAXED);
        *head_out += heads[s] - floors[s];
    }
    start = __atomic_load_n(&ucxf_chunk_next, __ATOMIC_RELAXED);
    for (i = 0; i < ucxf_nchunks; i++) {
        const struct ucxf_record *chunk = &pool[((start + i) % ucxf_nchunks) * ucxf_chunk_len];
        for (j = 0; j < ucxf_chunk_len; j++, k++) {
            struct ucxf_record *o = &out[k];
            if (ucxf_rec_copy(&chunk[j], o, scale) == 0) {
                continue;
            }
            if (o->seg >= n || o->seq > heads[o->seg]) {
                o->seq   = 0;
                o->flags = UCXF_REC_LATE;
            } else if (o->seq <= floors[o->seg]) {
                o->seq = 0;
            }
        }
    }
    free(heads);
    free(floors);
    return k;
}

/* Around fork(): the child has only the forking thread; the others'
 * segments are free again, and their chunks too. */
void ucxf_record_fork_prepare(void)
{
    pthread_mutex_lock(&ucxf_segs_lock);
}

void ucxf_record_fork_parent(void)
{
    pthread_mutex_unlock(&ucxf_segs_lock);
}

void ucxf_record_fork_child(void)
{
    uint32_t i, n = ucxf_nsegs;

    pthread_mutex_init(&ucxf_segs_lock, NULL);
    ucxf_free_segs = NULL;
    for (i = 0; i < n; i++) {
        struct ucxf_recseg *s = ucxf_segs[i];
        if (s != ucxf_recseg) {
            ucxf_seg_release_chunk(s);
            s->next_free   = ucxf_free_segs;
            ucxf_free_segs = s;
        }
    }
}

/*
 * Called on every failure injected without calling libucp (request NULL,
 * flags UCXF_MARK_INJECTED), and on every outcome the injector delivers on
 * completion (UCXF_MARK_COMPLETION: request is the operation's request, code
 * the status the application is given, UCXF_MARK_INJECTED when the injector
 * made it). It does nothing: `ucxfault observe` attaches a uprobe here,
 * because its probes on libucp never see those calls, nor what a trampoline
 * or a status query hands the application. The request lets the observer
 * give the outcome to the operation that returned it. Exported and never
 * inlined, so that it has a symbol.
 */
__attribute__((noinline, visibility("default"))) void
ucxf_fault_marker(int hook, int code, void *ep, uint64_t size, void *request, int flags)
{
    __asm__ volatile("" : : "r"(hook), "r"(code), "r"(ep), "r"(size), "r"(request), "r"(flags) : "memory");
}

/* An outcome handed to the application on completion (flags: UCXF_MARK_*):
 * shown to the observer, and logged when recording is on. */
void ucxf_delivered(int hook, int status, void *ep, uint64_t size, void *request, int flags)
{
    const struct ucxf_config *cfg = ucxf_current();

    ucxf_fault_marker(hook, status, ep, size, request, flags | UCXF_MARK_COMPLETION);
    if (cfg != NULL && cfg->recording) {
        ucxf_record_delivery(hook, status, ep, size, request, flags, ucxf_rec_now());
    }
}
