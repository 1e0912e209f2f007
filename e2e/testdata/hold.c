/*
 * hold: requests whose completion a rule holds (delay-completion=, hang).
 * Self endpoint over real libucp; every wait is bounded. Modes:
 *
 *   get N          N 8-byte ucp_get_nbx, each polled with progress and
 *                  ucp_request_check_status; us= is the time from the call
 *                  to the completion the program saw.
 *   tagrecv        a ucp_tag_recv_nbx with a callback, then the matching
 *                  send; one second of progress (HELD line: whether the
 *                  callback ran and what a poll said), then
 *                  ucp_request_cancel and progress until the callback.
 *   close MODE     a ucp_get_nbx with a callback, 200 ms of progress, then
 *                  ucp_ep_close_nbx (MODE force or flush) and progress until
 *                  the get's callback.
 *   kill           a ucp_get_nbx with a callback, 200 ms of progress, then
 *                  progress (at most 20 s) until its callback, while a test
 *                  kills the endpoint with `ucxfault kill-ep 0`.
 *   free           a ucp_get_nbx with a callback, 200 ms of progress, then
 *                  ucp_request_free, 200 ms more: the callback must not run.
 *
 * OP lines as fixture.h prints them, with how=poll|callback|none.
 */
#include "fixture.h"

#include <unistd.h>

struct cb {
    volatile int fired;
    volatile ucs_status_t status;
    uint64_t at_us;
};

static void send_cb(void *req, ucs_status_t st, void *user)
{
    struct cb *c = user;
    (void)req;
    c->status = st;
    c->at_us  = fx_now_us();
    c->fired  = 1;
}

static void recv_cb(void *req, ucs_status_t st, const ucp_tag_recv_info_t *info, void *user)
{
    (void)info;
    send_cb(req, st, user);
}

static void op_line(unsigned long seq, const char *fn, ucs_status_t st, const char *how, uint64_t us)
{
    char name[64];
    size_t i;

    snprintf(name, sizeof(name), "%s", st == UCS_INPROGRESS ? "in_progress" : ucs_status_string(st));
    for (i = 0; name[i] != '\0'; i++) {
        if (name[i] == ' ') {
            name[i] = '_';
        }
    }
    printf("OP thread=0 seq=%lu iter=%lu fn=%s size=8 status=%d name=%s how=%s us=%llu\n", seq, seq, fn,
           (int)st, name, how, (unsigned long long)us);
}

static void progress_for(struct fx *f, unsigned ms, struct cb *stop)
{
    uint64_t end = fx_now_us() + (uint64_t)ms * 1000;
    while (fx_now_us() < end && (stop == NULL || !stop->fired)) {
        ucp_worker_progress(f->worker);
    }
}

static void *get_cb(struct fx *f, struct cb *c)
{
    ucp_request_param_t p;

    memset(&p, 0, sizeof(p));
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.send      = send_cb;
    p.user_data    = c;
    return ucp_get_nbx(f->ep, f->lbuf, 8, (uint64_t)(uintptr_t)f->rbuf, f->rkey, &p);
}

static int mode_get(struct fx *f, int n)
{
    int i;

    for (i = 0; i < n; i++) {
        ucp_request_param_t p;
        uint64_t t0 = fx_now_us(), deadline = t0 + 5000000ull;
        ucs_status_t st = UCS_OK;
        const char *how = "immediate";
        void *req;

        memset(&p, 0, sizeof(p));
        req = ucp_get_nbx(f->ep, f->lbuf, 8, (uint64_t)(uintptr_t)f->rbuf, f->rkey, &p);
        if (UCS_PTR_IS_ERR(req)) {
            st = UCS_PTR_STATUS(req);
        } else if (req != NULL) {
            how = "poll";
            while ((st = ucp_request_check_status(req)) == UCS_INPROGRESS && fx_now_us() < deadline) {
                ucp_worker_progress(f->worker);
            }
            if (st == UCS_INPROGRESS) {
                how = "timeout";
            }
            ucp_request_free(req);
        }
        op_line((unsigned long)i, "get", st, how, fx_now_us() - t0);
    }
    return 0;
}

