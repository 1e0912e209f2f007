/*
 * msg.c - UCX messaging workload for ucxfault.
 *
 * Sends one message per iteration with the tag, stream or active-message API
 * (nbx entry points, or the older _nb ones with --old-api) and receives it,
 * either in the same process (self endpoint) or in a forked peer process over
 * TCP.  Each side prints one line per operation describing exactly what it
 * observed (return value, completion status, how and through what the status
 * was learned).  It is meant to be run under the ucxfault LD_PRELOAD injector:
 * every error is reported and the program carries on with the next operation;
 * every wait is bounded, and a receive whose message never comes is cancelled.
 *
 * Build:
 *   gcc -O2 -g -Wall -Wextra -Werror -o msg msg.c -lucp -lucs -lpthread
 *
 * See README.md in this directory for options and the output format.
 */
#define _GNU_SOURCE
#include <ucp/api/ucp.h>

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
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
#define MIN_BUF           4096
#define MAX_SIZE          (1UL << 30)
#define CLOSE_TIMEOUT_US  (2 * 1000 * 1000ULL)
#define KILL_SETTLE_US    (200 * 1000ULL)
#define PEER_EXIT_US      (2 * 1000 * 1000ULL)
#define PEER_REPLY_US     (5 * 1000 * 1000ULL)
#define FIN_GRACE_US      (10 * 1000ULL)
#define AM_ID             7
#define AM_MAGIC          0x6d73672d616d2121ULL
#define AM_HDR_RING       256         /* send headers kept alive */
#define AM_TABLE_MIN      256         /* AM arrivals tracked ahead of time, */
#define AM_TABLE_MAX      (1UL << 18) /* growing up to this many iterations */
#define TAG_BASE          0x4d53470000000000ULL /* "MSG" + iteration */
#define TAG_MASK          ((ucp_tag_t)-1)
#define MAX_ITER_TAG      0xffffffffffULL

enum api_kind   { API_TAG, API_STREAM, API_AM };
enum flush_kind { FLUSH_NONE, FLUSH_WORKER, FLUSH_EP };

/* how a returned request is completed */
enum ctx_kind  { CTX_NONE,   /* poll with poll_kind */
                 CTX_USER,   /* nbx callback, heap context in user_data */
                 CTX_REQ };  /* _nb callback, context inside the request */
enum poll_kind { P_CHECK,    /* ucp_request_check_status */
                 P_TEST,     /* ucp_request_test */
                 P_TAG_TEST, /* ucp_tag_recv_request_test */
                 P_STREAM_TEST /* ucp_stream_recv_request_test */ };

/* parent <-> peer control messages (socketpair) */
enum { CMD_GO = 1, CMD_SENT, CMD_FIN, CMD_CLOSE, CMD_STOP, RSP_DONE,
       RSP_CLOSED };

static struct {
    int           api;
    int           old_api;
    int           sync;
    int           tcp;
    int           callback;
    int           flush;
    int           close_force;
    unsigned long ops;
    size_t        size;
    long          kill_at;
    unsigned long op_timeout_ms;
    unsigned long interval_us;
    unsigned long wait_ms;
    unsigned long linger_ms;
    int           quiet;
    int           peer_fd; /* internal: this process is the tcp peer */
} cfg;

/* completion context of an nbx call in --completion callback mode */
struct cb_ctx {
    volatile int done;
    ucs_status_t status;
    size_t       length;
};

/* completion context of an _nb call: lives in the request itself
 * (ucp_params.request_size / request_init) */
struct req_priv {
    volatile int done;
    ucs_status_t status;
    size_t       length;
};

/* one operation in flight */
struct pend {
    const char       *fn;
    unsigned long     iter;
    size_t            size;
    uint64_t          t0;
    void             *req;    /* live request, or NULL when status is final */
    ucs_status_t      status; /* final status when req == NULL */
    int               ctx_kind;
    int               poll_kind;
    struct cb_ctx    *ctx;
    int               abortable; /* peer receive: give up when told to */
    int               carry_ok;  /* stream receive: reuse if uncancellable */
    /* recv_info targets of immediate completion */
    ucp_tag_recv_info_t tag_info;
    size_t            length;
};

struct am_hdr {
    uint64_t magic;
    uint64_t iter;
};

/* an active message that arrived for an iteration >= the one awaited */
struct am_entry {
    int            used;
    unsigned long  iter;
    int            rndv;
    size_t         length;
    uint64_t       t_arrive;
    struct pend    data;   /* rndv: the ucp_am_recv_data_nbx call */
};

struct side {
    const char     *name;  /* "local" or "peer" */
    ucp_context_h   context;
    ucp_worker_h    worker;
    ucp_address_t  *addr;
    size_t          addr_len;
    ucp_ep_h        ep;
    void           *sbuf;
    void           *rbuf;
    size_t          buf_len;
    volatile int    ep_failed;
    int             peer_mode;  /* ep uses UCP_ERR_HANDLING_MODE_PEER */
    unsigned long   abandoned;  /* timed-out requests UCX still holds */
    unsigned long   seq, ops, ok, failed;
    /* active messages */
    unsigned long   am_expect;  /* lowest iteration still awaited */
    unsigned long   am_late;    /* arrivals for iterations already given up */
    struct am_entry *am;        /* indexed by iteration & (am_cap - 1) */
    size_t          am_cap;
    struct am_hdr   am_hdrs[AM_HDR_RING]; /* send headers, live until done */
    /* a stream receive that timed out and could not be cancelled */
    int             has_carry;
    struct pend     carry;
    /* peer: control channel to the parent */
    int             ctl_fd;
    int             ctl_eof;
    unsigned long   sent_upto;  /* the parent started sending iterations < */
    int             fin;
    int             fin_now;    /* interrupted: skip the remaining receives */
    unsigned long   fin_iters;
    int             close_req;
    int             stop_req;
};

struct ctl_msg {
    uint32_t cmd;
    int32_t  status;
    uint64_t a, b, c;
    char     what[64];
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
static pid_t                 g_child_pid = -1;
static int                   g_child_alive;
static int                   g_peer_fd = -1;

static const char *api_names[] = { "tag", "stream", "am" };

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

static int send_ctl(int fd, uint32_t cmd, uint64_t a, uint64_t b, uint64_t c)
{
    struct ctl_msg m;

    if (fd < 0) {
        return -1;
    }
    memset(&m, 0, sizeof(m));
    m.cmd = cmd;
    m.a   = a;
    m.b   = b;
    m.c   = c;
    return write_full(fd, &m, sizeof(m));
}

/* 1 if a message is readable now (or EOF/error: returns -1), 0 if not */
static int ctl_readable(int fd)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN, .revents = 0 };
    int r = poll(&pfd, 1, 0);

    if (r <= 0) {
        return 0;
    }
    return 1;
}

static size_t buf_len_for(size_t size)
{
    size_t len = size < MIN_BUF ? MIN_BUF : size;
    return (len + MIN_BUF - 1) & ~((size_t)MIN_BUF - 1);
}

static void *alloc_buf(size_t len, int fill)
{
    void *p = NULL;
    if (posix_memalign(&p, MIN_BUF, len) != 0) {
        return NULL;
    }
    memset(p, fill, len);
    return p;
}

