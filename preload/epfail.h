/*
 * ucxfault injector: a kill through libucp's own endpoint-failure path
 * (docs/peer-death.md, "How a kill is made").
 */
#ifndef UCXFAULT_EPFAIL_H
#define UCXFAULT_EPFAIL_H

#include <ucp/api/ucp.h>

/* Which failure path kills use in this process. */
enum {
    UCXF_EPFAIL_UNKNOWN  = 0, /* not resolved yet */
    UCXF_EPFAIL_EMULATED = 1, /* no usable libucp function: the injector's own emulation */
    UCXF_EPFAIL_LEGACY   = 2, /* ucp_ep_set_failed_schedule (UCX 1.12 to 1.20) */
    UCXF_EPFAIL_LANES    = 3, /* ucp_ep_set_lanes_failed_schedule (UCX 1.21 on) */
};

/* Resolves (once) and returns the failure path, UCXF_EPFAIL_*. */
int ucxf_epfail_mode(void);

/* One endpoint's kill through libucp, in the endpoint table. */
enum {
    UCXF_EPFAIL_NONE      = 0,
    UCXF_EPFAIL_REQUESTED = 1, /* handler armed on the worker's async context */
    UCXF_EPFAIL_SCHEDULING = 2, /* the handler is scheduling it */
    UCXF_EPFAIL_SCHEDULED = 3, /* libucp has the failure: its next progress runs it */
};
struct ucxf_epfail_req {
    ucp_ep_h ep;
    int code;
    int fd;       /* the eventfd that wakes the handler */
    int fd_valid; /* fd is open and its handler registered */
    int state; /* UCXF_EPFAIL_NONE, _REQUESTED, _SCHEDULED */
};

/* Has libucp schedule ep's failure with code, as it does when it sees the
 * peer die: a handler on worker's async context schedules it (state
 * SCHEDULED), and the progress after that purges ep's requests with code,
 * discards its lanes, calls its error handler once and marks it failed.
 * Returns 0, or -1 when the running libucp offers no verified way (the
 * caller then emulates). Not on the hot path: a kill. */
int ucxf_epfail_request(struct ucxf_epfail_req *r, ucp_ep_h ep, void *worker, int code);
int ucxf_epfail_state(const struct ucxf_epfail_req *r);
/* Cancels a kill whose handler has not run yet (its endpoint closes):
 * 0, or -1 when the handler has run or is running. */
int ucxf_epfail_cancel(struct ucxf_epfail_req *r);
/* Removes the handler and closes the eventfd (once SCHEDULED). */
void ucxf_epfail_release(struct ucxf_epfail_req *r);

/* The code the running libucp reports for a dead TCP peer: -80
 * (UCS_ERR_ENDPOINT_TIMEOUT) up to 1.13, -25 (UCS_ERR_CONNECTION_RESET)
 * from 1.14 (docs/peer-death.md). */
int ucxf_epfail_default_code(void);

/* An endpoint to its own worker (loopback, the self transport) is killed
 * by the emulation: a process cannot outlive itself, and libucp's failure
 * path there leaves a rendezvous receive it had already matched waiting
 * forever (measured on 1.13.1 with e2e/testdata/cbonly.c). is_self compares
 * the first UCXF_EPFAIL_ADDR_PREFIX bytes of the address the endpoint was
 * created from (the packed address's header and the worker's random 64-bit
 * uuid, src/ucp/wireup/address.c) with worker's own. */
#define UCXF_EPFAIL_ADDR_PREFIX 16
int ucxf_epfail_is_self(void *worker, const uint8_t *prefix);

/* For status: the description when a kill has found no usable libucp
 * function (emulated), else NULL. Resolves nothing. */
const char *ucxf_epfail_emulated(void);

/* A short description of the path, for status ("libucp ucp_ep_set_failed_schedule (1.13.1)"). */
const char *ucxf_epfail_describe(void);

#endif
