/*
 * ucxfault injector: the call log (record.c).
 */
#ifndef UCXFAULT_RECORD_H
#define UCXFAULT_RECORD_H

#include <stdint.h>
#include <time.h>
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
 * kind (UCXF_EPEV_*), status the code of a failure or a handler call, hook
 * its cause (UCXF_EPCAUSE_*), req a failure's in-flight code (int8, 0 for
 * the failure's code). */
#define UCXF_REC_EP_EVENT 0x10
/* In ucxf_record_snapshot's copy only (seq 0): the slot held a record
 * appended after the copy began, in place of an older one. */
#define UCXF_REC_LATE 0x80

#define UCXF_EPEV_CREATE  1
#define UCXF_EPEV_CLOSE   2
#define UCXF_EPEV_FAILURE 3
#define UCXF_EPEV_HANDLER 4

/* What made an endpoint event: nothing of the injector's (a real failure,
 * the application's create or close), or one of its kills. */
#define UCXF_EPCAUSE_NONE    0
#define UCXF_EPCAUSE_COMMAND 1 /* kill-ep, the live command */
#define UCXF_EPCAUSE_RULE    2 /* a rule's kill-ep action */
#define UCXF_EPCAUSE_REPLAY  3 /* a replayed endpoint failure */
#define UCXF_EPCAUSE_KILL    4 /* a kill whose cause the handler's caller does not know */

/* One logged record, one cache line. In the log, seq is the slot's stamp:
 * (segment << 40) | (index in the segment + 1) once the record is whole.
 * In a copy from ucxf_record_read or ucxf_record_snapshot, seq is the
 * index in the segment + 1 (0: no record), seg the segment, and t_ns and
 * duration_ns are nanoseconds of CLOCK_MONOTONIC. */
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
    uint32_t seg;     /* the log segment (one per thread that logs) */
    uint32_t pad;
};

/* Control side. */
int      ucxf_record_alloc(uint64_t capacity);
uint64_t ucxf_record_capacity(void);
uint64_t ucxf_record_slots(void);
uint64_t ucxf_record_head(void);
void     ucxf_record_clear(void);
int      ucxf_record_read(uint64_t slot, struct ucxf_record *out);
uint64_t ucxf_record_snapshot(struct ucxf_record *out, uint64_t *head_out);
void     ucxf_record_fork_prepare(void);
void     ucxf_record_fork_parent(void);
void     ucxf_record_fork_child(void);

/* Hot path. Times (c->t0, now) are of the log's clock, ucxf_rec_now. */
void     ucxf_record_append(const struct ucxf_call *c, int status, void *request, uint64_t now);
void     ucxf_record_delivery(int hook, int status, void *ep, uint64_t size, void *request, int mark,
                              uint64_t now);
/* Slow half (endpoint events are rare): t_ns 0 means now. */
void     ucxf_record_ep_event(int32_t ordinal, int kind, int code, int cause, int inflight, uint64_t t_ns);

/* The log's clock: the CPU's time-stamp counter where the kernel keeps
 * CLOCK_MONOTONIC on it (one instruction instead of a vDSO call: two reads
 * a call were most of the log's cost), else CLOCK_MONOTONIC in ns. Ticks
 * become nanoseconds of CLOCK_MONOTONIC when the log is copied out. */
extern int ucxf_rec_tsc __attribute__((visibility("hidden")));
static inline uint64_t ucxf_rec_now(void)
{
#if defined(__x86_64__)
    if (__builtin_expect(ucxf_rec_tsc, 1)) {
        uint32_t lo, hi;
        __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
        return ((uint64_t)hi << 32) | lo;
    }
#elif defined(__aarch64__)
    if (__builtin_expect(ucxf_rec_tsc, 1)) {
        uint64_t v;
        __asm__ volatile("mrs %0, cntvct_el0" : "=r"(v));
        return v;
    }
#endif
    {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    }
}

#endif
