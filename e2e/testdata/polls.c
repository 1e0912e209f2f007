/*
 * polls.c: operations whose requests are in flight and polled a random
 * number of times.
 *
 *   polls OPS MAXPOLLS [GATE [HOLD]]
 *
 * Two workers of one context talk over TCP on loopback (UCX_TLS=tcp and
 * UCX_NET_DEVICES=lo unless set), so that an operation stays in flight until
 * both are progressed. OPS operations rotate through
 *
 *   put   ucp_put_nbx to the second worker's memory, polled with
 *         ucp_request_check_status
 *   get   ucp_get_nbx from it, polled with ucp_request_check_status
 *   recv  ucp_tag_recv_nbx on the second worker, polled with
 *         ucp_request_test; the message it waits for is sent through
 *         libucp's own ucp_tag_send_nbx, so that each operation printed is
 *         one call the injector decides
 *
 * each with UCP_OP_ATTR_FLAG_NO_IMM_CMPL, so that it returns a request. Each
 * request is polled a random number of times, 0 to MAXPOLLS, before the
 * workers are progressed (the request is in flight meanwhile), then
 * progressed and polled until it completes. The poll counts are drawn from
 * the pid and the clock, so they differ from run to run. With GATE (not
 * "-"), the program waits (at most 30 s) after READY until the file GATE
 * exists; with HOLD, it waits likewise for the file HOLD after the POLLS
 * line, before it tears down (while a recording is dumped).
 *
 * Every poll that reports an error is checked against libucp's own
 * ucp_request_check_status (found through libucp's handle, which an
 * LD_PRELOAD library does not interpose): a request libucp still holds in
 * flight must never be reported finished. Each such report prints
 *
 *   VIOLATION seq=<n> fn=<put|get|recv> status=<int>
 *
 * and the request is then waited for as if the poll had said nothing. One OP
 * line per operation (see fixture.h), then
 *
 *   POLLS total=<n> early=<n> early_inflight=<n>
 *
 * where early counts the polls made before progress and early_inflight those
 * of them that found their request still in flight.
 */
#include "fixture.h"

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

enum { OP_PUT, OP_GET, OP_RECV, OP_KINDS };
static const char *const op_names[OP_KINDS] = {"put", "get", "recv"};

typedef ucs_status_t (*check_fn)(void *);
typedef ucs_status_ptr_t (*send_fn)(ucp_ep_h, const void *, size_t, ucp_tag_t, const ucp_request_param_t *);

/* libucp's own functions, not the preloaded wrappers. */
static check_fn real_check;
static send_fn  real_send;

static ucp_context_h ctx;
static ucp_worker_h  wa, wb; /* a issues, b is the other side */
static ucp_ep_h      ep;
static ucp_mem_h     memh;
static ucp_rkey_h    rkey;
static char          rbuf[4096], lbuf[4096], tbuf[64], rxbuf[64];

static unsigned long total_polls, early_polls, early_inflight;

static void progress(void)
{
    ucp_worker_progress(wa);
    ucp_worker_progress(wb);
}

static ucs_status_t poll_once(void *req, int kind)
{
    ucp_tag_recv_info_t info;

    total_polls++;
    return kind == OP_RECV ? ucp_request_test(req, &info) : ucp_request_check_status(req);
}

/* A poll said st: an error must come from a completed request. */
static int violates(unsigned long seq, int kind, void *req, ucs_status_t st)
{
    if (st < 0 && real_check(req) == UCS_INPROGRESS) {
        printf("VIOLATION seq=%lu fn=%s status=%d\n", seq, op_names[kind], (int)st);
        return 1;
    }
    return 0;
}

/* Waits (bounded) for a request the fixture made itself, without polling
 * through the injector. */
static void wait_own(void *req)
{
    uint64_t deadline = fx_now_us() + 5000000ull;

    while (real_check(req) == UCS_INPROGRESS && fx_now_us() < deadline) {
        progress();
    }
}

