/*
 * ucxfault injector: endpoints. Their numbers (in order of creation; a
 * closed endpoint retires), their worker and error handler, and kill-ep: a
 * kill goes through libucp's own failure path where it can (epfail.c), else
 * the killed endpoint's error handler is called from its worker's progress
 * and its followed requests in flight fail (defer.c).
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ucxfault.h"
#include "endpoint.h"
#include "defer.h"
#include "epfail.h"

static void *ucxf_ep_keys[UCXF_EP_SLOTS];
static int32_t ucxf_ep_vals[UCXF_EP_SLOTS]; /* ordinal + 1, 0 while being inserted */
/* Written once by ucxf_after_ep_create, before the endpoint is used. */
static void *ucxf_ep_workers[UCXF_EP_SLOTS];
static ucp_err_handler_cb_t ucxf_ep_err_cb[UCXF_EP_SLOTS];
/* What libucp was given as the handler (the injector's trampoline, which
 * logs the call, or the application's): the emulation calls it too. */
static ucp_err_handler_cb_t ucxf_ep_err_call[UCXF_EP_SLOTS];
static void *ucxf_ep_err_arg[UCXF_EP_SLOTS];
/* kill-ep: the code, and 1 until the error handler has been called. */
static int8_t ucxf_ep_kill[UCXF_EP_SLOTS];
/* What its operations in flight at the kill complete with, 0 for the
 * kill's code (--inflight-code, inflight-code=; ucxf_ep_inflight_status). */
static int8_t ucxf_ep_inflight[UCXF_EP_SLOTS];
static uint8_t ucxf_ep_kill_undelivered[UCXF_EP_SLOTS];
/* kill-ep through libucp's own failure path (epfail.c). Until libucp has
 * the failure (UCXF_EPFAIL_SCHEDULED) the injector fails the endpoint's
 * calls itself; from then on UCX alone answers for the endpoint. */
static struct ucxf_epfail_req ucxf_ep_fail[UCXF_EP_SLOTS];
/* The first bytes of the worker address an endpoint was created from (its
 * header and the worker's 64-bit uuid), to tell an endpoint to its own
 * worker (ucxf_epfail_is_self); 0 when created otherwise. */
static uint8_t ucxf_ep_remote[UCXF_EP_SLOTS][UCXF_EPFAIL_ADDR_PREFIX];
static uint8_t ucxf_ep_has_remote[UCXF_EP_SLOTS];
/* 1 once the endpoint was closed: it is retired, and its address may come
 * back as a new endpoint. */
static uint8_t ucxf_ep_closed[UCXF_EP_SLOTS];
static int32_t ucxf_ep_next;
/* When the slot's endpoint was numbered (its ucp_ep_create returned, or its
 * first use for one never seen created), ucxf_now_ns; stored before the
 * number is published, so whoever finds the number finds its time (a
 * replay's kill placed by time after the creation, ucxf_ep_created). */
static uint64_t ucxf_ep_created_ns[UCXF_EP_SLOTS];
/* The endpoint's peer (peer.c): its index in the peer table + 1, 0 when
 * unknown. Written by ucxf_ep_set_info before the application has the
 * handle, and not again during the endpoint's life. */
static int32_t ucxf_ep_peer[UCXF_EP_SLOTS];
/* The slot's counters (summed over threads) when its endpoint was created
 * at a reused address: the new endpoint counts from there. */
static struct ucxf_ep_counts ucxf_ep_base[UCXF_EP_SLOTS];
/* Endpoints whose slot a new endpoint took (status lists the newest
 * UCXF_EP_GONE): written at a re-creation, read by status; the lock is
 * held for a copy of one row either side. */
static struct ucxf_ep_row ucxf_ep_gone[UCXF_EP_GONE];
static uint64_t ucxf_ep_gone_n;
static int ucxf_ep_gone_lock;
/* Bumped whenever an address gets a new number (a new endpoint at a reused
 * address): caches of address -> number (rules.c) are stale then. */
UCXF_HIDDEN uint32_t ucxf_ep_renumbered;
/* Non-zero while a killed endpoint's error handler waits for progress. */
UCXF_HIDDEN int ucxf_kill_pending;

