/*
 * peerdeath: what an application sees when its TCP peer dies, printed in a
 * canonical form that two runs (a real death, an emulated one) can be
 * compared by.
 *
 *   peerdeath server --hello FILE
 *   peerdeath client --hello FILE --scenario S [--connect address|sockaddr]
 *                    [--close force|flush]
 *                    [--count N] [--size BYTES] [--rounds R]
 *                    [--wait-ms MS] [--hold-ms MS] [--linger-ms MS] [--protect] [--reconnect]
 *                    [--start-line] [--after-size BYTES]
 *
 * The server maps a buffer, writes its worker address, the buffer's address
 * and its packed rkey to FILE, prints "READY pid=<pid>" and progresses until
 * it is killed. It posts no receive: a rendezvous send to it stays in flight.
 * It also listens on 127.0.0.1 (a port of the system's choice, in FILE) and
 * accepts every connection request with an endpoint of its own.
 *
 * With --start-line the client first prints "READY pid=<pid> start-line" (the
 * line test harnesses wait for) and reads a
 * line on stdin, so that a test can arm something (a replay) before the
 * endpoint exists. The client connects with UCP_ERR_HANDLING_MODE_PEER and an error handler,
 * to the worker address in FILE (--connect address, the default) or to the
 * server's listener (--connect sockaddr, a client/server endpoint; its rkey
 * is unpacked once a flush has completed the wireup), checks the endpoint with
 * a put, a get and a flush, prints "READY pid=<pid>", and waits for a line
 * on stdin: the moment the test chooses (it stops the server first when it
 * wants requests in flight at the death). It then posts the scenario's
 * batch, prints POSTED, and progresses until the error handler has run and
 * every request has completed, or --wait-ms passes (phase "inflight"; what
 * is still in progress then is printed in phase "pending"), and --hold-ms
 * more with the endpoint still open (phase "hold": a second handler call
 * shows there). Then it posts one operation of each kind on the endpoint
 * (phase "after"; the cbsend scenario's sends of --after-size bytes, 64 by
 * default, at most the batch's bytes), closes it (--close, phase "close"), progresses
 * --linger-ms more (phase "linger") and prints "DONE handlers=<calls>".
 * Requests of an earlier phase that complete later are printed in the
 * phase in which they complete, with their first index.
 *
 * Scenarios (--scenario):
 *   rma      N puts and N gets of BYTES, polled with ucp_request_check_status,
 *            then an endpoint flush, polled
 *   cbsend   tag sends and AM sends (64 bytes and BYTES), then a flush, all
 *            with callbacks
 *   stream   two pending stream receives: one with a callback, one polled
 *   idle     nothing in flight: the handler and the close alone
 *   reconnect R rounds of connect, check, close (flush mode, phase "warm")
 *            to the same peer; the death comes in the last round, on
 *            endpoint R-1
 *
 * Every event the application sees is one line:
 *
 *   PD ev=<n> phase=<p> ep=<e> op=<i> kind=<k> status=<code> via=<v> t_us=<us>
 *
 * phase: warm, post, inflight, pending, hold, after, close, linger; ep: the
 * endpoint's number in creation order; op: the operation's index within its
 * phase (-1 for the handler); kind: put, get, flush, tagsend, amsend,
 * streamrecv, close, handler; via: immediate (the call's return value),
 * callback (a completion callback, from ucp_worker_progress), poll
 * (ucp_request_check_status after a progress call), pending (still in
 * progress when --wait-ms passed). t_us is CLOCK_REALTIME in microseconds,
 * the one field a comparison ignores. The client also prints
 * "VERSION <major>.<minor>.<release>" from ucp_get_version.
 *
 * Exit: 0, 2 on bad arguments, 3 when the setup fails.
 */
#define _GNU_SOURCE
#include <ucp/api/ucp.h>

