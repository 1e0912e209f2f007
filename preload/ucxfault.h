/*
 * ucxfault injector: state shared by the generated wrappers (C, hot path)
 * and the Go control plane.
 *
 * The rule of this file: the hot path never calls Go and never takes a lock.
 * Go publishes an immutable struct ucxf_config through one pointer and
 * recomputes ucxf_armed[]; wrappers read both with plain loads. Counters live
 * in per-thread blocks written only by their own thread; Go sums them.
 */
#ifndef UCXFAULT_H
#define UCXFAULT_H

#include <stdint.h>
#include <stddef.h>
#include <time.h>
#include <ucp/api/ucp.h>

#include "hooks_gen.h"
/* UCXF_MAX_CODES, UCXF_MAX_PATTERN, UCXF_CODE_SLOTS (faults by code are
 * counted in slots indexed by -code), UCXF_MAX_RULES, UCXF_MAX_HOOKS and the
 * UCXF_MARK_* flags: generated from hooks/abi.go, shared with Go and BPF. */
#include "abi_gen.h"

_Static_assert(UCXF_NUM_HOOKS <= UCXF_MAX_HOOKS, "the hook table outgrew UCXF_MAX_HOOKS");

/* Internal to the library: one instruction to reach, no GOT entry. */
#define UCXF_HIDDEN __attribute__((visibility("hidden")))

#define UCXF_LIKELY(x)   __builtin_expect(!!(x), 1)
#define UCXF_UNLIKELY(x) __builtin_expect(!!(x), 0)

#define UCXF_PROB_SCALE   10000u /* probability resolution: 0.01 % */
/* Transfer sizes are counted in power-of-two buckets: 0 holds size 0,
 * b > 0 holds sizes in [2^(b-1), 2^b), up to bucket 64. */
#define UCXF_SIZE_BUCKETS 65

enum ucxf_strategy {
    UCXF_STRATEGY_NONE    = 0,
    UCXF_STRATEGY_RANDOM  = 1,
    UCXF_STRATEGY_PATTERN = 2,
    UCXF_STRATEGY_REPLAY  = 3,
};

/*
 * One fault rule: conditions a call must meet, then an action (a delay,
 * then an error when the strategy says so). Lives inside the immutable
 * configuration; only *spent is shared and written (when the rule acts).
 */
struct ucxf_rule {
    /* The conditions, in the first cache line: a call that matches no rule
     * reads only these. */
    uint64_t min_size, max_size;         /* inclusive */
    uint64_t call_first, call_last;      /* inclusive, over the hook's calls since the rule was set */
    uint64_t call_step;                  /* >= 1 */
    int32_t  endpoint;                   /* endpoint ordinal, -1 = any */
    uint8_t  windowed;
    uint64_t t_start_ns, t_end_ns;       /* CLOCK_MONOTONIC window [start, end) when windowed */
    uint64_t peer;                       /* the endpoint's peer hash (peer.h), 0 = any */
    /* The action. */
    uint64_t uid;                        /* unique in the process; 0 = slot unused */
    uint64_t delay_min_ns, delay_max_ns; /* uniform in [min, max]; max 0 = no delay */
    uint64_t max_faults;                 /* 0 = unlimited */
    /* Held completion (delay-completion=, hang): the time a request the
     * rule acts on stays in progress after it really completed, in ns;
     * UCXF_HOLD_HANG until a cancel, close or kill; 0 = none. */
    uint64_t hold_ns;
    uint64_t *spent;                     /* actions taken against max_faults, all threads */
    const uint8_t *pattern;              /* 1 = fault, pattern_len entries */
    uint32_t strategy;                   /* NONE (delay only), RANDOM or PATTERN */
    uint32_t prob_units;
    uint32_t pattern_len;
    uint32_t ncodes;
    int8_t   codes[UCXF_MAX_CODES];
    uint8_t  kill_ep;   /* kill-ep: the call's endpoint dies (ucxf_ep_kill_now) */
    int8_t   kill_code; /* its code; 0 = the running libucp's dead-peer code */
    /* inflight-code=: what operations in flight at the kill complete with;
     * 0 = the configuration's (ucxf_config.inflight_code). */
    int8_t   inflight_code;
};

