/*
 * ucxfault injector: failures delivered on completion, and the hooks that
 * keep the state they need (endpoint creation, request free, progress).
 *
 * A deferred failure lets the operation run for real. The wrapper passes
 * libucp a copy of the application's ucp_request_param_t with
 * UCP_OP_ATTR_FLAG_NO_IMM_CMPL, so that the operation always returns a
 * request, and with its callback replaced by a trampoline. When the
 * operation completes, the trampoline calls the application's callback with
 * the injected status (a real error wins), and status queries on the
 * request (ucp_request_check_status, ucp_request_test) return it too.
 *
 * With NO_IMM_CMPL, libucp may call the callback inside the call; UCX never
 * does that for an application that did not ask for it, so a callback fired
 * inside the call is kept and delivered from the thread's next
 * ucp_worker_progress, where UCX delivers completions.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ucxfault.h"
#include "record.h"

struct ucxf_cb_ctx {
    struct ucxf_cb_ctx *next;
    int kind;
    int code;
    int in_call; /* the real call has not returned yet */
    int fired;   /* libucp called the trampoline inside the call */
    union {
        ucp_send_nbx_callback_t send;
        ucp_tag_recv_nbx_callback_t recv;
        ucp_stream_recv_nbx_callback_t recv_stream;
        ucp_am_recv_data_nbx_callback_t recv_am;
    } cb;
    void *user_data;
    /* What libucp passed to the trampoline. */
    void *request;
    ucs_status_t status;
    ucp_tag_recv_info_t info;
    size_t length;
};

/* Callbacks fired inside a call, waiting for this thread's next progress. */
UCXF_HIDDEN __thread struct ucxf_cb_ctx *ucxf_pending_cbs __attribute__((tls_model("initial-exec")));

/* Callbacks waiting in some thread's list, kills waiting for progress, and
 * 1 << 20 once two libucp copies are mapped: while it is 0 the
 * ucp_worker_progress wrapper is one load and a branch. */
UCXF_HIDDEN int ucxf_progress_work;

static void ucxf_deliver(struct ucxf_cb_ctx *x)
{
    /* A real error wins over an injected one. */
    ucs_status_t st = x->status == UCS_OK ? (ucs_status_t)x->code : x->status;

    switch (x->kind) {
    case UCXF_CB_SEND:
        x->cb.send(x->request, st, x->user_data);
        break;
    case UCXF_CB_RECV:
        x->cb.recv(x->request, st, &x->info, x->user_data);
        break;
    case UCXF_CB_RECV_STREAM:
        x->cb.recv_stream(x->request, st, x->length, x->user_data);
        break;
    case UCXF_CB_RECV_AM:
        x->cb.recv_am(x->request, st, x->length, x->user_data);
        break;
    }
    free(x);
}

static void ucxf_fire(struct ucxf_cb_ctx *x, void *request, ucs_status_t status)
{
    x->request = request;
    x->status  = status;
    if (x->code == 0) {
        /* A followed request whose endpoint was killed while it was in
         * flight (ucxf_defer_kill) completes with the kill's code. */
        x->code = ucxf_defer_peek(request);
    }
    if (x->in_call) {
        x->fired = 1; /* delivered from progress, see ucxf_defer_done */
        return;
    }
    ucxf_deliver(x);
}

static void ucxf_tramp_send(void *request, ucs_status_t status, void *user_data)
{
    ucxf_fire(user_data, request, status);
}

static void ucxf_tramp_recv(void *request, ucs_status_t status, const ucp_tag_recv_info_t *info,
                            void *user_data)
{
    struct ucxf_cb_ctx *x = user_data;
    if (info != NULL) {
        x->info = *info; /* libucp's copy is gone once the callback returns */
    }
    ucxf_fire(x, request, status);
}

static void ucxf_tramp_length(void *request, ucs_status_t status, size_t length, void *user_data)
{
    struct ucxf_cb_ctx *x = user_data;
    x->length             = length;
    ucxf_fire(x, request, status);
}

