/*
 * ucxfault injector: a kill through libucp's own endpoint-failure path.
 *
 * When UCX sees a peer die (a transport error, a keepalive timeout) it does
 * not fail the endpoint on the spot: it schedules the failure on the
 * worker's progress queue, and the next ucp_worker_progress runs
 * ucp_ep_set_failed, which purges every request in flight on the endpoint
 * with the status, discards its lanes (so the peer sees the connection
 * close), calls the error handler once and marks the endpoint failed: from
 * then on every operation fails at once, a later real error is not reported
 * again, and a close is the close of a failed endpoint. libucp exports the
 * scheduling function; calling it makes a kill exactly that path:
 *
 *   UCX 1.12.0 to 1.20.x: void ucp_ep_set_failed_schedule(ucp_ep_h ep,
 *       ucp_lane_index_t lane, ucs_status_t status), src/ucp/core/ucp_ep.c;
 *       UCX's own whole-endpoint failures pass UCP_NULL_LANE
 *       (src/ucp/wireup/wireup.c, every release of the range).
 *   UCX 1.21.0 and 1.22.0: void ucp_ep_set_lanes_failed_schedule(ucp_ep_h ep,
 *       ucp_lane_map_t lanes, ucs_status_t status); lanes == 0 is the whole
 *       endpoint, as UCX itself passes for keepalive and recovery timeouts
 *       (src/ucp/core/ucp_ep.c, 1.22.0) and wire-up failures (wireup.c).
 *   UCX 1.10 and 1.11 export neither: kills stay emulated there.
 *
 * Both signatures were read in every release tag from v1.10.0 to v1.22.0.
 * A function is called only when the running libucp's ucp_get_version lies
 * in the range it was read for AND the symbol is exported by that same
 * libucp. A release newer than 1.22 with the 1.21 symbol is not trusted by
 * default (its signature is unread): UCXFAULT_NATIVE_KILL=1 opts in,
 * UCXFAULT_NATIVE_KILL=0 keeps the emulation everywhere.
 *
 * Threads and locks. Both functions must run with the worker's async
 * context blocked (UCP_WORKER_THREAD_CS_CHECK_IS_BLOCKED: an assertion that
 * Debian's 1.13.1 build keeps, measured: called from the application's
 * thread it aborts with "Assertion `ucs_async_is_blocked(&(worker)->async)'
 * failed"). That is how UCX calls them: a transport error reaches
 * ucp_ep_set_failed_schedule from an async event handler, which libucs
 * dispatches with the worker's async context blocked. A kill does the same:
 * it registers a one-shot event handler on the worker's async context
 * (ucs_async_set_event_handler on an eventfd, exported by libucs with the
 * same signature in every release from 1.12 to 1.22, async_fwd.h) and
 * signals the eventfd. libucs runs the handler on its async thread with the
 * context blocked, or, when another thread holds the context at that
 * moment, from that worker's next ucp_worker_progress under
 * UCS_ASYNC_BLOCK (the "missed" queue), exactly as for its own events; the
 * handler schedules the failure and the progress after it runs the failure.
 * This holds for UCP_WORKER_THREAD_MODE_MULTI workers too: the context's
 * lock, not the calling thread, makes it safe. The worker's async context is
 * the second member of struct ucp_worker, after a uint64_t (flags), in every
 * release from 1.12.0 to 1.22.0 (src/ucp/core/ucp_worker.h), and its mode is
 * UCS_ASYNC_MODE_THREAD_MUTEX with UCX_USE_MT_MUTEX=y, else the build's
 * thread lock type (spinlock): both are tried. An endpoint destroyed before
 * that progress takes its scheduled failure with it (UCX removes it:
 * ucp_ep_set_failed_remove_filter in 1.13, keyed by the endpoint in 1.22);
 * one closed before the handler ran is waited for (ucxf_epfail_settle).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <ucs/async/async_fwd.h>

#include "ucxfault.h"
#include "epfail.h"
#include "dlopen.h"

typedef void (*ucxf_set_failed_fn)(ucp_ep_h ep, uint8_t lane, ucs_status_t status);
typedef void (*ucxf_set_lanes_failed_fn)(ucp_ep_h ep, uint64_t lanes, ucs_status_t status);

typedef ucs_status_t (*ucxf_set_handler_fn)(ucs_async_mode_t mode, int event_fd, ucs_event_set_types_t events,
                                             ucs_async_event_cb_t cb, void *arg, ucs_async_context_t *async);
typedef ucs_status_t (*ucxf_remove_handler_fn)(int id, int is_sync);

static int ucxf_epfail_resolved;
static int ucxf_epfail_dead_code = UCS_ERR_ENDPOINT_TIMEOUT; /* UCXF_EPFAIL_* once resolved */
static void *ucxf_epfail_fn;
static ucxf_set_handler_fn ucxf_epfail_set_handler;
static ucxf_remove_handler_fn ucxf_epfail_remove_handler;
static ucs_status_t (*ucxf_epfail_get_address)(ucp_worker_h, ucp_address_t **, size_t *);
static void (*ucxf_epfail_release_address)(ucp_worker_h, ucp_address_t *);
static char ucxf_epfail_desc[160];