/* A hold that only a cancel, a close or a kill of the endpoint ends. */
#define UCXF_HOLD_HANG UINT64_MAX

/* One rule's counters in one thread (index: the rule's slot). */
struct ucxf_rule_counters {
    uint64_t matches;
    uint64_t faults;
    uint64_t delays;
    uint64_t delay_ns;
};

/* One replay schedule: the outcomes to return, in call order. */
struct ucxf_schedule {
    uint64_t len;
    /* The position after the last that does something (a failure or a
     * kill), 0 when none does: the calls from there on pass, so they need
     * not take a position from the shared cursor. */
    uint64_t events_end;
    const int8_t *codes;     /* 0 = pass through, <0 = fail with that code */
    const uint8_t *deferred; /* 1 = the failure arrives on completion */
    /* NULL, or per position: the endpoint ordinal to kill (kill-ep) just
     * before the call, -1 for none, and the kill's code. */
    const int32_t *kill_ep;
    const int8_t *kill_code;
    const int8_t *kill_inflight; /* the kill's in-flight code, 0 = the configuration's */
};

/*
 * A complete setting of the injector. Published whole and never modified
 * afterwards, so a hook sees either the old or the new setting, never half.
 */
struct ucxf_config {
    uint64_t generation;
    uint64_t seed;
    uint32_t strategy;
    uint32_t prob_units;   /* fault probability in units of 1/UCXF_PROB_SCALE */
    uint32_t ncodes;
    uint32_t pattern_len;
    uint8_t  enabled;
    uint8_t  recording;
    uint8_t  replay_global; /* one cursor over all hooks instead of one per hook */
    uint8_t  replay_cycle;
    uint8_t  deferred_mode; /* failures arrive on completion where possible */
    uint8_t  kills;         /* some endpoint has been killed (kill-ep) */
    /* --inflight-code: what operations in flight on an endpoint at its kill
     * complete with, while its handler and later calls get the kill's code;
     * 0 = the kill's code. */
    int8_t   inflight_code;
    /* Some kill may complete operations in flight with a code of its own:
     * requests on endpoints are followed in immediate mode too. */
    uint8_t  follow_inflight;
    uint8_t  hook_enabled[UCXF_NUM_HOOKS];
    /* Set by ucxf_publish where ucxf_fast_decide may decide a call of the
     * hook alone: random faults now, no rules, kills, recording or
     * failures on completion. */
    uint8_t  fast[UCXF_NUM_HOOKS];
    /* For a replayed hook (not cycled) that fast[] would allow were its
     * schedule quiet: the fast half may take it over once the cursor is
     * past the schedule's last event (ucxf_replay_done), for good. */
    uint8_t  fast_after_replay[UCXF_NUM_HOOKS];
    /* Set where a recorded call that passes may be logged by the
     * recording fast half (ucxf_fast_record, ucxf_rec_* in hooks_gen.c):
     * recording in immediate mode, no kills, and a hook that fast[] would
     * allow but for the recording, or that injects nothing. */
    uint8_t  fast_rec[UCXF_NUM_HOOKS];
    /* Set where a polled operation that passes in deferred mode may take
     * the deferred fast half (ucxf_fast_track, ucxf_trk_* in hooks_gen.c):
     * what fast[] would allow but for the following of requests. */
    uint8_t  fast_track[UCXF_NUM_HOOKS];
    /* For a hook with rules: bit b (b < 63) set where some rule can match
     * a size of bucket b, bit 63 for buckets 63 and 64. Calls of the other
     * sizes match no rule and pass in ucxf_fast_decide. */
    uint64_t rule_buckets[UCXF_NUM_HOOKS];
    /* For a hook whose first rule has no condition but sizes (no call
     * range, window, endpoint or peer), in a configuration where every
     * counted call of the hook reaches the rules (injecting into it, no
     * kills): that rule's slot + 1, else 0. The thread's until_fault[]
     * then counts down to the next call the rule's strategy may act on
     * (rules.c). rule_sure[] has the size buckets (as rule_buckets) whose
     * every size the rule matches: it decides all their calls, so its
     * matches there are the buckets' calls (ucxf_thread.rule_cd), and
     * rule_buckets leaves them out, so they pass in the fast half until
     * the countdown ends. */
    uint8_t  rule_countdown[UCXF_NUM_HOOKS];
    uint64_t rule_sure[UCXF_NUM_HOOKS];
    int8_t   codes[UCXF_MAX_CODES];
    uint8_t  pattern[UCXF_MAX_PATTERN]; /* 1 = fault */
    struct ucxf_schedule replay[UCXF_NUM_HOOKS];
    struct ucxf_schedule replay_all;    /* used when replay_global */
    /* Rules by slot; hook_rules[h] lists, in order, the slots covering hook
     * h. A hook with hook_nrules[h] > 0 is decided by its rules alone. */
    uint32_t nrules;
    uint8_t  hook_nrules[UCXF_NUM_HOOKS];
    uint8_t  hook_rules[UCXF_NUM_HOOKS][UCXF_MAX_RULES];
    struct ucxf_rule rules[UCXF_MAX_RULES];
    /* The settings in words (control.SettingsSummary), for the exit
     * summary line; freed with the configuration. */
    const char *summary;
};