const ucp_request_param_t *ucxf_defer_param(struct ucxf_call *c, const ucp_request_param_t *param,
                                            ucp_request_param_t *copy, int kind)
{
    struct ucxf_cb_ctx *x;

    if (c->deferred_code == 0) {
        /* Only followed, for kill-ep: the operation runs as the application
         * asked, and its trampoline (if it has a callback) asks the defer
         * table at completion whether the endpoint died meanwhile. */
        c->tracked = 1;
        if (!(param->op_attr_mask & UCP_OP_ATTR_FIELD_CALLBACK)) {
            return param;
        }
        *copy = *param;
    } else if (param->op_attr_mask & UCP_OP_ATTR_FLAG_FORCE_IMM_CMPL) {
        /* The application forbids a request: the failure can only be
         * immediate, or, where the function fails only on completion, none. */
        if (ucxf_hook_completion_only[c->hook]) {
            c->deferred_code = 0;
        }
        return param;
    } else {
        *copy = *param;
        copy->op_attr_mask |= UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
        if (!(param->op_attr_mask & UCP_OP_ATTR_FIELD_CALLBACK)) {
            return copy; /* the application polls: the defer table answers */
        }
    }
    x = calloc(1, sizeof(*x));
    if (x == NULL) {
        c->deferred_code = 0; /* no memory: let the operation be */
        return param;
    }
    x->kind      = kind;
    x->code      = c->deferred_code;
    x->in_call   = 1;
    x->user_data = (param->op_attr_mask & UCP_OP_ATTR_FIELD_USER_DATA) ? param->user_data : NULL;
    switch (kind) {
    case UCXF_CB_SEND:
        x->cb.send      = param->cb.send;
        copy->cb.send   = ucxf_tramp_send;
        break;
    case UCXF_CB_RECV:
        x->cb.recv      = param->cb.recv;
        copy->cb.recv   = ucxf_tramp_recv;
        break;
    case UCXF_CB_RECV_STREAM:
        x->cb.recv_stream    = param->cb.recv_stream;
        copy->cb.recv_stream = ucxf_tramp_length;
        break;
    case UCXF_CB_RECV_AM:
        x->cb.recv_am    = param->cb.recv_am;
        copy->cb.recv_am = ucxf_tramp_length;
        break;
    }
    copy->user_data = x;
    copy->op_attr_mask |= UCP_OP_ATTR_FIELD_USER_DATA;
    c->cb_ctx = x;
    return copy;
}

void ucxf_defer_done(struct ucxf_call *c, int attached)
{
    struct ucxf_cb_ctx *x = c->cb_ctx;

    if (x == NULL) {
        return;
    }
    x->in_call = 0;
    if (!attached) {
        /* The call failed for real or completed at once: libucp calls no
         * callback for either, so neither do we. */
        free(x);
        return;
    }
    if (x->fired) {
        x->next          = ucxf_pending_cbs;
        ucxf_pending_cbs = x;
        __atomic_add_fetch(&ucxf_progress_work, 1, __ATOMIC_RELEASE);
    }
}

void ucxf_progress_deliver(ucp_worker_h worker)
{
    if (UCXF_UNLIKELY(ucxf_pending_cbs != NULL)) {
        struct ucxf_cb_ctx *x = ucxf_pending_cbs;
        ucxf_pending_cbs      = NULL;
        while (x != NULL) {
            struct ucxf_cb_ctx *next = x->next;
            ucxf_deliver(x);
            __atomic_sub_fetch(&ucxf_progress_work, 1, __ATOMIC_RELEASE);
            x = next;
        }
    }
    if (UCXF_UNLIKELY(__atomic_load_n(&ucxf_kill_pending, __ATOMIC_RELAXED))) {
        ucxf_ep_deliver_kills(worker);
    }
}

void ucxf_request_forget(void *request)
{
    ucxf_defer_forget(request);
}

void ucxf_after_ep_create(ucp_worker_h worker, const ucp_ep_params_t *params, ucp_ep_h *ep_p)
{
    ucp_err_handler_cb_t cb = NULL;
    void *arg               = NULL;

    /* The handler's argument is what UCX gives it: ucp_ep_adjust_params
     * (src/ucp/core/ucp_ep.c, 1.13.1) stores err_handler.arg, then
     * user_data over it when UCP_EP_PARAM_FIELD_USER_DATA is set
     * ("user_data overrides err_handler.arg", ucp_def.h), and
     * ucp_ep_invoke_err_cb passes that one pointer. */
    if (params->field_mask & UCP_EP_PARAM_FIELD_ERR_HANDLER) {
        cb  = params->err_handler.cb;
        arg = params->err_handler.arg;
    }
    if (params->field_mask & UCP_EP_PARAM_FIELD_USER_DATA) {
        arg = params->user_data;
    }
    ucxf_ep_set_info(*ep_p, worker, cb, arg);
}

UCXF_HIDDEN __thread void *ucxf_forced_close __attribute__((tls_model("initial-exec")));

/*
 * A killed endpoint's close ends as it does after a real peer death. With
 * UCP_EP_CLOSE_FLAG_FORCE, ucp_ep_close_nbx (src/ucp/core/ucp_ep.c, 1.13.1)
 * discards the lanes and returns UCS_OK whether or not the peer is alive:
 * the real close runs and its result is the application's (ucxf_enter lets
 * it through). A close in flush mode fails with the endpoint's code, as the
 * flush of a failed endpoint does (ucxf_fault_ep_close). Either way the
 * handler of a kill not yet delivered runs first, from the progress UCX
 * would make while closing.
 */
void ucxf_before_ep_close(ucp_ep_h ep, const ucp_request_param_t *param)
{
    ucxf_forced_close = NULL;
    if (UCXF_LIKELY(!__atomic_load_n(&ucxf_cfg, __ATOMIC_ACQUIRE)->kills)) {
        return;
    }
    if (ucxf_ep_kill_code(ep) < 0) {
        void *worker = ucxf_ep_worker(ep);
        if (worker != NULL) {
            ucxf_before_worker_progress(worker);
        }
        if ((param->op_attr_mask & UCP_OP_ATTR_FIELD_FLAGS) && (param->flags & UCP_EP_CLOSE_FLAG_FORCE)) {
            ucxf_forced_close = ep;
        }
    }
}

