/*
 * ucxfault injector: the call log, endpoint ordinals, replay cursors and the
 * table of requests whose failure is delivered on completion.
 */
#ifndef UCXFAULT_RECORD_H
#define UCXFAULT_RECORD_H

#include <stdint.h>
#include <ucp/api/ucp.h>

struct ucxf_call;

#define UCXF_REC_INJECTED 0x1
#define UCXF_REC_DEFERRED 0x2 /* an injected failure was attached to the request */
/* Not a call: the final status of the operation that returned req, handed
 * to the application on completion (callback or status query). */
#define UCXF_REC_COMPLETION 0x4
/* With COMPLETION: the request was freed before the application could
 * learn its failure (ucp_request_free calls no callback). */
#define UCXF_REC_UNLEARNED 0x8

/* One logged call. seq is the commit stamp: index + 1 once the slot is whole. */
struct ucxf_record {
    uint64_t seq;
    uint64_t t_ns;
    uint64_t duration_ns;
    uint64_t size;
    uint64_t req;     /* request returned, or examined (ucp_request_check_status) */
    uint32_t thread;  /* thread ordinal */
    int32_t  ep;      /* endpoint ordinal, -1 when none */
    uint16_t hook;
    int8_t   status;  /* as returned: 0, 1 (a request, UCS_INPROGRESS) or < 0 */
    uint8_t  flags;
    uint32_t tid;
};

/* Control side. */
int      ucxf_record_alloc(uint64_t capacity);
uint64_t ucxf_record_capacity(void);
uint64_t ucxf_record_head(void);
int      ucxf_record_read(uint64_t index, struct ucxf_record *out);
void     ucxf_replay_reset(void);
uint64_t ucxf_defer_pending(void);
uint64_t ucxf_defer_overflow(void);
uint64_t ucxf_defer_kill_count(void);

/* Hot path. */
void     ucxf_record_append(const struct ucxf_call *c, int status, void *request, uint64_t now);
uint64_t ucxf_record_replay_cursor_next(void);
uint64_t ucxf_replay_cursor_next(int hook);
int32_t  ucxf_ep_ordinal(void *ep);
void     ucxf_record_delivery(int hook, int status, void *ep, uint64_t size, void *request, int mark,
                              uint64_t now);

/* What the defer table holds for one request. */
struct ucxf_defer_info {
    int code;      /* the failure to deliver, 0 when only followed */
    void *ep;      /* the operation's endpoint, or NULL */
    int hook;      /* the operation that returned the request */
    uint64_t size; /* and its size */
    int delivered; /* its outcome reached the application */
};
int      ucxf_defer_put(void *request, int code, void *ep, int hook, uint64_t size);
int      ucxf_defer_kill(void *ep, int code);
int      ucxf_defer_peek(void *request);
int      ucxf_defer_deliver(void *request, struct ucxf_defer_info *out);
void     ucxf_defer_set_delivered(void *request);
int      ucxf_defer_take(void *request, struct ucxf_defer_info *out);
void     ucxf_defer_forget(void *request);

/* Endpoints. */
extern UCXF_HIDDEN int ucxf_kill_pending;
void  ucxf_ep_set_info(void *ep, void *worker, ucp_err_handler_cb_t cb, void *arg);
void *ucxf_ep_worker(void *ep);
int   ucxf_ep_has_ordinal(int32_t ordinal);
int   ucxf_ep_kill_ordinal(int32_t ordinal, int code);
int   ucxf_ep_kill_code(void *ep);
void  ucxf_ep_deliver_kills(void *worker);
int   ucxf_ep_killed(int32_t *ordinals, int8_t *codes, int n);
void     ucxf_record_atfork_child(void);

#endif
