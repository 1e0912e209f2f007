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

/* The stamp of a slot being filled: never index + 1. */
#define UCXF_REC_WRITING UINT64_MAX
#define UCXF_REC_SET(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)
#define UCXF_REC_GET(dst, field) ((dst) = __atomic_load_n(&(field), __ATOMIC_RELAXED))

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
    uint64_t i, stamp;

    if (ring == NULL) {
        return;
    }
    i    = __atomic_fetch_add(&ucxf_ring_head, 1, __ATOMIC_RELAXED);
    slot = &ring[i & ucxf_ring_mask];
    /* Claim the slot: a writer descheduled after taking its index may
     * meet the writer one lap ahead in the same slot, and two writers
     * filling one slot would leave a record of mixed fields under a valid
     * stamp. The slot goes to one of them; a record that finds the slot
     * held, or holding a newer record, is dropped (the reader counts it
     * lost, as an overwritten one). */
    stamp = __atomic_load_n(&slot->seq, __ATOMIC_RELAXED);
    if (stamp == UCXF_REC_WRITING || stamp > i + 1 ||
        !__atomic_compare_exchange_n(&slot->seq, &stamp, UCXF_REC_WRITING, 0, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED)) {
        return;
    }
    __atomic_thread_fence(__ATOMIC_RELEASE);
    /* Relaxed atomic stores: plain moves, but a reader copying the slot
     * while a lapping writer fills it is not a data race (the stamp tells
     * it to drop what it read). */
    UCXF_REC_SET(slot->t_ns, c->t0);
    UCXF_REC_SET(slot->duration_ns, now > c->t0 ? now - c->t0 : 0);
    UCXF_REC_SET(slot->size, c->size);
    UCXF_REC_SET(slot->req, (uint64_t)(uintptr_t)(c->req != NULL ? c->req : request));
    UCXF_REC_SET(slot->thread, c->thread != NULL ? c->thread->ordinal : 0);
    UCXF_REC_SET(slot->tid, c->thread != NULL ? (uint32_t)c->thread->tid : 0);
    UCXF_REC_SET(slot->ep, c->ep != NULL ? ucxf_ep_ordinal(c->ep) : -1);
    UCXF_REC_SET(slot->hook, (uint16_t)c->hook);
    UCXF_REC_SET(slot->status, (int8_t)status);
    UCXF_REC_SET(slot->flags, (uint8_t)((c->injected ? UCXF_REC_INJECTED : 0) |
                                        (c->deferred_code ? UCXF_REC_DEFERRED : 0)));
    __atomic_store_n(&slot->seq, i + 1, __ATOMIC_RELEASE);
}

/* Logs an outcome delivered on completion (ucxf_delivered): not a call, but
 * the final status of the operation of hook that returned request. */
void ucxf_record_delivery(int hook, int status, void *ep, uint64_t size, void *request, int mark, uint64_t now)
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
    slot->t_ns        = now;
    slot->duration_ns = 0;
    slot->size        = size;
    slot->req         = (uint64_t)(uintptr_t)request;
    slot->thread      = ucxf_self != NULL ? ucxf_self->ordinal : 0;
    slot->tid         = ucxf_self != NULL ? (uint32_t)ucxf_self->tid : 0;
    slot->ep          = ep != NULL ? ucxf_ep_ordinal(ep) : -1;
    slot->hook        = (uint16_t)hook;
    slot->status      = (int8_t)status;
    slot->flags       = (uint8_t)(UCXF_REC_COMPLETION | ((mark & UCXF_MARK_INJECTED) ? UCXF_REC_INJECTED : 0) |
                                  ((mark & UCXF_MARK_UNLEARNED) ? UCXF_REC_UNLEARNED : 0));
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
    memset(out, 0, sizeof(*out));
    out->seq = index + 1;
    UCXF_REC_GET(out->t_ns, slot->t_ns);
    UCXF_REC_GET(out->duration_ns, slot->duration_ns);
    UCXF_REC_GET(out->size, slot->size);
    UCXF_REC_GET(out->req, slot->req);
    UCXF_REC_GET(out->thread, slot->thread);
    UCXF_REC_GET(out->tid, slot->tid);
    UCXF_REC_GET(out->ep, slot->ep);
    UCXF_REC_GET(out->hook, slot->hook);
    UCXF_REC_GET(out->status, slot->status);
    UCXF_REC_GET(out->flags, slot->flags);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return __atomic_load_n(&slot->seq, __ATOMIC_RELAXED) == index + 1;
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
/* Endpoints: ordinals, worker and error handler, kill-ep               */
/* ------------------------------------------------------------------ */

