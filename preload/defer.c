/*
 * ucxfault injector: requests carrying a failure to deliver on completion
 * (or followed for kill-ep), in a lock-free table keyed by request.
 */
#define _GNU_SOURCE
#include <stdint.h>

#include "ucxfault.h"
#include "defer.h"

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
/* Held completions (delay-completion=, hang): how long the request stays
 * in progress after it really completed (UCXF_HOLD_HANG: until released),
 * when the injector first saw it complete (0: not yet), and how the hold
 * ended early: 0 not, UCXF_RELEASE_REAL with the real status, or a code
 * (a cancel's -16, a kill's code). Written by holders of the slot only. */
static uint64_t ucxf_defer_hold_ns[UCXF_DEFER_SLOTS];
static uint64_t ucxf_defer_done_at[UCXF_DEFER_SLOTS];
static int8_t ucxf_defer_release[UCXF_DEFER_SLOTS];
#define UCXF_RELEASE_REAL 1
UCXF_HIDDEN uint64_t ucxf_defer_count;
/* Slots holding a completion: a cancel or close looks only when some do. */
UCXF_HIDDEN uint64_t ucxf_defer_holds;
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
    return ucxf_defer_put_hold(request, code, ep, hook, size, 0);
}

/* ucxf_defer_put for a request whose completion a rule holds for hold_ns
 * after it really completes (UCXF_HOLD_HANG: until a cancel, close or
 * kill); 0 holds nothing. */
int ucxf_defer_put_hold(void *request, int code, void *ep, int hook, uint64_t size, uint64_t hold_ns)
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
            __atomic_store_n(&ucxf_defer_hold_ns[s], hold_ns, __ATOMIC_RELAXED);
            __atomic_store_n(&ucxf_defer_done_at[s], 0, __ATOMIC_RELAXED);
            __atomic_store_n(&ucxf_defer_release[s], 0, __ATOMIC_RELAXED);
            if (hold_ns != 0) {
                __atomic_add_fetch(&ucxf_defer_holds, 1, __ATOMIC_RELAXED);
            }
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
    if (__atomic_load_n(&ucxf_defer_hold_ns[s], __ATOMIC_RELAXED) != 0) {
        __atomic_sub_fetch(&ucxf_defer_holds, 1, __ATOMIC_RELAXED);
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
    /* A held completion on the dead endpoint ends with the kill's code. */
    ucxf_defer_release_ep(ep, code);
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

/*
 * Held completions (delay-completion=, hang).
 *
 * The operation runs for real; the injector only postpones what the
 * application learns. ucxf_defer_held is asked once the real operation has
 * completed (a status query that libucp answered with a final status, or
 * the trampoline called by libucp): the first such look stamps the real
 * completion, and the request stays in progress to the application until
 * hold_ns later, or until ucxf_defer_cancel or ucxf_defer_release_ep ends
 * the hold. Returns 1 while held, 0 when the hold is over (*code: the code
 * that ended it early, or 0 for the real status), -1 when the table holds
 * nothing for request (never held, or freed by the application).
 */
int ucxf_defer_held(void *request, int *code)
{
    int s = ucxf_defer_hold(request), held = 0;
    uint64_t hold, done;
    int8_t rel;

    *code = 0;
    if (s < 0) {
        return -1;
    }
    hold = __atomic_load_n(&ucxf_defer_hold_ns[s], __ATOMIC_RELAXED);
    rel  = __atomic_load_n(&ucxf_defer_release[s], __ATOMIC_RELAXED);
    if (hold != 0) {
        if (rel < 0) {
            *code = rel;
        } else if (rel == 0 && hold == UCXF_HOLD_HANG) {
            held = 1;
        } else if (rel == 0) {
            uint64_t now = ucxf_now_ns();
            done         = __atomic_load_n(&ucxf_defer_done_at[s], __ATOMIC_RELAXED);
            if (done == 0) {
                __atomic_store_n(&ucxf_defer_done_at[s], now, __ATOMIC_RELAXED);
                done = now;
            }
            held = now - done < hold;
        }
    }
    ucxf_defer_unhold(s, request);
    return held;
}

/* Whether a rule holds the completion of request and the hold has not
 * ended early: ucp_request_release keeps such an entry (below). */
int ucxf_defer_is_held(void *request)
{
    int s, held = 0;

    if (__atomic_load_n(&ucxf_defer_holds, __ATOMIC_RELAXED) == 0 || (s = ucxf_defer_hold(request)) < 0) {
        return 0;
    }
    held = __atomic_load_n(&ucxf_defer_hold_ns[s], __ATOMIC_RELAXED) != 0;
    ucxf_defer_unhold(s, request);
    return held;
}

/* Ends the hold of request with UCS_ERR_CANCELED, as UCX completes a
 * cancelled request. Returns 1 when request was held. */
int ucxf_defer_cancel(void *request)
{
    int s, held = 0;

    if (__atomic_load_n(&ucxf_defer_holds, __ATOMIC_RELAXED) == 0 || (s = ucxf_defer_hold(request)) < 0) {
        return 0;
    }
    if (__atomic_load_n(&ucxf_defer_hold_ns[s], __ATOMIC_RELAXED) != 0 &&
        __atomic_load_n(&ucxf_defer_release[s], __ATOMIC_RELAXED) == 0) {
        __atomic_store_n(&ucxf_defer_release[s], (int8_t)UCS_ERR_CANCELED, __ATOMIC_RELAXED);
        held = 1;
    }
    ucxf_defer_unhold(s, request);
    return held;
}

/* Ends the hold of every request held on ep: with code (< 0), or with the
 * real status when code is 0. Returns how many. */
int ucxf_defer_release_ep(void *ep, int code)
{
    int s, n = 0;

    if (__atomic_load_n(&ucxf_defer_holds, __ATOMIC_RELAXED) == 0) {
        return 0;
    }
    for (s = 0; s < UCXF_DEFER_SLOTS; s++) {
        void *k = __atomic_load_n(&ucxf_defer_keys[s], __ATOMIC_ACQUIRE);
        if (k == NULL || k == UCXF_DEFER_TOMB || k == UCXF_DEFER_NEW || k == UCXF_DEFER_BUSY ||
            __atomic_load_n(&ucxf_defer_eps[s], __ATOMIC_RELAXED) != ep ||
            __atomic_load_n(&ucxf_defer_hold_ns[s], __ATOMIC_RELAXED) == 0) {
            continue;
        }
        if (!__atomic_compare_exchange_n(&ucxf_defer_keys[s], &k, UCXF_DEFER_BUSY, 0, __ATOMIC_ACQUIRE,
                                         __ATOMIC_RELAXED)) {
            continue; /* removed meanwhile */
        }
        if (__atomic_load_n(&ucxf_defer_eps[s], __ATOMIC_RELAXED) == ep &&
            __atomic_load_n(&ucxf_defer_hold_ns[s], __ATOMIC_RELAXED) != 0 &&
            __atomic_load_n(&ucxf_defer_release[s], __ATOMIC_RELAXED) == 0) {
            __atomic_store_n(&ucxf_defer_release[s], (int8_t)(code < 0 ? code : UCXF_RELEASE_REAL),
                             __ATOMIC_RELAXED);
            n++;
        }
        __atomic_store_n(&ucxf_defer_keys[s], k, __ATOMIC_RELEASE);
    }
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
