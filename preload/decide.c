/*
 * ucxfault injector: the decision (hot path when a hook is armed).
 *
 * ucxf_enter decides whether a call fails, by the random strategy, a
 * pattern, rules (rules.c) or a replayed recording; ucxf_leave, after the
 * real call, hands on the failures that arrive on completion and logs the
 * call. The top of the hot path: it calls the files below it, none calls it
 * but the generated wrappers.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <time.h>

#include "ucxfault.h"
#include "record.h"
#include "endpoint.h"
#include "defer.h"
#include "rules.h"

/* ------------------------------------------------------------------ */
/* The decision (hot path when armed)                                   */
/* ------------------------------------------------------------------ */

static inline int ucxf_caller_internal(const struct ucxf_ranges *r, void *caller)
{
    uintptr_t a = (uintptr_t)caller;
    int i;

    for (i = 0; i < r->n; i++) {
        if (a >= r->lo[i] && a < r->hi[i]) {
            return 1;
        }
    }
    return 0;
}

/* splitmix64 finaliser: a stateless, seeded draw per (hook, thread, call),
 * so a seeded run fails the same calls whatever else the process does. */

/* The number of calls that pass before the next random fault: geometric
 * with the configured probability, from the uniform draw r. */
static uint64_t ucxf_random_gap(const struct ucxf_config *cfg, uint64_t r)
{
    double u, g;

    if (cfg->prob_units >= UCXF_PROB_SCALE) {
        return 0;
    }
    if (cfg->prob_units == 0) {
        return UINT64_MAX;
    }
    u = ((double)(r >> 11) + 1.0) * 0x1p-53; /* in (0, 1] */
    g = floor(log(u) / log1p(-(double)cfg->prob_units / UCXF_PROB_SCALE));
    return g >= 0x1p63 ? UINT64_MAX : (uint64_t)g;
}

/* The seeded draw for call idx (counted from the configuration's start) of
 * hook h on thread t: a pure function of them, so a seeded run repeats. */
static uint64_t ucxf_random_draw(const struct ucxf_config *cfg, const struct ucxf_thread *t, int h, uint64_t idx)
{
    return ucxf_mix(cfg->seed ^ ((uint64_t)h << 56) ^ ((uint64_t)t->ordinal << 40) ^ idx);
}

/* Call idx of hook h, the one the schedule chose, fails: picks its code
 * and draws how many calls pass before the next failure. */
static int ucxf_random_fault(const struct ucxf_config *cfg, struct ucxf_thread *t, int h, uint64_t idx)
{
    uint64_t r = ucxf_random_draw(cfg, t, h, idx);

    t->until_fault[h] = ucxf_random_gap(cfg, ucxf_mix(r));
    return cfg->codes[(uint32_t)r % cfg->ncodes];
}

/* The pattern's calls from call idx on that pass before its next X:
 * the pattern strategy's countdown, which the fast halves keep as they
 * keep the random one. UINT64_MAX: the pattern fails nothing. */
static uint64_t ucxf_pattern_gap(const struct ucxf_config *cfg, uint64_t idx)
{
    uint64_t g;

    for (g = 0; g < cfg->pattern_len; g++) {
        if (cfg->pattern[(idx + g) % cfg->pattern_len]) {
            return g;
        }
    }
    return UINT64_MAX;
}

static void ucxf_rebase(struct ucxf_thread *t, const struct ucxf_config *cfg)
{
    int h;

    for (h = 0; h < UCXF_NUM_HOOKS; h++) {
        t->base_calls[h]  = t->h[h].calls;
        t->base_faults[h] = t->h[h].faults;
        t->until_fault[h] = UINT64_MAX;
        /* Only for hooks it injects into: the recording fast half counts
         * down the others' too, which must then never reach 0. */
        if (cfg->ncodes != 0 && cfg->hook_nrules[h] == 0 && cfg->enabled && cfg->hook_enabled[h] &&
            ucxf_hook_faultable[h]) {
            if (cfg->strategy == UCXF_STRATEGY_RANDOM) {
                t->until_fault[h] = ucxf_random_gap(cfg, ucxf_random_draw(cfg, t, h, UINT64_MAX));
            } else if (cfg->strategy == UCXF_STRATEGY_PATTERN) {
                t->until_fault[h] = ucxf_pattern_gap(cfg, 0);
            }
        }
    }
    ucxf_rules_rebase(t, cfg);
    t->generation = cfg->generation;
}

