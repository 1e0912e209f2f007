/*
 * rma.c - UCX RMA workload for ucxfault.
 *
 * Issues a configurable sequence of UCP RMA operations (put/get via the nbx
 * and nbi APIs, endpoint flush) and prints one line per operation describing
 * exactly what the program observed (return value, completion status, how the
 * status was learned).  It is meant to be run under the ucxfault LD_PRELOAD
 * injector: every error is reported and the program carries on with the next
 * operation; waiting for a request is always bounded.
 *
 * Build:
 *   gcc -O2 -g -Wall -Wextra -Werror -o rma rma.c -lucp -lucs -lpthread
 *
 * See README.md in this directory for options and the output format.
 */
#define _GNU_SOURCE
#include <ucp/api/ucp.h>

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE        2
#define EXIT_SETUP        3
#define MAX_SEQ           64
#define MIN_BUF           4096
#define MAX_SIZE          (1UL << 30)
#define CLOSE_TIMEOUT_US  (2 * 1000 * 1000ULL)
#define KILL_SETTLE_US    (200 * 1000ULL)
#define PEER_EXIT_US      (2 * 1000 * 1000ULL)

enum op_kind { OP_PUT, OP_GET, OP_FLUSH, OP_PUTNBI, OP_GETNBI, OP_LAST };

static const char *op_names[OP_LAST] = {
    "put", "get", "flush", "putnbi", "getnbi"
};

static struct {
    unsigned long ops;
    int           seq[MAX_SEQ];
    int           nseq;
    size_t        size;
    int           tcp;
    long          kill_at;
    int           callback;
    unsigned long op_timeout_ms;
    int           threads;
    unsigned long interval_us;
    unsigned long hold_us;
    int           app_request; /* supply request memory (UCP_OP_ATTR_FIELD_REQUEST) */
    unsigned long print_every;
    int           quiet;
    unsigned long linger_ms;
    int           peer_fd; /* internal: this process is the tcp peer */
    unsigned long wait_ms;
} cfg;

struct thread_state {
    int             id;
    pthread_t       tid;
    ucp_worker_h    worker;
    ucp_address_t  *addr;
    size_t          addr_len;
    ucp_ep_h        ep;
    ucp_mem_h       memh;      /* self: the mapped "remote" buffer */
    void           *rbuf;
    uint64_t        remote_addr;
    ucp_rkey_h      rkey;
    void           *lbuf;      /* local source/destination buffer */
    size_t          buf_len;
    volatile int    ep_failed; /* set by the error handler */
    int             peer_mode; /* ep created with UCP_ERR_HANDLING_MODE_PEER */
    int             had_error; /* any operation on the ep failed */
    unsigned long   ops, ok, failed;
    void           *app_req;   /* --app-request: this thread's one request */
    const char     *setup_what;
    ucs_status_t    setup_status;
};

/* completion context for --completion callback */
struct cb_ctx {
    volatile int  done;
    ucs_status_t  status;
    int           abandoned; /* timed out: the callback owns and frees it */
};

/* message sent by the tcp peer over the socketpair */
struct peer_hello {
    int32_t  status;
    char     what[60];
    uint64_t addr_len;
    uint64_t remote_addr;
    uint64_t rkey_len;
};

static volatile sig_atomic_t g_stop;
/* Set by SIGUSR1: ends --wait-before-start-ms early, so a test can start the
 * operations as soon as its observer has attached instead of guessing how
 * long attaching takes on a loaded machine. */
static volatile sig_atomic_t g_go;

static void on_go(int sig)
{
    (void)sig;
    g_go = 1;
}
static ucp_context_h         g_context;
static size_t                g_request_size; /* UCP's part of a request */
static pid_t                 g_child_pid = -1;
static int                   g_child_alive;
static int                   g_peer_fd = -1;
static int                   g_setup_failed;
static pthread_barrier_t     g_bar_setup, g_bar_go;

/* ------------------------------------------------------------------------ */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000;
}

/* sleep, returning early if a stop signal arrived */
static void sleep_us(uint64_t us)
{
    struct timespec req, rem;

    req.tv_sec  = (time_t)(us / 1000000ULL);
    req.tv_nsec = (long)((us % 1000000ULL) * 1000);
    while (nanosleep(&req, &rem) != 0 && errno == EINTR && !g_stop) {
        req = rem;
    }
}

/* The sleep after READY: until MS ms have passed, SIGUSR1 or a stop. It
 * sleeps in 5 ms slices: the signal may be taken by another thread (UCX's
 * async thread, the example's own), which does not interrupt this sleep. */
static void wait_before_start(unsigned long ms)
{
    unsigned long slept;

    for (slept = 0; slept < ms && !g_go && !g_stop; slept += 5) {
        sleep_us(ms - slept < 5 ? (ms - slept) * 1000ULL : 5000ULL);
    }
}