#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PD_MAX_OPS  256
#define PD_AM_ID    7
#define PD_SMALL    64
#define PD_HELLO_MG 0x50444831u /* "PDH1" */

struct hello {
    uint32_t magic;
    uint32_t addr_len;
    uint32_t rkey_len;
    uint32_t port; /* the listener's, host order */
    uint64_t raddr;
    uint64_t rlen;
};

/* one posted operation */
struct op {
    const char *kind;
    void       *req;     /* NULL once seen complete */
    int         polled;  /* completion learned by ucp_request_check_status */
    int         index;
    int         done;    /* set by the callback */
    ucs_status_t cb_status;
    size_t      length;  /* a stream receive's: lives as long as the request */
    void       *buf;     /* a put's or get's local buffer (for --protect) */
    size_t      len;
};

static struct {
    const char   *hello;
    const char   *scenario;
    int           sockaddr;
    int           force_close;
    int           count;
    size_t        size;
    int           rounds;
    unsigned      wait_ms;
    unsigned      hold_ms;
    size_t        after_size;
    unsigned      linger_ms;
    int           protect;
    int           reconnect; /* after the linger: a new endpoint to the same peer */
    int           start_line; /* print WAITING and read a line before connecting */
} cfg = {NULL, NULL, 0, 1, 4, 262144, 3, 5000, 0, PD_SMALL, 500, 0, 0, 0};

static ucp_context_h g_ctx;
static ucp_worker_h  g_worker;
static ucp_ep_h      g_ep;
static ucp_rkey_h    g_rkey;
static uint64_t      g_raddr;
static void         *g_lbuf;
static size_t        g_lbuf_len;
static const char   *g_phase = "warm";
static int           g_epno;
static int           g_handlers;
static unsigned      g_ev;
/* every operation of the run, never reused: a callback's user_data stays
 * valid; g_first is the first of the current phase */
static struct op     g_ops[PD_MAX_OPS];
static int           g_nops;
static int           g_first;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000;
}

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000;
}

static void die(const char *what, ucs_status_t st)
{
    fprintf(stderr, "SETUP-ERROR %s: %s\n", what, ucs_status_string(st));
    exit(3);
}

#define CHECK(what, expr)                                                      \
    do {                                                                       \
        ucs_status_t st_ = (expr);                                             \
        if (st_ != UCS_OK) {                                                   \
            die(what, st_);                                                    \
        }                                                                      \
    } while (0)

static void event(int op, const char *kind, ucs_status_t st, const char *via)
{
    printf("PD ev=%u phase=%s ep=%d op=%d kind=%s status=%d via=%s t_us=%llu\n", g_ev++,
           g_phase, g_epno, op, kind, (int)st, via, (unsigned long long)now_us());
}

static void on_ep_error(void *arg, ucp_ep_h ep, ucs_status_t st)
{
    int saved = g_epno;

    (void)ep;
    g_handlers++;
    /* the handler names the endpoint it was registered for */
    g_epno = (int)(intptr_t)arg;
    event(-1, "handler", st, "callback");
    g_epno = saved;
}

static void on_send(void *req, ucs_status_t st, void *user)
{
    struct op *o = user;

    (void)req;
    o->done      = 1;
    o->cb_status = st;
    event(o->index, o->kind, st, "callback");
}

static void on_stream(void *req, ucs_status_t st, size_t len, void *user)
{
    (void)len;
    on_send(req, st, user);
}

static ucs_status_t on_am(void *arg, const void *header, size_t header_length, void *data,
                          size_t length, const ucp_am_recv_param_t *param)
{
    (void)arg;
    (void)header;
    (void)header_length;
    (void)data;
    (void)length;
    (void)param;
    return UCS_OK;
}