/* The slot of ep, inserted with the next ordinal when insert is set and ep
 * is new (then *inserted is set, when given); -1 when absent (or the table
 * is full). Lookups of known endpoints read lines that are written once;
 * only a new endpoint takes a CAS. */
static int ucxf_ep_slot_ins(void *ep, int insert, int *inserted)
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
                __atomic_store_n(&ucxf_ep_created_ns[s], ucxf_now_ns(), __ATOMIC_RELAXED);
                __atomic_store_n(&ucxf_ep_vals[s], v + 1, __ATOMIC_RELEASE);
                if (inserted != NULL) {
                    *inserted = 1;
                }
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

static int ucxf_ep_slot(void *ep, int insert)
{
    return ucxf_ep_slot_ins(ep, insert, NULL);
}

/* The number of ep: its order of creation in the process (ucp_ep_create),
 * from 0. An endpoint never seen created (made by a libucp copy the
 * injector does not wrap) is numbered at its first use. */
int32_t ucxf_ep_ordinal(void *ep)
{
    int s = ucxf_ep_slot(ep, 1);
    return s < 0 ? -1 : __atomic_load_n(&ucxf_ep_vals[s], __ATOMIC_ACQUIRE) - 1;
}

static void ucxf_ep_gone_lock_take(void)
{
    while (__atomic_exchange_n(&ucxf_ep_gone_lock, 1, __ATOMIC_ACQUIRE)) {
        ucxf_cpu_relax();
    }
}

static void ucxf_ep_gone_lock_drop(void)
{
    __atomic_store_n(&ucxf_ep_gone_lock, 0, __ATOMIC_RELEASE);
}

/* The row of slot s's endpoint, with counters now (sums: every slot's
 * counters summed over threads, or NULL to sum this slot's). */
static void ucxf_ep_row_of(int s, const struct ucxf_ep_counts *sums, struct ucxf_ep_row *row)
{
    struct ucxf_ep_counts c;

    if (sums != NULL) {
        c = sums[s];
    } else {
        ucxf_ep_counts_slot(s, &c);
    }
    row->ordinal = __atomic_load_n(&ucxf_ep_vals[s], __ATOMIC_ACQUIRE) - 1;
    row->code    = __atomic_load_n(&ucxf_ep_kill[s], __ATOMIC_ACQUIRE);
    row->state   = __atomic_load_n(&ucxf_ep_closed[s], __ATOMIC_ACQUIRE) ? UCXF_EP_CLOSED
                   : row->code != 0                                    ? UCXF_EP_KILLED
                                                                        : UCXF_EP_OPEN;
    row->calls  = c.calls - __atomic_load_n(&ucxf_ep_base[s].calls, __ATOMIC_RELAXED);
    row->faults = c.faults - __atomic_load_n(&ucxf_ep_base[s].faults, __ATOMIC_RELAXED);
    snprintf(row->peer, sizeof(row->peer), "%s", ucxf_peer_name(__atomic_load_n(&ucxf_ep_peer[s], __ATOMIC_ACQUIRE) - 1));
}

/* Remembers a new endpoint's worker and error handler (from ucp_ep_create).
 * An address already known belonged to an endpoint since closed (UCX reuses
 * the memory of a closed endpoint): the new endpoint gets the next number
 * and none of the old one's state. The application has not seen the new
 * handle yet, so no other thread looks it up meanwhile. peer is its peer's
 * index in the peer table (peer.h), -1 for none. cb is the application's error handler, call the
 * one libucp was given (the injector's trampoline, or cb), which the
 * emulation calls. */