/* ------------------------------------------------------------------------ */
/* output                                                                   */

static void report(struct side *s, const char *fn, unsigned long iter,
                   size_t size, ucs_status_t status, const char *how,
                   const char *via, uint64_t us)
{
    char name[128];

    s->ops++;
    if (status == UCS_OK) {
        s->ok++;
    } else {
        s->failed++;
    }
    if (!cfg.quiet) {
        status_name(status, name, sizeof(name));
        printf("OP thread=0 side=%s seq=%lu iter=%lu fn=%s size=%zu "
               "status=%d name=%s how=%s via=%s us=%llu\n", s->name, s->seq,
               iter, fn, size, (int)status, name, how, via,
               (unsigned long long)us);
    }
    s->seq++;
}

/* ------------------------------------------------------------------------ */
/* completion callbacks                                                     */

static void request_init(void *request)
{
    memset(request, 0, sizeof(struct req_priv));
}

/* nbx: user_data is a struct cb_ctx */
static void nbx_send_cb(void *request, ucs_status_t status, void *user_data)
{
    struct cb_ctx *c = user_data;

    (void)request;
    c->status = status;
    c->done   = 1;
}

static void nbx_tag_recv_cb(void *request, ucs_status_t status,
                            const ucp_tag_recv_info_t *info, void *user_data)
{
    struct cb_ctx *c = user_data;

    (void)request;
    if (status == UCS_OK && info != NULL) {
        c->length = info->length;
    }
    c->status = status;
    c->done   = 1;
}

static void nbx_len_recv_cb(void *request, ucs_status_t status, size_t length,
                            void *user_data)
{
    struct cb_ctx *c = user_data;

    (void)request;
    c->length = length;
    c->status = status;
    c->done   = 1;
}

/* _nb: the context is the request itself */
static void nb_send_cb(void *request, ucs_status_t status)
{
    struct req_priv *r = request;

    r->status = status;
    r->done   = 1;
}

static void nb_tag_recv_cb(void *request, ucs_status_t status,
                           ucp_tag_recv_info_t *info)
{
    struct req_priv *r = request;

    if (status == UCS_OK && info != NULL) {
        r->length = info->length;
    }
    r->status = status;
    r->done   = 1;
}

static void nb_stream_recv_cb(void *request, ucs_status_t status,
                              size_t length)
{
    struct req_priv *r = request;

    r->length = length;
    r->status = status;
    r->done   = 1;
}

/* _nb calls require a callback; in poll mode it records nothing */
static void nb_send_noop(void *request, ucs_status_t status)
{
    (void)request;
    (void)status;
}

static void nb_tag_recv_noop(void *request, ucs_status_t status,
                             ucp_tag_recv_info_t *info)
{
    (void)request;
    (void)status;
    (void)info;
}

static void nb_stream_recv_noop(void *request, ucs_status_t status,
                                size_t length)
{
    (void)request;
    (void)status;
    (void)length;
}

/* ------------------------------------------------------------------------ */
/* generic request handling                                                 */

/* Prepare p and param for an nbx call. cb_type: 0 send, 1 tag recv,
 * 2 stream recv, 3 am recv_data (length callbacks). */
static void pend_init_nbx(struct pend *p, ucp_request_param_t *param,
                          const char *fn, unsigned long iter, size_t size,
                          int cb_type)
{
    memset(p, 0, sizeof(*p));
    memset(param, 0, sizeof(*param));
    p->fn        = fn;
    p->iter      = iter;
    p->size      = size;
    p->ctx_kind  = CTX_NONE;
    p->poll_kind = P_CHECK;
    if (cfg.callback) {
        p->ctx = calloc(1, sizeof(*p->ctx));
        if (p->ctx != NULL) {
            p->ctx_kind         = CTX_USER;
            param->op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK |
                                  UCP_OP_ATTR_FIELD_USER_DATA;
            param->user_data    = p->ctx;
            if (cb_type == 0) {
                param->cb.send = nbx_send_cb;
            } else if (cb_type == 1) {
                param->cb.recv = nbx_tag_recv_cb;
            } else if (cb_type == 2) {
                param->cb.recv_stream = nbx_len_recv_cb;
            } else {
                param->cb.recv_am = nbx_len_recv_cb;
            }
        }
    }
}

static void pend_init_nb(struct pend *p, const char *fn, unsigned long iter,
                         size_t size, int poll_kind)
{
    memset(p, 0, sizeof(*p));
    p->fn        = fn;
    p->iter      = iter;
    p->size      = size;
    p->ctx_kind  = cfg.callback ? CTX_REQ : CTX_NONE;
    p->poll_kind = poll_kind;
}

/* record what the call returned */
static void pend_returned(struct pend *p, ucs_status_ptr_t ret)
{
    if (UCS_PTR_IS_PTR(ret)) {
        p->req = ret;
        return;
    }
    p->req    = NULL;
    p->status = UCS_PTR_STATUS(ret); /* NULL is UCS_OK */
    free(p->ctx);
    p->ctx = NULL;
}

static ucs_status_t pend_check(struct pend *p)
{
    ucp_tag_recv_info_t info;
    size_t              len;

    switch (p->ctx_kind) {
    case CTX_USER:
        return p->ctx->done ? p->ctx->status : UCS_INPROGRESS;
    case CTX_REQ:
        return ((struct req_priv*)p->req)->done ?
               ((struct req_priv*)p->req)->status : UCS_INPROGRESS;
    default:
        break;
    }
    switch (p->poll_kind) {
    case P_TEST:
        return ucp_request_test(p->req, &info);
    case P_TAG_TEST:
        return ucp_tag_recv_request_test(p->req, &info);
    case P_STREAM_TEST:
        return ucp_stream_recv_request_test(p->req, &len);
    case P_CHECK:
    default:
        return ucp_request_check_status(p->req);
    }
}

/* give the request back to UCX; no callback fires after ucp_request_free */
static void pend_release(struct pend *p)
{
    if (p->ctx_kind == CTX_REQ) {
        memset(p->req, 0, sizeof(struct req_priv)); /* ready for reuse */
    }
    ucp_request_free(p->req);
    p->req = NULL;
    free(p->ctx);
    p->ctx = NULL;
}

/* cancel (receives can be cancelled; sends ignore it) and release */
static void pend_cancel(struct side *s, struct pend *p)
{
    ucp_request_cancel(s->worker, p->req);
    pend_release(p);
}

static const char *pend_via(const struct pend *p)
{
    return (p->ctx_kind == CTX_NONE) ? "poll" : "callback";
}

static void peer_poll_ctl(struct side *s);

/* peer: the parent has finished and told us to stop before iteration iter */
static int peer_should_abort(struct side *s, unsigned long iter)
{
    return s->stop_req || (s->fin && iter >= s->fin_iters);
}

/* peer, interrupted parent: a receive not done within FIN_GRACE_US of being
 * waited for is given up silently (what already arrived is still received) */
static int peer_grace_over(struct side *s, uint64_t *grace)
{
    if (!s->fin_now) {
        return 0;
    }
    if (*grace == 0) {
        *grace = now_us() + FIN_GRACE_US;
        return 0;
    }
    return now_us() >= *grace;
}