/* The recorded outcome for this call: returns the code, and sets *deferred
 * when the recorded failure arrived on completion. */
/* ------------------------------------------------------------------ */
/* Replay cursors                                                       */
/* ------------------------------------------------------------------ */

static uint64_t ucxf_replay_global_cursor;
static uint64_t ucxf_replay_cursors[UCXF_NUM_HOOKS];

void ucxf_replay_reset(void)
{
    int h;

    __atomic_store_n(&ucxf_replay_global_cursor, 0, __ATOMIC_RELAXED);
    for (h = 0; h < UCXF_NUM_HOOKS; h++) {
        __atomic_store_n(&ucxf_replay_cursors[h], 0, __ATOMIC_RELAXED);
    }
}

/* Replay counts the calls of the whole process, not of each thread, so the
 * k-th call of a function gets the k-th recorded outcome whichever thread
 * makes it: the one shared counter on a hot path, and only while a replay
 * is loaded. Only the calls up to a schedule's last failure or kill take
 * a position from it; see ucxf_replay_next. */
static uint64_t ucxf_replay_global_next(void)
{
    return __atomic_fetch_add(&ucxf_replay_global_cursor, 1, __ATOMIC_RELAXED);
}

static uint64_t ucxf_replay_cursor_next(int hook)
{
    return __atomic_fetch_add(&ucxf_replay_cursors[hook], 1, __ATOMIC_RELAXED);
}

/* Whether the replay of hook h (not cycled) is past its schedule's last
 * failure or kill: every later call passes, under this configuration
 * (a new schedule restarts the cursors before it is published, and
 * publishing makes every thread look again). */
static inline int ucxf_replay_done(const struct ucxf_config *cfg, int h)
{
    const struct ucxf_schedule *s = cfg->replay_global ? &cfg->replay_all : &cfg->replay[h];
    const uint64_t *cur = cfg->replay_global ? &ucxf_replay_global_cursor : &ucxf_replay_cursors[h];

    return __atomic_load_n(cur, __ATOMIC_RELAXED) >= s->events_end;
}

static int ucxf_replay_next(const struct ucxf_config *cfg, int hook, int *deferred, uint64_t t0)
{
    const struct ucxf_schedule *s = cfg->replay_global ? &cfg->replay_all : &cfg->replay[hook];
    uint64_t pos;

    if (s->events_end == 0 || ucxf_hook_polls[hook]) {
        /* Every outcome passes (ucxf_publish lets such a hook take the
         * fast half, where recording or kills do not keep it here). */
        return 0;
    }
    if (!cfg->replay_cycle) {
        /* Past the last event every call passes: a read of the cursor,
         * which no call writes any more, instead of an increment. */
        if (ucxf_replay_done(cfg, hook)) {
            return 0;
        }
    }
    pos = cfg->replay_global ? ucxf_replay_global_next() : ucxf_replay_cursor_next(hook);
    if (pos >= s->len) {
        if (!cfg->replay_cycle) {
            return 0;
        }
        pos %= s->len;
    }
    if (UCXF_UNLIKELY(s->kill_ep != NULL) && s->kill_ep[pos] >= 0) {
        /* A recorded endpoint failure at this position: the same kill
         * kill-ep makes (its handler runs from the next progress). An
         * endpoint not created yet, or killed already, is left as is. */
        int inflight = s->kill_inflight != NULL && s->kill_inflight[pos] != 0 ? s->kill_inflight[pos]
                                                                               : cfg->inflight_code;
        if (ucxf_ep_kill_ordinal(s->kill_ep[pos], s->kill_code[pos], inflight) == 0) {
            /* At the call's start: the failure takes this call's position. */
            ucxf_record_ep_event(s->kill_ep[pos], UCXF_EPEV_FAILURE, s->kill_code[pos], UCXF_EPCAUSE_REPLAY,
                                 inflight, t0);
        }
    }
    *deferred = s->deferred != NULL && s->deferred[pos];
    return s->codes[pos];
}