void ucxf_ep_set_info(void *ep, void *worker, ucp_err_handler_cb_t cb, ucp_err_handler_cb_t call, void *arg,
                      int32_t peer)
{
    int inserted = 0;
    int s        = ucxf_ep_slot_ins(ep, 1, &inserted);

    if (s < 0) {
        return;
    }
    if (!inserted) {
        uint8_t one = 1;
        int32_t v;
        struct ucxf_ep_row gone;
        struct ucxf_ep_counts now;

        /* The old endpoint leaves the table: status keeps its row. */
        ucxf_ep_row_of(s, NULL, &gone);
        gone.state = UCXF_EP_CLOSED;
        ucxf_ep_counts_slot(s, &now);
        ucxf_ep_gone_lock_take();
        ucxf_ep_gone[ucxf_ep_gone_n++ % UCXF_EP_GONE] = gone;
        ucxf_ep_gone_lock_drop();
        __atomic_store_n(&ucxf_ep_base[s].calls, now.calls, __ATOMIC_RELAXED);
        __atomic_store_n(&ucxf_ep_base[s].faults, now.faults, __ATOMIC_RELAXED);
        v = __atomic_fetch_add(&ucxf_ep_next, 1, __ATOMIC_RELAXED);
        if (__atomic_compare_exchange_n(&ucxf_ep_kill_undelivered[s], &one, 0, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            __atomic_sub_fetch(&ucxf_kill_pending, 1, __ATOMIC_RELEASE);
            __atomic_sub_fetch(&ucxf_progress_work, 1, __ATOMIC_RELEASE);
        }
        __atomic_store_n(&ucxf_ep_kill[s], 0, __ATOMIC_RELEASE);
        __atomic_store_n(&ucxf_ep_inflight[s], 0, __ATOMIC_RELEASE);
        ucxf_epfail_cancel(&ucxf_ep_fail[s]);
        ucxf_epfail_release(&ucxf_ep_fail[s]);
        __atomic_store_n(&ucxf_ep_fail[s].state, UCXF_EPFAIL_NONE, __ATOMIC_RELEASE);
        __atomic_store_n(&ucxf_ep_closed[s], 0, __ATOMIC_RELEASE);
        __atomic_store_n(&ucxf_ep_has_remote[s], 0, __ATOMIC_RELEASE);
        /* The peer before the bump, which makes rules.c look again. */
        __atomic_store_n(&ucxf_ep_peer[s], peer + 1, __ATOMIC_RELEASE);
        __atomic_store_n(&ucxf_ep_created_ns[s], ucxf_now_ns(), __ATOMIC_RELAXED);
        __atomic_store_n(&ucxf_ep_vals[s], v + 1, __ATOMIC_RELEASE);
        __atomic_add_fetch(&ucxf_ep_renumbered, 1, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&ucxf_ep_peer[s], peer + 1, __ATOMIC_RELEASE);
    ucxf_ep_workers[s] = worker;
    ucxf_ep_err_arg[s] = arg;
    __atomic_store_n(&ucxf_ep_err_call[s], call != NULL ? call : cb, __ATOMIC_RELAXED);
    __atomic_store_n(&ucxf_ep_err_cb[s], cb, __ATOMIC_RELEASE);
}

/* ep's slot in the table (inserted, numbered at first use, when unseen),
 * or -1 when the table is full: the index of its counters. */
int ucxf_ep_slot_of(void *ep)
{
    return ucxf_ep_slot(ep, 1);
}

/* The hash of ep's peer (peer.h), 0 when unknown. */
uint64_t ucxf_ep_peer_hash(void *ep)
{
    int s = ucxf_ep_slot(ep, 1);
    return s < 0 ? 0 : ucxf_peer_hash_at(__atomic_load_n(&ucxf_ep_peer[s], __ATOMIC_ACQUIRE) - 1);
}

/* For status: writes up to n rows, the endpoints in the table then the
 * newest retired ones (closed, their address since reused), in no order;
 * returns how many. Sums every thread's counters once. */
int ucxf_ep_rows(struct ucxf_ep_row *rows, int n)
{
    struct ucxf_ep_counts *sums = calloc(UCXF_EP_SLOTS + 1, sizeof(*sums));
    uint64_t g, end;
    int s, k = 0;

    if (sums == NULL) {
        return 0;
    }
    ucxf_ep_counts_sum(sums);
    for (s = 0; s < UCXF_EP_SLOTS && k < n; s++) {
        if (__atomic_load_n(&ucxf_ep_keys[s], __ATOMIC_ACQUIRE) == NULL ||
            __atomic_load_n(&ucxf_ep_vals[s], __ATOMIC_ACQUIRE) == 0) {
            continue;
        }
        ucxf_ep_row_of(s, sums, &rows[k++]);
    }
    free(sums);
    ucxf_ep_gone_lock_take();
    end = ucxf_ep_gone_n;
    for (g = end > UCXF_EP_GONE ? end - UCXF_EP_GONE : 0; g < end && k < n; g++) {
        rows[k++] = ucxf_ep_gone[g % UCXF_EP_GONE];
    }
    ucxf_ep_gone_lock_drop();
    return k;
}

/* The application's error handler of ep (ucp_ep_create), or NULL. libucp
 * calls it only once ucp_ep_create has returned; another thread's progress
 * may do so before ucxf_after_ep_create has filed it: waited for (bounded,
 * 100 ms). */
ucp_err_handler_cb_t ucxf_ep_err_handler(void *ep)
{
    struct timespec t0, now;
    int s;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        ucp_err_handler_cb_t cb;
        s  = ucxf_ep_slot(ep, 0);
        cb = s < 0 ? NULL : __atomic_load_n(&ucxf_ep_err_cb[s], __ATOMIC_ACQUIRE);
        if (cb != NULL) {
            return cb;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - t0.tv_sec) * 1000000000ll + (now.tv_nsec - t0.tv_nsec) > 100000000ll) {
            return NULL;
        }
        sched_yield();
    }
}