static void status_name(ucs_status_t status, char *buf, size_t len)
{
    const char *s = ucs_status_string(status);
    size_t i;

    if (s == NULL) {
        s = "unknown";
    }
    snprintf(buf, len, "%s", s);
    for (i = 0; buf[i] != '\0'; i++) {
        if (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n') {
            buf[i] = '_';
        }
    }
}

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static int write_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p   += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_full(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        if (n == 0) {
            return -1; /* EOF */
        }
        p   += n;
        len -= (size_t)n;
    }
    return 0;
}

static size_t buf_len_for(size_t size)
{
    size_t len = size < MIN_BUF ? MIN_BUF : size;
    return (len + MIN_BUF - 1) & ~((size_t)MIN_BUF - 1);
}

static void *alloc_buf(size_t len)
{
    void *p = NULL;
    if (posix_memalign(&p, MIN_BUF, len) != 0) {
        return NULL;
    }
    memset(p, 0x5a, len);
    return p;
}

static ucs_status_t map_buffer(ucp_context_h ctx, void *buf, size_t len,
                               ucp_mem_h *memh)
{
    ucp_mem_map_params_t mp;

    memset(&mp, 0, sizeof(mp));
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS |
                    UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    mp.address    = buf;
    mp.length     = len;
    return ucp_mem_map(ctx, &mp, memh);
}

static ucs_status_t create_worker(ucp_context_h ctx, ucp_worker_h *worker)
{
    ucp_worker_params_t wp;

    memset(&wp, 0, sizeof(wp));
    wp.field_mask  = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    return ucp_worker_create(ctx, &wp, worker);
}

static ucs_status_t create_context(int shared_workers, ucp_context_h *ctx)
{
    ucp_params_t p;

    memset(&p, 0, sizeof(p));
    p.field_mask = UCP_PARAM_FIELD_FEATURES;
    p.features   = UCP_FEATURE_RMA;
    if (shared_workers) {
        p.field_mask        |= UCP_PARAM_FIELD_MT_WORKERS_SHARED;
        p.mt_workers_shared  = 1;
    }
    return ucp_init(&p, NULL, ctx);
}

/* ------------------------------------------------------------------------ */
/* tcp peer (child process)                                                 */

static void peer_fail(int fd, const char *what, ucs_status_t status)
{
    struct peer_hello h;

    memset(&h, 0, sizeof(h));
    h.status = status;
    snprintf(h.what, sizeof(h.what), "peer %s", what);
    (void)write_full(fd, &h, sizeof(h));
    close(fd);
    _exit(EXIT_SETUP);
}

static void run_peer(int fd)
{
    ucp_context_h   ctx    = NULL;
    ucp_worker_h    worker = NULL;
    ucp_mem_h       memh   = NULL;
    ucp_address_t  *addr   = NULL;
    size_t          addr_len;
    void           *rkey_buf = NULL;
    size_t          rkey_len;
    size_t          len = buf_len_for(cfg.size);
    void           *buf;
    struct peer_hello h;
    ucs_status_t    status;
    unsigned        spins = 0;

    /* the parent decides when we stop: ignore terminal/timeout signals */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);

    status = create_context(0, &ctx);
    if (status != UCS_OK) {
        peer_fail(fd, "ucp_init", status);
    }
    status = create_worker(ctx, &worker);
    if (status != UCS_OK) {
        peer_fail(fd, "ucp_worker_create", status);
    }
    buf = alloc_buf(len);
    if (buf == NULL) {
        peer_fail(fd, "malloc", UCS_ERR_NO_MEMORY);
    }
    status = map_buffer(ctx, buf, len, &memh);
    if (status != UCS_OK) {
        peer_fail(fd, "ucp_mem_map", status);
    }
    status = ucp_rkey_pack(ctx, memh, &rkey_buf, &rkey_len);
    if (status != UCS_OK) {
        peer_fail(fd, "ucp_rkey_pack", status);
    }
    status = ucp_worker_get_address(worker, &addr, &addr_len);
    if (status != UCS_OK) {
        peer_fail(fd, "ucp_worker_get_address", status);
    }

    memset(&h, 0, sizeof(h));
    h.status      = UCS_OK;
    h.addr_len    = addr_len;
    h.remote_addr = (uint64_t)(uintptr_t)buf;
    h.rkey_len    = rkey_len;
    if (write_full(fd, &h, sizeof(h)) != 0 ||
        write_full(fd, addr, addr_len) != 0 ||
        write_full(fd, rkey_buf, rkey_len) != 0) {
        _exit(EXIT_SETUP);
    }
    ucp_rkey_buffer_release(rkey_buf);

    /* serve until the parent writes "stop" or closes the socket */
    for (;;) {
        unsigned n = ucp_worker_progress(worker);
        if (n == 0 || (++spins & 63) == 0) {
            struct pollfd pfd = { .fd = fd, .events = POLLIN, .revents = 0 };
            if (poll(&pfd, 1, 0) > 0) {
                break; /* "stop", EOF or error: all mean stop */
            }
        }
    }

    close(fd);
    ucp_worker_release_address(worker, addr);
    ucp_worker_destroy(worker);
    ucp_mem_unmap(ctx, memh);
    ucp_cleanup(ctx);
    free(buf);
    _exit(0);
}