#define UCXF_EP_SLOTS 4096
static void *ucxf_ep_keys[UCXF_EP_SLOTS];
static int32_t ucxf_ep_vals[UCXF_EP_SLOTS]; /* ordinal + 1, 0 while being inserted */
/* Written once by ucxf_after_ep_create, before the endpoint is used. */
static void *ucxf_ep_workers[UCXF_EP_SLOTS];
static ucp_err_handler_cb_t ucxf_ep_err_cb[UCXF_EP_SLOTS];
static void *ucxf_ep_err_arg[UCXF_EP_SLOTS];
/* kill-ep: the code, and 1 until the error handler has been called. */
static int8_t ucxf_ep_kill[UCXF_EP_SLOTS];
static uint8_t ucxf_ep_kill_undelivered[UCXF_EP_SLOTS];
static int32_t ucxf_ep_next;
/* Non-zero while a killed endpoint's error handler waits for progress. */
UCXF_HIDDEN int ucxf_kill_pending;

static inline uint64_t ucxf_ptr_hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static inline void ucxf_cpu_relax(void)
{
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* The slot of ep, inserted with the next ordinal when insert is set and ep
 * is new; -1 when absent (or the table is full). Lookups of known endpoints
 * read lines that are written once; only a new endpoint takes a CAS. */
static int ucxf_ep_slot(void *ep, int insert)
{
    uint64_t i = ucxf_ptr_hash(ep), n;

    for (n = 0; n < UCXF_EP_SLOTS; n++, i++) {
        int s     = (int)(i & (UCXF_EP_SLOTS - 1));
        void *k   = __atomic_load_n(&ucxf_ep_keys[s], __ATOMIC_ACQUIRE);
        if (k == NULL) {
            void *expected = NULL;
            if (!insert) {
                return -1;
            }
            if (!__atomic_compare_exchange_n(&ucxf_ep_keys[s], &expected, ep, 0, __ATOMIC_ACQ_REL,
                                             __ATOMIC_ACQUIRE)) {
                k = expected;
            } else {
                int32_t v = __atomic_fetch_add(&ucxf_ep_next, 1, __ATOMIC_RELAXED);
                __atomic_store_n(&ucxf_ep_vals[s], v + 1, __ATOMIC_RELEASE);
                return s;
            }
        }
        if (k == ep) {
            /* The inserting thread stores the value just after the key. */
            while (__atomic_load_n(&ucxf_ep_vals[s], __ATOMIC_ACQUIRE) == 0) {
                ucxf_cpu_relax();
            }
            return s;
        }
    }
    return -1; /* table full: more than 4096 endpoints */
}

/* The ordinal of ep in order of first sight (creation or first use). */
int32_t ucxf_ep_ordinal(void *ep)
{
    int s = ucxf_ep_slot(ep, 1);
    return s < 0 ? -1 : __atomic_load_n(&ucxf_ep_vals[s], __ATOMIC_ACQUIRE) - 1;
}

/* Remembers a new endpoint's worker and error handler (from ucp_ep_create). */
void ucxf_ep_set_info(void *ep, void *worker, ucp_err_handler_cb_t cb, void *arg)
{
    int s = ucxf_ep_slot(ep, 1);

    if (s < 0) {
        return;
    }
    ucxf_ep_workers[s] = worker;
    ucxf_ep_err_arg[s] = arg;
    __atomic_store_n(&ucxf_ep_err_cb[s], cb, __ATOMIC_RELEASE);
}

void *ucxf_ep_worker(void *ep)
{
    int s = ucxf_ep_slot(ep, 0);
    return s < 0 ? NULL : ucxf_ep_workers[s];
}

/* 1 when an endpoint has that ordinal (endpoints are never removed). */
int ucxf_ep_has_ordinal(int32_t ordinal)
{
    int s;

    for (s = 0; s < UCXF_EP_SLOTS; s++) {
        if (__atomic_load_n(&ucxf_ep_keys[s], __ATOMIC_ACQUIRE) != NULL &&
            __atomic_load_n(&ucxf_ep_vals[s], __ATOMIC_ACQUIRE) == ordinal + 1) {
            return 1;
        }
    }
    return 0;
}

/* Kills the endpoint of that ordinal: its error handler is called once from
 * the next progress of its worker, and every later operation on it fails
 * with code. Returns 0, or -1 when no endpoint has that ordinal yet. */
int ucxf_ep_kill_ordinal(int32_t ordinal, int code)
{
    int s;

    for (s = 0; s < UCXF_EP_SLOTS; s++) {
        if (__atomic_load_n(&ucxf_ep_keys[s], __ATOMIC_ACQUIRE) == NULL ||
            __atomic_load_n(&ucxf_ep_vals[s], __ATOMIC_ACQUIRE) != ordinal + 1) {
            continue;
        }
        if (__atomic_load_n(&ucxf_ep_kill[s], __ATOMIC_ACQUIRE) != 0) {
            return 0; /* already dead: the handler is called once */
        }
        __atomic_store_n(&ucxf_ep_kill_undelivered[s], 1, __ATOMIC_RELAXED);
        __atomic_store_n(&ucxf_ep_kill[s], (int8_t)code, __ATOMIC_RELEASE);
        __atomic_add_fetch(&ucxf_kill_pending, 1, __ATOMIC_RELEASE);
        __atomic_add_fetch(&ucxf_progress_work, 1, __ATOMIC_RELEASE);
        return 0;
    }
    return -1;
}

/* The code ep was killed with, or 0. */
int ucxf_ep_kill_code(void *ep)
{
    int s = ucxf_ep_slot(ep, 0);
    return s < 0 ? 0 : __atomic_load_n(&ucxf_ep_kill[s], __ATOMIC_ACQUIRE);
}

/* Calls, once each, the error handlers of killed endpoints of worker (or of
 * endpoints whose worker is unknown). Runs inside ucp_worker_progress, as UCX
 * calls error handlers. */
void ucxf_ep_deliver_kills(void *worker)
{
    int s;

    for (s = 0; s < UCXF_EP_SLOTS; s++) {
        uint8_t one = 1;
        void *ep;
        ucp_err_handler_cb_t cb;
        if (!__atomic_load_n(&ucxf_ep_kill_undelivered[s], __ATOMIC_ACQUIRE)) {
            continue;
        }
        if (ucxf_ep_workers[s] != NULL && ucxf_ep_workers[s] != worker) {
            continue;
        }
        if (!__atomic_compare_exchange_n(&ucxf_ep_kill_undelivered[s], &one, 0, 0,
                                         __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            continue;
        }
        __atomic_sub_fetch(&ucxf_kill_pending, 1, __ATOMIC_RELEASE);
        __atomic_sub_fetch(&ucxf_progress_work, 1, __ATOMIC_RELEASE);
        ep = __atomic_load_n(&ucxf_ep_keys[s], __ATOMIC_ACQUIRE);
        cb = __atomic_load_n(&ucxf_ep_err_cb[s], __ATOMIC_ACQUIRE);
        /* As in UCX, the outstanding requests fail before the handler runs. */
        ucxf_defer_kill(ep, ucxf_ep_kill[s]);
        if (cb != NULL) {
            cb(ucxf_ep_err_arg[s], (ucp_ep_h)ep, (ucs_status_t)ucxf_ep_kill[s]);
        }
    }
}

/* Lists killed endpoints for status: writes up to n ordinals and codes. */
int ucxf_ep_killed(int32_t *ordinals, int8_t *codes, int n)
{
    int s, k = 0;

    for (s = 0; s < UCXF_EP_SLOTS && k < n; s++) {
        int8_t code = __atomic_load_n(&ucxf_ep_kill[s], __ATOMIC_ACQUIRE);
        if (code != 0) {
            ordinals[k] = __atomic_load_n(&ucxf_ep_vals[s], __ATOMIC_ACQUIRE) - 1;
            codes[k++]  = code;
        }
    }
    return k;
}

/* ------------------------------------------------------------------ */
/* Failures delivered on completion                                     */
/* ------------------------------------------------------------------ */

#define UCXF_DEFER_SLOTS 4096
/*
 * A slot's key is its state: NULL (never used: a probe stops here), TOMB
 * (free again), NEW (claimed by an insert that is writing the code and the
 * endpoint), BUSY (held by the thread removing, killing or marking the
 * request that was there), or the request. The other fields are written
 * only by the thread that holds the slot (NEW or BUSY), and a key is
 * published with a release store after them: whoever reads a request key
 * with acquire sees that request's fields, never another's. A probe skips
 * NEW (the insert is for a request not yet returned to the application)
 * and waits out BUSY (a few instructions: the request there may be the one
 * sought).
 */
#define UCXF_DEFER_TOMB ((void *)1)
#define UCXF_DEFER_NEW  ((void *)2)
#define UCXF_DEFER_BUSY ((void *)3)
static void *ucxf_defer_keys[UCXF_DEFER_SLOTS];
static int8_t ucxf_defer_codes[UCXF_DEFER_SLOTS];
static void *ucxf_defer_eps[UCXF_DEFER_SLOTS]; /* the request's endpoint, or NULL */
/* The operation that returned the request, for the record and the marker
 * of its delivery, and whether its outcome was delivered yet. */
static uint16_t ucxf_defer_hooks[UCXF_DEFER_SLOTS];
static uint64_t ucxf_defer_sizes[UCXF_DEFER_SLOTS];
static uint8_t ucxf_defer_delivered[UCXF_DEFER_SLOTS];
UCXF_HIDDEN uint64_t ucxf_defer_count;
static uint64_t ucxf_defer_lost;
static uint64_t ucxf_defer_killed;

/* The key of slot s once no thread holds it as BUSY. */
static inline void *ucxf_defer_key(uint64_t s)
{
    void *k;

    while ((k = __atomic_load_n(&ucxf_defer_keys[s], __ATOMIC_ACQUIRE)) == UCXF_DEFER_BUSY) {
        ucxf_cpu_relax();
    }
    return k;
}

/* Attaches code to a request the application now owns: status queries on
 * it return code once it has completed, until it is freed. Code 0 only
 * follows the request of an operation on ep, for ucxf_defer_kill. hook and
 * size describe the operation. Returns -1 when the table is full. */
int ucxf_defer_put(void *request, int code, void *ep, int hook, uint64_t size)
{
    uint64_t i = ucxf_ptr_hash(request), n;

    ucxf_defer_forget(request); /* a reused pointer drops the stale entry */
    for (n = 0; n < UCXF_DEFER_SLOTS; n++, i++) {
        uint64_t s = i & (UCXF_DEFER_SLOTS - 1);
        void *k    = __atomic_load_n(&ucxf_defer_keys[s], __ATOMIC_ACQUIRE);
        /* Claim first: only the thread whose CAS won writes the slot. */
        if ((k == NULL || k == UCXF_DEFER_TOMB) &&
            __atomic_compare_exchange_n(&ucxf_defer_keys[s], &k, UCXF_DEFER_NEW, 0,
                                        __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            __atomic_store_n(&ucxf_defer_codes[s], (int8_t)code, __ATOMIC_RELAXED);
            __atomic_store_n(&ucxf_defer_eps[s], ep, __ATOMIC_RELAXED);
            __atomic_store_n(&ucxf_defer_hooks[s], (uint16_t)hook, __ATOMIC_RELAXED);
            __atomic_store_n(&ucxf_defer_sizes[s], size, __ATOMIC_RELAXED);
            __atomic_store_n(&ucxf_defer_delivered[s], 0, __ATOMIC_RELAXED);
            __atomic_add_fetch(&ucxf_defer_count, 1, __ATOMIC_RELAXED);
            __atomic_store_n(&ucxf_defer_keys[s], request, __ATOMIC_RELEASE); /* publish */
            return 0;
        }
    }
    __atomic_add_fetch(&ucxf_defer_lost, 1, __ATOMIC_RELAXED);
    return -1;
}

/* Holds the slot of request (BUSY) and returns it, or -1 when request
 * carries nothing. The caller ends the hold with ucxf_defer_unhold. */
static int ucxf_defer_hold(void *request)
{
    uint64_t i, n;

    if (__atomic_load_n(&ucxf_defer_count, __ATOMIC_RELAXED) == 0) {
        return -1;
    }
again:
    i = ucxf_ptr_hash(request);
    for (n = 0; n < UCXF_DEFER_SLOTS; n++, i++) {
        uint64_t s = i & (UCXF_DEFER_SLOTS - 1);
        void *k    = ucxf_defer_key(s);

        if (k == NULL) {
            return -1;
        }
        if (k != request) {
            continue;
        }
        if (!__atomic_compare_exchange_n(&ucxf_defer_keys[s], &k, UCXF_DEFER_BUSY, 0,
                                         __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            goto again; /* another thread removed or is killing it */
        }
        return (int)s;
    }
    return -1;
}

/* Ends a hold: the slot holds key again (the request, or TOMB). */
static void ucxf_defer_unhold(int s, void *key)
{
    __atomic_store_n(&ucxf_defer_keys[s], key, __ATOMIC_RELEASE);
}

/* Copies the fields of held slot s into *out. */
static void ucxf_defer_read(int s, struct ucxf_defer_info *out)
{
    out->code      = __atomic_load_n(&ucxf_defer_codes[s], __ATOMIC_RELAXED);
    out->ep        = __atomic_load_n(&ucxf_defer_eps[s], __ATOMIC_RELAXED);
    out->hook      = __atomic_load_n(&ucxf_defer_hooks[s], __ATOMIC_RELAXED);
    out->size      = __atomic_load_n(&ucxf_defer_sizes[s], __ATOMIC_RELAXED);
    out->delivered = __atomic_load_n(&ucxf_defer_delivered[s], __ATOMIC_RELAXED);
}

/* A status query found request complete: fills *out with what the table
 * holds for it and marks its outcome delivered. Returns 0, or -1 when
 * request carries nothing. */
int ucxf_defer_deliver(void *request, struct ucxf_defer_info *out)
{
    int s = ucxf_defer_hold(request);

    if (s < 0) {
        return -1;
    }
    ucxf_defer_read(s, out);
    __atomic_store_n(&ucxf_defer_delivered[s], 1, __ATOMIC_RELAXED);
    ucxf_defer_unhold(s, request);
    return 0;
}

/* The outcome of request has reached the application (callback or query). */
void ucxf_defer_set_delivered(void *request)
{
    int s = ucxf_defer_hold(request);

    if (s >= 0) {
        __atomic_store_n(&ucxf_defer_delivered[s], 1, __ATOMIC_RELAXED);
        ucxf_defer_unhold(s, request);
    }
}

/* The failure attached to request, or 0. Not held: a read checked against
 * the key again, as status queries may be many. */
int ucxf_defer_peek(void *request)
{
    uint64_t i, n;

    if (__atomic_load_n(&ucxf_defer_count, __ATOMIC_RELAXED) == 0) {
        return 0;
    }
again:
    i = ucxf_ptr_hash(request);
    for (n = 0; n < UCXF_DEFER_SLOTS; n++, i++) {
        uint64_t s = i & (UCXF_DEFER_SLOTS - 1);
        void *k    = ucxf_defer_key(s);
        int8_t code;

        if (k == NULL) {
            return 0;
        }
        if (k != request) {
            continue;
        }
        code = __atomic_load_n(&ucxf_defer_codes[s], __ATOMIC_RELAXED);
        /* Still this request's slot after the read (not removed and given
         * to another request meanwhile)? Otherwise look again. */
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (ucxf_defer_key(s) == request) {
            return code;
        }
        goto again;
    }
    return 0;
}

/* Detaches the entry of request (freed, released or reused); fills *out
 * with what it held when out is not NULL. Returns 0, or -1 when there was
 * none. */
int ucxf_defer_take(void *request, struct ucxf_defer_info *out)
{
    int s = ucxf_defer_hold(request);

    if (s < 0) {
        return -1;
    }
    if (out != NULL) {
        ucxf_defer_read(s, out);
    }
    __atomic_sub_fetch(&ucxf_defer_count, 1, __ATOMIC_RELAXED);
    ucxf_defer_unhold(s, UCXF_DEFER_TOMB);
    return 0;
}

/* Detaches the failure of request (freed, released or reused). */
void ucxf_defer_forget(void *request)
{
    ucxf_defer_take(request, NULL);
}

/*
 * ep was killed: its followed requests still in flight will complete with
 * code, as UCX completes a dead endpoint's outstanding requests with the
 * error. A request that already completed keeps its status. Called from
 * progress on the endpoint's worker, before its error handler, so the
 * status check runs on the thread that owns the requests. Each slot is held
 * (BUSY) while it is examined, so the code lands on the request that was
 * checked, never on one inserted into the slot meanwhile. Returns how many.
 */
int ucxf_defer_kill(void *ep, int code)
{
    __typeof__(ucp_request_check_status) *check =
        (__typeof__(ucp_request_check_status) *)ucxf_resolve(UCXF_HOOK_REQUEST_CHECK_STATUS);
    int s, n = 0;

    if (__atomic_load_n(&ucxf_defer_count, __ATOMIC_RELAXED) == 0) {
        return 0;
    }
    for (s = 0; s < UCXF_DEFER_SLOTS; s++) {
        void *k = __atomic_load_n(&ucxf_defer_keys[s], __ATOMIC_ACQUIRE);
        if (k == NULL || k == UCXF_DEFER_TOMB || k == UCXF_DEFER_NEW || k == UCXF_DEFER_BUSY ||
            __atomic_load_n(&ucxf_defer_eps[s], __ATOMIC_RELAXED) != ep ||
            __atomic_load_n(&ucxf_defer_codes[s], __ATOMIC_RELAXED) != 0) {
            continue;
        }
        if (!__atomic_compare_exchange_n(&ucxf_defer_keys[s], &k, UCXF_DEFER_BUSY, 0,
                                         __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            continue; /* removed meanwhile */
        }
        /* Held: the endpoint and code read before the claim may have been
         * another request's; read them again. */
        if (__atomic_load_n(&ucxf_defer_eps[s], __ATOMIC_RELAXED) == ep &&
            __atomic_load_n(&ucxf_defer_codes[s], __ATOMIC_RELAXED) == 0 &&
            (check == NULL || check(k) == UCS_INPROGRESS)) {
            __atomic_store_n(&ucxf_defer_codes[s], (int8_t)code, __ATOMIC_RELAXED);
            /* Injected by the kill: counted like any other injected failure. */
            ucxf_count_completion_fault(__atomic_load_n(&ucxf_defer_hooks[s], __ATOMIC_RELAXED), code,
                                        __atomic_load_n(&ucxf_defer_sizes[s], __ATOMIC_RELAXED));
            n++;
        }
        __atomic_store_n(&ucxf_defer_keys[s], k, __ATOMIC_RELEASE);
    }
    __atomic_add_fetch(&ucxf_defer_killed, (uint64_t)n, __ATOMIC_RELAXED);
    return n;
}

/* Requests failed by kill-ep while in flight, since the start. */
uint64_t ucxf_defer_kill_count(void)
{
    return __atomic_load_n(&ucxf_defer_killed, __ATOMIC_RELAXED);
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