/* Counters of one hook. */
struct ucxf_hook_counters {
    uint64_t calls;
    uint64_t faults;
    /* Per thread: the value of calls at the last failure injected at once,
     * so that passing calls need not count it. In ucxf_stats_sum's totals:
     * the calls since then, summed over threads. */
    uint64_t calls_at_fault;
    /* Next to calls: a passing call writes both, small sizes share the line. */
    uint64_t size_calls[UCXF_SIZE_BUCKETS];
    uint64_t size_faults[UCXF_SIZE_BUCKETS];
    uint64_t codes[UCXF_CODE_SLOTS];
};

/* The endpoint table's size (endpoint.c): more endpoints than this in one
 * process are neither numbered nor counted. */
#define UCXF_EP_SLOTS 4096

/* One endpoint's counters in one thread (index: its slot in the endpoint
 * table; slot UCXF_EP_SLOTS counts endpoints the full table left out). */
struct ucxf_ep_counts {
    uint64_t calls;
    uint64_t faults;
};

/* Per-thread state: written by its thread only, read by Go. */
struct ucxf_thread {
    struct ucxf_thread *next;
    uint32_t ordinal;
    int32_t  tid;
    uint64_t generation;                 /* config the bases belong to */
    /* What ucxf_fast_decide reads, together near the start (one page). */
    /* The endpoint this thread last counted a call of, and its cell of
     * ep_cnt (below), which ucxf_fast_decide counts into without a
     * look-up; &ep_sink until an endpoint is counted. */
    void    *ep_cnt_ep;
    struct ucxf_ep_counts *ep_cnt_cell;
    /* The last caller of each hook that ucxf_enter found outside UCX, in
     * a configuration whose fast[] byte was set for the hook (else NULL):
     * ucxf_fast_decide trusts it, and the configuration, without looking
     * again, until ucxf_publish or ucxf_refresh_ranges clears it. */
    void    *fast_caller[UCXF_NUM_HOOKS];
    /* The same for the recording fast half, under fast_rec[]. */
    void    *rec_caller[UCXF_NUM_HOOKS];
    /* And for the deferred fast half, under fast_track[]. */
    void    *trk_caller[UCXF_NUM_HOOKS];
    uint64_t slow_buckets[UCXF_NUM_HOOKS]; /* the configuration's rule_buckets */
    /* Random and pattern strategies, and a hook's countdown rule
     * (rule_countdown[]): how many calls pass before the next that may
     * fail; UINT64_MAX for never (and for hooks nothing decides so). */
    uint64_t until_fault[UCXF_NUM_HOOKS];
    uint64_t base_calls[UCXF_NUM_HOOKS];  /* calls when that config arrived */
    uint64_t base_faults[UCXF_NUM_HOOKS];
    struct ucxf_hook_counters h[UCXF_NUM_HOOKS];
    /* Rules: the uid each slot held when this thread last looked, the
     * thread's calls of each hook when it first saw that rule, counters. */
    uint64_t rule_uid[UCXF_MAX_RULES];
    uint64_t rule_base[UCXF_MAX_RULES][UCXF_NUM_HOOKS];
    struct ucxf_rule_counters rule[UCXF_MAX_RULES];
    /* The countdown rule (slot + 1, 0 for none) of each hook in the
     * configuration this thread adopted, its sure buckets (rule_sure) and
     * the hook's calls of those buckets then: that rule's matches are
     * rule[].matches plus the calls of those buckets since (ucxf_sure_calls)
     * minus rule_cd_base, so a call the fast half passes counts nothing
     * more. Changed only when the thread adopts a configuration, inside
     * rule_cd_seq odd (a sequence count for the readers,
     * ucxf_rule_stats_sum). */
    uint32_t rule_cd_seq;
    uint8_t  rule_cd[UCXF_NUM_HOOKS];
    uint64_t rule_cd_sure[UCXF_NUM_HOOKS];
    uint64_t rule_cd_base[UCXF_NUM_HOOKS];
    void    *rule_ep;                    /* the endpoint last looked up for a rule */
    int32_t  rule_ep_ordinal;            /* and its ordinal */
    uint32_t rule_ep_gen;                /* ucxf_ep_renumbered when looked up */
    uint64_t rule_ep_peer;               /* and its peer's hash (peer.h) */
    /* Calls and faults by endpoint (status): this thread's counters of
     * every endpoint slot, mapped at its first counted call on an endpoint
     * (UCXF_EP_SLOTS + 1 cells, 64 KiB of address space, pages touched
     * only for the slots it uses); ep_sink counts a NULL endpoint. */
    struct ucxf_ep_counts *ep_cnt;
    struct ucxf_ep_counts ep_sink;
};

