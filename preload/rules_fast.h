/*
 * ucxfault injector: rule matching, shared by the slow half (rules.c) and
 * the rules half (ucxf_rul_* in hooks_gen.c, which inline ucxf_rules_pass):
 * a call that a rule may match but none acts on then passes without a call
 * into rules.c, ucxf_enter or ucxf_leave.
 */
#ifndef UCXFAULT_RULES_FAST_H
#define UCXFAULT_RULES_FAST_H

#include <stdint.h>
#include <time.h>

#include "ucxfault.h"
#include "endpoint.h"

/* Hook h's countdown rule (slot cd - 1) may act on call nr of h in thread
 * t, the one its countdown reached: until_fault[h] becomes the number of
 * calls after it that the rule's strategy passes before the next it may
 * act on (rules.c, the seeded draws looked ahead). */
UCXF_HIDDEN void ucxf_rules_countdown_look_ahead(const struct ucxf_config *cfg, struct ucxf_thread *t, int h,
                                                 uint32_t cd, uint64_t nr);

/* The countdown of hook h moves on past call nr, whichever rule decided
 * it and however: at 0, nr was the next call the countdown rule (slot
 * cd - 1) may act on, and the one after is looked up. */
static inline void ucxf_rules_countdown_step(const struct ucxf_config *cfg, struct ucxf_thread *t, int h, uint32_t cd,
                                             uint64_t nr)
{
    if (t->until_fault[h] == 0) {
        ucxf_rules_countdown_look_ahead(cfg, t, h, cd, nr);
    } else {
        UCXF_DEC(t->until_fault[h]);
    }
}

/* The coarse clock's tick in ns (rules.c), 0 when it has none: see
 * ucxf_rules_in_window. */
extern UCXF_HIDDEN uint64_t ucxf_rules_tick_ns;
/* The coarse clock's reader (rules.c): the vDSO's clock_gettime once a
 * configuration with a window has been published, else libc's. */
extern UCXF_HIDDEN int (*ucxf_rules_clock)(clockid_t, struct timespec *);

/* Whether now is inside rule r's time window: the coarse clock decides
 * unless a window edge falls within a tick of it (rules.c). */
static inline int ucxf_rules_in_window(const struct ucxf_rule *r)
{
    struct timespec ts;
    uint64_t now, tick = ucxf_rules_tick_ns;

    if (tick != 0 && __atomic_load_n(&ucxf_rules_clock, __ATOMIC_RELAXED)(CLOCK_MONOTONIC_COARSE, &ts) == 0) {
        now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        if (now + tick <= r->t_start_ns || now >= r->t_end_ns) {
            return 0;
        }
        if (now >= r->t_start_ns && (r->t_end_ns == UINT64_MAX || now + tick <= r->t_end_ns)) {
            return 1;
        }
    }
    now = ucxf_now_ns();
    return now >= r->t_start_ns && now < r->t_end_ns;
}

/* Fills the thread's one-entry cache with ep's ordinal and peer. A new
 * endpoint at a reused address bumps ucxf_ep_renumbered after it has its
 * number and peer, so a cache filled before that is refilled. */
static inline void ucxf_rules_ep_lookup(struct ucxf_thread *t, void *ep)
{
    uint32_t gen = __atomic_load_n(&ucxf_ep_renumbered, __ATOMIC_ACQUIRE);

    if (t->rule_ep != ep || t->rule_ep_gen != gen) {
        t->rule_ep_ordinal = ucxf_ep_ordinal(ep);
        t->rule_ep_peer    = ucxf_ep_peer_hash(ep);
        t->rule_ep         = ep;
        t->rule_ep_gen     = gen;
    }
}

/* The endpoint's ordinal, through the cache. */
static inline int32_t ucxf_rules_ep_ordinal(struct ucxf_thread *t, void *ep)
{
    ucxf_rules_ep_lookup(t, ep);
    return t->rule_ep_ordinal;
}

/* The hash of the endpoint's peer, through the cache. */
static inline uint64_t ucxf_rules_ep_peer(struct ucxf_thread *t, void *ep)
{
    ucxf_rules_ep_lookup(t, ep);
    return t->rule_ep_peer;
}

/* Whether random rule r acts on call k of hook h in thread ordinal o: a
 * stateless draw per (seed, rule, hook, thread, call), so a seeded run
 * fails the same calls whatever else the process does. *x is the draw
 * (ucxf_rules_act picks the code from it). */
static inline int ucxf_rules_draw_acts(const struct ucxf_config *cfg, const struct ucxf_rule *r, int h, uint32_t o,
                                       uint64_t k, uint64_t *x)
{
    *x = ucxf_mix(cfg->seed ^ (r->uid << 48) ^ ((uint64_t)h << 56) ^ ((uint64_t)o << 40) ^ k);
    return (((*x >> 32) * UCXF_PROB_SCALE) >> 32) < r->prob_units;
}

/* The first rule of hook h that matches a call of size bytes on endpoint
 * ep (NULL: none), number nr of the hook in thread t: its index in
 * hook_rules[h], or -1 when none matches; *kp is the call's number for
 * that rule. Writes nothing but t's endpoint cache. */
