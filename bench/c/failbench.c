/*
 * failbench.c - time real endpoint failures: N endpoints to a peer process
 * over TCP, the peer SIGKILLed, every endpoint's error handler timed.
 *
 * Usage: failbench [-n ENDPOINTS]
 * Forks the peer before any UCX call (so no thread of UCX's is in the way
 * of fork), which writes its worker address into a pipe and progresses
 * until it is killed. The parent creates N endpoints to it with
 * UCP_ERR_HANDLING_MODE_PEER and an error handler, flushes each (the
 * connections are up), kills the peer and progresses until every handler
 * has run (at most 20 s). Prints
 *   pid=<pid> failed=<handlers> total_us=<kill to last handler> per_failure_us=<(last - first handler) / (handlers - 1)>
 * per_failure_us is the time libucp's failure path takes per endpoint
 * once the death is seen (the TCP detection comes once, before the first):
 * what a probe on that path adds to each failure shows there.
 * Sets UCX_TLS=tcp and UCX_NET_DEVICES=lo unless they are set.
 * Exit: 0, 2 on bad arguments, 3 when the set-up fails.
 */
#define _GNU_SOURCE
#include <ucp/api/ucp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_EPS 1024

static uint64_t handler_ns[MAX_EPS];
static int      handlers;

#define CHECK(what, st) do { ucs_status_t s_ = (st); if (s_ != UCS_OK) { \
    fprintf(stderr, "failbench: %s: %s\n", what, ucs_status_string(s_)); exit(3); } } while (0)

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void on_error(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    (void)arg;
    (void)ep;
    (void)status;
    if (handlers < MAX_EPS) {
        handler_ns[handlers] = now_ns();
    }
    handlers++;
}

static void init(ucp_context_h *ctx, ucp_worker_h *worker)
{
    ucp_params_t        p;
    ucp_worker_params_t wp;

    memset(&p, 0, sizeof(p));
    p.field_mask = UCP_PARAM_FIELD_FEATURES;
    p.features   = UCP_FEATURE_RMA;
    CHECK("ucp_init", ucp_init(&p, NULL, ctx));
    memset(&wp, 0, sizeof(wp));
    wp.field_mask  = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    CHECK("ucp_worker_create", ucp_worker_create(*ctx, &wp, worker));
}

static void peer(int fd)
{
    ucp_context_h  ctx;
    ucp_worker_h   worker;
    ucp_address_t *addr;
    size_t         len;

    init(&ctx, &worker);
    CHECK("ucp_worker_get_address", ucp_worker_get_address(worker, &addr, &len));
    if (write(fd, &len, sizeof(len)) != (ssize_t)sizeof(len) || write(fd, addr, len) != (ssize_t)len) {
        _exit(3);
    }
    close(fd);
    for (;;) {
        ucp_worker_progress(worker);
    }
}

static void wait_req(ucp_worker_h worker, void *req)
{
    if (req == NULL) {
        return;
    }
    if (UCS_PTR_IS_ERR(req)) {
        CHECK("flush", UCS_PTR_STATUS(req));
    }
    while (ucp_request_check_status(req) == UCS_INPROGRESS) {
        ucp_worker_progress(worker);
    }
    ucp_request_free(req);
}

int main(int argc, char **argv)
{
    ucp_context_h       ctx;
    ucp_worker_h        worker;
    ucp_ep_h            eps[MAX_EPS];
    ucp_ep_params_t     ep;
    ucp_request_param_t prm;
    size_t              len;
    void               *addr;
    int                 fds[2], n = 100, c, i;
    pid_t               child;
    uint64_t            t0, deadline;

    while ((c = getopt(argc, argv, "n:")) != -1) {
        if (c != 'n' || (n = atoi(optarg)) < 2 || n > MAX_EPS) {
            fprintf(stderr, "usage: failbench [-n ENDPOINTS (2..%d)]\n", MAX_EPS);
            return 2;
        }
    }
    setenv("UCX_TLS", "tcp", 0);
    setenv("UCX_NET_DEVICES", "lo", 0);
    if (pipe(fds) != 0) {
        return 3;
    }
    child = fork();
    if (child < 0) {
        return 3;
    }
    if (child == 0) {
        close(fds[0]);
        peer(fds[1]);
    }
    close(fds[1]);
    if (read(fds[0], &len, sizeof(len)) != (ssize_t)sizeof(len) || len == 0 || len > 65536 ||
        (addr = malloc(len)) == NULL || read(fds[0], addr, len) != (ssize_t)len) {
        fprintf(stderr, "failbench: reading the peer's address\n");
        kill(child, SIGKILL);
        return 3;
    }
    init(&ctx, &worker);
    memset(&prm, 0, sizeof(prm));
    for (i = 0; i < n; i++) {
        memset(&ep, 0, sizeof(ep));
        ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                        UCP_EP_PARAM_FIELD_ERR_HANDLER;
        ep.address         = addr;
        ep.err_mode        = UCP_ERR_HANDLING_MODE_PEER;
        ep.err_handler.cb  = on_error;
        ep.err_handler.arg = NULL;
        CHECK("ucp_ep_create", ucp_ep_create(worker, &ep, &eps[i]));
        wait_req(worker, ucp_ep_flush_nbx(eps[i], &prm));
    }
    t0 = now_ns();
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    deadline = t0 + 20000000000ull;
    while (handlers < n && now_ns() < deadline) {
        ucp_worker_progress(worker);
    }
    if (handlers < 2) {
        printf("pid=%d failed=%d total_us=0 per_failure_us=0\n", (int)getpid(), handlers);
    } else {
        int last = handlers < MAX_EPS ? handlers - 1 : MAX_EPS - 1;
        printf("pid=%d failed=%d total_us=%.1f per_failure_us=%.2f\n", (int)getpid(), handlers, (handler_ns[last] - t0) / 1e3,
               (handler_ns[last] - handler_ns[0]) / 1e3 / last);
    }
    prm.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    prm.flags        = UCP_EP_CLOSE_FLAG_FORCE;
    for (i = 0; i < n; i++) {
        wait_req(worker, ucp_ep_close_nbx(eps[i], &prm));
    }
    ucp_worker_destroy(worker);
    ucp_cleanup(ctx);
    free(addr);
    return handlers == n ? 0 : 1;
}
