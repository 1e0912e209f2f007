/*
 * burst: a tight burst of ucp_request_check_status calls, for an observer
 * whose ring buffer must overflow.
 *
 *   burst
 *
 * Posts a tag receive that nothing matches (a request that stays in
 * progress), prints READY, then for each line "N" read on stdin calls
 * ucp_request_check_status on it N times in a row and prints
 * "BURST calls=<N> total=<all so far>". At EOF it cancels the receive
 * (completion is seen through the receive callback, not by polling, so
 * that the number of check_status calls stays exactly what was printed),
 * tears down and exits 0.
 */
#include "fixture.h"

#include <unistd.h>

static volatile int recv_done;

static void on_recv(void *req, ucs_status_t st, const ucp_tag_recv_info_t *info, void *user)
{
    (void)req;
    (void)st;
    (void)info;
    (void)user;
    recv_done = 1;
}

int main(void)
{
    struct fx           f;
    ucp_request_param_t param;
    ucs_status_ptr_t    req;
    char                line[64], buf[8];
    unsigned long       n, i, total = 0, inprogress = 0;
    uint64_t            deadline;

    setvbuf(stdout, NULL, _IOLBF, 0);
    fx_setup(&f, UCS_THREAD_MODE_SINGLE, UCP_FEATURE_TAG);
    memset(&param, 0, sizeof(param));
    param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK;
    param.cb.recv      = on_recv;
    req = ucp_tag_recv_nbx(f.worker, buf, sizeof(buf), 0xdead, (ucp_tag_t)-1, &param);
    if (!UCS_PTR_IS_PTR(req)) {
        fx_die("ucp_tag_recv_nbx", UCS_PTR_STATUS(req));
    }
    printf("READY pid=%d\n", (int)getpid());
    while (fgets(line, sizeof(line), stdin) != NULL) {
        n = strtoul(line, NULL, 10);
        for (i = 0; i < n; i++) {
            if (ucp_request_check_status(req) == UCS_INPROGRESS) {
                inprogress++;
            }
        }
        total += n;
        printf("BURST calls=%lu total=%lu inprogress=%lu\n", n, total, inprogress);
    }
    ucp_request_cancel(f.worker, req);
    deadline = fx_now_us() + 5000000ull;
    while (!recv_done && fx_now_us() < deadline) {
        ucp_worker_progress(f.worker);
    }
    ucp_request_free(req);
    fx_teardown(&f);
    printf("DONE total=%lu\n", total);
    return 0;
}