static uint64_t op_deadline(void)
{
    return now_us() + cfg.op_timeout_ms * 1000ULL;
}

/* Wait, bounded by deadline, for p; report it. Returns 0, or -1 if the wait
 * was abandoned because the parent finished earlier (peer only; the op is
 * then cancelled and not reported). deadline 0 (peer receives): the
 * --op-timeout-ms bound starts when the parent starts sending iteration
 * p->iter, so that a sender slowed down by its own timeouts does not make the
 * receiver give up early. */
static int pend_finish(struct side *s, struct pend *p, uint64_t deadline)
{
    ucs_status_t status;
    unsigned     spins = 0;
    uint64_t     grace = 0;
    const char  *how;

    if (p->req == NULL) {
        report(s, p->fn, p->iter, p->size, p->status, "immediate", "return",
               now_us() - p->t0);
        return 0;
    }
    for (;;) {
        ucp_worker_progress(s->worker);
        status = pend_check(p);
        if (status != UCS_INPROGRESS) {
            how = "completion";
            break;
        }
        if ((++spins & 255) == 0 && s->ctl_fd >= 0 && p->abortable) {
            peer_poll_ctl(s);
            if (peer_should_abort(s, p->iter)) {
                pend_cancel(s, p);
                return -1;
            }
        }
        if (p->abortable && peer_grace_over(s, &grace)) {
            pend_cancel(s, p);
            return -1;
        }
        if (deadline == 0) {
            if (s->ctl_fd < 0 || s->sent_upto > p->iter) {
                deadline = op_deadline();
            }
        } else if (now_us() >= deadline) {
            const char *via = pend_via(p);

            ucp_request_cancel(s->worker, p->req);
            if (p->carry_ok && pend_check(p) == UCS_INPROGRESS) {
                /* UCX 1.13.1 ignores ucp_request_cancel for stream
                 * receives: keep the request for the next iteration rather
                 * than leaving it posted to swallow the next message */
                report(s, p->fn, p->iter, p->size, UCS_ERR_TIMED_OUT,
                       "timeout", via, now_us() - p->t0);
                s->carry     = *p;
                s->has_carry = 1;
                return 0;
            }
            if (pend_check(p) == UCS_INPROGRESS) {
                s->abandoned++; /* freed, but still alive inside UCX */
            }
            pend_release(p);
            report(s, p->fn, p->iter, p->size, UCS_ERR_TIMED_OUT, "timeout",
                   via, now_us() - p->t0);
            return 0;
        }
    }
    report(s, p->fn, p->iter, p->size, status, how, pend_via(p),
           now_us() - p->t0);
    pend_release(p);
    return 0;
}


/* ------------------------------------------------------------------------ */
/* operations                                                               */

static ucp_tag_t iter_tag(unsigned long iter)
{
    return TAG_BASE | ((ucp_tag_t)iter & MAX_ITER_TAG);
}

static const char *send_fn(void)
{
    switch (cfg.api) {
    case API_TAG:
        return cfg.sync ? "tag_send_sync" : "tag_send";
    case API_STREAM:
        return "stream_send";
    default:
        return "am_send";
    }
}

static void start_send(struct side *s, unsigned long iter, struct pend *p)
{
    ucp_request_param_t param;
    ucs_status_ptr_t    ret;
    ucp_tag_t           tag = iter_tag(iter);

    if (cfg.old_api) {
        ucp_send_callback_t cb = cfg.callback ? nb_send_cb : nb_send_noop;

        pend_init_nb(p, send_fn(), iter, cfg.size, P_TEST);
        p->t0 = now_us();
        if (cfg.api == API_TAG && cfg.sync) {
            ret = ucp_tag_send_sync_nb(s->ep, s->sbuf, cfg.size,
                                       ucp_dt_make_contig(1), tag, cb);
        } else if (cfg.api == API_TAG) {
            ret = ucp_tag_send_nb(s->ep, s->sbuf, cfg.size,
                                  ucp_dt_make_contig(1), tag, cb);
        } else {
            ret = ucp_stream_send_nb(s->ep, s->sbuf, cfg.size,
                                     ucp_dt_make_contig(1), cb, 0);
        }
    } else {
        pend_init_nbx(p, &param, send_fn(), iter, cfg.size, 0);
        p->t0 = now_us();
        if (cfg.api == API_TAG && cfg.sync) {
            ret = ucp_tag_send_sync_nbx(s->ep, s->sbuf, cfg.size, tag, &param);
        } else if (cfg.api == API_TAG) {
            ret = ucp_tag_send_nbx(s->ep, s->sbuf, cfg.size, tag, &param);
        } else if (cfg.api == API_STREAM) {
            ret = ucp_stream_send_nbx(s->ep, s->sbuf, cfg.size, &param);
        } else {
            /* the header must stay valid until the send completes */
            struct am_hdr *h = &s->am_hdrs[iter % AM_HDR_RING];
            h->magic = AM_MAGIC;
            h->iter  = iter;
            ret = ucp_am_send_nbx(s->ep, AM_ID, h, sizeof(*h), s->sbuf,
                                  cfg.size, &param);
        }
    }
    pend_returned(p, ret);
}

/* A stream receive that timed out is still posted (UCX 1.13.1 cannot cancel
 * it): use it as the receive of iteration iter instead of a new call. */
static int take_carry(struct side *s, unsigned long iter, struct pend *p)
{
    if (!s->has_carry) {
        return 0;
    }
    *p           = s->carry;
    s->has_carry = 0;
    if (!cfg.quiet) {
        printf("REUSE side=%s iter=%lu fn=stream_recv from_iter=%lu\n",
               s->name, iter, p->iter);
    }
    p->iter = iter;
    p->t0   = now_us();
    return 1;
}

/* tag and stream receives (active messages arrive through am_handler) */
static void start_recv(struct side *s, unsigned long iter, struct pend *p)
{
    ucp_request_param_t param;
    ucs_status_ptr_t    ret;
    ucp_tag_t           tag = iter_tag(iter);

    if (cfg.old_api) {
        if (cfg.api == API_TAG) {
            pend_init_nb(p, "tag_recv", iter, cfg.size, P_TAG_TEST);
            p->t0 = now_us();
            ret = ucp_tag_recv_nb(s->worker, s->rbuf, cfg.size,
                                  ucp_dt_make_contig(1), tag, TAG_MASK,
                                  cfg.callback ? nb_tag_recv_cb :
                                                 nb_tag_recv_noop);
        } else {
            if (take_carry(s, iter, p)) {
                return;
            }
            pend_init_nb(p, "stream_recv", iter, cfg.size, P_STREAM_TEST);
            p->t0 = now_us();
            ret = ucp_stream_recv_nb(s->ep, s->rbuf, cfg.size,
                                     ucp_dt_make_contig(1),
                                     cfg.callback ? nb_stream_recv_cb :
                                                    nb_stream_recv_noop,
                                     &p->length, UCP_STREAM_RECV_FLAG_WAITALL);
        }
    } else if (cfg.api == API_TAG) {
        pend_init_nbx(p, &param, "tag_recv", iter, cfg.size, 1);
        param.op_attr_mask      |= UCP_OP_ATTR_FIELD_RECV_INFO;
        param.recv_info.tag_info = &p->tag_info;
        p->t0 = now_us();
        ret = ucp_tag_recv_nbx(s->worker, s->rbuf, cfg.size, tag, TAG_MASK,
                               &param);
    } else {
        if (take_carry(s, iter, p)) {
            return;
        }
        pend_init_nbx(p, &param, "stream_recv", iter, cfg.size, 2);
        param.op_attr_mask |= UCP_OP_ATTR_FIELD_FLAGS;
        param.flags         = UCP_STREAM_RECV_FLAG_WAITALL;
        p->t0 = now_us();
        ret = ucp_stream_recv_nbx(s->ep, s->rbuf, cfg.size, &p->length,
                                  &param);
    }
    pend_returned(p, ret);
    p->abortable = 1;
    p->carry_ok  = (cfg.api == API_STREAM);
}