/* One call in flight through a wrapper. */
struct ucxf_call {
    int hook;
    int counted;
    int internal; /* libucp calling itself */
    void *caller;
    void *ep;
    uint64_t size;
    void *req;
    uint64_t t0;
    int size_bucket;
    int deferred_code; /* failure to deliver when the request completes */
    /* A status query's answer from libucp, asked before the decision: only
     * UCS_OK (the operation completed) may be replaced by a fault, the
     * failure the query drew (poll_code, delivered by ucxf_leave). */
    int poll_status;
    int poll_code;
    struct ucxf_cb_ctx *cb_ctx; /* the trampoline's context, if any */
    int injected;
    int tracked;   /* followed for kill-ep without an injected failure */
    uint64_t hold_ns; /* a rule holds the request's completion (rules.c) */
    int recording; /* logged when it returns (decided at entry) */
    struct ucxf_thread *thread;
    const struct ucxf_config *cfg;
};

/* caller_ is the wrapper's return address: the application's code, or
 * libucp's when libucp calls itself. */
#define UCXF_CALL_INIT(c, id, caller_, ep_, size_, req_) \
    do {                                              \
        (c)->hook    = (id);                          \
        (c)->caller  = (caller_);                     \
        (c)->ep      = (ep_);                         \
        (c)->size    = (size_);                       \
        (c)->req     = (req_);                        \
        (c)->counted = 0;                             \
        (c)->internal = 0;                            \
        (c)->deferred_code = 0;                       \
        (c)->poll_status = UCS_INPROGRESS;            \
        (c)->poll_code = 0;                           \
        (c)->cb_ctx = NULL;                           \
        (c)->injected = 0;                            \
        (c)->tracked = 0;                             \
        (c)->hold_ns = 0;                             \
        (c)->recording = 0;                           \
    } while (0)

/* Real functions, indexed by hook id; NULL until resolved. */
extern UCXF_HIDDEN void *ucxf_real[UCXF_NUM_HOOKS];
/* Non-zero when a hook must take the slow path. */
extern UCXF_HIDDEN volatile uint8_t ucxf_armed[UCXF_NUM_HOOKS];

/* Kinds of ucp_request_param_t callbacks (the member of its cb union). */
enum {
    UCXF_CB_SEND = 1,
    UCXF_CB_RECV,
    UCXF_CB_RECV_STREAM,
    UCXF_CB_RECV_AM,
};

/* Completion delivery (deliver.c): failures on completion and the hooks
 * around them. */
struct ucxf_cb_ctx;
/* NULL: fail the call at once with c->deferred_code. */
const ucp_request_param_t *ucxf_defer_param(struct ucxf_call *c, const ucp_request_param_t *param,
                                            ucp_request_param_t *copy, int kind);