/*
 * A failed ucp_ep_close_nbx promises that the endpoint's resources were
 * released, so the endpoint is closed for real, with UCP_EP_CLOSE_FLAG_FORCE,
 * before the injected error is returned. The close is waited for (bounded)
 * by progressing the endpoint's worker when it is known.
 */
ucs_status_ptr_t ucxf_fault_ep_close(ucs_status_ptr_t (*real)(ucp_ep_h, const ucp_request_param_t *),
                                     ucp_ep_h ep, const ucp_request_param_t *param, int code)
{
    __typeof__(ucp_request_check_status) *check =
        (__typeof__(ucp_request_check_status) *)ucxf_real[UCXF_HOOK_REQUEST_CHECK_STATUS];
    __typeof__(ucp_worker_progress) *progress =
        (__typeof__(ucp_worker_progress) *)ucxf_real[UCXF_HOOK_WORKER_PROGRESS];
    __typeof__(ucp_request_free) *release = (__typeof__(ucp_request_free) *)ucxf_real[UCXF_HOOK_REQUEST_FREE];
    void *worker = ucxf_ep_worker(ep);
    ucp_request_param_t force;
    ucs_status_ptr_t req;
    struct timespec t0, now;

    (void)param;
    /* A dead endpoint's error handler runs before its close returns, from
     * the progress UCX would make while closing. */
    if (worker != NULL) {
        ucxf_before_worker_progress(worker);
    }
    memset(&force, 0, sizeof(force));
    force.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    force.flags        = UCP_EP_CLOSE_FLAG_FORCE;
    req                = real(ep, &force);
    if (!UCS_PTR_IS_PTR(req)) {
        return UCS_STATUS_PTR(code);
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (check != NULL && progress != NULL && worker != NULL && check(req) == UCS_INPROGRESS) {
        progress(worker);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec >= 2) {
            break;
        }
    }
    if (release != NULL) {
        release(req); /* released by libucp once complete, if it is not yet */
    }
    return UCS_STATUS_PTR(code);
}

/* ------------------------------------------------------------------ */
/* Libraries that bypass the injector                                   */
/* ------------------------------------------------------------------ */

#include <dlfcn.h>
#include <stdio.h>

#define UCXF_MAX_BYPASS 8
static char ucxf_bypass[UCXF_MAX_BYPASS][256];
static int ucxf_nbypass;

/*
 * A library opened with RTLD_DEEPBIND resolves its symbols in its own
 * dependencies first, so its ucp_* calls go straight to libucp and no
 * LD_PRELOAD wrapper sees them. It cannot be injected (only an LD_AUDIT
 * library could), but it must not be injected nothing in silence: dlopen is
 * wrapped to notice it, say so on stderr, and list it in status.
 */
void *dlopen(const char *file, int mode)
{
    static void *(*real_dlopen)(const char *, int);
    void *(*next)(const char *, int) = __atomic_load_n(&real_dlopen, __ATOMIC_ACQUIRE);
    void *handle;

    if (next == NULL) {
        next = (void *(*)(const char *, int))dlsym(RTLD_NEXT, "dlopen");
        if (next == NULL) {
            return NULL;
        }
        __atomic_store_n(&real_dlopen, next, __ATOMIC_RELEASE);
    }
    handle = next(file, mode);
    if (handle != NULL) {
        ucxf_after_dlopen();
    }
    if (handle != NULL && (mode & RTLD_DEEPBIND) && file != NULL) {
        void *sym = dlsym(handle, "ucp_put_nbx");
        Dl_info mine, theirs;
        if (sym != NULL && dladdr((void *)ucxf_resolve, &mine) != 0 && dladdr(sym, &theirs) != 0 &&
            mine.dli_fbase != theirs.dli_fbase) {
            int n = __atomic_fetch_add(&ucxf_nbypass, 1, __ATOMIC_RELAXED);
            if (n < UCXF_MAX_BYPASS) {
                snprintf(ucxf_bypass[n], sizeof(ucxf_bypass[n]), "%s", file);
            }
            fprintf(stderr,
                    "ucxfault: %s was opened with RTLD_DEEPBIND and binds libucp directly: "
                    "its UCX calls bypass the injector\n",
                    file);
        }
    }
    return handle;
}

/* Copies the i-th bypassing library's path into buf; returns how many
 * there are. */
int ucxf_bypassed(int i, char *buf, size_t len)
{
    int n = __atomic_load_n(&ucxf_nbypass, __ATOMIC_RELAXED);

    if (i >= 0 && i < n && i < UCXF_MAX_BYPASS && len > 0) {
        snprintf(buf, len, "%s", ucxf_bypass[i]);
    }
    return n;
}