static int ucxf_epfail_resolve(void)
{
    void *anchor = ucxf_resolve(UCXF_HOOK_WORKER_PROGRESS);
    char copies[8];
    const char *opt = getenv("UCXFAULT_NATIVE_KILL");
    int off         = opt != NULL && strcmp(opt, "0") == 0;
    void (*get_version)(unsigned *, unsigned *, unsigned *);
    unsigned major = 0, minor = 0, release = 0;
    const char *name = NULL;
    int mode = UCXF_EPFAIL_EMULATED;
    Dl_info info;
    void *h, *fn = NULL;

    snprintf(ucxf_epfail_desc, sizeof(ucxf_epfail_desc), "emulated (libucp not resolved)");
    /* With two libucp copies mapped, an endpoint of one handed to the
     * other's function would corrupt it: only a lone copy is trusted. */
    if (ucxf_libucp_copies(copies, sizeof(copies)) > 1) {
        snprintf(ucxf_epfail_desc, sizeof(ucxf_epfail_desc), "emulated (more than one libucp copy mapped)");
        return mode;
    }
    /* The libucp the application's progress calls is the one whose
     * endpoints are killed: ask that very object, not the global scope. */
    if (anchor == NULL || dladdr(anchor, &info) == 0 || info.dli_fname == NULL) {
        return mode;
    }
    h = ucxf_dlopen_real(info.dli_fname, RTLD_NOLOAD | RTLD_LAZY);
    if (h == NULL) {
        return mode;
    }
    get_version = (void (*)(unsigned *, unsigned *, unsigned *))dlsym(h, "ucp_get_version");
    if (get_version != NULL) {
        get_version(&major, &minor, &release);
        if (major > 1 || (major == 1 && minor >= 14)) {
            ucxf_epfail_dead_code = UCS_ERR_CONNECTION_RESET;
        }
    }
    if (off) {
        dlclose(h);
        snprintf(ucxf_epfail_desc, sizeof(ucxf_epfail_desc), "emulated (UCXFAULT_NATIVE_KILL=0)");
        return mode;
    }
    if (major == 1 && minor >= 12 && minor <= 20) {
        name = "ucp_ep_set_failed_schedule";
        mode = UCXF_EPFAIL_LEGACY;
    } else if (major == 1 && minor >= 21 && (minor <= 22 || (opt != NULL && strcmp(opt, "1") == 0))) {
        name = "ucp_ep_set_lanes_failed_schedule";
        mode = UCXF_EPFAIL_LANES;
    }
    if (name != NULL) {
        fn = dlsym(h, name);
        /* libucs, a dependency of that libucp: dlsym on a handle searches
         * the object's dependencies too. */
        ucxf_epfail_set_handler    = (ucxf_set_handler_fn)dlsym(h, "ucs_async_set_event_handler");
        ucxf_epfail_remove_handler = (ucxf_remove_handler_fn)dlsym(h, "ucs_async_remove_handler");
        ucxf_epfail_get_address =
            (ucs_status_t(*)(ucp_worker_h, ucp_address_t **, size_t *))dlsym(h, "ucp_worker_get_address");
        ucxf_epfail_release_address = (void (*)(ucp_worker_h, ucp_address_t *))dlsym(h, "ucp_worker_release_address");
        if (ucxf_epfail_set_handler == NULL || ucxf_epfail_remove_handler == NULL ||
            ucxf_epfail_get_address == NULL || ucxf_epfail_release_address == NULL) {
            fn = NULL;
        }
    }
    dlclose(h); /* RTLD_NOLOAD took a reference; libucp stays mapped */
    if (fn == NULL) {
        snprintf(ucxf_epfail_desc, sizeof(ucxf_epfail_desc),
                 "emulated (libucp %u.%u.%u has no verified endpoint-failure function%s)", major, minor,
                 release, (major == 1 && minor > 22) ? "; UCXFAULT_NATIVE_KILL=1 to use UCX's own" : "");
        fprintf(stderr, "ucxfault: kill-ep is %s: a kill is emulated by the injector and differs from a "
                        "real peer death (docs/peer-death.md)\n", ucxf_epfail_desc);
        return UCXF_EPFAIL_EMULATED;
    }
    ucxf_epfail_fn = fn;
    snprintf(ucxf_epfail_desc, sizeof(ucxf_epfail_desc), "libucp %s (%u.%u.%u)", name, major, minor, release);
    return mode;
}

int ucxf_epfail_mode(void)
{
    int mode = __atomic_load_n(&ucxf_epfail_resolved, __ATOMIC_ACQUIRE);

    if (UCXF_LIKELY(mode != UCXF_EPFAIL_UNKNOWN)) {
        return mode;
    }
    /* Two threads may resolve at once: both find the same answer. */
    mode = ucxf_epfail_resolve();
    __atomic_store_n(&ucxf_epfail_resolved, mode, __ATOMIC_RELEASE);
    return mode;
}