void *ucxf_ep_worker(void *ep)
{
    int s = ucxf_ep_slot(ep, 0);
    return s < 0 ? NULL : ucxf_ep_workers[s];
}

/* Remembers the worker address ep was created from (ucp_ep_create). */
void ucxf_ep_set_remote(void *ep, const void *address)
{
    int s = ucxf_ep_slot(ep, 1);

    if (s >= 0 && address != NULL) {
        memcpy(ucxf_ep_remote[s], address, UCXF_EPFAIL_ADDR_PREFIX);
        __atomic_store_n(&ucxf_ep_has_remote[s], 1, __ATOMIC_RELEASE);
    }
}

/* Retires ep at its close: kill-ep no longer finds its number. */
void ucxf_ep_set_closed(void *ep)
{
    int s = ucxf_ep_slot(ep, 0);

    if (s >= 0) {
        __atomic_store_n(&ucxf_ep_closed[s], 1, __ATOMIC_RELEASE);
    }
}

/* The table's slot of the endpoint with that number, open or closed; -1
 * when none. */
static int ucxf_ep_slot_by_ordinal(int32_t ordinal)
{
    int s;

    for (s = 0; s < UCXF_EP_SLOTS; s++) {
        if (__atomic_load_n(&ucxf_ep_keys[s], __ATOMIC_ACQUIRE) != NULL &&
            __atomic_load_n(&ucxf_ep_vals[s], __ATOMIC_ACQUIRE) == ordinal + 1) {
            return s;
        }
    }
    return -1;
}

/* 1 when an endpoint has that number, open or closed. */
int ucxf_ep_has_ordinal(int32_t ordinal)
{
    return ucxf_ep_slot_by_ordinal(ordinal) >= 0;
}

/* When the endpoint of that ordinal was numbered (ucxf_now_ns) in
 * *created_ns, and whether it is closed since in *closed. Returns 1, or 0
 * when no endpoint has that number (not created yet, or retired from the
 * table when a new endpoint took its address: then it was closed, which
 * the caller learns by its number being below ucxf_ep_numbered()). */
int ucxf_ep_created(int32_t ordinal, uint64_t *created_ns, int *closed)
{
    int s = ucxf_ep_slot_by_ordinal(ordinal);

    if (s < 0) {
        return 0;
    }
    *created_ns = __atomic_load_n(&ucxf_ep_created_ns[s], __ATOMIC_RELAXED);
    *closed     = __atomic_load_n(&ucxf_ep_closed[s], __ATOMIC_ACQUIRE);
    return 1;
}