void ucxf_defer_done(struct ucxf_call *c, int attached);
void ucxf_progress_deliver(ucp_worker_h worker);
void ucxf_request_forget(void *request, int freed);
void ucxf_after_ep_create(ucp_worker_h worker, const ucp_ep_params_t *params, ucp_ep_h *ep_p);
void ucxf_peer_before_create(ucp_worker_h worker, const ucp_ep_params_t *params, ucp_ep_h *ep_p); /* peer.c */
const ucp_ep_params_t *ucxf_ep_params_rewrite(const ucp_ep_params_t *params);
void ucxf_before_ep_close(ucp_ep_h ep, const ucp_request_param_t *param);
void ucxf_before_ep_close_nb(ucp_ep_h ep, unsigned mode);
void ucxf_before_ep_disconnect(ucp_ep_h ep);
/* The endpoint of this thread's ucp_ep_close_nbx in progress when it is a
 * forced close of a killed endpoint (ucxf_before_ep_close), else NULL. */
extern UCXF_HIDDEN __thread void *ucxf_forced_close __attribute__((tls_model("initial-exec")));
ucs_status_ptr_t ucxf_fault_ep_close(ucs_status_ptr_t (*real)(ucp_ep_h, const ucp_request_param_t *),
                                     ucp_ep_h ep, const ucp_request_param_t *param, int code);

/* In deferred mode, a counted operation on an endpoint has its request
 * followed, so that kill-ep can fail it if it is still in flight; while
 * recording, every counted operation is, so that the outcome its callback
 * or a status query delivers is recorded for it. Where a kill has an
 * in-flight code of its own (follow_inflight), operations on endpoints are
 * followed in immediate mode too, so that their completions can carry it. */
static inline int ucxf_tracks(const struct ucxf_call *c)
{
    /* A held completion (delay-completion=, hang) is followed in any mode. */
    return UCXF_UNLIKELY(c->hold_ns != 0) ||
           (c->counted && ((c->cfg->deferred_mode && (c->ep != NULL || c->recording)) ||
                           (UCXF_UNLIKELY(c->cfg->follow_inflight) && c->ep != NULL)));
}

/* Requests carrying a failure to deliver on completion (defer.c): status
 * queries must look them up even when their own hook is not armed. */
extern UCXF_HIDDEN uint64_t ucxf_defer_count;
static inline int ucxf_defer_active(void)
{
    return __atomic_load_n(&ucxf_defer_count, __ATOMIC_RELAXED) != 0;
}

/* The hooks before ucp_worker_progress and ucp_request_free/_release run
 * on every call, millions of times a second: inline, they cost a load and a
 * branch or two when there is nothing to do. */
extern UCXF_HIDDEN __thread struct ucxf_cb_ctx *ucxf_pending_cbs __attribute__((tls_model("initial-exec")));
/* Callbacks whose completion a rule holds (delay-completion=, hang), kept
 * by the thread whose progress fired them until the hold ends. */
extern UCXF_HIDDEN __thread struct ucxf_cb_ctx *ucxf_held_cbs __attribute__((tls_model("initial-exec")));
extern UCXF_HIDDEN int ucxf_kill_pending;
extern UCXF_HIDDEN int ucxf_progress_work;

/* Callbacks kept for this thread's next progress, and error handlers of
 * killed endpoints, are delivered from progress, as UCX delivers them. */
static inline void ucxf_before_worker_progress(ucp_worker_h worker)
{
    if (UCXF_UNLIKELY(ucxf_pending_cbs != NULL) || UCXF_UNLIKELY(ucxf_held_cbs != NULL) ||
        UCXF_UNLIKELY(__atomic_load_n(&ucxf_kill_pending, __ATOMIC_RELAXED))) {
        ucxf_progress_deliver(worker);
    }
}

/* A freed request's pointer carries nothing to its next use. */
static inline void ucxf_before_request_free(void *request)
{
    if (UCXF_UNLIKELY(ucxf_defer_active())) {
        ucxf_request_forget(request, 1);
    }
}

/* ucp_request_cancel of a held request ends its hold with
 * UCS_ERR_CANCELED (deliver.c). */
void ucxf_before_request_cancel(ucp_worker_h worker, void *request);