static ucs_status_t run_op(unsigned long seq, unsigned npolls, const char **how)
{
    ucp_request_param_t param;
    ucs_status_ptr_t    req, sreq = NULL;
    ucs_status_t        st = UCS_INPROGRESS;
    uint64_t            deadline;
    int                 kind = (int)(seq % OP_KINDS);
    unsigned            i;

    memset(&param, 0, sizeof(param));
    param.op_attr_mask = UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
    switch (kind) {
    case OP_PUT:
        req = ucp_put_nbx(ep, lbuf, 8, (uint64_t)(uintptr_t)rbuf, rkey, &param);
        break;
    case OP_GET:
        req = ucp_get_nbx(ep, lbuf, 8, (uint64_t)(uintptr_t)rbuf, rkey, &param);
        break;
    default:
        /* A tag of its own per operation: a message whose receive failed
         * stays unexpected and never matches a later receive. */
        req = ucp_tag_recv_nbx(wb, rxbuf, sizeof(rxbuf), seq, (ucp_tag_t)-1, &param);
        if (UCS_PTR_IS_PTR(req)) {
            ucp_request_param_t sp;
            memset(&sp, 0, sizeof(sp));
            sreq = real_send(ep, tbuf, sizeof(tbuf), seq, &sp);
        }
        break;
    }
    *how = "immediate";
    if (req == NULL) {
        return UCS_OK;
    }
    if (UCS_PTR_IS_ERR(req)) {
        return UCS_PTR_STATUS(req);
    }
    *how = "completion";
    for (i = 0; i < npolls; i++) {
        st = poll_once(req, kind);
        early_polls++;
        if (st == UCS_INPROGRESS) {
            early_inflight++;
        } else if (!violates(seq, kind, req, st)) {
            goto done;
        }
    }
    deadline = fx_now_us() + 5000000ull;
    for (;;) {
        progress();
        st = poll_once(req, kind);
        if (st != UCS_INPROGRESS && !violates(seq, kind, req, st)) {
            break;
        }
        if (fx_now_us() > deadline) {
            ucp_request_cancel(kind == OP_RECV ? wb : wa, req);
            wait_own(req);
            *how = "timeout";
            st   = UCS_ERR_TIMED_OUT;
            break;
        }
    }
done:
    if (real_check(req) == UCS_INPROGRESS) {
        /* Told finished while in flight (a VIOLATION was printed, or
         * would have been): wait for libucp before freeing. */
        wait_own(req);
    }
    ucp_request_free(req);
    if (UCS_PTR_IS_PTR(sreq)) {
        wait_own(sreq);
        ucp_request_free(sreq);
    }
    return st;
}

static void closed_cb(void *req, ucs_status_t st, void *user)
{
    (void)req;
    (void)st;
    *(volatile int *)user = 1;
}

static void setup(void)
{
    ucp_params_t         p;
    ucp_worker_params_t  wp;
    ucp_mem_map_params_t mp;
    ucp_ep_params_t      epp;
    ucp_address_t       *addr;
    size_t               addr_len, rkey_len;
    void                *rkey_buf;

    setenv("UCX_TLS", "tcp", 0);
    setenv("UCX_NET_DEVICES", "lo", 0);
    memset(&p, 0, sizeof(p));
    p.field_mask = UCP_PARAM_FIELD_FEATURES;
    p.features   = UCP_FEATURE_RMA | UCP_FEATURE_TAG;
    FX_CHECK("ucp_init", ucp_init(&p, NULL, &ctx));
    memset(&wp, 0, sizeof(wp));
    wp.field_mask  = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    FX_CHECK("ucp_worker_create", ucp_worker_create(ctx, &wp, &wa));
    FX_CHECK("ucp_worker_create", ucp_worker_create(ctx, &wp, &wb));
    memset(&mp, 0, sizeof(mp));
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    mp.address    = rbuf;
    mp.length     = sizeof(rbuf);
    FX_CHECK("ucp_mem_map", ucp_mem_map(ctx, &mp, &memh));
    FX_CHECK("ucp_worker_get_address", ucp_worker_get_address(wb, &addr, &addr_len));
    memset(&epp, 0, sizeof(epp));
    epp.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
    epp.address    = addr;
    FX_CHECK("ucp_ep_create", ucp_ep_create(wa, &epp, &ep));
    ucp_worker_release_address(wb, addr);
    FX_CHECK("ucp_rkey_pack", ucp_rkey_pack(ctx, memh, &rkey_buf, &rkey_len));
    FX_CHECK("ucp_ep_rkey_unpack", ucp_ep_rkey_unpack(ep, rkey_buf, &rkey));
    ucp_rkey_buffer_release(rkey_buf);
}