/* How many endpoints were numbered so far (the next number). */
int32_t ucxf_ep_numbered(void)
{
    return __atomic_load_n(&ucxf_ep_next, __ATOMIC_ACQUIRE);
}

/* Kills the endpoint of that ordinal: its error handler is called once from
 * the next progress of its worker, and every later operation on it fails
 * with code; operations in flight complete with inflight (0: code).
 * Returns 0, or -1 when no endpoint has that ordinal yet. */
int ucxf_ep_kill_ordinal(int32_t ordinal, int code, int inflight)
{
    int s;

    for (s = 0; s < UCXF_EP_SLOTS; s++) {
        if (__atomic_load_n(&ucxf_ep_keys[s], __ATOMIC_ACQUIRE) == NULL ||
            __atomic_load_n(&ucxf_ep_vals[s], __ATOMIC_ACQUIRE) != ordinal + 1) {
            continue;
        }
        if (__atomic_load_n(&ucxf_ep_closed[s], __ATOMIC_ACQUIRE)) {
            return -1; /* retired */
        }
        if (__atomic_load_n(&ucxf_ep_kill[s], __ATOMIC_ACQUIRE) != 0) {
            return 0; /* already dead: the handler is called once */
        }
        __atomic_store_n(&ucxf_ep_kill_undelivered[s], 1, __ATOMIC_RELAXED);
        __atomic_store_n(&ucxf_ep_inflight[s], (int8_t)(inflight != code ? inflight : 0), __ATOMIC_RELAXED);
        __atomic_store_n(&ucxf_ep_kill[s], (int8_t)code, __ATOMIC_RELEASE);
        __atomic_add_fetch(&ucxf_kill_pending, 1, __ATOMIC_RELEASE);
        __atomic_add_fetch(&ucxf_progress_work, 1, __ATOMIC_RELEASE);
        return 0;
    }
    return -1;
}

/* The code the injector fails ep's calls with, or 0: a killed endpoint's
 * code until libucp's own failure path has it (then UCX answers). */
int ucxf_ep_kill_code(void *ep)
{
    int s = ucxf_ep_slot(ep, 0);
    if (s < 0) {
        return 0;
    }
    if (ucxf_epfail_state(&ucxf_ep_fail[s]) == UCXF_EPFAIL_SCHEDULED) {
        /* libucp has the failure: UCX answers now. Calls made before the
         * worker's next progress runs it reach UCX, as calls made between
         * UCX's detection of a real death and its handling do. */
        return 0;
    }
    return __atomic_load_n(&ucxf_ep_kill[s], __ATOMIC_ACQUIRE);
}

/* The code ep was killed with, or 0, whoever answers for it now. */
int ucxf_ep_dead_code(void *ep)
{
    int s = ucxf_ep_slot(ep, 0);
    return s < 0 ? 0 : __atomic_load_n(&ucxf_ep_kill[s], __ATOMIC_ACQUIRE);
}

/*
 * The status a followed request on ep completes with, given libucp's. A kill
 * through libucp discards the endpoint's lanes from under a live transport
 * endpoint, which cancels what the transport still held: those operations
 * complete with UCS_ERR_CANCELED (-16), as on InfiniBand when the peer dies.
 * A dead TCP peer fails them with UCS_ERR_CONNECTION_RESET (-25) instead
 * (measured on 1.13.1 and 1.22.0: the endpoint flush in flight,
 * docs/peer-death.md), so that is what they complete with, until the
 * application closes the endpoint (a close's own cancel stays -16).
 * Requests libucp purges itself get the kill's code, as after a real death.
 * A kill with an in-flight code of its own (--inflight-code, inflight-code=)
 * completes both kinds with that code instead, as InfiniBand's purge does
 * (-16 while the handler gets the endpoint's code); but a request posted
 * after the kill (at_kill 0: not in flight when it was made) keeps the
 * kill's code, as every operation on a dead endpoint does.
 */