/* The table entry of iteration iter (>= am_expect), growing the table if
 * create is set; NULL if iter was given up or is too far ahead. The table can
 * move whenever the handler runs: do not keep entry pointers across
 * ucp_worker_progress. */
static struct am_entry *am_slot(struct side *s, unsigned long iter, int create)
{
    struct am_entry *t;
    size_t           cap, i;

    if (iter < s->am_expect) {
        return NULL;
    }
    if (iter - s->am_expect >= s->am_cap) {
        if (!create) {
            return NULL;
        }
        cap = s->am_cap ? s->am_cap : AM_TABLE_MIN;
        while (iter - s->am_expect >= cap) {
            cap *= 2;
        }
        if (cap > AM_TABLE_MAX) {
            return NULL;
        }
        t = calloc(cap, sizeof(*t));
        if (t == NULL) {
            return NULL;
        }
        for (i = 0; i < s->am_cap; i++) {
            if (s->am[i].used) {
                t[s->am[i].iter & (cap - 1)] = s->am[i];
            }
        }
        free(s->am);
        s->am     = t;
        s->am_cap = cap;
    }
    return &s->am[iter & (s->am_cap - 1)];
}

/* Active message handler. Data for an iteration not yet awaited is recorded
 * in a window; data for an iteration already given up is dropped. For a
 * rendezvous message the handler calls ucp_am_recv_data_nbx at once. */
static ucs_status_t am_handler(void *arg, const void *header,
                               size_t header_length, void *data,
                               size_t length, const ucp_am_recv_param_t *param)
{
    struct side        *s = arg;
    struct am_hdr       h;
    struct am_entry    *e;
    ucp_request_param_t rp;
    ucs_status_ptr_t    ret;

    if (header == NULL || header_length != sizeof(h)) {
        s->am_late++;
        return UCS_OK;
    }
    memcpy(&h, header, sizeof(h));
    e = (h.magic == AM_MAGIC) ? am_slot(s, (unsigned long)h.iter, 1) : NULL;
    if (e == NULL) {
        s->am_late++;
        return UCS_OK; /* rndv: drops it, the send completes with UCS_OK */
    }
    if (e->used) {
        s->am_late++;
        return UCS_OK;
    }
    memset(e, 0, sizeof(*e));
    e->used     = 1;
    e->iter     = (unsigned long)h.iter;
    e->length   = length;
    e->t_arrive = now_us();

    if (!(param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV)) {
        memcpy(s->rbuf, data, length < s->buf_len ? length : s->buf_len);
        return UCS_OK;
    }

    e->rndv = 1;
    pend_init_nbx(&e->data, &rp, "am_recv_data", e->iter, length, 3);
    rp.op_attr_mask     |= UCP_OP_ATTR_FIELD_RECV_INFO;
    rp.recv_info.length  = &e->data.length;
    e->data.t0 = now_us();
    ret = ucp_am_recv_data_nbx(s->worker, data, s->rbuf,
                               length < s->buf_len ? length : s->buf_len, &rp);
    pend_returned(&e->data, ret);
    e->data.abortable = 1;
    if (e->data.req != NULL) {
        return UCS_INPROGRESS; /* UCX owns the descriptor until completion */
    }
    /* completed at once (UCS_OK), or failed: an error returned here is what
     * the sender's ucp_am_send_nbx completes with */
    return e->data.status;
}

/* Arm the receive of iteration iter: nothing to post for active messages. */
static void am_arm(struct side *s, unsigned long iter)
{
    /* iterations below iter were given up: release what they left */
    while (s->am_expect < iter) {
        struct am_entry *e = am_slot(s, s->am_expect, 0);
        if (e != NULL && e->used && e->iter == s->am_expect) {
            if (e->rndv && e->data.req != NULL) {
                pend_cancel(s, &e->data);
            }
            e->used = 0;
        }
        s->am_expect++;
    }
}

/* Wait for the active message of iteration iter and report it: fn=am_recv
 * for eager data (delivered in the handler), fn=am_recv_data for rendezvous
 * (the ucp_am_recv_data_nbx the handler called). */
static int am_finish(struct side *s, unsigned long iter, uint64_t t0)
{
    struct am_entry *e;
    struct pend      data;
    uint64_t         deadline = 0; /* as in pend_finish */
    uint64_t         grace    = 0;
    unsigned         spins    = 0;

    for (;;) {
        e = am_slot(s, iter, 0);
        if (e != NULL && e->used && e->iter == iter) {
            break;
        }
        ucp_worker_progress(s->worker);
        if ((++spins & 255) == 0 && s->ctl_fd >= 0) {
            peer_poll_ctl(s);
            if (peer_should_abort(s, iter)) {
                am_arm(s, iter + 1);
                return -1;
            }
        }
        if (s->ctl_fd >= 0 && peer_grace_over(s, &grace)) {
            am_arm(s, iter + 1);
            return -1;
        }
        if (deadline == 0) {
            if (s->ctl_fd < 0 || s->sent_upto > iter) {
                deadline = op_deadline();
            }
        } else if (now_us() >= deadline) {
            report(s, "am_recv", iter, cfg.size, UCS_ERR_TIMED_OUT, "timeout",
                   "callback", now_us() - t0);
            am_arm(s, iter + 1);
            return 0;
        }
    }
    /* consume the entry before progressing again (the table may move) */
    e->used = 0;
    if (s->am_expect <= iter) {
        s->am_expect = iter + 1;
    }
    if (!e->rndv) {
        /* 0 if it arrived before we started waiting for it */
        report(s, "am_recv", iter, e->length, UCS_OK, "completion",
               "callback", e->t_arrive > t0 ? e->t_arrive - t0 : 0);
        return 0;
    }
    data = e->data;
    return pend_finish(s, &data, op_deadline());
}

static void do_flush(struct side *s, unsigned long iter)
{
    ucp_request_param_t param;
    struct pend         p;
    ucs_status_ptr_t    ret;

    if (cfg.flush == FLUSH_WORKER) {
        pend_init_nbx(&p, &param, "worker_flush", iter, 0, 0);
        p.t0 = now_us();
        ret  = ucp_worker_flush_nbx(s->worker, &param);
    } else {
        pend_init_nbx(&p, &param, "ep_flush", iter, 0, 0);
        p.t0 = now_us();
        ret  = ucp_ep_flush_nbx(s->ep, &param);
    }
    pend_returned(&p, ret);
    pend_finish(s, &p, op_deadline());
}

