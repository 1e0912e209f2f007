/*
 * cbargs: which pointer each application callback receives.
 *
 *   cbargs arg|user_data|both
 *
 * Creates an endpoint to its own worker with UCP_ERR_HANDLING_MODE_PEER and
 * an error handler, setting err_handler.arg only (arg), ucp_ep_params_t's
 * user_data only (user_data; err_handler.arg stays NULL, as in UCX's
 * ucp_hello_world.c), or both. Then a tag receive is posted and a message
 * sent to it, each with a callback: the receive with user_data in its mask,
 * the send without (its user_data field holds a pointer UCX must not pass).
 * Prints one line per callback:
 *
 *   RECVCB user_data=<who> status=<int>
 *   SENDCB user_data=<who> status=<int>
 *   READY
 *   EPERR arg=<who> status=<int>
 *
 * where <who> is arg, user_data, unset (the pointer left in a field whose
 * mask bit is clear), null or other. After READY it progresses until the
 * error handler runs (kill-ep), at most 60 s, prints DONE, and waits for
 * SIGINT or SIGTERM (at most 60 s more) to exit 0, so that the process is
 * still there to answer the kill-ep request.
 */
#include "fixture.h"

#include <signal.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

#define CB_MSG (256 * 1024) /* rendezvous: both operations return a request */

static int tok_arg, tok_user, tok_unset;
static volatile int ep_failed, sent, received;

static const char *who(void *p)
{
    if (p == &tok_arg) {
        return "arg";
    }
    if (p == &tok_user) {
        return "user_data";
    }
    if (p == &tok_unset) {
        return "unset";
    }
    return p == NULL ? "null" : "other";
}

static void on_error(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    (void)ep;
    printf("EPERR arg=%s status=%d\n", who(arg), (int)status);
    fflush(stdout);
    ep_failed = 1;
}

static void on_send(void *request, ucs_status_t status, void *user_data)
{
    (void)request;
    printf("SENDCB user_data=%s status=%d\n", who(user_data), (int)status);
    fflush(stdout);
    sent = 1;
}

static void on_recv(void *request, ucs_status_t status, const ucp_tag_recv_info_t *info, void *user_data)
{
    (void)request;
    (void)info;
    printf("RECVCB user_data=%s status=%d\n", who(user_data), (int)status);
    fflush(stdout);
    received = 1;
}

static void wait_req(ucp_worker_h w, ucs_status_ptr_t req, volatile int *flag, const char *what)
{
    uint64_t deadline = fx_now_us() + 10000000ull;

    if (req == NULL) {
        printf("%s completed at once (no callback)\n", what);
        return;
    }
    if (UCS_PTR_IS_ERR(req)) {
        printf("%s failed at once: %d\n", what, (int)UCS_PTR_STATUS(req));
        return;
    }
    while (!*flag && fx_now_us() < deadline) {
        ucp_worker_progress(w);
    }
    ucp_request_free(req);
}

int main(int argc, char **argv)
{
    ucp_params_t        p;
    ucp_worker_params_t wp;
    ucp_ep_params_t     ep;
    ucp_request_param_t sp, rp;
    ucp_context_h       ctx;
    ucp_worker_h        worker;
    ucp_address_t      *addr;
    size_t              addr_len;
    ucp_ep_h            e;
    ucs_status_ptr_t    rreq, sreq;
    char               *sbuf, *rbuf;
    uint64_t            deadline;

    if (argc != 2 || (strcmp(argv[1], "arg") && strcmp(argv[1], "user_data") && strcmp(argv[1], "both"))) {
        fprintf(stderr, "usage: cbargs arg|user_data|both\n");
        return 2;
    }
    memset(&p, 0, sizeof(p));
    p.field_mask = UCP_PARAM_FIELD_FEATURES;
    p.features   = UCP_FEATURE_TAG;
    FX_CHECK("ucp_init", ucp_init(&p, NULL, &ctx));
    memset(&wp, 0, sizeof(wp));
    FX_CHECK("ucp_worker_create", ucp_worker_create(ctx, &wp, &worker));
    FX_CHECK("ucp_worker_get_address", ucp_worker_get_address(worker, &addr, &addr_len));

    memset(&ep, 0, sizeof(ep));
    ep.field_mask     = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                        UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.address        = addr;
    ep.err_mode       = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb = on_error;
    if (!strcmp(argv[1], "arg")) {
        ep.err_handler.arg = &tok_arg;
        ep.user_data       = &tok_unset; /* its mask bit is clear */
    } else if (!strcmp(argv[1], "user_data")) {
        ep.field_mask |= UCP_EP_PARAM_FIELD_USER_DATA;
        ep.user_data   = &tok_user;
    } else {
        ep.field_mask     |= UCP_EP_PARAM_FIELD_USER_DATA;
        ep.err_handler.arg = &tok_arg;
        ep.user_data       = &tok_user;
    }
    FX_CHECK("ucp_ep_create", ucp_ep_create(worker, &ep, &e));

    sbuf = calloc(1, CB_MSG);
    rbuf = calloc(1, CB_MSG);
    if (sbuf == NULL || rbuf == NULL) {
        fx_die("calloc", UCS_ERR_NO_MEMORY);
    }
    memset(&rp, 0, sizeof(rp));
    rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    rp.cb.recv      = on_recv;
    rp.user_data    = &tok_user;
    rreq            = ucp_tag_recv_nbx(worker, rbuf, CB_MSG, 7, ~0ull, &rp);

    memset(&sp, 0, sizeof(sp));
    sp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK; /* no USER_DATA: UCX passes NULL */
    sp.cb.send      = on_send;
    sp.user_data    = &tok_unset;
    sreq            = ucp_tag_send_nbx(e, sbuf, CB_MSG, 7, &sp);
    wait_req(worker, sreq, &sent, "send");
    wait_req(worker, rreq, &received, "receive");

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    printf("READY pid=%d\n", (int)getpid());
    fflush(stdout);
    deadline = fx_now_us() + 60000000ull;
    while (!ep_failed && fx_now_us() < deadline) {
        ucp_worker_progress(worker);
        if (!ep_failed) {
            fx_sleep_ms(1);
        }
    }
    printf("DONE failed=%d\n", ep_failed);
    fflush(stdout);
    deadline = fx_now_us() + 60000000ull;
    while (!stop && fx_now_us() < deadline) {
        fx_sleep_ms(10);
    }
    return 0;
}