int ucxf_ep_inflight_status(void *ep, int status, int at_kill)
{
    int s, kill, inflight;

    if (status >= 0 || ep == NULL || (s = ucxf_ep_slot(ep, 0)) < 0) {
        return status;
    }
    kill = __atomic_load_n(&ucxf_ep_kill[s], __ATOMIC_ACQUIRE);
    if (kill == 0 || __atomic_load_n(&ucxf_ep_closed[s], __ATOMIC_ACQUIRE)) {
        return status;
    }
    inflight = __atomic_load_n(&ucxf_ep_inflight[s], __ATOMIC_RELAXED);
    if (ucxf_epfail_state(&ucxf_ep_fail[s]) == UCXF_EPFAIL_SCHEDULED) {
        if (status == UCS_ERR_CANCELED) {
            return inflight != 0 ? inflight : UCS_ERR_CONNECTION_RESET;
        }
        if (status == kill && inflight != 0 && at_kill) {
            return inflight; /* purged by libucp with the endpoint's code */
        }
    }
    return status;
}

/* What ep's followed requests still in flight at its kill complete with:
 * the kill's in-flight code, else its code. */
static int ucxf_ep_inflight_code(int s)
{
    int inflight = __atomic_load_n(&ucxf_ep_inflight[s], __ATOMIC_RELAXED);
    return inflight != 0 ? inflight : __atomic_load_n(&ucxf_ep_kill[s], __ATOMIC_ACQUIRE);
}

/* A rule's kill-ep at a call on ep, from the application's thread inside
 * that call: ep dies now. The call itself, and every call until its
 * worker's next progress, fails with code (ucxf_ep_kill_code); that
 * progress hands the failure to libucp, or, without it, calls the handler
 * (ucxf_ep_deliver_kills). Operations in flight on ep complete with
 * inflight (0: code). Returns 1 when this call killed ep, 0 when it was
 * dead already, -1 when ep is unknown. */