/* ucp_ep_close_nbx, reported as fn=ep_close; bounded by CLOSE_TIMEOUT_US */
static void close_ep(struct side *s, unsigned long iter)
{
    ucp_request_param_t param;
    struct pend         p;
    ucs_status_ptr_t    ret;
    int                 force;

    if (s->ep == NULL) {
        return;
    }
    force = cfg.close_force;
    if (!force && s->abandoned > 0 && s->peer_mode) {
        /* UCX 1.13.1 aborts in ucp_worker_destroy (assertion on the ep's
         * proto_reqs) if a request is still pending on an endpoint that was
         * closed in flush mode: only a force close purges it */
        force = 1;
        if (!cfg.quiet) {
            printf("NOTE side=%s close=force reason=abandoned_requests=%lu\n",
                   s->name, s->abandoned);
        }
    }
    pend_init_nbx(&p, &param, "ep_close", iter, 0, 0);
    param.op_attr_mask |= UCP_OP_ATTR_FIELD_FLAGS;
    param.flags         = force ? UCP_EP_CLOSE_FLAG_FORCE : 0;
    p.t0 = now_us();
    ret  = ucp_ep_close_nbx(s->ep, &param);
    pend_returned(&p, ret);
    pend_finish(s, &p, now_us() + CLOSE_TIMEOUT_US);
    s->ep = NULL;
}

/* ------------------------------------------------------------------------ */
/* setup / teardown                                                         */

static void ep_err_handler(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    struct side *s = arg;
    char name[128];

    (void)ep;
    s->ep_failed = 1;
    if (!cfg.quiet) {
        status_name(status, name, sizeof(name));
        if (s->ctl_fd >= 0) {
            printf("EPERR thread=0 side=peer status=%d name=%s\n",
                   (int)status, name);
        } else {
            printf("EPERR thread=0 status=%d name=%s\n", (int)status, name);
        }
    }
}

static ucs_status_t side_init(struct side *s, const char **what)
{
    ucp_params_t           p;
    ucp_worker_params_t    wp;
    ucp_am_handler_param_t ap;
    ucs_status_t           status;

    memset(&p, 0, sizeof(p));
    p.field_mask   = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_REQUEST_SIZE |
                     UCP_PARAM_FIELD_REQUEST_INIT;
    p.features     = (cfg.api == API_TAG)    ? UCP_FEATURE_TAG :
                     (cfg.api == API_STREAM) ? UCP_FEATURE_STREAM :
                                               UCP_FEATURE_AM;
    p.request_size = sizeof(struct req_priv);
    p.request_init = request_init;
    *what  = "ucp_init";
    status = ucp_init(&p, NULL, &s->context);
    if (status != UCS_OK) {
        return status;
    }

    memset(&wp, 0, sizeof(wp));
    wp.field_mask  = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    *what  = "ucp_worker_create";
    status = ucp_worker_create(s->context, &wp, &s->worker);
    if (status != UCS_OK) {
        return status;
    }

    s->buf_len = buf_len_for(cfg.size);
    s->sbuf    = alloc_buf(s->buf_len, 0x5a);
    s->rbuf    = alloc_buf(s->buf_len, 0);
    if (s->sbuf == NULL || s->rbuf == NULL) {
        *what = "malloc";
        return UCS_ERR_NO_MEMORY;
    }

    if (cfg.api == API_AM) {
        memset(&ap, 0, sizeof(ap));
        ap.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID |
                        UCP_AM_HANDLER_PARAM_FIELD_CB |
                        UCP_AM_HANDLER_PARAM_FIELD_ARG;
        ap.id  = AM_ID;
        ap.cb  = am_handler;
        ap.arg = s;
        *what  = "ucp_worker_set_am_recv_handler";
        status = ucp_worker_set_am_recv_handler(s->worker, &ap);
        if (status != UCS_OK) {
            return status;
        }
    }

    *what = "ucp_worker_get_address";
    return ucp_worker_get_address(s->worker, &s->addr, &s->addr_len);
}

static ucs_status_t side_connect(struct side *s, const ucp_address_t *addr,
                                 int peer_mode)
{
    ucp_ep_params_t ep;

    memset(&ep, 0, sizeof(ep));
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
    ep.address    = addr;
    if (peer_mode) {
        ep.field_mask     |= UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                             UCP_EP_PARAM_FIELD_ERR_HANDLER;
        ep.err_mode        = UCP_ERR_HANDLING_MODE_PEER;
        ep.err_handler.cb  = ep_err_handler;
        ep.err_handler.arg = s;
    }
    s->peer_mode = peer_mode;
    return ucp_ep_create(s->worker, &ep, &s->ep);
}

/* after the endpoint is closed */
static void side_fini(struct side *s)
{
    size_t i;

    if (s->has_carry) {
        pend_cancel(s, &s->carry);
        s->has_carry = 0;
    }
    for (i = 0; i < s->am_cap; i++) {
        if (s->am[i].used && s->am[i].rndv && s->am[i].data.req != NULL) {
            pend_cancel(s, &s->am[i].data);
        }
        s->am[i].used = 0;
    }
    free(s->am);
    s->am     = NULL;
    s->am_cap = 0;
    if (s->ep != NULL) {
        close_ep(s, 0);
    }
    if (s->addr != NULL) {
        ucp_worker_release_address(s->worker, s->addr);
        s->addr = NULL;
    }
    if (s->worker != NULL) {
        ucp_worker_destroy(s->worker);
        s->worker = NULL;
    }
    /* buffers after the worker: abandoned requests may still use them */
    free(s->sbuf);
    free(s->rbuf);
    s->sbuf = s->rbuf = NULL;
}

static void side_cleanup(struct side *s)
{
    if (s->context != NULL) {
        ucp_cleanup(s->context);
        s->context = NULL;
    }
}

/* worker address exchange: a ctl_msg (status, what, a=length) + address */
static int send_addr(int fd, ucs_status_t status, const char *what,
                     const ucp_address_t *addr, size_t len)
{
    struct ctl_msg m;

    memset(&m, 0, sizeof(m));
    m.status = status;
    m.a      = (status == UCS_OK) ? len : 0;
    if (what != NULL) {
        snprintf(m.what, sizeof(m.what), "%s", what);
    }
    if (write_full(fd, &m, sizeof(m)) != 0) {
        return -1;
    }
    if (status == UCS_OK && write_full(fd, addr, len) != 0) {
        return -1;
    }
    return 0;
}

static ucs_status_t recv_addr(int fd, ucp_address_t **addr, char *what,
                              size_t what_len)
{
    struct ctl_msg m;

    snprintf(what, what_len, "address exchange");
    if (read_full(fd, &m, sizeof(m)) != 0) {
        return UCS_ERR_IO_ERROR;
    }
    if (m.status != UCS_OK) {
        m.what[sizeof(m.what) - 1] = '\0';
        snprintf(what, what_len, "peer %s", m.what);
        return (ucs_status_t)m.status;
    }
    if (m.a == 0 || m.a > (1 << 20)) {
        return UCS_ERR_INVALID_PARAM;
    }
    *addr = malloc(m.a);
    if (*addr == NULL) {
        return UCS_ERR_NO_MEMORY;
    }
    if (read_full(fd, *addr, m.a) != 0) {
        free(*addr);
        *addr = NULL;
        return UCS_ERR_IO_ERROR;
    }
    return UCS_OK;
}