/* Counts a call (fault 0) or a fault on endpoint ep in t's counters of ep
 * (status's endpoint rows), through t's cache of the last endpoint, which
 * ucxf_fast_decide counts calls into without a look-up. */
static void ucxf_ep_count(struct ucxf_thread *t, void *ep, int fault)
{
    if (ep == NULL) {
        return;
    }
    if (t->ep_cnt_ep != ep) {
        struct ucxf_ep_counts *cell = ucxf_ep_counts_cell(t, ucxf_ep_slot_of(ep));
        if (cell == NULL) {
            return; /* out of memory: not counted by endpoint */
        }
        t->ep_cnt_cell = cell;
        t->ep_cnt_ep   = ep;
    }
    if (fault) {
        UCXF_INC(t->ep_cnt_cell->faults);
    } else {
        UCXF_INC(t->ep_cnt_cell->calls);
    }
}

/* Counts a failure injected now, without calling libucp, and shows it to
 * the observer. Returns code. */
static int ucxf_count_injected(struct ucxf_thread *t, int h, int code, void *ep, uint64_t size, int bucket)
{
    ucxf_count_code(&t->h[h], code, bucket);
    ucxf_ep_count(t, ep, 1);
    ucxf_fault_marker(h, code, ep, size, NULL, UCXF_MARK_INJECTED);
    return code;
}

/*
 * A status query (named by the user: polls are opt-in) drew a failure.
 * libucp has already answered (c->poll_status). Only a request whose
 * operation completed successfully may be failed, its status replaced: a
 * program told that an operation finished frees or reuses the request and
 * its buffers (Open MPI keeps requests on its stack), which libucp still
 * owns while the operation is in flight; UCX itself never fails a poll of
 * a request in flight. So an operation in flight stays UCS_INPROGRESS and a
 * real error stands: the draw is spent, and no fault is counted. A failure
 * that may be delivered is counted here and delivered by ucxf_leave, where
 * failures attached to a request for delivery on completion are delivered
 * too: libucp was called, and the observer saw the call, as for those, and
 * learns the failure from the marker of its delivery.
 */
static void ucxf_poll_fault(struct ucxf_call *c, struct ucxf_thread *t, int code)
{
    struct ucxf_hook_counters *hc = &t->h[c->hook];

    if (c->poll_status != UCS_OK || c->req == NULL || code < UCS_ERR_LAST) {
        return;
    }
    c->poll_code = code;
    ucxf_count_code(hc, code, c->size_bucket);
}

/* Trusts caller in callers[h] (rec_caller, trk_caller), as ucxf_enter
 * trusts fast_caller, where the configuration allows it (ok). */
static inline void ucxf_trust(struct ucxf_thread *t, void **callers, int ok, int h, void *caller,
                              const struct ucxf_config *cfg, const struct ucxf_ranges *ranges)
{
    /* Not ok: callers[h] is NULL already (ucxf_publish cleared it, and
     * a store under an older configuration undoes itself below), so the
     * calls that keep the slow half pay a test and nothing more. */
    if (UCXF_LIKELY(!ok)) {
        return;
    }
    if (__atomic_load_n(&ucxf_multi_copy, __ATOMIC_SEQ_CST)) {
        callers[h] = NULL;
    } else if (__atomic_load_n(&callers[h], __ATOMIC_RELAXED) != caller) {
        t->slow_buckets[h] = cfg->rule_buckets[h];
        __atomic_store_n(&callers[h], caller, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&ucxf_internal, __ATOMIC_SEQ_CST) != ranges ||
            __atomic_load_n(&ucxf_cfg, __ATOMIC_SEQ_CST) != cfg) {
            __atomic_store_n(&callers[h], NULL, __ATOMIC_RELAXED);
        }
    }
}