/* Runs with the worker's async context blocked (libucs dispatches it so). */
static void ucxf_epfail_async_cb(int id, ucs_event_set_types_t events, void *arg)
{
    struct ucxf_epfail_req *r = arg;
    uint64_t v;

    (void)id;
    (void)events;
    if (read(r->fd, &v, sizeof(v)) < 0) {
        /* level-triggered: drained, or already drained by an earlier call */
    }
    int requested = UCXF_EPFAIL_REQUESTED;

    /* A close that came first cancels (ucxf_epfail_cancel); both sides run
     * with the async context blocked, so one of them wins cleanly. */
    if (!__atomic_compare_exchange_n(&r->state, &requested, UCXF_EPFAIL_SCHEDULING, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        return;
    }
    switch (ucxf_epfail_mode()) {
    case UCXF_EPFAIL_LEGACY:
        /* UCP_NULL_LANE, ((ucp_lane_index_t)-1): the whole endpoint. */
        ((ucxf_set_failed_fn)ucxf_epfail_fn)(r->ep, (uint8_t)-1, (ucs_status_t)r->code);
        break;
    case UCXF_EPFAIL_LANES:
        /* ucp_lane_map_t is 64 bits from 1.21 (UCP_MAX_LANES 64); 0, the
         * whole endpoint, reads the same at any width. */
        ((ucxf_set_lanes_failed_fn)ucxf_epfail_fn)(r->ep, 0, (ucs_status_t)r->code);
        break;
    default:
        break;
    }
    __atomic_store_n(&r->state, UCXF_EPFAIL_SCHEDULED, __ATOMIC_RELEASE);
}

int ucxf_epfail_request(struct ucxf_epfail_req *r, ucp_ep_h ep, void *worker, int code)
{
    static const ucs_async_mode_t modes[] = {UCS_ASYNC_MODE_THREAD_SPINLOCK, UCS_ASYNC_MODE_THREAD_MUTEX};
    ucs_async_context_t *async;
    uint64_t one = 1;
    unsigned i;

    if (worker == NULL || ucxf_epfail_mode() == UCXF_EPFAIL_EMULATED) {
        return -1;
    }
    async = (ucs_async_context_t *)((char *)worker + sizeof(uint64_t));
    r->ep   = ep;
    r->code = code;
    r->fd   = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->fd < 0) {
        return -1;
    }
    r->fd_valid = 1;
    __atomic_store_n(&r->state, UCXF_EPFAIL_REQUESTED, __ATOMIC_RELEASE);
    for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        if (ucxf_epfail_set_handler(modes[i], r->fd, UCS_EVENT_SET_EVREAD, ucxf_epfail_async_cb, r, async) ==
            UCS_OK) {
            if (write(r->fd, &one, sizeof(one)) != (ssize_t)sizeof(one)) {
                ucxf_epfail_remove_handler(r->fd, 1);
                break;
            }
            return 0;
        }
    }
    close(r->fd);
    r->fd       = -1;
    r->fd_valid = 0;
    __atomic_store_n(&r->state, UCXF_EPFAIL_NONE, __ATOMIC_RELEASE);
    return -1;
}

int ucxf_epfail_state(const struct ucxf_epfail_req *r)
{
    return __atomic_load_n(&r->state, __ATOMIC_ACQUIRE);
}

int ucxf_epfail_cancel(struct ucxf_epfail_req *r)
{
    int requested = UCXF_EPFAIL_REQUESTED;

    return __atomic_compare_exchange_n(&r->state, &requested, UCXF_EPFAIL_NONE, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE)
               ? 0
               : -1;
}

void ucxf_epfail_release(struct ucxf_epfail_req *r)
{
    if (r->fd >= 0 && r->fd_valid) {
        r->fd_valid = 0;
        /* Synchronous: waits for a dispatch in progress on the async
         * thread; the handler itself has run already. */
        ucxf_epfail_remove_handler(r->fd, 1);
        close(r->fd);
        r->fd = -1;
    }
}

int ucxf_epfail_is_self(void *worker, const uint8_t *prefix)
{
    ucp_address_t *own;
    size_t len;
    int same;

    if (worker == NULL || ucxf_epfail_mode() == UCXF_EPFAIL_EMULATED ||
        ucxf_epfail_get_address((ucp_worker_h)worker, &own, &len) != UCS_OK) {
        return 0;
    }
    same = len >= UCXF_EPFAIL_ADDR_PREFIX && memcmp(own, prefix, UCXF_EPFAIL_ADDR_PREFIX) == 0;
    ucxf_epfail_release_address((ucp_worker_h)worker, own);
    return same;
}

int ucxf_epfail_default_code(void)
{
    ucxf_epfail_mode();
    return ucxf_epfail_dead_code;
}

const char *ucxf_epfail_emulated(void)
{
    return __atomic_load_n(&ucxf_epfail_resolved, __ATOMIC_ACQUIRE) == UCXF_EPFAIL_EMULATED ? ucxf_epfail_desc
                                                                                           : NULL;
}

const char *ucxf_epfail_describe(void)
{
    ucxf_epfail_mode();
    return ucxf_epfail_desc;
}