/* ------------------------------------------------------------------------ */
/* tcp peer (child process): the receiving side                             */

/* read pending control messages without blocking */
static void peer_poll_ctl(struct side *s)
{
    struct ctl_msg m;

    while (!s->ctl_eof && ctl_readable(s->ctl_fd)) {
        if (read_full(s->ctl_fd, &m, sizeof(m)) != 0) {
            s->ctl_eof  = 1;
            s->stop_req = 1; /* the parent is gone */
            break;
        }
        switch (m.cmd) {
        case CMD_SENT:
            if (m.a + 1 > s->sent_upto) {
                s->sent_upto = (unsigned long)m.a + 1;
            }
            break;
        case CMD_FIN:
            s->fin       = 1;
            s->fin_now   = (m.b != 0);
            s->fin_iters = (unsigned long)m.a;
            if (s->fin_iters > s->sent_upto) {
                s->sent_upto = s->fin_iters;
            }
            break;
        case CMD_CLOSE:
            s->close_req = 1;
            break;
        case CMD_STOP:
            s->stop_req = 1;
            break;
        default:
            break; /* CMD_GO handled by peer_wait_go */
        }
    }
}

/* progress until a flag is set; returns 0, or -1 on stop / EOF */
static int peer_wait_for(struct side *s, int *flag)
{
    unsigned spins = 0;

    while (!*flag) {
        unsigned n = ucp_worker_progress(s->worker);
        if (n == 0 || (++spins & 63) == 0) {
            peer_poll_ctl(s);
            if (s->stop_req && flag != &s->stop_req) {
                return -1;
            }
            if (n == 0 && !*flag) {
                /* idle: do not spin the CPU at 100% while waiting */
                struct pollfd pfd = { .fd = s->ctl_fd, .events = POLLIN,
                                      .revents = 0 };
                (void)poll(&pfd, 1, 1);
            }
        }
    }
    return 0;
}

static void peer_wait_go(struct side *s)
{
    struct ctl_msg m;
    unsigned       spins = 0;

    for (;;) {
        unsigned n = ucp_worker_progress(s->worker);
        if (n == 0 || (++spins & 63) == 0) {
            struct pollfd pfd = { .fd = s->ctl_fd, .events = POLLIN,
                                  .revents = 0 };
            if (poll(&pfd, 1, n == 0 ? 1 : 0) > 0) {
                if (read_full(s->ctl_fd, &m, sizeof(m)) != 0) {
                    s->ctl_eof  = 1;
                    s->stop_req = 1;
                    return;
                }
                if (m.cmd == CMD_GO) {
                    return;
                }
                if (m.cmd == CMD_SENT) {
                    s->sent_upto = (unsigned long)m.a + 1;
                    return;
                }
                if (m.cmd == CMD_FIN) {
                    s->fin       = 1;
                    s->fin_now   = (m.b != 0);
                    s->fin_iters = (unsigned long)m.a;
                    s->sent_upto = s->fin_iters;
                    return;
                }
                if (m.cmd == CMD_STOP) {
                    s->stop_req = 1;
                    return;
                }
                if (m.cmd == CMD_CLOSE) {
                    s->close_req = 1;
                    return;
                }
            }
        }
    }
}

static void run_peer(int fd)
{
    static struct side s; /* large: keep it off the stack */
    ucp_address_t *parent_addr = NULL;
    const char    *what        = NULL;
    char           rwhat[96];
    ucs_status_t   status;
    unsigned long  iter;

    /* the parent decides when we stop: ignore terminal/timeout signals */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);

    memset(&s, 0, sizeof(s));
    s.name   = "peer";
    s.ctl_fd = fd;

    status = side_init(&s, &what);
    if (status != UCS_OK) {
        (void)send_addr(fd, status, what, NULL, 0);
        _exit(EXIT_SETUP);
    }
    if (send_addr(fd, UCS_OK, NULL, s.addr, s.addr_len) != 0) {
        _exit(EXIT_SETUP);
    }
    status = recv_addr(fd, &parent_addr, rwhat, sizeof(rwhat));
    if (status != UCS_OK) {
        _exit(EXIT_SETUP);
    }
    status = side_connect(&s, parent_addr, 1);
    free(parent_addr);
    if (status != UCS_OK) {
        fprintf(stderr, "SETUP-ERROR peer ucp_ep_create: %s\n",
                ucs_status_string(status));
        _exit(EXIT_SETUP);
    }

    peer_wait_go(&s);

    for (iter = 0; !s.stop_req; iter++) {
        struct pend p;
        uint64_t    t0;

        if (cfg.ops != 0 && iter >= cfg.ops) {
            break;
        }
        peer_poll_ctl(&s);
        if (peer_should_abort(&s, iter)) {
            break;
        }
        if (cfg.api == API_AM) {
            t0 = now_us();
            am_arm(&s, iter);
            if (am_finish(&s, iter, t0) != 0) {
                break;
            }
        } else {
            start_recv(&s, iter, &p);
            if (pend_finish(&s, &p, 0) != 0) {
                break;
            }
        }
    }

    if (!s.stop_req) {
        (void)send_ctl(fd, RSP_DONE, iter, 0, 0);
        if (peer_wait_for(&s, &s.close_req) == 0) {
            close_ep(&s, iter);
            if (cfg.api == API_AM) {
                printf("SUMMARY thread=0 side=peer ops=%lu ok=%lu failed=%lu "
                       "am_late=%lu\n", s.ops, s.ok, s.failed, s.am_late);
            } else {
                printf("SUMMARY thread=0 side=peer ops=%lu ok=%lu "
                       "failed=%lu\n", s.ops, s.ok, s.failed);
            }
            fflush(stdout);
            (void)send_ctl(fd, RSP_CLOSED, s.ops, s.ok, s.failed);
            (void)peer_wait_for(&s, &s.stop_req);
        }
    }

    close(fd);
    if (s.ep != NULL) {
        /* stopped before the close handshake: drop the endpoint silently */
        ucp_request_param_t param;
        ucs_status_ptr_t    req;

        memset(&param, 0, sizeof(param));
        param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
        param.flags        = UCP_EP_CLOSE_FLAG_FORCE;
        req = ucp_ep_close_nbx(s.ep, &param);
        if (UCS_PTR_IS_PTR(req)) {
            uint64_t deadline = now_us() + CLOSE_TIMEOUT_US;
            while (ucp_request_check_status(req) == UCS_INPROGRESS &&
                   now_us() < deadline) {
                ucp_worker_progress(s.worker);
            }
            ucp_request_free(req);
        }
        s.ep = NULL;
    }
    side_fini(&s);
    side_cleanup(&s);
    fflush(stdout);
    _exit(0);
}

/* ------------------------------------------------------------------------ */
/* parent side of the tcp transport                                         */

