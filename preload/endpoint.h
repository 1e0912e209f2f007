/*
 * ucxfault injector: endpoints (endpoint.c): ordinals, worker and error
 * handler, kill-ep.
 */
#ifndef UCXFAULT_ENDPOINT_H
#define UCXFAULT_ENDPOINT_H

#include <stdint.h>
#include <ucp/api/ucp.h>

#include "peer.h"

/* An endpoint as status lists it (ucxf_ep_rows). */
enum {
    UCXF_EP_OPEN   = 0,
    UCXF_EP_KILLED = 1, /* kill-ep, not closed yet */
    UCXF_EP_CLOSED = 2,
};
struct ucxf_ep_row {
    int32_t  ordinal;
    int8_t   state; /* UCXF_EP_* */
    int8_t   code;  /* the kill's code, 0 when never killed */
    uint64_t calls, faults;
    char     peer[UCXF_PEER_MAX]; /* "" when unknown */
};
/* Endpoints retired from the table (their address came back as a new
 * endpoint) that status still lists: the newest ones. */
#define UCXF_EP_GONE 64

/* ucxf_kill_pending is declared in ucxfault.h (the progress hook reads it). */
int32_t ucxf_ep_ordinal(void *ep);
int     ucxf_ep_slot_of(void *ep);
uint64_t ucxf_ep_peer_hash(void *ep);
int     ucxf_ep_rows(struct ucxf_ep_row *rows, int n);
/* cb: the application's error handler; call: the one libucp was given
 * (the injector's trampoline, or cb), which the emulation calls. */
void    ucxf_ep_set_info(void *ep, void *worker, ucp_err_handler_cb_t cb, ucp_err_handler_cb_t call, void *arg,
                         int32_t peer);
void   *ucxf_ep_worker(void *ep);
ucp_err_handler_cb_t ucxf_ep_err_handler(void *ep);
int     ucxf_ep_has_ordinal(int32_t ordinal);
int     ucxf_ep_kill_ordinal(int32_t ordinal, int code, int inflight);
int     ucxf_ep_created(int32_t ordinal, uint64_t *created_ns, int *closed);
int32_t ucxf_ep_numbered(void);
int     ucxf_ep_kill_code(void *ep);
void    ucxf_ep_deliver_kills(void *worker);
int     ucxf_ep_killed(int32_t *ordinals, int8_t *codes, int n);
int     ucxf_ep_kill_now(void *ep, int code, int inflight);
int     ucxf_ep_dead_code(void *ep);
/* The status a followed request on ep completes with, given libucp's;
 * at_kill: the request was in flight when ep was killed (endpoint.c). */
int     ucxf_ep_inflight_status(void *ep, int status, int at_kill);
void    ucxf_ep_set_closed(void *ep);
void    ucxf_ep_settle(void *ep);
void    ucxf_ep_set_remote(void *ep, const void *address);
extern UCXF_HIDDEN uint32_t ucxf_ep_renumbered;

#endif
