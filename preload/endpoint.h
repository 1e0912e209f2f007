/*
 * ucxfault injector: endpoints (endpoint.c): ordinals, worker and error
 * handler, kill-ep.
 */
#ifndef UCXFAULT_ENDPOINT_H
#define UCXFAULT_ENDPOINT_H

#include <stdint.h>
#include <ucp/api/ucp.h>

/* ucxf_kill_pending is declared in ucxfault.h (the progress hook reads it). */
int32_t ucxf_ep_ordinal(void *ep);
void    ucxf_ep_set_info(void *ep, void *worker, ucp_err_handler_cb_t cb, void *arg);
void   *ucxf_ep_worker(void *ep);
int     ucxf_ep_has_ordinal(int32_t ordinal);
int     ucxf_ep_kill_ordinal(int32_t ordinal, int code);
int     ucxf_ep_kill_code(void *ep);
void    ucxf_ep_deliver_kills(void *worker);
int     ucxf_ep_killed(int32_t *ordinals, int8_t *codes, int n);
int     ucxf_ep_kill_now(void *ep, int code);
int     ucxf_ep_dead_code(void *ep);
int     ucxf_ep_inflight_status(void *ep, int status);
void    ucxf_ep_set_closed(void *ep);
void    ucxf_ep_settle(void *ep);
void    ucxf_ep_set_remote(void *ep, const void *address);
extern UCXF_HIDDEN uint32_t ucxf_ep_renumbered;

#endif