static void stop_peer(void)
{
    uint64_t deadline;
    int      st;

    if (g_peer_fd >= 0) {
        (void)write_full(g_peer_fd, "stop", 4);
        close(g_peer_fd);
        g_peer_fd = -1;
    }
    if (!g_child_alive) {
        return;
    }
    deadline = now_us() + PEER_EXIT_US;
    for (;;) {
        pid_t r = waitpid(g_child_pid, &st, WNOHANG);
        if (r == g_child_pid || (r < 0 && errno != EINTR)) {
            break;
        }
        if (now_us() >= deadline) {
            fprintf(stderr, "peer pid=%d did not exit, killing it\n",
                    (int)g_child_pid);
            kill(g_child_pid, SIGKILL);
            while (waitpid(g_child_pid, &st, 0) < 0 && errno == EINTR) {
            }
            break;
        }
        sleep_us(1000);
    }
    g_child_alive = 0;
}

/* ------------------------------------------------------------------------ */
/* endpoint setup / teardown                                                */

static void ep_err_handler(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    struct thread_state *ts = arg;
    char name[128];

    (void)ep;
    ts->ep_failed = 1;
    if (!cfg.quiet) {
        status_name(status, name, sizeof(name));
        printf("EPERR thread=%d status=%d name=%s\n", ts->id, (int)status,
               name);
    }
}

#define SETUP_CHECK(_ts, _what, _expr) \
    do { \
        ucs_status_t _st = (_expr); \
        if (_st != UCS_OK) { \
            (_ts)->setup_what   = (_what); \
            (_ts)->setup_status = _st; \
            return _st; \
        } \
    } while (0)

static ucs_status_t setup_common(struct thread_state *ts)
{
    SETUP_CHECK(ts, "ucp_worker_create", create_worker(g_context, &ts->worker));
    ts->buf_len = buf_len_for(cfg.size);
    ts->lbuf    = alloc_buf(ts->buf_len);
    if (ts->lbuf == NULL) {
        SETUP_CHECK(ts, "malloc", UCS_ERR_NO_MEMORY);
    }
    return UCS_OK;
}

static ucs_status_t setup_self(struct thread_state *ts)
{
    ucp_ep_params_t ep_params;
    void   *rkey_buf;
    size_t  rkey_len;
    ucs_status_t status;

    status = setup_common(ts);
    if (status != UCS_OK) {
        return status;
    }
    ts->rbuf = alloc_buf(ts->buf_len);
    if (ts->rbuf == NULL) {
        SETUP_CHECK(ts, "malloc", UCS_ERR_NO_MEMORY);
    }
    SETUP_CHECK(ts, "ucp_mem_map",
                map_buffer(g_context, ts->rbuf, ts->buf_len, &ts->memh));
    ts->remote_addr = (uint64_t)(uintptr_t)ts->rbuf;
    SETUP_CHECK(ts, "ucp_worker_get_address",
                ucp_worker_get_address(ts->worker, &ts->addr, &ts->addr_len));

    memset(&ep_params, 0, sizeof(ep_params));
    ep_params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
    ep_params.address    = ts->addr;
    SETUP_CHECK(ts, "ucp_ep_create",
                ucp_ep_create(ts->worker, &ep_params, &ts->ep));

    SETUP_CHECK(ts, "ucp_rkey_pack",
                ucp_rkey_pack(g_context, ts->memh, &rkey_buf, &rkey_len));
    status = ucp_ep_rkey_unpack(ts->ep, rkey_buf, &ts->rkey);
    ucp_rkey_buffer_release(rkey_buf);
    SETUP_CHECK(ts, "ucp_ep_rkey_unpack", status);
    return UCS_OK;
}

static ucs_status_t setup_tcp(struct thread_state *ts)
{
    struct peer_hello h;
    ucp_ep_params_t   ep_params;
    ucp_address_t    *peer_addr = NULL;
    void             *rkey_buf  = NULL;
    ucs_status_t      status;

    status = setup_common(ts);
    if (status != UCS_OK) {
        return status;
    }

    if (read_full(g_peer_fd, &h, sizeof(h)) != 0) {
        SETUP_CHECK(ts, "peer handshake", UCS_ERR_IO_ERROR);
    }
    if (h.status != UCS_OK) {
        static char what[sizeof(h.what) + 1];
        memcpy(what, h.what, sizeof(h.what));
        what[sizeof(h.what)] = '\0';
        SETUP_CHECK(ts, what, (ucs_status_t)h.status);
    }
    if (h.addr_len == 0 || h.addr_len > (1 << 20) || h.rkey_len == 0 ||
        h.rkey_len > (1 << 20)) {
        SETUP_CHECK(ts, "peer handshake", UCS_ERR_INVALID_PARAM);
    }
    peer_addr = malloc(h.addr_len);
    rkey_buf  = malloc(h.rkey_len);
    if (peer_addr == NULL || rkey_buf == NULL) {
        free(peer_addr);
        free(rkey_buf);
        SETUP_CHECK(ts, "malloc", UCS_ERR_NO_MEMORY);
    }
    if (read_full(g_peer_fd, peer_addr, h.addr_len) != 0 ||
        read_full(g_peer_fd, rkey_buf, h.rkey_len) != 0) {
        free(peer_addr);
        free(rkey_buf);
        SETUP_CHECK(ts, "peer handshake", UCS_ERR_IO_ERROR);
    }
    ts->remote_addr = h.remote_addr;

    memset(&ep_params, 0, sizeof(ep_params));
    ep_params.field_mask      = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS |
                                UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                                UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep_params.address         = peer_addr;
    ep_params.err_mode        = UCP_ERR_HANDLING_MODE_PEER;
    ep_params.err_handler.cb  = ep_err_handler;
    ep_params.err_handler.arg = ts;
    status = ucp_ep_create(ts->worker, &ep_params, &ts->ep);
    free(peer_addr);
    ts->peer_mode = (status == UCS_OK);
    if (status != UCS_OK) {
        free(rkey_buf);
        SETUP_CHECK(ts, "ucp_ep_create", status);
    }
    status = ucp_ep_rkey_unpack(ts->ep, rkey_buf, &ts->rkey);
    free(rkey_buf);
    SETUP_CHECK(ts, "ucp_ep_rkey_unpack", status);
    return UCS_OK;
}

