/*
 * fixture.h: what the safety fixtures share. A UCP context, a worker, an
 * endpoint to the worker itself, a mapped "remote" buffer and its rkey, and
 * a bounded put. Operations are printed as the example program prints them
 * (examples/rma/README.md), so that testutil.ParseOps reads both:
 *
 *   OP thread=<t> seq=<n> iter=<n> fn=put size=<n> status=<int> name=<text> how=<...> us=0
 *
 * Header-only on purpose: each fixture is one gcc command.
 */
#ifndef UCXF_FIXTURE_H
#define UCXF_FIXTURE_H

#define _GNU_SOURCE
#include <ucp/api/ucp.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FX_BUF 4096

struct fx {
    ucp_context_h  ctx;
    ucp_worker_h   worker;
    ucp_address_t *addr;
    size_t         addr_len;
    ucp_ep_h       ep;
    ucp_mem_h      memh;
    ucp_rkey_h     rkey;
    void          *rbuf;
    void          *lbuf;
};

static inline uint64_t fx_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000;
}

static inline void fx_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* fx_die reports a setup failure the way rma does and exits 3. */
static inline void fx_die(const char *what, ucs_status_t status)
{
    fprintf(stderr, "SETUP-ERROR %s: %s\n", what, ucs_status_string(status));
    exit(3);
}

#define FX_CHECK(what, expr)                                                   \
    do {                                                                       \
        ucs_status_t fx_st_ = (expr);                                          \
        if (fx_st_ != UCS_OK) {                                                \
            fx_die(what, fx_st_);                                              \
        }                                                                      \
    } while (0)

/* fx_setup creates everything; mode is the worker's thread mode and features
 * the context's (UCP_FEATURE_RMA at least). */
static inline void fx_setup(struct fx *f, ucs_thread_mode_t mode, uint64_t features)
{
    ucp_params_t        p;
    ucp_worker_params_t wp;
    ucp_mem_map_params_t mp;
    ucp_ep_params_t     ep;
    void               *rkey_buf;
    size_t              rkey_len;
    ucs_status_t        st;

    memset(f, 0, sizeof(*f));
    memset(&p, 0, sizeof(p));
    p.field_mask = UCP_PARAM_FIELD_FEATURES;
    p.features   = features | UCP_FEATURE_RMA;
    if (mode == UCS_THREAD_MODE_MULTI) {
        p.field_mask       |= UCP_PARAM_FIELD_MT_WORKERS_SHARED;
        p.mt_workers_shared = 1;
    }
    FX_CHECK("ucp_init", ucp_init(&p, NULL, &f->ctx));

    memset(&wp, 0, sizeof(wp));
    wp.field_mask  = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = mode;
    FX_CHECK("ucp_worker_create", ucp_worker_create(f->ctx, &wp, &f->worker));

    if (posix_memalign(&f->rbuf, FX_BUF, FX_BUF) != 0 ||
        posix_memalign(&f->lbuf, FX_BUF, FX_BUF) != 0) {
        fx_die("malloc", UCS_ERR_NO_MEMORY);
    }
    memset(f->rbuf, 0, FX_BUF);
    memset(f->lbuf, 0x5a, FX_BUF);

    memset(&mp, 0, sizeof(mp));
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    mp.address    = f->rbuf;
    mp.length     = FX_BUF;
    FX_CHECK("ucp_mem_map", ucp_mem_map(f->ctx, &mp, &f->memh));
    FX_CHECK("ucp_worker_get_address",
             ucp_worker_get_address(f->worker, &f->addr, &f->addr_len));

    memset(&ep, 0, sizeof(ep));
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
    ep.address    = f->addr;
    FX_CHECK("ucp_ep_create", ucp_ep_create(f->worker, &ep, &f->ep));

    FX_CHECK("ucp_rkey_pack", ucp_rkey_pack(f->ctx, f->memh, &rkey_buf, &rkey_len));
    st = ucp_ep_rkey_unpack(f->ep, rkey_buf, &f->rkey);
    ucp_rkey_buffer_release(rkey_buf);
    FX_CHECK("ucp_ep_rkey_unpack", st);
}