static inline __attribute__((always_inline)) int ucxf_rules_match(const struct ucxf_config *cfg,
                                                                  struct ucxf_thread *t, int h, uint64_t size,
                                                                  void *ep, uint64_t nr, uint64_t *kp)
{
    const uint32_t n = cfg->hook_nrules[h];
    uint32_t i;

    for (i = 0; i < n; i++) {
        const uint32_t s           = cfg->hook_rules[h][i];
        const struct ucxf_rule *r = &cfg->rules[s];
        uint64_t k;

        if (size < r->min_size || size > r->max_size) {
            continue;
        }
        k = nr - t->rule_base[s][h];
        if (k < r->call_first || k > r->call_last ||
            (r->call_step > 1 && (k - r->call_first) % r->call_step != 0)) {
            continue;
        }
        if (r->windowed && !ucxf_rules_in_window(r)) {
            continue;
        }
        if (r->endpoint >= 0 && (ep == NULL || ucxf_rules_ep_ordinal(t, ep) != r->endpoint)) {
            continue;
        }
        if (r->peer != 0 && (ep == NULL || ucxf_rules_ep_peer(t, ep) != r->peer)) {
            continue;
        }
        *kp = k;
        return (int)i;
    }
    return -1;
}

/* Whether the strategy of rule r, which matched call k of hook h in the
 * thread of ordinal o, chooses that call (*x: the random draw, for the
 * code). */
static inline __attribute__((always_inline)) int ucxf_rules_chooses(const struct ucxf_config *cfg,
                                                                    const struct ucxf_rule *r, int h, uint32_t o,
                                                                    uint64_t k, uint64_t *x)
{
    switch (r->strategy) {
    case UCXF_STRATEGY_RANDOM:
        return ucxf_rules_draw_acts(cfg, r, h, o, k, x);
    case UCXF_STRATEGY_PATTERN:
        return r->pattern_len != 0 && r->pattern[k % r->pattern_len];
    default: /* acts on every call */
        return 1;
    }
}

/* Whether a countdown rule's match of a call of bucket b counts in its
 * matches: not in its sure buckets, whose calls count them. */
static inline int ucxf_rules_count0(const struct ucxf_config *cfg, int h, unsigned b)
{
    return !((cfg->rule_sure[h] >> (b < 63 ? b : 63)) & 1);
}

/*
 * The rules half: a call of hook h that ucxf_fast_decide could not pass
 * (ucxf_fast_decide answered 2: its caller is trusted, under a
 * configuration whose fast[h] is set, and it is of the endpoint the thread
 * counted last), because a rule may match its size or the countdown rule
 * may act on it. The rules are evaluated as ucxf_rules_decide evaluates
 * them; when none acts (a rule whose fault budget is spent does not), the
 * call is counted as ucxf_enter counts a call that passes (calls, size
 * bucket, endpoint, the rule's match, the countdown, looked ahead at its
 * end) and passes without ucxf_enter and ucxf_leave, which cost
 * about 400 instructions (callgrind, UCX 1.13.1). When a rule acts, or
 * the configuration changed since the caller was trusted, nothing is
 * written and ucxf_enter decides the call again from the start: the draw
 * and the pattern are functions of the call number, so it reaches the same
 * decision (a window may have closed meanwhile: the call then passes, as
 * a call made a little later would).
 * Returns 0 when no rule acts and the call was counted, 1 when ucxf_enter
 * must decide (nothing written).
 */
static inline __attribute__((always_inline)) int ucxf_rules_pass(int h, uint64_t size, void *ep)
{
    struct ucxf_thread *t         = ucxf_self;
    const struct ucxf_config *cfg = __atomic_load_n(&ucxf_cfg, __ATOMIC_ACQUIRE); /* ucxf_current, inlined */
    const unsigned bucket         = ucxf_size_bucket(size);
    struct ucxf_hook_counters *hc = &t->h[h];
    const uint32_t cd             = cfg->rule_countdown[h];
    uint64_t k = 0, x = 0;
    int i, count0 = 1;

    /* fast[h] and the thread's bases as ucxf_enter would find them; a
     * trusted caller means t is this thread's own block. */
    if (cfg->hook_nrules[h] == 0 || !cfg->fast[h] || t->generation != cfg->generation) {
        return 1;
    }
    if (cd != 0) {
        count0 = ucxf_rules_count0(cfg, h, bucket);
    }
    i = ucxf_rules_match(cfg, t, h, size, ep, hc->calls, &k);
    if (i >= 0) {
        const uint32_t s           = cfg->hook_rules[h][i];
        const struct ucxf_rule *r = &cfg->rules[s];
        /* A rule whose fault budget is spent lets the call pass, as
         * ucxf_rules_act would (read only: the budget's line is written
         * by a rule that acts). */
        if (ucxf_rules_chooses(cfg, r, h, t->ordinal, k, &x) &&
            (r->max_faults == 0 || __atomic_load_n(r->spent, __ATOMIC_RELAXED) < r->max_faults)) {
            return 1;
        }
        if (count0 || i != 0) {
            UCXF_INC(t->rule[s].matches);
        }
    }
    if (cd != 0) {
        ucxf_rules_countdown_step(cfg, t, h, cd, hc->calls);
    }
    UCXF_INC(hc->calls);
    UCXF_INC(hc->size_calls[bucket]);
    if (ep != NULL) {
        UCXF_INC(t->ep_cnt_cell->calls); /* ucxf_fast_decide found ep the thread's last */
    }
    return 0;
}

#endif