static void close_ep(struct thread_state *ts)
{
    ucp_request_param_t param;
    ucs_status_ptr_t    req;
    uint64_t            deadline;

    if (ts->ep == NULL) {
        return;
    }
    /* UCP_EP_CLOSE_FLAG_FORCE needs UCP_ERR_HANDLING_MODE_PEER (ucp.h:
     * undefined behaviour otherwise): UCX 1.22 aborts in
     * ucp_worker_destroy (ucs_arbiter_group_cleanup, an assertion kept in
     * release builds) after a forced close of a self endpoint with a
     * ucp_get_nbi still in flight, which 1.13 never has. A self endpoint
     * closes in flush mode whatever its operations returned. */
    memset(&param, 0, sizeof(param));
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags        = (ts->peer_mode && (ts->had_error || ts->ep_failed)) ?
                         UCP_EP_CLOSE_FLAG_FORCE : 0;
    req = ucp_ep_close_nbx(ts->ep, &param);
    if (UCS_PTR_IS_PTR(req)) {
        deadline = now_us() + CLOSE_TIMEOUT_US;
        for (;;) {
            ucp_worker_progress(ts->worker);
            if (ucp_request_check_status(req) != UCS_INPROGRESS) {
                break;
            }
            if (now_us() >= deadline) {
                fprintf(stderr, "thread %d: ucp_ep_close_nbx did not complete "
                        "within 2 s\n", ts->id);
                break;
            }
        }
        ucp_request_free(req);
    }
    ts->ep = NULL;
}

static void teardown(struct thread_state *ts)
{
    close_ep(ts);
    if (ts->app_req != NULL) {
        free((char *)ts->app_req - g_request_size);
        ts->app_req = NULL;
    }
    if (ts->rkey != NULL) {
        ucp_rkey_destroy(ts->rkey);
        ts->rkey = NULL;
    }
    if (ts->memh != NULL) {
        ucp_mem_unmap(g_context, ts->memh);
        ts->memh = NULL;
    }
    if (ts->addr != NULL) {
        ucp_worker_release_address(ts->worker, ts->addr);
        ts->addr = NULL;
    }
    if (ts->worker != NULL) {
        ucp_worker_destroy(ts->worker);
        ts->worker = NULL;
    }
    /* buffers last: abandoned requests may reference them until the worker
     * is destroyed */
    free(ts->rbuf);
    free(ts->lbuf);
    ts->rbuf = ts->lbuf = NULL;
}

/* ------------------------------------------------------------------------ */
/* operations                                                               */

static void send_cb(void *request, ucs_status_t status, void *user_data)
{
    struct cb_ctx *c = user_data;

    (void)request;
    if (c->abandoned) {
        free(c);
        return;
    }
    c->status = status;
    c->done   = 1;
}

/* A cancelled request of the application's own memory may be reused only
 * once UCX has completed it. */
static void wait_cancelled(struct thread_state *ts, void *req)
{
    uint64_t deadline = now_us() + CLOSE_TIMEOUT_US;

    while (ucp_request_check_status(req) == UCS_INPROGRESS && now_us() < deadline) {
        ucp_worker_progress(ts->worker);
    }
}

/* Wait (bounded) for a request returned by an nbx call. ctx != NULL selects
 * callback completion. Consumes the request and ctx. */
static ucs_status_t wait_request(struct thread_state *ts, void *req,
                                 struct cb_ctx *ctx, const char **how)
{
    uint64_t     deadline;
    ucs_status_t status;