/* ucp_request_release: the same, but libucp still calls the callback of a
 * request released before it completes, so its outcome is still learned. */
static inline void ucxf_before_request_release(void *request)
{
    if (UCXF_UNLIKELY(ucxf_defer_active())) {
        ucxf_request_forget(request, 0);
    }
}

/* Wrapper side. */
extern UCXF_HIDDEN int ucxf_multi_copy;   /* config.c */
void *ucxf_route(int hook, void *caller, void *dflt); /* ucx_object.c */
void ucxf_after_dlopen(void);                          /* ucx_object.c */
/* Flags of ucxf_fault_marker: UCXF_MARK_* (abi_gen.h), the observer's
 * event flags too. */
/* record.c: shown to the observer (and logged when recording). */
void ucxf_fault_marker(int hook, int code, void *ep, uint64_t size, void *request, int flags);
void ucxf_delivered(int hook, int status, void *ep, uint64_t size, void *request, int flags);
void ucxf_count_completion_fault(int hook, int code, uint64_t size); /* thread.c */
void *ucxf_resolve(int hook);                                        /* ucx_object.c */
/* The decision (decide.c). */
int  ucxf_enter(struct ucxf_call *c);
int  ucxf_leave(struct ucxf_call *c, int status, void *request);
/* Control side: replay cursors back to the start. */
void ucxf_replay_reset(void);

/* The common case of an armed hook, inlined into each ucxf_fast_* half:
 * an application caller this thread has already seen under the current
 * configuration, whose fast[] byte allowed it. Returns
 * 0 to pass the call on, or 1 when ucxf_enter must decide. The random
 * strategy draws, per thread and hook, the index of the next call to fail
 * (ucxf_enter, at a fault and when a thread adopts a configuration), so
 * the calls in between cost a comparison and no draw. */
extern UCXF_HIDDEN const struct ucxf_config *ucxf_cfg;
/* Executable ranges of libucp, libucs, libuct and libucm: calls from there are internal. */
#define UCXF_MAX_RANGES 32
struct ucxf_ranges {
    int n;
    uintptr_t lo[UCXF_MAX_RANGES];
    uintptr_t hi[UCXF_MAX_RANGES];
};
extern UCXF_HIDDEN const struct ucxf_ranges *ucxf_internal;
extern UCXF_HIDDEN __thread struct ucxf_thread *ucxf_self __attribute__((tls_model("initial-exec")));

/* Single-writer updates of a counter that may be read concurrently: no
 * lock prefix, and no reader ever sees a torn value. On x86-64 one
 * instruction (an aligned add to memory), which also keeps the value out of
 * a register the caller would have to save. */
#if defined(__x86_64__)
#define UCXF_ADD(field, n) __asm__ volatile("addq %1, %0" : "+m"(field) : "r"((uint64_t)(n)))
#define UCXF_INC(field)    __asm__ volatile("addq $1, %0" : "+m"(field))
#define UCXF_DEC(field)    __asm__ volatile("subq $1, %0" : "+m"(field))
#else
#define UCXF_ADD(field, n) __atomic_store_n(&(field), (field) + (n), __ATOMIC_RELAXED)
#define UCXF_INC(field)    UCXF_ADD(field, 1)
#define UCXF_DEC(field)    UCXF_ADD(field, -1)
#endif

/* CLOCK_MONOTONIC in nanoseconds: the one clock of the injector (rule
 * windows, call log times, bounded waits). */
