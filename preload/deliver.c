/*
 * ucxfault injector: completion delivery. Failures delivered on completion
 * (trampolines, delivery from progress), and the hooks that keep the state
 * they need (endpoint creation and close, request free, progress).
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
#include <stdio.h>
#include <time.h>

#include "ucxfault.h"
#include "record.h"
#include "endpoint.h"
#include "defer.h"

struct ucxf_cb_ctx {
    struct ucxf_cb_ctx *next;
    int kind;
    int code;
    int in_call; /* the real call has not returned yet */
    int fired;   /* libucp called the trampoline inside the call */
    int hook;    /* the operation, for the record of its delivery */
    int after_kill; /* posted on an endpoint already killed (ucxf_ep_inflight_status) */
    uint64_t hold_ns; /* a rule holds the completion (defer.c, ucxf_defer_held) */
    void *ep;
    uint64_t size;
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
UCXF_HIDDEN __thread struct ucxf_cb_ctx *ucxf_held_cbs __attribute__((tls_model("initial-exec")));

/*
 * A callback whose completion a rule holds: libucp has completed the
 * operation (it called the trampoline), so the request is done for UCX and
 * nothing touches its buffers any more; the application learns it only
 * when the hold ends (ucxf_defer_held), from a later progress of this
 * thread, as UCX delivers callbacks. Returns 1 when x is kept (or dropped,
 * its request freed by the application), 0 when it is to be delivered now,
 * with the status that ended the hold early in x->status.
 */
static int ucxf_hold_callback(struct ucxf_cb_ctx *x)
{
    int code, held = ucxf_defer_held(x->request, &code);

    if (held < 0) {
        /* No entry: ucp_request_free took it (the application freed the
         * request while its callback was held, so UCX would call none). */
        free(x);
        return 1;
    }
    if (held) {
        x->next       = ucxf_held_cbs;
        ucxf_held_cbs = x;
        __atomic_add_fetch(&ucxf_progress_work, 1, __ATOMIC_RELEASE);
        return 1;
    }
    x->hold_ns = 0;
    if (code < 0) {
        /* Cancelled, closed or killed while held: UCX completes such a
         * request with that status, whatever the operation had done. */
        x->status = (ucs_status_t)code;
        x->code   = 0;
    }
    return 0;
}

/* Drops, from one of this thread's callback lists, the callbacks of a
 * request the application freed: UCX calls none after ucp_request_free. */
static void ucxf_drop_cbs(struct ucxf_cb_ctx **p, void *request)
{
    while (*p != NULL) {
        struct ucxf_cb_ctx *x = *p;
        if (x->request != request) {
            p = &x->next;
            continue;
        }
        *p = x->next;
        free(x);
        __atomic_sub_fetch(&ucxf_progress_work, 1, __ATOMIC_RELEASE);
    }
}