    if (cfg.hold_us > 0) {
        /* The request stays in flight, unprogressed, for a while: a window
         * for an endpoint failure to arrive while it is outstanding. */
        sleep_us(cfg.hold_us);
    }
    deadline = now_us() + cfg.op_timeout_ms * 1000ULL;
    for (;;) {
        ucp_worker_progress(ts->worker);
        if (ctx != NULL) {
            if (ctx->done) {
                status = ctx->status;
                free(ctx);
                break;
            }
        } else {
            status = ucp_request_check_status(req);
            if (status != UCS_INPROGRESS) {
                break;
            }
        }
        if (now_us() >= deadline) {
            if (ctx != NULL) {
                ctx->abandoned = 1; /* the callback frees it, if ever */
            }
            ucp_request_cancel(ts->worker, req);
            if (req != ts->app_req) {
                ucp_request_free(req);
            } else {
                wait_cancelled(ts, req);
            }
            *how = "timeout";
            return UCS_ERR_TIMED_OUT;
        }
    }
    if (req != ts->app_req) {
        ucp_request_free(req); /* the application's own memory is reused */
    }
    *how = "completion";
    return status;
}

static void do_op(struct thread_state *ts, unsigned long seq,
                  unsigned long iter, int kind)
{
    ucp_request_param_t param;
    struct cb_ctx      *ctx = NULL;
    ucs_status_ptr_t    ret = NULL;
    ucs_status_t        status;
    const char         *how = "immediate";
    size_t              size = (kind == OP_FLUSH) ? 0 : cfg.size;
    int                 nbx  = (kind == OP_PUT || kind == OP_GET ||
                                kind == OP_FLUSH);
    uint64_t            t0, t1;
    char                name[128];

    memset(&param, 0, sizeof(param));
    if (nbx && cfg.app_request) {
        if (ts->app_req == NULL) {
            /* UCP's part of the request lies before the pointer given. */
            char *mem = calloc(1, g_request_size + 64);
            if (mem == NULL) {
                fprintf(stderr, "SETUP-ERROR calloc request\n");
                exit(EXIT_SETUP);
            }
            ts->app_req = mem + g_request_size;
        }
        param.op_attr_mask |= UCP_OP_ATTR_FIELD_REQUEST;
        param.request       = ts->app_req;
    }
    if (nbx && cfg.callback) {
        ctx = calloc(1, sizeof(*ctx));
        if (ctx != NULL) {
            param.op_attr_mask |= UCP_OP_ATTR_FIELD_CALLBACK |
                                  UCP_OP_ATTR_FIELD_USER_DATA;
            param.cb.send      = send_cb;
            param.user_data    = ctx;
        }
    }

    t0 = now_us();
    switch (kind) {
    case OP_PUT:
        ret = ucp_put_nbx(ts->ep, ts->lbuf, cfg.size, ts->remote_addr,
                          ts->rkey, &param);
        break;
    case OP_GET:
        ret = ucp_get_nbx(ts->ep, ts->lbuf, cfg.size, ts->remote_addr,
                          ts->rkey, &param);
        break;
    case OP_FLUSH:
        ret = ucp_ep_flush_nbx(ts->ep, &param);
        break;
    case OP_PUTNBI:
        ret = UCS_STATUS_PTR(ucp_put_nbi(ts->ep, ts->lbuf, cfg.size,
                                         ts->remote_addr, ts->rkey));
        break;
    case OP_GETNBI:
    default:
        ret = UCS_STATUS_PTR(ucp_get_nbi(ts->ep, ts->lbuf, cfg.size,
                                         ts->remote_addr, ts->rkey));
        break;
    }

    if (!nbx) {
        status = UCS_PTR_STATUS(ret);
        if (status == UCS_INPROGRESS) {
            status = UCS_OK; /* completion observed by a later flush */
        }
    } else if (ret == NULL) {
        status = UCS_OK;
        free(ctx);
    } else if (UCS_PTR_IS_ERR(ret)) {
        status = UCS_PTR_STATUS(ret);
        free(ctx);
    } else {
        status = wait_request(ts, ret, ctx, &how);
    }
    t1 = now_us();

    ts->ops++;
    if (status == UCS_OK) {
        ts->ok++;
    } else {
        ts->failed++;
        ts->had_error = 1;
    }

    if (!cfg.quiet && (seq % cfg.print_every) == 0) {
        status_name(status, name, sizeof(name));
        printf("OP thread=%d seq=%lu iter=%lu fn=%s size=%zu status=%d "
               "name=%s how=%s us=%llu\n", ts->id, seq, iter, op_names[kind],
               size, (int)status, name, how, (unsigned long long)(t1 - t0));
    }
}

static void kill_peer(struct thread_state *ts, unsigned long op)
{
    uint64_t deadline;
    int      st;

    if (!g_child_alive) {
        return;
    }
    kill(g_child_pid, SIGKILL);
    while (waitpid(g_child_pid, &st, 0) < 0 && errno == EINTR) {
    }
    g_child_alive = 0;
    if (!cfg.quiet) {
        printf("KILL peer pid=%d at op=%lu\n", (int)g_child_pid, op);
    }
    /* give UCX a chance to notice the failure before the next operation */
    deadline = now_us() + KILL_SETTLE_US;
    while (!ts->ep_failed && now_us() < deadline) {
        ucp_worker_progress(ts->worker);
    }
}