static inline uint64_t ucxf_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The hash of the pointer-keyed tables (endpoint.c, defer.c). */
static inline uint64_t ucxf_ptr_hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static inline void ucxf_cpu_relax(void)
{
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* Bucket b > 0 holds sizes in [2^(b-1), 2^b), bucket 0 size 0: a bsr and
 * an add, no branch and no clamp (there are 65 buckets). */
static inline unsigned ucxf_size_bucket(uint64_t size)
{
    return (unsigned)(63 ^ __builtin_clzll(size | 1)) + (size != 0);
}

/* The calls counted in hc of the size buckets of mask (bit b < 63 for
 * bucket b, bit 63 for buckets 63 and 64, as ucxf_config.rule_buckets):
 * what a countdown rule matched, given the sum when it began. Read by
 * other threads too, hence the atomic loads. */
static inline uint64_t ucxf_sure_calls(const struct ucxf_hook_counters *hc, uint64_t mask)
{
    uint64_t n = 0;

    if (mask >> 63) {
        n = __atomic_load_n(&hc->size_calls[64], __ATOMIC_RELAXED);
    }
    for (; mask != 0; mask &= mask - 1) {
        n += __atomic_load_n(&hc->size_calls[__builtin_ctzll(mask)], __ATOMIC_RELAXED);
    }
    return n;
}

static inline uint64_t ucxf_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static inline __attribute__((always_inline)) int ucxf_fast_pass(int kind, int h, void *caller, uint64_t size, void *ep)
{
    struct ucxf_thread *t = ucxf_self;
    struct ucxf_hook_counters *hc;
    unsigned bucket;

    if (__atomic_load_n(kind == 2 ? &t->trk_caller[h] : kind == 1 ? &t->rec_caller[h] : &t->fast_caller[h],
                        __ATOMIC_RELAXED) != caller) {
        return 1;
    }
    bucket = ucxf_size_bucket(size);
    /* Hooks without an endpoint pass a literal NULL: their test folds
     * away. (A NULL endpoint of one that has it counts in ep_sink.) */
    if (UCXF_UNLIKELY(t->until_fault[h] == 0) || UCXF_UNLIKELY((t->slow_buckets[h] >> (bucket & 63)) & 1)) {
        /* This call may fail, or a rule may match its size: the rules
         * half (ucxf_rules_pass) decides it if it is of the endpoint
         * counted last, else ucxf_enter. */
        return (!__builtin_constant_p(ep) || ep != NULL) && t->ep_cnt_ep != ep ? 1 : 2;
    }
    if ((!__builtin_constant_p(ep) || ep != NULL) && UCXF_UNLIKELY(t->ep_cnt_ep != ep)) {
        return 1; /* another endpoint than the last: ucxf_enter finds its counters */
    }
    hc = &t->h[h];
    UCXF_DEC(t->until_fault[h]);
    UCXF_INC(hc->calls);
    UCXF_INC(hc->size_calls[bucket]);
    if (!__builtin_constant_p(ep) || ep != NULL) {
        UCXF_INC(t->ep_cnt_cell->calls);
    }
    return 0;
}

/* Whether a call of hook h passes in the fast half: 0 when it does, and
 * is counted; 2 when the caller is trusted and the call is of the last
 * endpoint, but it may fail or a rule may match it (the rules half may
 * decide it, ucxf_rules_pass); 1 when ucxf_enter must decide. */
static inline __attribute__((always_inline)) int ucxf_fast_decide(int h, void *caller, uint64_t size, void *ep)
{
    return ucxf_fast_pass(0, h, caller, size, ep);
}

/* The same for a recorded call (fast_rec[], rec_caller[]): 0 when it
 * passes, counted, and the recording fast half logs it; else ucxf_enter
 * decides. */
static inline __attribute__((always_inline)) int ucxf_fast_record(int h, void *caller, uint64_t size, void *ep)
{
    return ucxf_fast_pass(1, h, caller, size, ep);
}

/* The same for a polled operation in deferred mode (fast_track[],
 * trk_caller[]): 0 when it passes, counted, and the deferred fast half
 * follows its request; else ucxf_enter decides. */
static inline __attribute__((always_inline)) int ucxf_fast_track(int h, void *caller, uint64_t size, void *ep)
{
    return ucxf_fast_pass(2, h, caller, size, ep);
}
/* The deferred fast half's request (deliver.c). */
void ucxf_track_pass(int hook, void *ep, uint64_t size, void *request);

/* Threads and counters (thread.c). Internal calls are hidden: no PLT. */
extern UCXF_HIDDEN struct ucxf_thread ucxf_no_thread;
UCXF_HIDDEN struct ucxf_thread *ucxf_thread_new(void);
/* This thread's state, created at its first counted call; NULL when out of memory. */
static inline struct ucxf_thread *ucxf_thread_self(void)
{
    struct ucxf_thread *t = ucxf_self;
    return UCXF_LIKELY(t != &ucxf_no_thread) ? t : ucxf_thread_new();
}
UCXF_HIDDEN void ucxf_threads_init(void);
UCXF_HIDDEN void ucxf_threads_fork_prepare(void);
UCXF_HIDDEN void ucxf_threads_fork_parent(void);
UCXF_HIDDEN void ucxf_threads_fork_child(void);
UCXF_HIDDEN void ucxf_forget_fast_callers(void);
UCXF_HIDDEN void ucxf_count_code(struct ucxf_hook_counters *hc, int code, int bucket);
void ucxf_stats_sum(struct ucxf_hook_counters *out, uint64_t *threads);
void ucxf_rule_stats_sum(struct ucxf_rule_counters *out);
/* Endpoint counters (thread.c): t's cell for an endpoint slot (-1: the
 * cell of endpoints left out), NULL when its counters cannot be mapped;
 * the sums over all threads, of every slot (out: UCXF_EP_SLOTS + 1 cells)
 * or of one. */
UCXF_HIDDEN struct ucxf_ep_counts *ucxf_ep_counts_cell(struct ucxf_thread *t, int slot);
void ucxf_ep_counts_sum(struct ucxf_ep_counts *out);
void ucxf_ep_counts_slot(int slot, struct ucxf_ep_counts *out);

/* The published configuration (config.c). */
extern UCXF_HIDDEN int ucxf_ready;
/* Whether calls of hook h must go through ucxf_enter under cfg: the one
 * definition behind ucxf_armed[] and the check at the top of ucxf_enter.
 * An in-flight code (follow_inflight) arms every hook whose operation
 * returns a request (ucxf_hook_defers), so that the requests of hooks
 * nothing injects into are followed too: a kill completes every operation
 * in flight on its endpoint with that code. */
static inline int ucxf_hook_armed(const struct ucxf_config *cfg, int h)
{
    return (cfg->enabled && cfg->hook_enabled[h]) || cfg->recording || cfg->kills ||
           (cfg->follow_inflight && ucxf_hook_defers[h]);
}
struct ucxf_config *ucxf_config_new(void);
const struct ucxf_config *ucxf_publish(struct ucxf_config *cfg);
const struct ucxf_config *ucxf_current(void);
void ucxf_set_ready(void);
UCXF_HIDDEN void ucxf_wait_ready(void);
UCXF_HIDDEN void ucxf_config_multi_copy(void);
UCXF_HIDDEN void ucxf_say(const char *what);

/* UCX objects, internal ranges and routing (ucx_object.c). */
UCXF_HIDDEN void ucxf_objects_init(void);
UCXF_HIDDEN void ucxf_objects_fork_prepare(void);
UCXF_HIDDEN void ucxf_objects_fork_parent(void);
UCXF_HIDDEN void ucxf_objects_fork_child(void);
UCXF_HIDDEN int  ucxf_is_ours(void *p);
int  ucxf_libucp_loaded(void);
int  ucxf_notify_fd(void);
int  ucxf_libucp_copies(char *buf, size_t len);
int  ucxf_libucp_file(int i, char *path, size_t plen, char *version, size_t vlen);
int  ucxf_hook_exists(int hook);
int  ucxf_route_copy(int i, char *buf, size_t len, uint64_t *calls);

/* The dlopen interposer (dlopen.c). */
int  ucxf_bypassed(int i, char *buf, size_t len);

/* The process life cycle (init.c). */
void ucxf_init(void);
void ucxf_set_socket_path(const char *path);
/* Around the creation of the control socket: ucxf_listen_begin returns -1
 * when the process is already exiting (then no socket must be made), else
 * 0, and the exit handler waits for ucxf_listen_end before it removes the
 * socket. */
int  ucxf_listen_begin(void);
void ucxf_listen_end(void);
int  ucxf_in_fork_child(void);

/* The fork gate (forkgate.c): ucxf_gate_close waits, at most 2 s, until no
 * thread of the injector is inside a libc call that can hold a host lock
 * (0; -1 when the time ran out), ucxf_gate_open and ucxf_gate_child reopen
 * it after fork() in the parent and in the child. */
int  ucxf_gate_close(void);
void ucxf_gate_open(void);
void ucxf_gate_child(void);
/* Whether the library's Go runtime has started (created its first thread). */
int  ucxf_gate_runtime_started(void);

#endif