int ucxf_ep_kill_now(void *ep, int code, int inflight)
{
    int s = ucxf_ep_slot(ep, 1);
    int8_t zero = 0;

    if (s < 0) {
        return -1;
    }
    if (!__atomic_compare_exchange_n(&ucxf_ep_kill[s], &zero, (int8_t)code, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        return 0; /* already dead: the handler is called once */
    }
    __atomic_store_n(&ucxf_ep_inflight[s], (int8_t)(inflight != code ? inflight : 0), __ATOMIC_RELEASE);
    /* Armed at the worker's next progress (ucxf_ep_deliver_kills), not
     * here: libucs's handler could run at once on its thread, and the
     * calls this thread makes until that progress would then reach UCX
     * or not by a race. Until then they fail with code, run after run. */
    __atomic_store_n(&ucxf_ep_kill_undelivered[s], 1, __ATOMIC_RELEASE);
    __atomic_add_fetch(&ucxf_kill_pending, 1, __ATOMIC_RELEASE);
    __atomic_add_fetch(&ucxf_progress_work, 1, __ATOMIC_RELEASE);
    return 1;
}

/* Delivers the kills of worker's endpoints (or of endpoints whose worker is
 * unknown), from the application's thread about to progress worker. A kill
 * goes through libucp's own failure path when it can (epfail.c): armed here
 * (or at a rule's kill), scheduled by libucs's async handler, run by the
 * progress that follows; the injector only tidies up once libucp has it.
 * Otherwise the emulation calls the error handler, once, from here, as UCX
 * calls handlers from progress. */
void ucxf_ep_deliver_kills(void *worker)
{
    int s;

    for (s = 0; s < UCXF_EP_SLOTS; s++) {
        uint8_t one = 1;
        void *ep;
        ucp_err_handler_cb_t cb;
        int st;
        if (!__atomic_load_n(&ucxf_ep_kill_undelivered[s], __ATOMIC_ACQUIRE)) {
            continue;
        }
        if (ucxf_ep_workers[s] != NULL && ucxf_ep_workers[s] != worker) {
            continue;
        }
        ep = __atomic_load_n(&ucxf_ep_keys[s], __ATOMIC_ACQUIRE);
        st = ucxf_epfail_state(&ucxf_ep_fail[s]);
        if (st == UCXF_EPFAIL_NONE &&
            !(ucxf_ep_has_remote[s] && ucxf_epfail_is_self(worker, ucxf_ep_remote[s])) &&
            ucxf_epfail_request(&ucxf_ep_fail[s], (ucp_ep_h)ep, ucxf_ep_workers[s], ucxf_ep_kill[s]) == 0) {
            /* Armed. This thread holds nothing of UCX's here, so libucs's
             * thread runs the handler at once: wait for it (bounded), so
             * that the progress this thread is about to make runs the
             * failure, as the first progress after a detected death does.
             * (If another thread holds the worker, the handler runs from a
             * later progress instead.) Followed requests in flight that
             * the live peer completes meanwhile complete with the code,
             * as nothing completes after a real death. */
            struct timespec t0, now;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            do {
                sched_yield();
                st = ucxf_epfail_state(&ucxf_ep_fail[s]);
                clock_gettime(CLOCK_MONOTONIC, &now);
            } while (st != UCXF_EPFAIL_SCHEDULED &&
                     (now.tv_sec - t0.tv_sec) * 1000000000ll + (now.tv_nsec - t0.tv_nsec) < 10000000ll);
            ucxf_defer_kill(ep, ucxf_ep_inflight_code(s));
            if (st != UCXF_EPFAIL_SCHEDULED) {
                continue;
            }
        }
        if (st == UCXF_EPFAIL_REQUESTED || st == UCXF_EPFAIL_SCHEDULING) {
            continue; /* the handler has not run yet */
        }
        if (!__atomic_compare_exchange_n(&ucxf_ep_kill_undelivered[s], &one, 0, 0,
                                         __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            continue;
        }
        __atomic_sub_fetch(&ucxf_kill_pending, 1, __ATOMIC_RELEASE);
        __atomic_sub_fetch(&ucxf_progress_work, 1, __ATOMIC_RELEASE);
        if (st == UCXF_EPFAIL_SCHEDULED) {
            /* libucp has it: the progress that follows runs the failure. */
            ucxf_epfail_release(&ucxf_ep_fail[s]);
            continue;
        }
        cb = __atomic_load_n(&ucxf_ep_err_cb[s], __ATOMIC_ACQUIRE) != NULL
                 ? __atomic_load_n(&ucxf_ep_err_call[s], __ATOMIC_RELAXED)
                 : NULL;
        /* Emulated. As in UCX, the outstanding requests fail before the
         * handler runs. */
        ucxf_defer_kill(ep, ucxf_ep_inflight_code(s));
        if (cb != NULL) {
            /* What libucp would call: the trampoline logs the call. */
            cb(ucxf_ep_err_arg[s], (ucp_ep_h)ep, (ucs_status_t)ucxf_ep_kill[s]);
        }
    }
}

/* Before ep's close, from the closing thread: a kill through libucp not yet
 * run is run first (its handler, then the close of a failed endpoint, as
 * when UCX saw the peer die before the close), by progressing the worker
 * until libucs's handler has scheduled it (bounded: 200 ms) and once more.
 * A handler that has not run by then is cancelled: the close wins, as it
 * does over a death UCX has not noticed yet. */
void ucxf_ep_settle(void *ep)
{
    __typeof__(ucp_worker_progress) *progress =
        (__typeof__(ucp_worker_progress) *)ucxf_real[UCXF_HOOK_WORKER_PROGRESS];
    int s = ucxf_ep_slot(ep, 0);
    struct timespec t0, now;
    void *worker;

    if (s < 0 || progress == NULL || ucxf_epfail_state(&ucxf_ep_fail[s]) == UCXF_EPFAIL_NONE) {
        return;
    }
    worker = ucxf_ep_workers[s];
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (ucxf_epfail_state(&ucxf_ep_fail[s]) != UCXF_EPFAIL_SCHEDULED) {
        progress(worker); /* a handler missed by the async thread runs here */
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - t0.tv_sec) * 1000000000ll + (now.tv_nsec - t0.tv_nsec) > 200000000ll) {
            if (ucxf_epfail_cancel(&ucxf_ep_fail[s]) == 0) {
                return;
            }
        }
    }
    ucxf_ep_deliver_kills(worker); /* releases the handler */
    progress(worker);                    /* runs the failure */
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