static void run_ops(struct thread_state *ts)
{
    unsigned long iter, seq = 0;
    int i;

    for (iter = 0; cfg.ops == 0 || iter < cfg.ops; iter++) {
        for (i = 0; i < cfg.nseq; i++) {
            if (g_stop) {
                return;
            }
            if (cfg.tcp && cfg.kill_at >= 0 &&
                seq == (unsigned long)cfg.kill_at) {
                kill_peer(ts, seq);
            }
            do_op(ts, seq, iter, cfg.seq[i]);
            seq++;
        }
        if (g_stop) {
            return;
        }
        if (cfg.interval_us > 0) {
            sleep_us(cfg.interval_us);
        }
    }
}

static void *thread_main(void *arg)
{
    struct thread_state *ts = arg;

    setup_self(ts);
    pthread_barrier_wait(&g_bar_setup);
    pthread_barrier_wait(&g_bar_go);
    if (!g_setup_failed) {
        run_ops(ts);
    }
    teardown(ts);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* command line                                                             */

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
        "Usage: %s [options]\n"
        "  --ops N                 iterations (default 10, 0 = until SIGINT/SIGTERM)\n"
        "  --seq LIST              comma list of put,get,flush,putnbi,getnbi\n"
        "                          (default put,get,flush)\n"
        "  --size BYTES            transfer size (default 8)\n"
        "  --transport self|tcp    default self\n"
        "  --kill-peer-at K        tcp only: SIGKILL the peer before op K\n"
        "  --completion poll|callback   default poll\n"
        "  --op-timeout-ms MS      bound on waiting for a request (default 5000)\n"
        "  --threads T             threads, each with its own worker (self only)\n"
        "  --interval-us U         sleep after each iteration (default 0)\n"
        "  --hold-us U             wait U us before progressing a returned request\n"
        "  --app-request           supply request memory (UCP_OP_ATTR_FIELD_REQUEST)\n"
        "  --print-every N         print every Nth OP line (default 1)\n"
        "  --quiet                 print only READY, SUMMARY and DONE lines\n"
        "  --wait-before-start-ms MS  sleep after READY (default 0); SIGUSR1 ends\n"
        "                          the sleep early (an observer that has attached)\n"
        "  --linger-ms MS          after DONE, stay alive MS ms or until SIGINT/SIGTERM\n"
        "                          (lets a tool read the process's state; default 0)\n",
        prog);
}

static unsigned long parse_ulong(const char *opt, const char *s,
                                 unsigned long max)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 0);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v > max) {
        fprintf(stderr, "invalid value for --%s: '%s'\n", opt, s);
        exit(EXIT_USAGE);
    }
    return v;
}