static void init_ucp(void)
{
    ucp_params_t        p;
    ucp_worker_params_t wp;

    memset(&p, 0, sizeof(p));
    p.field_mask = UCP_PARAM_FIELD_FEATURES;
    p.features   = UCP_FEATURE_RMA | UCP_FEATURE_TAG | UCP_FEATURE_AM | UCP_FEATURE_STREAM;
    CHECK("ucp_init", ucp_init(&p, NULL, &g_ctx));
    memset(&wp, 0, sizeof(wp));
    wp.field_mask  = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    CHECK("ucp_worker_create", ucp_worker_create(g_ctx, &wp, &g_worker));
}

/* ------------------------------------------------------------------------ */
/* server                                                                   */

static void on_server_ep_error(void *arg, ucp_ep_h ep, ucs_status_t st)
{
    (void)arg;
    (void)ep;
    (void)st;
}

/* on_conn accepts a client/server connection; the endpoint is never closed:
 * the server lives until it is killed. */
static void on_conn(ucp_conn_request_h req, void *arg)
{
    ucp_ep_params_t ep;
    ucp_ep_h        h;

    (void)arg;
    memset(&ep, 0, sizeof(ep));
    ep.field_mask      = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                         UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.conn_request    = req;
    ep.err_mode        = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb  = on_server_ep_error;
    ep.err_handler.arg = NULL;
    if (ucp_ep_create(g_worker, &ep, &h) != UCS_OK) {
        fprintf(stderr, "server: accepting a connection failed\n");
    }
}

static uint16_t listen_on_loopback(void)
{
    ucp_listener_params_t lp;
    ucp_listener_attr_t   la;
    ucp_listener_h        l;
    struct sockaddr_in    sin;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family      = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    memset(&lp, 0, sizeof(lp));
    lp.field_mask         = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
    lp.sockaddr.addr      = (const struct sockaddr *)&sin;
    lp.sockaddr.addrlen   = sizeof(sin);
    lp.conn_handler.cb    = on_conn;
    lp.conn_handler.arg   = NULL;
    CHECK("ucp_listener_create", ucp_listener_create(g_worker, &lp, &l));
    memset(&la, 0, sizeof(la));
    la.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
    CHECK("ucp_listener_query", ucp_listener_query(l, &la));
    return ntohs(((struct sockaddr_in *)&la.sockaddr)->sin_port);
}