int ucxf_enter(struct ucxf_call *c)
{
    const struct ucxf_config *cfg;
    struct ucxf_thread *t;
    struct ucxf_hook_counters *hc;
    const struct ucxf_ranges *ranges;
    uint64_t idx;
    int code = 0, h = c->hook;

    if (UCXF_UNLIKELY(!__atomic_load_n(&ucxf_ready, __ATOMIC_ACQUIRE))) {
        ucxf_wait_ready();
    }
    ranges = __atomic_load_n(&ucxf_internal, __ATOMIC_ACQUIRE);
    if (ucxf_caller_internal(ranges, c->caller)) {
        c->internal = 1;
        return 0; /* libucp calling itself: never faulted, never counted */
    }
    cfg    = ucxf_current();
    c->cfg = cfg;
    if (!ucxf_hook_armed(cfg, h)) {
        return 0;
    }
    t = ucxf_thread_self();
    if (UCXF_UNLIKELY(t == NULL)) {
        return 0; /* out of memory: pass through rather than guess */
    }
    c->thread  = t;
    c->counted = 1;
    if (!(cfg->fast[h] || (cfg->fast_after_replay[h] && ucxf_replay_done(cfg, h))) ||
        __atomic_load_n(&ucxf_multi_copy, __ATOMIC_SEQ_CST)) {
        t->fast_caller[h] = NULL;
    } else if (__atomic_load_n(&t->fast_caller[h], __ATOMIC_RELAXED) != c->caller) {
        /* Trusted from now on, unless the ranges or the configuration
         * changed since this call read them: ucxf_refresh_ranges and
         * ucxf_publish store theirs, then clear every fast_caller; this
         * store comes before the second look. (A caller already trusted
         * has not been cleared since, so a call that failed or matched a
         * rule in the slow half stores nothing.) */
        t->slow_buckets[h] = cfg->rule_buckets[h];
        __atomic_store_n(&t->fast_caller[h], c->caller, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&ucxf_internal, __ATOMIC_SEQ_CST) != ranges ||
            __atomic_load_n(&ucxf_cfg, __ATOMIC_SEQ_CST) != cfg) {
            __atomic_store_n(&t->fast_caller[h], NULL, __ATOMIC_RELAXED);
        }
    }
    ucxf_trust(t, t->rec_caller, cfg->fast_rec[h], h, c->caller, cfg, ranges);
    ucxf_trust(t, t->trk_caller, cfg->fast_track[h], h, c->caller, cfg, ranges);
    if (UCXF_UNLIKELY(t->generation != cfg->generation)) {
        ucxf_rebase(t, cfg);
    }
    hc  = &t->h[h];
    idx = hc->calls - t->base_calls[h];
    UCXF_INC(hc->calls);
    c->size_bucket = ucxf_size_bucket(c->size);
    UCXF_INC(hc->size_calls[c->size_bucket]);
    ucxf_ep_count(t, c->ep, 0);
    if (cfg->recording) {
        c->t0        = ucxf_rec_now();
        c->recording = 1;
    }
    if (UCXF_UNLIKELY(cfg->kills) && c->ep != NULL && ucxf_hook_faultable[h]) {
        /* A killed endpoint fails every later operation at once, as UCX
         * does once it has seen its peer die. */
        code = ucxf_ep_kill_code(c->ep);
        if (code == 0 && (h == UCXF_HOOK_EP_FLUSH_NBX || h == UCXF_HOOK_EP_FLUSH_NB)) {
            /* libucp answers for a failed endpoint, but its flush may
             * still wait for the discard of the lanes a kill took from a
             * live peer; after a real death it fails at once. */
            code = ucxf_ep_dead_code(c->ep);
        }
        if (code < 0 && h == UCXF_HOOK_EP_CLOSE_NBX && ucxf_forced_close == c->ep) {
            /* Forced close of a dead endpoint: UCX's succeeds, so the
             * real one runs (ucxf_before_ep_close). */
            return 0;
        }
        if (code < 0) {
            goto inject;
        }
    }
    if (!cfg->enabled || !cfg->hook_enabled[h] || !ucxf_hook_faultable[h]) {
        return 0;
    }
    if (cfg->hook_nrules[h] != 0) {
        /* Rules cover this hook: they alone decide (rules.c). */
        code = ucxf_rules_decide(c, cfg, t);
        cfg  = c->cfg; /* reloaded if a delay slept: the old one may be freed */
        if (code < 0 && cfg->kills && c->ep != NULL && ucxf_ep_dead_code(c->ep) == code) {
            /* A rule's kill-ep: the call fails at once, in either mode,
             * as a call on a dead endpoint does. */
            goto inject;
        }
        goto decided;
    }
    switch (cfg->strategy) {
    case UCXF_STRATEGY_RANDOM:
        /* The same countdown ucxf_fast_decide keeps. */
        if (t->until_fault[h] == 0) {
            code = ucxf_random_fault(cfg, t, h, idx);
        } else {
            UCXF_DEC(t->until_fault[h]);
        }
        break;
    case UCXF_STRATEGY_PATTERN:
        if (cfg->pattern[idx % cfg->pattern_len]) {
            code = cfg->codes[(hc->faults - t->base_faults[h]) % cfg->ncodes];
        }
        /* The countdown the fast halves keep: at 0 this call was the
         * pattern's next X, and the one after it is looked up. */
        if (t->until_fault[h] == 0) {
            t->until_fault[h] = ucxf_pattern_gap(cfg, idx + 1);
        } else {
            UCXF_DEC(t->until_fault[h]);
        }
        break;
    case UCXF_STRATEGY_REPLAY: {
        int deferred = 0;
        code = ucxf_replay_next(cfg, h, &deferred, c->t0);
        if (code < 0 && deferred) {
            /* Let the operation run; ucxf_leave attaches the failure to
             * its request, or fails it now if it completed at once. */
            c->deferred_code = code;
            return 0;
        }
        /* A failure recorded at once is replayed at once, whatever the
         * mode: the recording, not the mode, says how it arrived. */
        goto inject;
    }
    default:
        break;
    }