static void parse_seq(const char *s)
{
    char *copy = strdup(s), *save = NULL, *tok;
    int k;

    if (copy == NULL) {
        exit(EXIT_USAGE);
    }
    cfg.nseq = 0;
    for (tok = strtok_r(copy, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        for (k = 0; k < OP_LAST; k++) {
            if (strcmp(tok, op_names[k]) == 0) {
                break;
            }
        }
        if (k == OP_LAST) {
            fprintf(stderr, "unknown operation '%s' in --seq\n", tok);
            exit(EXIT_USAGE);
        }
        if (cfg.nseq == MAX_SEQ) {
            fprintf(stderr, "--seq: at most %d operations\n", MAX_SEQ);
            exit(EXIT_USAGE);
        }
        cfg.seq[cfg.nseq++] = k;
    }
    free(copy);
    if (cfg.nseq == 0) {
        fprintf(stderr, "--seq: empty list\n");
        exit(EXIT_USAGE);
    }
}

static void parse_args(int argc, char **argv)
{
    enum {
        O_OPS = 256, O_SEQ, O_SIZE, O_TRANSPORT, O_KILL, O_COMPLETION,
        O_TIMEOUT, O_THREADS, O_INTERVAL, O_HOLD, O_APP_REQUEST, O_PRINT_EVERY, O_QUIET, O_WAIT,
        O_HELP,
        O_LINGER,
        O_PEER_FD
    };
    static const struct option longopts[] = {
        { "ops",                  required_argument, NULL, O_OPS },
        { "seq",                  required_argument, NULL, O_SEQ },
        { "size",                 required_argument, NULL, O_SIZE },
        { "transport",            required_argument, NULL, O_TRANSPORT },
        { "kill-peer-at",         required_argument, NULL, O_KILL },
        { "completion",           required_argument, NULL, O_COMPLETION },
        { "op-timeout-ms",        required_argument, NULL, O_TIMEOUT },
        { "threads",              required_argument, NULL, O_THREADS },
        { "interval-us",          required_argument, NULL, O_INTERVAL },
        { "hold-us",              required_argument, NULL, O_HOLD },
        { "app-request",          no_argument,       NULL, O_APP_REQUEST },
        { "print-every",          required_argument, NULL, O_PRINT_EVERY },
        { "quiet",                no_argument,       NULL, O_QUIET },
        { "wait-before-start-ms", required_argument, NULL, O_WAIT },
        { "linger-ms",            required_argument, NULL, O_LINGER },
        { "peer-fd",              required_argument, NULL, O_PEER_FD },
        { "help",                 no_argument,       NULL, O_HELP },
        { NULL, 0, NULL, 0 }
    };
    int c;

    cfg.ops           = 10;
    cfg.size          = 8;
    cfg.kill_at       = -1;
    cfg.op_timeout_ms = 5000;
    cfg.threads       = 1;
    cfg.print_every   = 1;
    parse_seq("put,get,flush");

    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_OPS:
            cfg.ops = parse_ulong("ops", optarg, ~0UL);
            break;
        case O_SEQ:
            parse_seq(optarg);
            break;
        case O_SIZE:
            cfg.size = parse_ulong("size", optarg, MAX_SIZE);
            break;
        case O_TRANSPORT:
            if (strcmp(optarg, "self") == 0) {
                cfg.tcp = 0;
            } else if (strcmp(optarg, "tcp") == 0) {
                cfg.tcp = 1;
            } else {
                fprintf(stderr, "--transport must be self or tcp\n");
                exit(EXIT_USAGE);
            }
            break;
        case O_KILL:
            cfg.kill_at = (long)parse_ulong("kill-peer-at", optarg, LONG_MAX);
            break;
        case O_COMPLETION:
            if (strcmp(optarg, "poll") == 0) {
                cfg.callback = 0;
            } else if (strcmp(optarg, "callback") == 0) {
                cfg.callback = 1;
            } else {
                fprintf(stderr, "--completion must be poll or callback\n");
                exit(EXIT_USAGE);
            }
            break;
        case O_TIMEOUT:
            cfg.op_timeout_ms = parse_ulong("op-timeout-ms", optarg,
                                            86400000UL);
            break;
        case O_THREADS:
            cfg.threads = (int)parse_ulong("threads", optarg, 1024);
            if (cfg.threads < 1) {
                fprintf(stderr, "--threads must be >= 1\n");
                exit(EXIT_USAGE);
            }
            break;
        case O_INTERVAL:
            cfg.interval_us = parse_ulong("interval-us", optarg, ~0UL);
            break;
        case O_HOLD:
            cfg.hold_us = parse_ulong("hold-us", optarg, 60000000UL);
            break;
        case O_APP_REQUEST:
            cfg.app_request = 1;
            break;
        case O_PRINT_EVERY:
            cfg.print_every = parse_ulong("print-every", optarg, ~0UL);
            if (cfg.print_every == 0) {
                cfg.print_every = 1;
            }
            break;
        case O_QUIET:
            cfg.quiet = 1;
            break;
        case O_WAIT:
            cfg.wait_ms = parse_ulong("wait-before-start-ms", optarg,
                                      86400000UL);
            break;
        case O_LINGER:
            cfg.linger_ms = parse_ulong("linger-ms", optarg, 86400000UL);
            break;
        case O_PEER_FD:
            cfg.peer_fd = (int)parse_ulong("peer-fd", optarg, 65535UL);
            break;
        case 'h':
        case O_HELP:
            usage(stdout, argv[0]);
            exit(0);
        default:
            usage(stderr, argv[0]);
            exit(EXIT_USAGE);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "unexpected argument '%s'\n", argv[optind]);
        usage(stderr, argv[0]);
        exit(EXIT_USAGE);
    }
    if (cfg.tcp && cfg.threads > 1) {
        fprintf(stderr, "--threads > 1 is only supported with --transport "
                "self\n");
        exit(EXIT_USAGE);
    }
    if (!cfg.tcp && cfg.kill_at >= 0) {
        fprintf(stderr, "--kill-peer-at requires --transport tcp\n");
        exit(EXIT_USAGE);
    }
}

/* ------------------------------------------------------------------------ */

static void setup_error(const char *what, ucs_status_t status)
{
    fprintf(stderr, "SETUP-ERROR %s: %s\n", what, ucs_status_string(status));
}