static int run_server(void)
{
    ucp_mem_map_params_t   mp;
    ucp_am_handler_param_t ap;
    ucp_mem_h              memh;
    ucp_address_t         *addr;
    size_t                 addr_len, rkey_len, len = 8u << 20;
    void                  *rkey, *buf;
    struct hello           h;
    FILE                  *f;
    char                   tmp[4096];

    init_ucp();
    memset(&ap, 0, sizeof(ap));
    ap.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB;
    ap.id         = PD_AM_ID;
    ap.cb         = on_am;
    CHECK("ucp_worker_set_am_recv_handler", ucp_worker_set_am_recv_handler(g_worker, &ap));
    if (posix_memalign(&buf, 4096, len) != 0) {
        die("malloc", UCS_ERR_NO_MEMORY);
    }
    memset(buf, 0, len);
    memset(&mp, 0, sizeof(mp));
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    mp.address    = buf;
    mp.length     = len;
    CHECK("ucp_mem_map", ucp_mem_map(g_ctx, &mp, &memh));
    CHECK("ucp_rkey_pack", ucp_rkey_pack(g_ctx, memh, &rkey, &rkey_len));
    CHECK("ucp_worker_get_address", ucp_worker_get_address(g_worker, &addr, &addr_len));

    memset(&h, 0, sizeof(h));
    h.magic    = PD_HELLO_MG;
    h.addr_len = (uint32_t)addr_len;
    h.rkey_len = (uint32_t)rkey_len;
    h.port     = listen_on_loopback();
    h.raddr    = (uint64_t)(uintptr_t)buf;
    h.rlen     = len;
    /* written under another name and renamed: a reader never sees half */
    snprintf(tmp, sizeof(tmp), "%s.tmp", cfg.hello);
    f = fopen(tmp, "wb");
    if (f == NULL || fwrite(&h, sizeof(h), 1, f) != 1 || fwrite(addr, addr_len, 1, f) != 1 ||
        fwrite(rkey, rkey_len, 1, f) != 1 || fclose(f) != 0 || rename(tmp, cfg.hello) != 0) {
        die("writing the hello file", UCS_ERR_IO_ERROR);
    }
    ucp_rkey_buffer_release(rkey);
    printf("READY pid=%d\n", (int)getpid());
    for (;;) {
        if (ucp_worker_progress(g_worker) == 0) {
            usleep(100);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* client                                                                   */

static void connect_ep(const ucp_address_t *addr, uint16_t port, const void *rkey)
{
    ucp_ep_params_t     ep;
    ucp_request_param_t p;
    struct sockaddr_in  sin;
    ucs_status_ptr_t    r;
    ucs_status_t        st = UCS_OK;

    memset(&ep, 0, sizeof(ep));
    ep.field_mask      = UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.err_mode        = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb  = on_ep_error;
    ep.err_handler.arg = (void *)(intptr_t)g_epno;
    if (cfg.sockaddr) {
        memset(&sin, 0, sizeof(sin));
        sin.sin_family          = AF_INET;
        sin.sin_addr.s_addr     = htonl(INADDR_LOOPBACK);
        sin.sin_port            = htons(port);
        ep.field_mask          |= UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR;
        ep.flags                = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
        ep.sockaddr.addr        = (const struct sockaddr *)&sin;
        ep.sockaddr.addrlen     = sizeof(sin);
    } else {
        ep.field_mask |= UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
        ep.address     = addr;
    }
    CHECK("ucp_ep_create", ucp_ep_create(g_worker, &ep, &g_ep));
    if (cfg.sockaddr) {
        /* the rkey needs the endpoint's final configuration: wait for the
         * wireup (a flush completes after it) */
        memset(&p, 0, sizeof(p));
        r = ucp_ep_flush_nbx(g_ep, &p);
        if (UCS_PTR_IS_ERR(r)) {
            st = UCS_PTR_STATUS(r);
        } else if (r != NULL) {
            do {
                ucp_worker_progress(g_worker);
                st = ucp_request_check_status(r);
            } while (st == UCS_INPROGRESS);
            ucp_request_free(r);
        }
        CHECK("connecting to the listener", st);
    }
    CHECK("ucp_ep_rkey_unpack", ucp_ep_rkey_unpack(g_ep, rkey, &g_rkey));
}

/* track records a posted operation's outcome: an immediate one is printed
 * at once, a request is followed until it completes. */
static void track(struct op *o, ucs_status_ptr_t r)
{
    if (r == NULL) {
        event(o->index, o->kind, UCS_OK, "immediate");
        o->req = NULL;
        return;
    }
    if (UCS_PTR_IS_ERR(r)) {
        event(o->index, o->kind, UCS_PTR_STATUS(r), "immediate");
        o->req = NULL;
        return;
    }
    o->req = r;
}

static struct op *new_op(const char *kind, int polled)
{
    struct op *o;

    if (g_nops == PD_MAX_OPS) {
        die("too many operations", UCS_ERR_EXCEEDS_LIMIT);
    }
    o = &g_ops[g_nops];
    memset(o, 0, sizeof(*o));
    o->kind   = kind;
    o->polled = polled;
    o->index  = g_nops - g_first;
    g_nops++;
    return o;
}

static void param_for(struct op *o, ucp_request_param_t *p)
{
    memset(p, 0, sizeof(*p));
    if (!o->polled) {
        p->op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
        p->cb.send      = on_send;
        p->user_data    = o;
    }
}

static void post_put(size_t off, size_t len, int polled)
{
    ucp_request_param_t p;
    struct op          *o = new_op("put", polled);

    o->buf = (char *)g_lbuf + off;
    o->len = len;
    param_for(o, &p);
    track(o, ucp_put_nbx(g_ep, (char *)g_lbuf + off, len, g_raddr + off, g_rkey, &p));
}

static void post_get(size_t off, size_t len, int polled)
{
    ucp_request_param_t p;
    struct op          *o = new_op("get", polled);

    o->buf = (char *)g_lbuf + off;
    o->len = len;
    param_for(o, &p);
    track(o, ucp_get_nbx(g_ep, (char *)g_lbuf + off, len, g_raddr + off, g_rkey, &p));
}

static void post_flush(int polled)
{
    ucp_request_param_t p;
    struct op          *o = new_op("flush", polled);

    param_for(o, &p);
    track(o, ucp_ep_flush_nbx(g_ep, &p));
}

static void post_tag(size_t len)
{
    ucp_request_param_t p;
    struct op          *o = new_op("tagsend", 0);

    param_for(o, &p);
    track(o, ucp_tag_send_nbx(g_ep, g_lbuf, len, 0x1234, &p));
}

static void post_am(size_t len)
{
    ucp_request_param_t p;
    struct op          *o = new_op("amsend", 0);

    param_for(o, &p);
    track(o, ucp_am_send_nbx(g_ep, PD_AM_ID, NULL, 0, g_lbuf, len, &p));
}

static void post_stream(int polled)
{
    ucp_request_param_t p;
    struct op          *o = new_op("streamrecv", polled);
    char               *buf;

    memset(&p, 0, sizeof(p));
    if (!polled) {
        p.op_attr_mask  = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
        p.cb.recv_stream = on_stream;
        p.user_data     = o;
    }
    /* receives never share bytes with each other or with the batch's puts
     * and gets: each has its own slot after those */
    buf = (char *)g_lbuf + (size_t)cfg.count * cfg.size + (size_t)(o - g_ops) * PD_SMALL;
    track(o, ucp_stream_recv_nbx(g_ep, buf, PD_SMALL, &o->length, &p));
}

/* outstanding counts the requests of this phase not yet seen complete. */
static int outstanding(void)
{
    int i, n = 0;

    for (i = g_first; i < g_nops; i++) {
        n += g_ops[i].req != NULL;
    }
    return n;
}

/* With --protect, the local buffer of a put or get seen failed is made
 * inaccessible at once (the application may free it): if UCX touched it
 * again the process would die of SIGSEGV. Restored before phase "after",
 * whose operations reuse the buffers. */
static int g_protected;

static void protect(struct op *o, ucs_status_t st)
{
    if (!cfg.protect || st >= 0 || o->buf == NULL || ((uintptr_t)o->buf % 4096) != 0 || (o->len % 4096) != 0) {
        return;
    }
    if (mprotect(o->buf, o->len, PROT_NONE) != 0) {
        die("mprotect", UCS_ERR_IO_ERROR);
    }
    g_protected++;
}

static void unprotect_all(void)
{
    int i;

    if (g_protected == 0) {
        return;
    }
    printf("PROTECTED n=%d\n", g_protected);
    for (i = 0; i < g_nops; i++) {
        if (g_ops[i].buf != NULL && mprotect(g_ops[i].buf, g_ops[i].len, PROT_READ | PROT_WRITE) != 0) {
            die("mprotect", UCS_ERR_IO_ERROR);
        }
    }
}

/* settle progresses once and reaps what completed: callbacks ran inside
 * progress; polled requests are checked afterwards in index order. */
static void settle(void)
{
    struct op   *o;
    ucs_status_t st;
    int          i;

    ucp_worker_progress(g_worker);
    for (i = 0; i < g_nops; i++) {
        o = &g_ops[i];
        if (o->req == NULL) {
            continue;
        }
        if (o->polled) {
            st = ucp_request_check_status(o->req);
            if (st == UCS_INPROGRESS) {
                continue;
            }
            event(o->index, o->kind, st, "poll");
            protect(o, st);
        } else if (!o->done) {
            continue;
        } else {
            protect(o, o->cb_status);
        }
        ucp_request_free(o->req);
        o->req = NULL;
    }
}

/* wait_ops progresses until every request of this phase completed and,
 * when want_handler, the handler ran, or until ms pass; it returns the
 * requests of this phase left. Completions of earlier phases' requests are
 * printed as they come, in the current phase. */
static int wait_ops(unsigned ms, int want_handler)
{
    uint64_t deadline = mono_us() + (uint64_t)ms * 1000ull;

    for (;;) {
        settle();
        if (outstanding() == 0 && (!want_handler || g_handlers > 0)) {
            return 0;
        }
        if (mono_us() > deadline) {
            return outstanding();
        }
    }
}

/* report_pending prints the requests still in progress, from op first on. */
static void report_pending(int first)
{
    int i;

    for (i = first; i < g_nops; i++) {
        if (g_ops[i].req != NULL) {
            event(g_ops[i].index, g_ops[i].kind, UCS_INPROGRESS, "pending");
        }
    }
}

static void begin(const char *phase)
{
    g_phase = phase;
    g_first = g_nops;
}

/* check puts, gets and flushes on a live endpoint (each waited for). */
static void check_ep(void)
{
    begin("warm");
    post_put(0, PD_SMALL, 1);
    wait_ops(10000, 0);
    post_get(0, PD_SMALL, 1);
    wait_ops(10000, 0);
    post_flush(1);
    if (wait_ops(10000, 0) != 0) {
        die("checking the endpoint", UCS_ERR_TIMED_OUT);
    }
}

static void on_closed(void *req, ucs_status_t st, void *user)
{
    on_send(req, st, user);
}

/* close_ep closes the endpoint in the configured mode. Requests still
 * pending (a peer that never answered) complete here, or never. */
static void close_ep(int force)
{
    ucp_request_param_t p;
    struct op          *o = new_op("close", 0);

    memset(&p, 0, sizeof(p));
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_CALLBACK |
                     UCP_OP_ATTR_FIELD_USER_DATA;
    p.flags        = force ? UCP_EP_CLOSE_FLAG_FORCE : 0;
    p.cb.send      = on_closed;
    p.user_data    = o;
    if (g_rkey != NULL) {
        ucp_rkey_destroy(g_rkey);
        g_rkey = NULL;
    }
    track(o, ucp_ep_close_nbx(g_ep, &p));
    if (wait_ops(cfg.wait_ms, 0) != 0) {
        report_pending(g_first);
    }
    g_ep = NULL;
}

static void post_batch(void)
{
    int i;

    if (strcmp(cfg.scenario, "rma") == 0) {
        for (i = 0; i < cfg.count; i++) {
            post_put((size_t)i * cfg.size, cfg.size, 1);
        }
        for (i = 0; i < cfg.count; i++) {
            post_get((size_t)i * cfg.size, cfg.size, 1);
        }
        post_flush(1);
    } else if (strcmp(cfg.scenario, "cbsend") == 0) {
        post_tag(PD_SMALL);
        post_tag(cfg.size);
        post_am(PD_SMALL);
        post_am(cfg.size);
        post_flush(0);
    } else if (strcmp(cfg.scenario, "stream") == 0) {
        post_stream(0);
        post_stream(1);
    }
}

/* post_after posts one operation of each kind the scenario uses on the
 * failed endpoint: all are expected to fail at once. */
static void post_after(void)
{
    begin("after");
    post_put(0, PD_SMALL, 1);
    post_get(0, PD_SMALL, 1);
    post_flush(1);
    if (strcmp(cfg.scenario, "cbsend") == 0) {
        post_tag(cfg.after_size);
        post_am(cfg.after_size);
    } else if (strcmp(cfg.scenario, "stream") == 0) {
        post_stream(0);
    }
    if (wait_ops(cfg.wait_ms, 0) != 0) {
        report_pending(g_first);
    }
}

static int run_client(void)
{
    struct hello h;
    void        *addr, *rkey;
    FILE        *f;
    char         line[64];
    unsigned     maj, min, rel;
    int          round, left;

    ucp_get_version(&maj, &min, &rel);
    printf("VERSION %u.%u.%u\n", maj, min, rel);
    init_ucp();
    f = fopen(cfg.hello, "rb");
    if (f == NULL || fread(&h, sizeof(h), 1, f) != 1 || h.magic != PD_HELLO_MG ||
        h.addr_len == 0 || h.addr_len > 65536 || h.rkey_len == 0 || h.rkey_len > 65536) {
        die("reading the hello file", UCS_ERR_INVALID_PARAM);
    }
    addr = malloc(h.addr_len);
    rkey = malloc(h.rkey_len);
    if (addr == NULL || rkey == NULL || fread(addr, h.addr_len, 1, f) != 1 ||
        fread(rkey, h.rkey_len, 1, f) != 1) {
        die("reading the hello file", UCS_ERR_IO_ERROR);
    }
    fclose(f);
    g_raddr = h.raddr;
    if ((uint64_t)cfg.count * 2 * cfg.size > h.rlen) {
        die("--count * --size exceeds the server's buffer", UCS_ERR_INVALID_PARAM);
    }
    g_lbuf_len = cfg.count * cfg.size + PD_MAX_OPS * PD_SMALL;
    if (posix_memalign(&g_lbuf, 4096, g_lbuf_len) != 0) {
        die("malloc", UCS_ERR_NO_MEMORY);
    }
    memset(g_lbuf, 0x5a, g_lbuf_len);

    if (cfg.start_line) {
        /* the test arms something (a replay) before the endpoint exists */
        printf("READY pid=%d start-line\n", (int)getpid());
        if (fgets(line, sizeof(line), stdin) == NULL) {
            fprintf(stderr, "stdin closed before the start line\n");
        }
    }
    for (round = 0;; round++) {
        g_epno = round;
        connect_ep(addr, (uint16_t)h.port, rkey);
        check_ep();
        if (strcmp(cfg.scenario, "reconnect") != 0 || round == cfg.rounds - 1) {
            break;
        }
        close_ep(0);
    }

    printf("READY pid=%d\n", (int)getpid());
    if (fgets(line, sizeof(line), stdin) == NULL) {
        fprintf(stderr, "stdin closed before the go line\n");
    }
    begin("post");
    post_batch();
    printf("POSTED t_us=%llu\n", (unsigned long long)now_us());
    g_phase = "inflight";
    left    = wait_ops(cfg.wait_ms, 1);
    if (left != 0 || g_handlers == 0) {
        g_phase = "pending";
        report_pending(g_first);
    }
    printf("SETTLED t_us=%llu\n", (unsigned long long)now_us());
    begin("hold");
    {
        uint64_t end = mono_us() + (uint64_t)cfg.hold_ms * 1000ull;
        while (mono_us() < end) {
            settle();
        }
    }
    /* the batch's requests still pending stay where they are: the close
     * below decides their fate, and they are printed when they complete */
    unprotect_all();
    post_after();
    begin("close");
    close_ep(cfg.force_close);
    begin("linger");
    {
        uint64_t end = mono_us() + (uint64_t)cfg.linger_ms * 1000ull;
        while (mono_us() < end) {
            settle();
        }
    }
    report_pending(0);
    if (cfg.reconnect) {
        /* phase "warm" again, on the next endpoint: it must live */
        g_epno = round + 1;
        connect_ep(addr, (uint16_t)h.port, rkey);
        check_ep();
        begin("close");
        close_ep(0);
    }
    printf("DONE handlers=%d\n", g_handlers);
    /* Leave without exit()'s destructors: once, under load, a client on
     * UCX 1.22.0 printed DONE and then never exited (not reproduced in 8
     * runs since; the cause is not known). What the application saw is
     * printed; the kernel frees the rest. */
    fflush(stdout);
    _exit(0);
}

static void usage(void)
{
    fprintf(stderr, "usage: peerdeath server --hello FILE\n"
                    "       peerdeath client --hello FILE --scenario rma|cbsend|stream|idle|reconnect\n"
                    "                 [--connect address|sockaddr]\n"
                    "                 [--close force|flush] [--count N] [--size BYTES]\n"
                    "                 [--rounds R] [--wait-ms MS] [--hold-ms MS] [--linger-ms MS]\n"
                    "                 [--start-line] [--after-size BYTES]\n");
    exit(2);
}

static long num(const char *s, long lo, long hi)
{
    char *end;
    long  v = strtol(s, &end, 10);

    if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "bad number %s (want %ld..%ld)\n", s, lo, hi);
        usage();
    }
    return v;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"hello", required_argument, NULL, 'h'},    {"scenario", required_argument, NULL, 's'},
        {"close", required_argument, NULL, 'c'},    {"count", required_argument, NULL, 'n'},
        {"size", required_argument, NULL, 'z'},     {"rounds", required_argument, NULL, 'r'},
        {"wait-ms", required_argument, NULL, 'w'},  {"linger-ms", required_argument, NULL, 'l'},
        {"hold-ms", required_argument, NULL, 'o'},  {"protect", no_argument, NULL, 'P'},
        {"reconnect", no_argument, NULL, 'R'},      {"start-line", no_argument, NULL, 'S'},
        {"connect", required_argument, NULL, 'C'},  {"after-size", required_argument, NULL, 'A'},
        {NULL, 0, NULL, 0}};
    int server, c;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) {
        usage();
    }
    server = strcmp(argv[1], "server") == 0;
    if (!server && strcmp(argv[1], "client") != 0) {
        usage();
    }
    optind = 2;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'h': cfg.hello = optarg; break;
        case 's': cfg.scenario = optarg; break;
        case 'c':
            if (strcmp(optarg, "force") == 0) {
                cfg.force_close = 1;
            } else if (strcmp(optarg, "flush") == 0) {
                cfg.force_close = 0;
            } else {
                usage();
            }
            break;
        case 'n': cfg.count = (int)num(optarg, 1, 16); break;
        case 'z': cfg.size = (size_t)num(optarg, PD_SMALL, 1 << 20); break;
        case 'r': cfg.rounds = (int)num(optarg, 1, 32); break;
        case 'w': cfg.wait_ms = (unsigned)num(optarg, 1, 600000); break;
        case 'C':
            if (strcmp(optarg, "sockaddr") == 0) {
                cfg.sockaddr = 1;
            } else if (strcmp(optarg, "address") != 0) {
                usage();
            }
            break;
        case 'o': cfg.hold_ms = (unsigned)num(optarg, 0, 600000); break;
        case 'P': cfg.protect = 1; break;
        case 'R': cfg.reconnect = 1; break;
        case 'S': cfg.start_line = 1; break;
        case 'l': cfg.linger_ms = (unsigned)num(optarg, 0, 600000); break;
        case 'A': cfg.after_size = (size_t)num(optarg, PD_SMALL, 1 << 20); break;
        default: usage();
        }
    }
    if (cfg.hello == NULL || optind != argc || cfg.after_size > (size_t)cfg.count * cfg.size) {
        usage(); /* the after phase's sends read the batch's buffer */
    }
    if (server) {
        return run_server();
    }
    if (cfg.scenario == NULL ||
        (strcmp(cfg.scenario, "rma") != 0 && strcmp(cfg.scenario, "cbsend") != 0 &&
         strcmp(cfg.scenario, "stream") != 0 && strcmp(cfg.scenario, "idle") != 0 &&
         strcmp(cfg.scenario, "reconnect") != 0)) {
        usage();
    }
    return run_client();
}