static void reap_child(void)
{
    int st;

    if (!g_child_alive) {
        return;
    }
    while (waitpid(g_child_pid, &st, 0) < 0 && errno == EINTR) {
    }
    g_child_alive = 0;
}

static void stop_peer(void)
{
    uint64_t deadline;
    int      st;

    if (g_peer_fd >= 0) {
        (void)send_ctl(g_peer_fd, CMD_STOP, 0, 0, 0);
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

/* Wait for a reply from the peer while progressing our worker. Returns 0 and
 * fills *m, or -1 on timeout / EOF (peer gone). */
static int wait_peer_reply(struct side *s, uint32_t want, struct ctl_msg *m,
                           uint64_t timeout_us)
{
    uint64_t deadline = now_us() + timeout_us;
    unsigned spins    = 0;

    if (g_peer_fd < 0 || !g_child_alive) {
        return -1;
    }
    for (;;) {
        unsigned n = ucp_worker_progress(s->worker);
        if (n == 0 || (++spins & 63) == 0) {
            struct pollfd pfd = { .fd = g_peer_fd, .events = POLLIN,
                                  .revents = 0 };
            if (poll(&pfd, 1, n == 0 ? 1 : 0) > 0) {
                if (read_full(g_peer_fd, m, sizeof(*m)) != 0) {
                    return -1; /* EOF: the peer is gone; stop_peer reaps */
                }
                if (m->cmd == want) {
                    return 0;
                }
            }
            if (now_us() >= deadline) {
                fprintf(stderr, "peer pid=%d: no reply %u within %llu ms\n",
                        (int)g_child_pid, want,
                        (unsigned long long)(timeout_us / 1000));
                return -1;
            }
        }
    }
}

static void kill_peer(struct side *s, unsigned long op)
{
    uint64_t deadline;

    if (!g_child_alive) {
        return;
    }
    kill(g_child_pid, SIGKILL);
    reap_child();
    if (!cfg.quiet) {
        printf("KILL peer pid=%d at op=%lu\n", (int)g_child_pid, op);
    }
    /* give UCX a chance to notice the failure before the next operation */
    deadline = now_us() + KILL_SETTLE_US;
    while (!s->ep_failed && now_us() < deadline) {
        ucp_worker_progress(s->worker);
    }
}

static void maybe_kill(struct side *s)
{
    if (cfg.tcp && cfg.kill_at >= 0 && s->seq == (unsigned long)cfg.kill_at) {
        kill_peer(s, s->seq);
    }
}

/* ------------------------------------------------------------------------ */
/* main loop                                                                */

static unsigned long run_ops(struct side *s)
{
    unsigned long iter;

    for (iter = 0; cfg.ops == 0 || iter < cfg.ops; iter++) {
        struct pend sp, rp;
        uint64_t    rt0 = 0;

        if (g_stop) {
            break;
        }
        if (iter > MAX_ITER_TAG) {
            break;
        }
        if (!cfg.tcp) {
            /* self: post the receive first, so that a rendezvous send can
             * complete while we wait for it */
            if (cfg.api == API_AM) {
                rt0 = now_us();
                am_arm(s, iter);
            } else {
                start_recv(s, iter, &rp);
            }
        }
        maybe_kill(s);
        if (cfg.tcp && g_child_alive) {
            /* starts the peer's receive timeout for this iteration */
            (void)send_ctl(g_peer_fd, CMD_SENT, iter, 0, 0);
        }
        start_send(s, iter, &sp);
        pend_finish(s, &sp, op_deadline());
        if (!cfg.tcp) {
            if (cfg.api == API_AM) {
                am_finish(s, iter, rt0);
            } else {
                pend_finish(s, &rp, op_deadline());
            }
        }
        if (cfg.flush != FLUSH_NONE) {
            maybe_kill(s);
            do_flush(s, iter);
        }
        if (g_stop) {
            iter++;
            break;
        }
        if (cfg.interval_us > 0) {
            sleep_us(cfg.interval_us);
        }
    }
    return iter;
}

/* ------------------------------------------------------------------------ */
/* command line                                                             */

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
        "Usage: %s [options]\n"
        "  --api tag|stream|am     messaging API (default tag)\n"
        "  --old-api               use ucp_tag_send_nb/ucp_tag_recv_nb/\n"
        "                          ucp_tag_send_sync_nb/ucp_stream_send_nb/\n"
        "                          ucp_stream_recv_nb (tag and stream only)\n"
        "  --sync                  tag only: synchronous send (tag_send_sync)\n"
        "  --transport self|tcp    default self\n"
        "  --completion poll|callback   default poll\n"
        "  --ops N                 iterations (default 10, 0 = until SIGINT/SIGTERM)\n"
        "  --size BYTES            message size (default 8)\n"
        "  --flush worker|ep|none  flush after each message (default none)\n"
        "  --close force|flush     endpoint close mode at teardown (default flush)\n"
        "  --kill-peer-at K        tcp only: SIGKILL the peer before local op K\n"
        "  --op-timeout-ms MS      bound on waiting for one operation (default 5000)\n"
        "  --interval-us U         sleep after each iteration (default 0)\n"
        "  --wait-before-start-ms MS  sleep after READY (default 0); SIGUSR1 ends\n"
        "                          the sleep early (an observer that has attached)\n"
        "  --linger-ms MS          after DONE, stay alive MS ms or until SIGINT/SIGTERM\n"
        "  --quiet                 print only READY, SUMMARY and DONE lines\n",
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

static void parse_args(int argc, char **argv)
{
    enum {
        O_API = 256, O_OLD, O_SYNC, O_TRANSPORT, O_COMPLETION, O_OPS, O_SIZE,
        O_FLUSH, O_CLOSE, O_KILL, O_TIMEOUT, O_INTERVAL, O_WAIT, O_LINGER,
        O_QUIET, O_HELP, O_PEER_FD
    };
    static const struct option longopts[] = {
        { "api",                  required_argument, NULL, O_API },
        { "old-api",              no_argument,       NULL, O_OLD },
        { "sync",                 no_argument,       NULL, O_SYNC },
        { "transport",            required_argument, NULL, O_TRANSPORT },
        { "completion",           required_argument, NULL, O_COMPLETION },
        { "ops",                  required_argument, NULL, O_OPS },
        { "size",                 required_argument, NULL, O_SIZE },
        { "flush",                required_argument, NULL, O_FLUSH },
        { "close",                required_argument, NULL, O_CLOSE },
        { "kill-peer-at",         required_argument, NULL, O_KILL },
        { "op-timeout-ms",        required_argument, NULL, O_TIMEOUT },
        { "interval-us",          required_argument, NULL, O_INTERVAL },
        { "wait-before-start-ms", required_argument, NULL, O_WAIT },
        { "linger-ms",            required_argument, NULL, O_LINGER },
        { "peer-fd",              required_argument, NULL, O_PEER_FD },
        { "quiet",                no_argument,       NULL, O_QUIET },
        { "help",                 no_argument,       NULL, O_HELP },
        { NULL, 0, NULL, 0 }
    };
    int c;

    cfg.api           = API_TAG;
    cfg.ops           = 10;
    cfg.size          = 8;
    cfg.kill_at       = -1;
    cfg.op_timeout_ms = 5000;
    cfg.flush         = FLUSH_NONE;

    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_API:
            if (strcmp(optarg, "tag") == 0) {
                cfg.api = API_TAG;
            } else if (strcmp(optarg, "stream") == 0) {
                cfg.api = API_STREAM;
            } else if (strcmp(optarg, "am") == 0) {
                cfg.api = API_AM;
            } else {
                fprintf(stderr, "--api must be tag, stream or am\n");
                exit(EXIT_USAGE);
            }
            break;
        case O_OLD:
            cfg.old_api = 1;
            break;
        case O_SYNC:
            cfg.sync = 1;
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
        case O_OPS:
            cfg.ops = parse_ulong("ops", optarg, ~0UL);
            break;
        case O_SIZE:
            cfg.size = parse_ulong("size", optarg, MAX_SIZE);
            break;
        case O_FLUSH:
            if (strcmp(optarg, "worker") == 0) {
                cfg.flush = FLUSH_WORKER;
            } else if (strcmp(optarg, "ep") == 0) {
                cfg.flush = FLUSH_EP;
            } else if (strcmp(optarg, "none") == 0) {
                cfg.flush = FLUSH_NONE;
            } else {
                fprintf(stderr, "--flush must be worker, ep or none\n");
                exit(EXIT_USAGE);
            }
            break;
        case O_CLOSE:
            if (strcmp(optarg, "force") == 0) {
                cfg.close_force = 1;
            } else if (strcmp(optarg, "flush") == 0) {
                cfg.close_force = 0;
            } else {
                fprintf(stderr, "--close must be force or flush\n");
                exit(EXIT_USAGE);
            }
            break;
        case O_KILL:
            cfg.kill_at = (long)parse_ulong("kill-peer-at", optarg, LONG_MAX);
            break;
        case O_TIMEOUT:
            cfg.op_timeout_ms = parse_ulong("op-timeout-ms", optarg,
                                            86400000UL);
            break;
        case O_INTERVAL:
            cfg.interval_us = parse_ulong("interval-us", optarg, ~0UL);
            break;
        case O_WAIT:
            cfg.wait_ms = parse_ulong("wait-before-start-ms", optarg,
                                      86400000UL);
            break;
        case O_PEER_FD:
            cfg.peer_fd = (int)parse_ulong("peer-fd", optarg, 65535UL);
            break;
        case O_LINGER:
            cfg.linger_ms = parse_ulong("linger-ms", optarg, 86400000UL);
            break;
        case O_QUIET:
            cfg.quiet = 1;
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
    if (cfg.old_api && cfg.api == API_AM) {
        fprintf(stderr, "--old-api supports --api tag and stream only\n");
        exit(EXIT_USAGE);
    }
    if (cfg.sync && cfg.api != API_TAG) {
        fprintf(stderr, "--sync requires --api tag\n");
        exit(EXIT_USAGE);
    }
    if (cfg.api == API_STREAM && cfg.size == 0) {
        fprintf(stderr, "--api stream needs --size >= 1\n");
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
    static struct side s; /* large: keep it off the stack */
    struct sigaction   sa;
    struct ctl_msg     m;
    unsigned long      iters, peer_failed = 0;
    ucs_status_t       status;
    const char        *what = NULL;
    char               rwhat[96];

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

    memset(&s, 0, sizeof(s));
    s.name   = "local";
    s.ctl_fd = -1;

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
            /* The peer runs as a fresh program, without LD_PRELOAD: after
             * fork() only this thread exists, and a lock another thread
             * held (a preloaded library's runtime, UCX's memory hooks)
             * would stay held in the copy for good. */
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

    /* the UCP context is created after the fork, in both processes */
    status = side_init(&s, &what);
    if (status != UCS_OK) {
        setup_error(what, status);
        goto setup_failed;
    }
    if (cfg.tcp) {
        ucp_address_t *peer_addr = NULL;

        status = recv_addr(g_peer_fd, &peer_addr, rwhat, sizeof(rwhat));
        if (status != UCS_OK) {
            setup_error(rwhat, status);
            goto setup_failed;
        }
        if (send_addr(g_peer_fd, UCS_OK, NULL, s.addr, s.addr_len) != 0) {
            free(peer_addr);
            setup_error("address exchange", UCS_ERR_IO_ERROR);
            goto setup_failed;
        }
        status = side_connect(&s, peer_addr, 1);
        free(peer_addr);
    } else {
        status = side_connect(&s, s.addr, 0);
    }
    if (status != UCS_OK) {
        setup_error("ucp_ep_create", status);
        goto setup_failed;
    }

    printf("READY pid=%d transport=%s threads=1\n", (int)getpid(),
           cfg.tcp ? "tcp" : "self");
    if (cfg.tcp && !cfg.quiet) {
        printf("PEER pid=%d api=%s\n", (int)g_child_pid, api_names[cfg.api]);
    }
    fflush(stdout);
    if (cfg.wait_ms > 0) {
        wait_before_start(cfg.wait_ms);
    }
    if (cfg.tcp) {
        (void)send_ctl(g_peer_fd, CMD_GO, 0, 0, 0);
    }

    iters = run_ops(&s);

    if (cfg.tcp && g_child_alive) {
        /* let the peer finish its receives (each bounded), then close */
        uint64_t wait_us = (uint64_t)iters * (cfg.op_timeout_ms * 1000ULL +
                                              100000ULL) + PEER_REPLY_US;
        int      got;

        /* interrupted (SIGINT/SIGTERM): the peer drops what it has not
         * received yet instead of waiting for it */
        (void)send_ctl(g_peer_fd, CMD_FIN, iters, g_stop ? 1 : 0, 0);
        got = wait_peer_reply(&s, RSP_DONE, &m,
                              g_stop ? PEER_REPLY_US : wait_us);
        if (got != 0 && g_child_alive) {
            (void)send_ctl(g_peer_fd, CMD_FIN, iters, 1, 0);
            got = wait_peer_reply(&s, RSP_DONE, &m, PEER_REPLY_US);
        }
        if (got == 0) {
            (void)send_ctl(g_peer_fd, CMD_CLOSE, 0, 0, 0);
            close_ep(&s, iters);
            if (wait_peer_reply(&s, RSP_CLOSED, &m, PEER_REPLY_US) == 0) {
                peer_failed = (unsigned long)m.c;
            }
        }
    }
    close_ep(&s, iters);

    if (cfg.api == API_AM) {
        printf("SUMMARY thread=0 side=local ops=%lu ok=%lu failed=%lu "
               "am_late=%lu\n", s.ops, s.ok, s.failed, s.am_late);
    } else {
        printf("SUMMARY thread=0 side=local ops=%lu ok=%lu failed=%lu\n",
               s.ops, s.ok, s.failed);
    }
    side_fini(&s);
    stop_peer();
    printf("DONE failed=%lu\n", s.failed + peer_failed);
    fflush(stdout);
    if (cfg.linger_ms > 0 && !g_stop) {
        sleep_us(cfg.linger_ms * 1000ULL);
    }
    side_cleanup(&s);
    return 0;

setup_failed:
    side_fini(&s);
    side_cleanup(&s);
    stop_peer();
    return EXIT_SETUP;
}
