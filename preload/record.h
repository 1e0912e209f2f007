/*
 * ucxfault injector: the call log (record.c).
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
/* Not a call: an endpoint event (ucxf_record_ep_event); size holds its
 * kind (UCXF_EPEV_*), status the code of a failure or a handler call. */
#define UCXF_REC_EP_EVENT 0x10

#define UCXF_EPEV_CREATE  1
#define UCXF_EPEV_CLOSE   2
#define UCXF_EPEV_FAILURE 3
#define UCXF_EPEV_HANDLER 4

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
uint64_t ucxf_record_snapshot(struct ucxf_record *out, uint64_t *head_out);

/* Hot path. */
void     ucxf_record_append(const struct ucxf_call *c, int status, void *request, uint64_t now);
void     ucxf_record_delivery(int hook, int status, void *ep, uint64_t size, void *request, int mark,
                              uint64_t now);
void     ucxf_record_ep_event(int32_t ordinal, int kind, int code, int injected);

#endif