static void teardown(void)
{
    ucp_request_param_t param;
    ucs_status_ptr_t    req;
    volatile int        closed = 0;
    uint64_t            deadline;

    ucp_rkey_destroy(rkey);
    memset(&param, 0, sizeof(param));
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    param.flags        = UCP_EP_CLOSE_FLAG_FORCE;
    param.cb.send      = closed_cb;
    param.user_data    = (void *)&closed;
    req                = ucp_ep_close_nbx(ep, &param);
    if (UCS_PTR_IS_PTR(req)) {
        deadline = fx_now_us() + 2000000ull;
        while (!closed && fx_now_us() < deadline) {
            progress();
        }
        ucp_request_free(req);
    }
    ucp_mem_unmap(ctx, memh);
    ucp_worker_destroy(wa);
    ucp_worker_destroy(wb);
    ucp_cleanup(ctx);
}

/* Waits, at most 30 s, until the file at path exists. */
static void wait_file(const char *path)
{
    uint64_t    deadline = fx_now_us() + 30000000ull;
    struct stat sb;

    while (stat(path, &sb) != 0 && fx_now_us() < deadline) {
        fx_sleep_ms(2);
    }
}

int main(int argc, char **argv)
{
    unsigned long ops, seq, maxpolls;
    unsigned      rnd;
    void         *libucp;

    if (argc < 3) {
        fprintf(stderr, "usage: polls OPS MAXPOLLS [GATE [HOLD]]\n");
        return 2;
    }
    ops      = strtoul(argv[1], NULL, 10);
    maxpolls = strtoul(argv[2], NULL, 10);
    libucp   = dlopen("libucp.so.0", RTLD_NOLOAD | RTLD_LAZY);
    if (libucp != NULL) {
        real_check = (check_fn)dlsym(libucp, "ucp_request_check_status");
        real_send  = (send_fn)dlsym(libucp, "ucp_tag_send_nbx");
    }
    if (real_check == NULL || real_send == NULL) {
        fprintf(stderr, "SETUP-ERROR finding libucp's own functions: %s\n", dlerror());
        return 3;
    }
    rnd = (unsigned)getpid() ^ (unsigned)fx_now_us();
    setup();
    printf("READY pid=%d\n", (int)getpid());
    fflush(stdout);
    if (argc > 3 && strcmp(argv[3], "-") != 0) {
        wait_file(argv[3]);
    }
    for (seq = 0; seq < ops; seq++) {
        const char  *how;
        unsigned     npolls = (unsigned)(rand_r(&rnd) % (maxpolls + 1));
        ucs_status_t st     = run_op(seq, npolls, &how);
        fx_print_op(0, seq, op_names[seq % OP_KINDS], 8, st, how);
    }
    printf("POLLS total=%lu early=%lu early_inflight=%lu\n", total_polls, early_polls, early_inflight);
    fflush(stdout);
    if (argc > 4) {
        wait_file(argv[4]);
    }
    teardown();
    printf("DONE\n");
    return 0;
}