static void ucxf_deliver(struct ucxf_cb_ctx *x)
{
    ucs_status_t st;

    if (UCXF_UNLIKELY(x->hold_ns != 0) && ucxf_hold_callback(x)) {
        return;
    }
    /* A real error wins over an injected one. */
    st = x->status == UCS_OK ? (ucs_status_t)x->code
                             : (ucs_status_t)ucxf_ep_inflight_status(x->ep, x->status, !x->after_kill);

    /* Recorded before the application's callback runs: it may free the
     * request (MPICH does), which must then find it delivered. */
    ucxf_defer_set_delivered(x->request);
    ucxf_delivered(x->hook, st, x->ep, x->size, x->request,
                   x->status == UCS_OK && x->code < 0 ? UCXF_MARK_INJECTED : 0);
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

/*
 * The parameter a deferred failure hands libucp is a copy of the
 * application's, and the application may have been built against other UCX
 * headers than the injector: ucp_request_param_t grew from 72 to 96 bytes in
 * UCX 1.22 (remote_datatype, remote, remote_count, mask bits 9-11), and it
 * may grow again. A copy therefore holds exactly the members its mask
 * describes, read from the application's structure by the offsets of this
 * build's headers (the same in every version: members are only appended),
 * and is made only when every mask bit is one these headers know. Otherwise
 * the parameter is never rewritten (ucxf_defer_param).
 */
#define UCXF_PARAM_FIELDS                                                                          \
    (UCP_OP_ATTR_FIELD_REQUEST | UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |        \
     UCP_OP_ATTR_FIELD_DATATYPE | UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_REPLY_BUFFER |       \
     UCP_OP_ATTR_FIELD_MEMORY_TYPE | UCP_OP_ATTR_FIELD_RECV_INFO | UCP_OP_ATTR_FIELD_MEMH |         \
     UCXF_PARAM_FIELDS_1_22)
#if UCP_API_VERSION >= UCP_VERSION(1, 22)
#define UCXF_PARAM_FIELDS_1_22                                                                     \
    (UCP_OP_ATTR_FIELD_REMOTE_DATATYPE | UCP_OP_ATTR_FIELD_REMOTE | UCP_OP_ATTR_FIELD_REMOTE_COUNT)
#else
#define UCXF_PARAM_FIELDS_1_22 0
#endif
#define UCXF_PARAM_FLAGS                                                                           \
    (UCP_OP_ATTR_FLAG_NO_IMM_CMPL | UCP_OP_ATTR_FLAG_FAST_CMPL | UCP_OP_ATTR_FLAG_FORCE_IMM_CMPL | \
     UCP_OP_ATTR_FLAG_MULTI_SEND)
#define UCXF_PARAM_KNOWN ((uint32_t)(UCXF_PARAM_FIELDS | UCXF_PARAM_FLAGS))

#define UCXF_PARAM_END(m) (offsetof(ucp_request_param_t, m) + sizeof(((ucp_request_param_t *)0)->m))

static const struct {
    uint32_t bit;
    size_t end;
} ucxf_param_members[] = {
    {UCP_OP_ATTR_FIELD_REQUEST, UCXF_PARAM_END(request)},
    {UCP_OP_ATTR_FIELD_CALLBACK, UCXF_PARAM_END(cb)},
    {UCP_OP_ATTR_FIELD_USER_DATA, UCXF_PARAM_END(user_data)},
    {UCP_OP_ATTR_FIELD_DATATYPE, UCXF_PARAM_END(datatype)},
    {UCP_OP_ATTR_FIELD_FLAGS, UCXF_PARAM_END(flags)},
    {UCP_OP_ATTR_FIELD_REPLY_BUFFER, UCXF_PARAM_END(reply_buffer)},
    {UCP_OP_ATTR_FIELD_MEMORY_TYPE, UCXF_PARAM_END(memory_type)},
    {UCP_OP_ATTR_FIELD_RECV_INFO, UCXF_PARAM_END(recv_info)},
    {UCP_OP_ATTR_FIELD_MEMH, UCXF_PARAM_END(memh)},
#if UCP_API_VERSION >= UCP_VERSION(1, 22)
    {UCP_OP_ATTR_FIELD_REMOTE_DATATYPE, UCXF_PARAM_END(remote_datatype)},
    {UCP_OP_ATTR_FIELD_REMOTE, UCXF_PARAM_END(remote)},
    {UCP_OP_ATTR_FIELD_REMOTE_COUNT, UCXF_PARAM_END(remote_count)},
#endif
};

/* Copies the members param's mask describes (all known to this build) into
 * copy, zeroing the rest: nothing past them is read from the application. */
static void ucxf_param_copy(ucp_request_param_t *copy, const ucp_request_param_t *param)
{
    size_t end = UCXF_PARAM_END(flags), i;

    for (i = 0; i < sizeof(ucxf_param_members) / sizeof(ucxf_param_members[0]); i++) {
        if ((param->op_attr_mask & ucxf_param_members[i].bit) && ucxf_param_members[i].end > end) {
            end = ucxf_param_members[i].end;
        }
    }
    memset(copy, 0, sizeof(*copy));
    memcpy(copy, param, end);
}

static int ucxf_unknown_param_warned;

/* 1 when param's mask has bits this build's headers do not define: the
 * parameter is then passed on as it is, or the call fails at once. Says so
 * once per process, on stderr. */
static int ucxf_param_unknown(const struct ucxf_call *c, const ucp_request_param_t *param)
{
    uint32_t unknown = param->op_attr_mask & ~UCXF_PARAM_KNOWN;

    if (UCXF_LIKELY(unknown == 0)) {
        return 0;
    }
    if (__atomic_exchange_n(&ucxf_unknown_param_warned, 1, __ATOMIC_RELAXED) == 0) {
        fprintf(stderr,
                "ucxfault: %s: ucp_request_param_t mask bits 0x%x are newer than the UCX %d.%d headers "
                "this injector was built with; such parameters are never copied or rewritten: a deferred "
                "failure is delivered through polls, or returned at once where the call has a callback\n",
                ucxf_hook_names[c->hook], unknown, UCP_API_MAJOR, UCP_API_MINOR);
    }
    return 1;
}

/*
 * The parameter to pass libucp for a call with a deferred failure, or one
 * followed for kill-ep. NULL means the call must fail at once with
 * c->deferred_code (its parameter has a callback that cannot be wrapped:
 * ucxf_param_unknown), which the caller does through ucxf_leave without
 * calling libucp.
 */
const ucp_request_param_t *ucxf_defer_param(struct ucxf_call *c, const ucp_request_param_t *param,
                                            ucp_request_param_t *copy, int kind)
{
    struct ucxf_cb_ctx *x;

    if (UCXF_UNLIKELY(c->hold_ns != 0)) {
        if ((param->op_attr_mask & UCP_OP_ATTR_FLAG_FORCE_IMM_CMPL) || ucxf_param_unknown(c, param)) {
            /* No request to hold (the application forbids one), or a
             * parameter this build cannot copy: the call is not held. */
            c->hold_ns = 0;
            if (c->deferred_code == 0 && !ucxf_tracks(c)) {
                return param;
            }
        } else {
            /* Always a request, so that a completion at once is held too;
             * its callback, if any, goes through a trampoline. */
            c->tracked = c->deferred_code == 0;
            ucxf_param_copy(copy, param);
            copy->op_attr_mask |= UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
            if (!(param->op_attr_mask & UCP_OP_ATTR_FIELD_CALLBACK)) {
                return copy; /* polled: the defer table answers */
            }
            goto wrap;
        }
    }
    if (c->deferred_code == 0) {
        /* Only followed, for kill-ep: the operation runs as the application
         * asked, and its trampoline (if it has a callback) asks the defer
         * table at completion whether the endpoint died meanwhile. */
        c->tracked = 1;
        if (!(param->op_attr_mask & UCP_OP_ATTR_FIELD_CALLBACK) || ucxf_param_unknown(c, param)) {
            return param; /* a kill reaches its polls only */
        }
        ucxf_param_copy(copy, param);
    } else if (param->op_attr_mask & UCP_OP_ATTR_FLAG_FORCE_IMM_CMPL) {
        /* The application forbids a request: the failure can only be
         * immediate, or, where the function fails only on completion, none. */
        if (ucxf_hook_completion_only[c->hook]) {
            c->deferred_code = 0;
        }
        return param;
    } else if (UCXF_UNLIKELY(ucxf_param_unknown(c, param))) {
        if (!(param->op_attr_mask & UCP_OP_ATTR_FIELD_CALLBACK)) {
            /* Polled: the defer table answers its polls, and ucxf_leave
             * fails it now if it completes at once. */
            return param;
        }
        if (ucxf_hook_completion_only[c->hook]) {
            c->deferred_code = 0; /* it must run: no failure */
            return param;
        }
        return NULL;
    } else {
        ucxf_param_copy(copy, param);
        copy->op_attr_mask |= UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
        if (!(param->op_attr_mask & UCP_OP_ATTR_FIELD_CALLBACK)) {
            return copy; /* the application polls: the defer table answers */
        }
    }
wrap:
    x = calloc(1, sizeof(*x));
    if (x == NULL) {
        c->deferred_code = 0; /* no memory: let the operation be */
        if (c->hold_ns != 0) {
            /* The copy asks for a request; the hold stays (polls). */
            return copy;
        }
        return param;
    }
    x->kind      = kind;
    x->code      = c->deferred_code;
    x->in_call   = 1;
    x->hook      = c->hook;
    x->hold_ns   = c->hold_ns;
    x->ep        = c->ep;
    x->after_kill = c->ep != NULL && ucxf_ep_dead_code(c->ep) != 0;
    x->size      = c->size;
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

/* The deferred fast half (ucxf_trk_* in hooks_gen.c): a polled operation
 * of hook on ep that passed returned request, followed for kill-ep as
 * ucxf_leave follows a tracked call's (no room in the table: a kill then
 * reaches it through nothing, as there). An operation without an
 * endpoint is not followed (ucxf_tracks). */
void ucxf_track_pass(int hook, void *ep, uint64_t size, void *request)
{
    if (ep != NULL) {
        ucxf_defer_put_hold(request, 0, ep, hook, size, 0);
    } else if (ucxf_defer_active()) {
        ucxf_defer_forget(request); /* a request pointer used again carries nothing over */
    }
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
    if (x->hold_ns != 0 && attached < 0) {
        /* The defer table had no room: nothing would end the hold. */
        x->hold_ns = 0;
    }
    if (x->fired) {
        x->next          = ucxf_pending_cbs;
        ucxf_pending_cbs = x;
        __atomic_add_fetch(&ucxf_progress_work, 1, __ATOMIC_RELEASE);
    }
}

void ucxf_progress_deliver(ucp_worker_h worker)
{
    if (UCXF_UNLIKELY(ucxf_held_cbs != NULL)) {
        /* Each is looked at again; ucxf_deliver keeps those still held. */
        struct ucxf_cb_ctx *x = ucxf_held_cbs;
        ucxf_held_cbs         = NULL;
        while (x != NULL) {
            struct ucxf_cb_ctx *next = x->next;
            __atomic_sub_fetch(&ucxf_progress_work, 1, __ATOMIC_RELEASE);
            ucxf_deliver(x);
            x = next;
        }
    }
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

void ucxf_request_forget(void *request, int freed)
{
    struct ucxf_defer_info di;

    if (!freed && UCXF_UNLIKELY(ucxf_defer_is_held(request))) {
        /* ucp_request_release of a held request: UCX still calls its
         * callback, so the hold stays until it is delivered (the entry
         * goes when the pointer is used again, ucxf_defer_put). */
        return;
    }
    if (freed && ucxf_pending_cbs != NULL) {
        /* libucp calls no callback once a request is freed: one fired
         * inside the call and kept for progress is dropped too. */
        ucxf_drop_cbs(&ucxf_pending_cbs, request);
    }
    if (freed && ucxf_held_cbs != NULL) {
        /* A held callback (delay-completion=, hang) of a freed request is
         * never delivered: UCX calls none after ucp_request_free. The
         * operation completed for real before it was held, so libucp's
         * free releases the request at once. */
        ucxf_drop_cbs(&ucxf_held_cbs, request);
    }
    if (ucxf_defer_take(request, &di) < 0) {
        return;
    }
    if (freed && di.code < 0 && !di.delivered) {
        /* ucp_request_free before completion: libucp will call no
         * callback, so the application can no longer learn the failure.
         * It was injected (and counted) all the same: recorded as such,
         * with its outcome unknown to the application. (A released
         * request still gets its callback, which records it.) */
        ucxf_delivered(di.hook, di.code, di.ep, di.size, request, UCXF_MARK_INJECTED | UCXF_MARK_UNLEARNED);
    }
}

/* ucp_request_cancel: a request whose completion a rule holds ends its
 * hold with UCS_ERR_CANCELED, as UCX completes a cancelled request. The real
 * cancel runs after: on a request still in flight (a tag receive) libucp
 * completes it with UCS_ERR_CANCELED through the trampoline; on one that
 * completed, libucp does nothing and the held callback is delivered from
 * the next progress. Polls answer UCS_ERR_CANCELED from now on. */
void ucxf_before_request_cancel(ucp_worker_h worker, void *request)
{
    (void)worker;
    if (UCXF_UNLIKELY(__atomic_load_n(&ucxf_defer_holds, __ATOMIC_RELAXED) != 0)) {
        ucxf_defer_cancel(request);
    }
}

/*
 * The application's error handlers run through the injector, so that each
 * call is recorded (a "handler" endpoint event) whoever makes it: libucp's
 * own failure path, for a real peer death or a kill (epfail.c). The
 * parameters of ucp_ep_create are copied, member by member as their mask
 * names them, into a per-thread copy whose handler is ucxf_err_trampoline;
 * its argument stays the application's, so libucp hands the handler what
 * it would have. A mask with bits these headers do not know is passed as
 * it is (the handler's calls then go unrecorded). The copy is per thread,
 * not on the wrapper's stack, so that the wrapper's jumps stay tail calls.
 */
/* The endpoint whose close an older close call of this thread
 * (ucp_ep_close_nb, ucp_disconnect_nb, ucp_ep_destroy) has logged: the
 * ucp_ep_close_nbx libucp calls underneath does not log it again. */
static __thread void *ucxf_close_logged __attribute__((tls_model("initial-exec")));

static __thread ucp_ep_params_t ucxf_ep_params_copy __attribute__((tls_model("initial-exec")));
static __thread ucp_err_handler_cb_t ucxf_ep_params_cb __attribute__((tls_model("initial-exec")));

#define UCXF_EP_PARAM_KNOWN                                                                                \
    (UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |                            \
     UCP_EP_PARAM_FIELD_ERR_HANDLER | UCP_EP_PARAM_FIELD_USER_DATA | UCP_EP_PARAM_FIELD_SOCK_ADDR |        \
     UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_NAME |                \
     UCP_EP_PARAM_FIELD_LOCAL_SOCK_ADDR)

static void ucxf_err_trampoline(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    ucp_err_handler_cb_t cb = ucxf_ep_err_handler(ep);
    int32_t ordinal         = ucxf_ep_ordinal(ep);

    /* A kill's handler is the injector's doing; a real death's is not. */
    ucxf_record_ep_event(ordinal, UCXF_EPEV_HANDLER, status,
                         ucxf_ep_dead_code(ep) != 0 ? UCXF_EPCAUSE_KILL : UCXF_EPCAUSE_NONE, 0, 0);
    if (cb != NULL) {
        cb(arg, ep, status);
    }
}

const ucp_ep_params_t *ucxf_ep_params_rewrite(const ucp_ep_params_t *params)
{
    ucp_ep_params_t *c = &ucxf_ep_params_copy;
    uint64_t m;

    if (params == NULL || !(params->field_mask & UCP_EP_PARAM_FIELD_ERR_HANDLER) ||
        params->err_handler.cb == NULL || (params->field_mask & ~(uint64_t)UCXF_EP_PARAM_KNOWN) != 0) {
        return params;
    }
    m = params->field_mask;
    memset(c, 0, sizeof(*c));
    c->field_mask = m;
    if (m & UCP_EP_PARAM_FIELD_REMOTE_ADDRESS) {
        c->address = params->address;
    }
    if (m & UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE) {
        c->err_mode = params->err_mode;
    }
    c->err_handler.arg = params->err_handler.arg;
    c->err_handler.cb  = ucxf_err_trampoline;
    if (m & UCP_EP_PARAM_FIELD_USER_DATA) {
        c->user_data = params->user_data;
    }
    if (m & UCP_EP_PARAM_FIELD_SOCK_ADDR) {
        c->sockaddr = params->sockaddr;
    }
    if (m & UCP_EP_PARAM_FIELD_FLAGS) {
        c->flags = params->flags;
    }
    if (m & UCP_EP_PARAM_FIELD_CONN_REQUEST) {
        c->conn_request = params->conn_request;
    }
    if (m & UCP_EP_PARAM_FIELD_NAME) {
        c->name = params->name;
    }
    if (m & UCP_EP_PARAM_FIELD_LOCAL_SOCK_ADDR) {
        c->local_sockaddr = params->local_sockaddr;
    }
    ucxf_ep_params_cb = params->err_handler.cb;
    return c;
}

void ucxf_after_ep_create(ucp_worker_h worker, const ucp_ep_params_t *params, ucp_ep_h *ep_p)
{
    ucp_err_handler_cb_t cb = NULL, call = NULL;
    void *arg               = NULL;

    /* The handler's argument is what UCX gives it: ucp_ep_adjust_params
     * (src/ucp/core/ucp_ep.c, 1.13.1) stores err_handler.arg, then
     * user_data over it when UCP_EP_PARAM_FIELD_USER_DATA is set
     * ("user_data overrides err_handler.arg", ucp_def.h), and
     * ucp_ep_invoke_err_cb passes that one pointer. */
    if (params->field_mask & UCP_EP_PARAM_FIELD_ERR_HANDLER) {
        cb = call = params->err_handler.cb;
        arg       = params->err_handler.arg;
        if (cb == ucxf_err_trampoline) {
            cb = ucxf_ep_params_cb; /* the application's (ucxf_ep_params_rewrite) */
        }
    }
    if (params->field_mask & UCP_EP_PARAM_FIELD_USER_DATA) {
        arg = params->user_data;
    }
    if (ucxf_close_logged == *ep_p) {
        ucxf_close_logged = NULL; /* a new endpoint at a closed one's address */
    }
    /* The peer is worked out here, once (peer.c), and stays the
     * endpoint's for its life. */
    ucxf_ep_set_info(*ep_p, worker, cb, call, arg, ucxf_peer_of_params(params));
    if (params->field_mask & UCP_EP_PARAM_FIELD_REMOTE_ADDRESS) {
        ucxf_ep_set_remote(*ep_p, params->address);
    }
    if (__atomic_load_n(&ucxf_cfg, __ATOMIC_ACQUIRE)->recording) {
        ucxf_record_ep_event(ucxf_ep_ordinal(*ep_p), UCXF_EPEV_CREATE, 0, UCXF_EPCAUSE_NONE, 0, 0);
    }
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
/* Logs ep's close, once per close (the older calls nest). */
static void ucxf_log_close(void *ep)
{
    if (ucxf_close_logged == ep) {
        return;
    }
    ucxf_close_logged = ep;
    if (__atomic_load_n(&ucxf_cfg, __ATOMIC_ACQUIRE)->recording) {
        ucxf_record_ep_event(ucxf_ep_ordinal(ep), UCXF_EPEV_CLOSE, 0, UCXF_EPCAUSE_NONE, 0, 0);
    }
}

/* The older close calls: the close is logged before the application's
 * call, as for ucp_ep_close_nbx; libucp's ucp_ep_close_nbx underneath does
 * the rest (ucxf_before_ep_close). */
void ucxf_before_ep_close_nb(ucp_ep_h ep, unsigned mode)
{
    (void)mode;
    ucxf_log_close(ep);
}

void ucxf_before_ep_disconnect(ucp_ep_h ep)
{
    ucxf_log_close(ep);
}

void ucxf_before_ep_close(ucp_ep_h ep, const ucp_request_param_t *param)
{
    ucxf_forced_close = NULL;
    ucxf_log_close(ep);
    ucxf_close_logged = NULL; /* the last of the nested calls */
    if (UCXF_UNLIKELY(__atomic_load_n(&ucxf_defer_holds, __ATOMIC_RELAXED) != 0)) {
        /* Held completions on the endpoint end with what the close does
         * to requests in flight: a forced close (ucp_ep_close_nbx,
         * src/ucp/core/ucp_ep.c, 1.13.1) discards the lanes and completes
         * them with UCS_ERR_CANCELED; a close in flush mode waits for them,
         * so they keep their real status. */
        int force = (param->op_attr_mask & UCP_OP_ATTR_FIELD_FLAGS) && (param->flags & UCP_EP_CLOSE_FLAG_FORCE);
        ucxf_defer_release_ep(ep, force ? UCS_ERR_CANCELED : 0);
    }
    if (UCXF_LIKELY(!__atomic_load_n(&ucxf_cfg, __ATOMIC_ACQUIRE)->kills)) {
        ucxf_ep_set_closed(ep);
        return;
    }
    if (ucxf_ep_kill_code(ep) < 0) {
        void *worker = ucxf_ep_worker(ep);
        if (worker != NULL) {
            ucxf_before_worker_progress(worker);
            /* A kill through libucp's failure path (epfail.c) runs before
             * the close, which is then a failed endpoint's. */
            ucxf_ep_settle(ep);
        }
        if (ucxf_ep_kill_code(ep) < 0 && (param->op_attr_mask & UCP_OP_ATTR_FIELD_FLAGS) &&
            (param->flags & UCP_EP_CLOSE_FLAG_FORCE)) {
            ucxf_forced_close = ep;
        }
    }
    ucxf_ep_set_closed(ep);
}

/*
 * A failed ucp_ep_close_nbx promises that the endpoint's resources were
 * released, so the endpoint is closed for real before the injected error is
 * returned, in the mode the application asked for: UCP_EP_CLOSE_FLAG_FORCE
 * is undefined on an endpoint without UCP_ERR_HANDLING_MODE_PEER (ucp.h),
 * and UCX 1.22 aborts in ucp_worker_destroy (ucs_arbiter_group_cleanup)
 * after a forced close of a self endpoint with a ucp_get_nbi in flight. Only
 * the flags are passed on: the application's callback must not run for a
 * close that failed. The close is waited for (bounded) by progressing the
 * endpoint's worker when it is known.
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
    ucp_request_param_t mode;
    ucs_status_ptr_t req;
    uint64_t t0;

    /* A dead endpoint's error handler runs before its close returns, from
     * the progress UCX would make while closing. */
    if (worker != NULL) {
        ucxf_before_worker_progress(worker);
    }
    memset(&mode, 0, sizeof(mode));
    mode.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    if (param != NULL && (param->op_attr_mask & UCP_OP_ATTR_FIELD_FLAGS)) {
        mode.flags = param->flags & UCP_EP_CLOSE_FLAG_FORCE;
    }
    req = real(ep, &mode);
    if (!UCS_PTR_IS_PTR(req)) {
        return UCS_STATUS_PTR(code);
    }
    t0 = ucxf_now_ns();
    while (check != NULL && progress != NULL && worker != NULL && check(req) == UCS_INPROGRESS) {
        progress(worker);
        if (ucxf_now_ns() - t0 >= 2000000000ull) {
            break;
        }
    }
    if (release != NULL) {
        release(req); /* released by libucp once complete, if it is not yet */
    }
    return UCS_STATUS_PTR(code);
}