decided:
    if (code < 0 && ucxf_hook_defers[h] && (cfg->deferred_mode || ucxf_hook_completion_only[h])) {
        /* The operation runs; its completion carries the failure. */
        c->deferred_code = code;
        return 0;
    }
    if (code < 0 && ucxf_hook_polls[h]) {
        ucxf_poll_fault(c, t, code);
        return 0;
    }
inject:
    if (code < 0 && code >= -100) {
        c->injected = 1;
        return ucxf_count_injected(t, h, code, c->ep, c->size, c->size_bucket);
    }
    return 0;
}

/* Counts a failure attached to an operation that ran (on completion). All
 * its counters move now, as for a failure injected at once: the pattern's
 * turn of codes depends on them, so they cannot wait for the delivery. */
static void ucxf_count_fault(struct ucxf_call *c, int code)
{
    c->injected = 1;
    ucxf_count_code(&c->thread->h[c->hook], code, c->size_bucket);
    ucxf_ep_count(c->thread, c->ep, 1);
}

/* After the real call: delivers failures that arrive on completion, and
 * logs the call. Returns a code to return instead of the real result, or 0. */
int ucxf_leave(struct ucxf_call *c, int status, void *request)
{
    int override = 0;

    if (UCXF_UNLIKELY(__atomic_load_n(&ucxf_defer_holds, __ATOMIC_RELAXED) != 0) && ucxf_hook_polls[c->hook] &&
        c->req != NULL && status != UCS_INPROGRESS && !c->internal) {
        /* The operation completed for real; a rule may hold what the
         * application learns (delay-completion=, hang): in progress until
         * the hold ends, then the real status, or the cancel's, close's or
         * kill's. The wrapper answers call.poll_status. */
        int rel, held = ucxf_defer_held(c->req, &rel);
        if (held > 0) {
            status = c->poll_status = UCS_INPROGRESS;
        } else if (held == 0 && rel < 0) {
            status = c->poll_status = rel;
        }
    }
    if (ucxf_hook_polls[c->hook] && c->req != NULL && status != UCS_INPROGRESS && !c->injected &&
        !c->internal) {
        /* A status query on a request that completed: deliver the failure
         * the query drew (its hook named, ucxf_poll_fault), or else one
         * attached to the request, unless the request failed for real. An
         * attached failure is delivered whether or not the query's own hook
         * is on: it belongs to the operation. */
        struct ucxf_defer_info di;
        int found = ucxf_defer_deliver(c->req, &di) == 0;
        int code  = c->poll_code != 0 ? c->poll_code : found ? di.code : 0;
        int mark  = 0;
        /* Cancelled by a kill's lane discard, or purged by libucp for a
         * kill with an in-flight code (ucxf_ep_inflight_status); in flight
         * at the kill when ucxf_defer_kill gave its entry a code. */
        int killed = found && status < 0 ? ucxf_ep_inflight_status(di.ep, status, di.code != 0) : status;
        if (killed != status) {
            override = status = killed;
        }
        if (code < 0 && status == UCS_OK) {
            override    = code;
            status      = code;
            c->injected = 1;
            mark        = UCXF_MARK_INJECTED;
        }
        if (found) {
            /* The operation's outcome reaches the application here: it
             * is recorded for the operation, however its failure was
             * decided. */
            ucxf_delivered(di.hook, status, di.ep, di.size, c->req, mark);
        } else if (mark) {
            /* A named poll failed a request nothing followed: the
             * observer saw libucp's success; the marker gives the
             * failure to the operation whose request it is. */
            ucxf_delivered(c->hook, status, NULL, 0, c->req, mark);
        }
    }
    if (!c->counted) {
        return override;
    }
    if (UCXF_UNLIKELY(c->deferred_code != 0) && !c->injected) {
        int attached = 0;
        if (status < 0) {
            /* A real error wins over an injected one. */
        } else if (request != NULL) {
            /* Status queries find the failure in the table (when it has
             * room: ucxf_defer_overflow counts the misses); a callback
             * gets it from its trampoline. */
            ucxf_defer_put(request, c->deferred_code, c->ep, c->hook, c->size);
            ucxf_count_fault(c, c->deferred_code);
            attached = 1;
        } else {
            /* Completed at once: fail now. The observer saw libucp
             * return success: the marker, without a request, gives the
             * failure to this thread's call that just returned. */
            override = c->deferred_code;
            ucxf_count_fault(c, override);
            status = override;
            ucxf_fault_marker(c->hook, override, c->ep, c->size, NULL, UCXF_MARK_INJECTED | UCXF_MARK_COMPLETION);
        }
        ucxf_defer_done(c, attached);
    } else if (UCXF_UNLIKELY(c->tracked)) {
        /* Followed for kill-ep while in flight; a trampoline stays only
         * for a request, as libucp calls no callback otherwise. */
        int attached = request != NULL;
        if (request != NULL && ucxf_defer_put_hold(request, 0, c->ep, c->hook, c->size, c->hold_ns) < 0) {
            attached = -1; /* no room: followed by its trampoline only */
        }
        ucxf_defer_done(c, attached);
    } else if (request != NULL && ucxf_defer_active()) {
        /* A request pointer used again (the application's own request
         * memory, UCP_OP_ATTR_FIELD_REQUEST) carries nothing over. */
        ucxf_defer_forget(request);
    }
    if (c->recording) {
        /* Decided at entry: the configuration read then may be freed by
         * now, if the real call took long and commands kept coming. */
        ucxf_record_append(c, status, request, ucxf_rec_now());
    }
    return override;
}
