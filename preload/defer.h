/*
 * ucxfault injector: requests carrying a failure to deliver on completion,
 * or followed for kill-ep (defer.c).
 */
#ifndef UCXFAULT_DEFER_H
#define UCXFAULT_DEFER_H

#include <stdint.h>

/* What the defer table holds for one request. */
struct ucxf_defer_info {
    int code;      /* the failure to deliver, 0 when only followed */
    void *ep;      /* the operation's endpoint, or NULL */
    int hook;      /* the operation that returned the request */
    uint64_t size; /* and its size */
    int delivered; /* its outcome reached the application */
};
int      ucxf_defer_put(void *request, int code, void *ep, int hook, uint64_t size);
int      ucxf_defer_put_hold(void *request, int code, void *ep, int hook, uint64_t size, uint64_t hold_ns);
int      ucxf_defer_kill(void *ep, int code);
/* Held completions (delay-completion=, hang). */
int      ucxf_defer_held(void *request, int *code);
int      ucxf_defer_cancel(void *request);
int      ucxf_defer_is_held(void *request);
int      ucxf_defer_release_ep(void *ep, int code);
extern UCXF_HIDDEN uint64_t ucxf_defer_holds;
int      ucxf_defer_peek(void *request);
int      ucxf_defer_deliver(void *request, struct ucxf_defer_info *out);
void     ucxf_defer_set_delivered(void *request);
int      ucxf_defer_take(void *request, struct ucxf_defer_info *out);
void     ucxf_defer_forget(void *request);

/* Control side. */
uint64_t ucxf_defer_pending(void);
uint64_t ucxf_defer_overflow(void);
uint64_t ucxf_defer_kill_count(void);

#endif