/* fx_put puts len bytes (at most FX_BUF - off) at offset off and waits, at
 * most 5 s, for completion. *how says how the status was learned. */
static inline ucs_status_t fx_put(struct fx *f, size_t off, size_t len, const char **how)
{
    ucp_request_param_t param;
    ucs_status_ptr_t    req;
    ucs_status_t        st;
    uint64_t            deadline;

    memset(&param, 0, sizeof(param));
    req  = ucp_put_nbx(f->ep, (char *)f->lbuf + off, len,
                       (uint64_t)(uintptr_t)f->rbuf + off, f->rkey, &param);
    *how = "immediate";
    if (req == NULL) {
        return UCS_OK;
    }
    if (UCS_PTR_IS_ERR(req)) {
        return UCS_PTR_STATUS(req);
    }
    *how     = "completion";
    deadline = fx_now_us() + 5000000ull;
    for (;;) {
        ucp_worker_progress(f->worker);
        st = ucp_request_check_status(req);
        if (st != UCS_INPROGRESS) {
            break;
        }
        if (fx_now_us() > deadline) {
            ucp_request_cancel(f->worker, req);
            *how = "timeout";
            st   = UCS_ERR_TIMED_OUT;
            break;
        }
    }
    ucp_request_free(req);
    return st;
}

/* fx_print_op prints one OP line (one printf: lines of threads never mix). */
static inline void fx_print_op(int thread, unsigned long seq, const char *fn, size_t size,
                               ucs_status_t st, const char *how)
{
    char   name[64];
    size_t i;

    snprintf(name, sizeof(name), "%s", ucs_status_string(st));
    for (i = 0; name[i] != '\0'; i++) {
        if (name[i] == ' ') {
            name[i] = '_';
        }
    }
    printf("OP thread=%d seq=%lu iter=%lu fn=%s size=%zu status=%d name=%s how=%s us=0\n",
           thread, seq, seq, fn, size, (int)st, name, how);
}

static inline void fx_closed(void *req, ucs_status_t st, void *user)
{
    (void)req;
    (void)st;
    *(volatile int *)user = 1;
}

/* fx_teardown releases everything. It waits for the endpoint's close through
 * a callback, never by polling: a fixture's ucp_request_check_status calls
 * are only those it prints. */
static inline void fx_teardown(struct fx *f)
{
    ucp_request_param_t param;
    ucs_status_ptr_t    req;
    uint64_t            deadline;
    volatile int        closed = 0;

    if (f->rkey != NULL) {
        ucp_rkey_destroy(f->rkey);
    }
    if (f->ep != NULL) {
        memset(&param, 0, sizeof(param));
        param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_CALLBACK |
                             UCP_OP_ATTR_FIELD_USER_DATA;
        param.flags        = UCP_EP_CLOSE_FLAG_FORCE;
        param.cb.send      = fx_closed;
        param.user_data    = (void *)&closed;
        req                = ucp_ep_close_nbx(f->ep, &param);
        if (UCS_PTR_IS_PTR(req)) {
            deadline = fx_now_us() + 2000000ull;
            while (!closed && fx_now_us() < deadline) {
                ucp_worker_progress(f->worker);
            }
            ucp_request_free(req);
        }
    }
    if (f->memh != NULL) {
        ucp_mem_unmap(f->ctx, f->memh);
    }
    if (f->addr != NULL) {
        ucp_worker_release_address(f->worker, f->addr);
    }
    if (f->worker != NULL) {
        ucp_worker_destroy(f->worker);
    }
    if (f->ctx != NULL) {
        ucp_cleanup(f->ctx);
    }
    free(f->rbuf);
    free(f->lbuf);
    memset(f, 0, sizeof(*f));
}

#endif