int main(int argc, char **argv)
{
    struct thread_state *ts;
    struct sigaction     sa;
    unsigned long        total_failed = 0;
    ucs_status_t         status;
    int                  i, rc = 0;

    setvbuf(stdout, NULL, _IOLBF, 0);
    parse_args(argc, argv);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_go;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_signal;
    signal(SIGPIPE, SIG_IGN);

    if (cfg.peer_fd > 0) {
        run_peer(cfg.peer_fd); /* does not return */
    }
    if (cfg.tcp) {
        int sv[2];

        setenv("UCX_TLS", "tcp,self", 0);
        setenv("UCX_NET_DEVICES", "lo", 0);
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
            setup_error("socketpair", UCS_ERR_IO_ERROR);
            return EXIT_SETUP;
        }
        fflush(stdout);
        fflush(stderr);
        g_child_pid = fork();
        if (g_child_pid < 0) {
            setup_error("fork", UCS_ERR_IO_ERROR);
            return EXIT_SETUP;
        }
        if (g_child_pid == 0) {
            /* A peer whose parent was killed must not live on. */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() == 1) {
                _exit(0);
            }
            close(sv[0]);
            /* The peer runs as a fresh program rather than as a copy of
             * this one: after fork() only this thread exists, and any
             * lock another thread held (a preloaded library's runtime,
             * UCX's memory hooks) stays held in the copy for good. It
             * runs without LD_PRELOAD: it is the remote side, not the
             * program under test. */
            {
                char fdarg[16];
                char **args = calloc((size_t)argc + 3, sizeof(*args));
                int k;
                snprintf(fdarg, sizeof(fdarg), "%d", sv[1]);
                for (k = 0; args != NULL && k < argc; k++) {
                    args[k] = argv[k];
                }
                if (args != NULL) {
                    args[argc]     = "--peer-fd";
                    args[argc + 1] = fdarg;
                    unsetenv("LD_PRELOAD");
                    execv("/proc/self/exe", args);
                }
            }
            run_peer(sv[1]); /* exec failed: run in the copy */
        }
        close(sv[1]);
        g_peer_fd     = sv[0];
        g_child_alive = 1;
    }

    status = create_context(cfg.threads > 1, &g_context);
    if (status != UCS_OK) {
        setup_error("ucp_init", status);
        stop_peer();
        return EXIT_SETUP;
    }
    {
        ucp_context_attr_t attr = { .field_mask = UCP_ATTR_FIELD_REQUEST_SIZE };
        status = ucp_context_query(g_context, &attr);
        if (status != UCS_OK) {
            setup_error("ucp_context_query", status);
            ucp_cleanup(g_context);
            stop_peer();
            return EXIT_SETUP;
        }
        g_request_size = attr.request_size;
    }

    ts = calloc((size_t)cfg.threads, sizeof(*ts));
    if (ts == NULL) {
        setup_error("calloc", UCS_ERR_NO_MEMORY);
        ucp_cleanup(g_context);
        stop_peer();
        return EXIT_SETUP;
    }
    for (i = 0; i < cfg.threads; i++) {
        ts[i].id = i;
    }

    if (cfg.threads == 1) {
        status = cfg.tcp ? setup_tcp(&ts[0]) : setup_self(&ts[0]);
        if (status != UCS_OK) {
            setup_error(ts[0].setup_what, ts[0].setup_status);
            teardown(&ts[0]);
            rc = EXIT_SETUP;
        } else {
            printf("READY pid=%d transport=%s threads=%d\n", (int)getpid(),
                   cfg.tcp ? "tcp" : "self", cfg.threads);
            fflush(stdout);
            if (cfg.wait_ms > 0) {
                wait_before_start(cfg.wait_ms);
            }
            run_ops(&ts[0]);
            teardown(&ts[0]);
        }
    } else {
        int created = 0;

        pthread_barrier_init(&g_bar_setup, NULL, (unsigned)cfg.threads + 1);
        pthread_barrier_init(&g_bar_go, NULL, (unsigned)cfg.threads + 1);
        for (i = 0; i < cfg.threads; i++) {
            if (pthread_create(&ts[i].tid, NULL, thread_main, &ts[i]) != 0) {
                /* cannot continue: barriers need all threads */
                setup_error("pthread_create", UCS_ERR_NO_RESOURCE);
                _exit(EXIT_SETUP);
            }
            created++;
        }
        pthread_barrier_wait(&g_bar_setup);
        for (i = 0; i < cfg.threads; i++) {
            if (ts[i].setup_what != NULL) {
                char what[128];
                snprintf(what, sizeof(what), "thread %d %s", i,
                         ts[i].setup_what);
                setup_error(what, ts[i].setup_status);
                g_setup_failed = 1;
            }
        }
        if (!g_setup_failed) {
            printf("READY pid=%d transport=%s threads=%d\n", (int)getpid(),
                   cfg.tcp ? "tcp" : "self", cfg.threads);
            fflush(stdout);
            if (cfg.wait_ms > 0) {
                wait_before_start(cfg.wait_ms);
            }
        }
        pthread_barrier_wait(&g_bar_go);
        for (i = 0; i < created; i++) {
            pthread_join(ts[i].tid, NULL);
        }
        pthread_barrier_destroy(&g_bar_setup);
        pthread_barrier_destroy(&g_bar_go);
        if (g_setup_failed) {
            rc = EXIT_SETUP;
        }
    }

    if (rc == 0) {
        for (i = 0; i < cfg.threads; i++) {
            printf("SUMMARY thread=%d ops=%lu ok=%lu failed=%lu\n", ts[i].id,
                   ts[i].ops, ts[i].ok, ts[i].failed);
            total_failed += ts[i].failed;
        }
        printf("DONE failed=%lu\n", total_failed);
        fflush(stdout);
        if (cfg.linger_ms > 0 && !g_stop) {
            sleep_us(cfg.linger_ms * 1000ULL);
        }
    }

    ucp_cleanup(g_context);
    stop_peer();
    free(ts);
    return rc;
}
