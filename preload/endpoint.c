/*
 * ucxfault injector: endpoints. Their ordinals (in order of first sight),
 * their worker and error handler, and kill-ep: a killed endpoint's error
 * handler is called from its worker's progress and its requests in flight
 * fail (defer.c).
 */
#define _GNU_SOURCE
#include <stdint.h>

#include "ucxfault.h"
#include "endpoint.h"
#include "defer.h"

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