static int mode_tagrecv(struct fx *f)
{
    ucp_request_param_t p;
    struct cb rc = {0}, sc = {0};
    uint64_t msg = 42, in = 0, t0;
    void *rreq, *sreq;
    ucs_status_t polled;

    memset(&p, 0, sizeof(p));
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.recv      = recv_cb;
    p.user_data    = &rc;
    t0             = fx_now_us();
    rreq           = ucp_tag_recv_nbx(f->worker, &in, sizeof(in), 7, (ucp_tag_t)-1, &p);
    if (UCS_PTR_IS_ERR(rreq)) {
        op_line(0, "tag_recv", UCS_PTR_STATUS(rreq), "immediate", 0);
        return 0;
    }
    memset(&p, 0, sizeof(p));
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.send      = send_cb;
    p.user_data    = &sc;
    sreq           = ucp_tag_send_nbx(f->ep, &msg, sizeof(msg), 7, &p);
    progress_for(f, 1000, NULL);
    polled = rreq != NULL ? ucp_request_check_status(rreq) : UCS_OK;
    printf("HELD cb=%d poll=%d data=%llu send_cb=%d\n", rc.fired, (int)polled, (unsigned long long)in,
           sc.fired || sreq == NULL);
    if (rreq != NULL) {
        ucp_request_cancel(f->worker, rreq);
        progress_for(f, 5000, &rc);
        op_line(0, "tag_recv", rc.fired ? rc.status : UCS_INPROGRESS, rc.fired ? "callback" : "timeout",
                fx_now_us() - t0);
        printf("POLL after=%d\n", (int)ucp_request_check_status(rreq));
        ucp_request_free(rreq);
    }
    if (UCS_PTR_IS_PTR(sreq)) {
        progress_for(f, 2000, &sc);
        ucp_request_free(sreq);
    }
    return 0;
}

static int mode_close(struct fx *f, int force)
{
    ucp_request_param_t p;
    struct cb gc = {0}, cc = {0};
    uint64_t t0 = fx_now_us();
    void *req = get_cb(f, &gc), *creq;

    if (!UCS_PTR_IS_PTR(req)) {
        op_line(0, "get", UCS_PTR_STATUS(req), "immediate", 0);
        return 0;
    }
    progress_for(f, 200, NULL);
    printf("HELD cb=%d poll=%d\n", gc.fired, (int)ucp_request_check_status(req));
    ucp_rkey_destroy(f->rkey);
    f->rkey = NULL;
    memset(&p, 0, sizeof(p));
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.flags        = force ? UCP_EP_CLOSE_FLAG_FORCE : 0;
    p.cb.send      = send_cb;
    p.user_data    = &cc;
    creq           = ucp_ep_close_nbx(f->ep, &p);
    f->ep          = NULL;
    progress_for(f, 5000, &gc);
    op_line(0, "get", gc.fired ? gc.status : UCS_INPROGRESS, gc.fired ? "callback" : "timeout", fx_now_us() - t0);
    ucp_request_free(req);
    if (UCS_PTR_IS_PTR(creq)) {
        progress_for(f, 2000, &cc);
        ucp_request_free(creq);
    }
    return 0;
}

static int mode_kill(struct fx *f)
{
    struct cb gc = {0};
    uint64_t t0 = fx_now_us();
    void *req = get_cb(f, &gc);

    if (!UCS_PTR_IS_PTR(req)) {
        op_line(0, "get", UCS_PTR_STATUS(req), "immediate", 0);
        return 0;
    }
    progress_for(f, 200, NULL);
    printf("HELD cb=%d poll=%d\n", gc.fired, (int)ucp_request_check_status(req));
    progress_for(f, 20000, &gc); /* meanwhile: ucxfault kill-ep 0 */
    op_line(0, "get", gc.fired ? gc.status : UCS_INPROGRESS, gc.fired ? "callback" : "timeout", fx_now_us() - t0);
    ucp_request_free(req);
    return 0;
}

static int mode_free(struct fx *f)
{
    struct cb gc = {0};
    void *req = get_cb(f, &gc);

    if (!UCS_PTR_IS_PTR(req)) {
        op_line(0, "get", UCS_PTR_STATUS(req), "immediate", 0);
        return 0;
    }
    progress_for(f, 200, NULL);
    printf("HELD cb=%d\n", gc.fired);
    ucp_request_free(req);
    progress_for(f, 200, NULL);
    printf("FREED cb=%d\n", gc.fired);
    return 0;
}

int main(int argc, char **argv)
{
    struct fx f;
    int rc = 2;

    if (argc < 2) {
        fprintf(stderr, "usage: hold get N | tagrecv | close force|flush | kill | free\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    fx_setup(&f, UCS_THREAD_MODE_SINGLE, UCP_FEATURE_TAG);
    printf("READY pid=%d\n", (int)getpid());
    if (strcmp(argv[1], "get") == 0 && argc > 2) {
        rc = mode_get(&f, atoi(argv[2]));
    } else if (strcmp(argv[1], "tagrecv") == 0) {
        rc = mode_tagrecv(&f);
    } else if (strcmp(argv[1], "close") == 0 && argc > 2) {
        rc = mode_close(&f, strcmp(argv[2], "force") == 0);
    } else if (strcmp(argv[1], "kill") == 0) {
        rc = mode_kill(&f);
    } else if (strcmp(argv[1], "free") == 0) {
        rc = mode_free(&f);
    }
    fx_teardown(&f);
    printf("DONE\n");
    return rc;
}
