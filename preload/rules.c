/*
 * ucxfault injector: fault rules on the hot path.
 *
 * A rule matches a call when every condition holds: size range, call range
 * (the hook's calls in this thread since the rule was set), time window,
 * endpoint ordinal, the endpoint's peer. Per hook the first matching rule decides; a rule that
 * matches but whose strategy says pass, or whose fault budget is spent, still
 * decides (the call passes). Nothing here takes a lock; a rule that does not
 * match writes nothing; counters are the calling thread's own. The one shared
 * write is the fault budget of a rule with max_faults, taken only when that
 * rule acts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <time.h>

#include "ucxfault.h"
#include "endpoint.h"
#include "rules.h"
#include "rules_fast.h"
#include "record.h"
#include "epfail.h"
#include "dlopen.h"

/*
 * Time windows are checked on every call a windowed rule sees. The precise
 * clock costs about 30 ns on a VM; CLOCK_MONOTONIC_COARSE about 4 ns (read
 * through the vDSO, ucxf_rules_clock), but it lags by up to one tick.
 * Since the precise time lies in [coarse, coarse + tick), the coarse clock
 * decides unless a window edge falls inside that interval; only then is
 * the precise clock read (ucxf_rules_in_window). 0: no usable coarse
 * clock.
 */
UCXF_HIDDEN uint64_t ucxf_rules_tick_ns;

/* The coarse clock, read by ucxf_rules_in_window: libc's clock_gettime
 * until a configuration with a window is published, then the vDSO's own
 * entry where the vDSO has one (ucxf_rules_clock_resolve). libc's wrapper
 * adds its checks to each read: 5.3 to 6.0 ns a read through it, 3.5 to
 * 4.0 ns direct, in a loop on this project's 2-vCPU VM (Linux 6.18). */
UCXF_HIDDEN int (*ucxf_rules_clock)(clockid_t, struct timespec *) = clock_gettime;

void ucxf_rules_clock_resolve(void)
{
    static int resolved;
    void *vdso, *f = NULL;

    if (__atomic_exchange_n(&resolved, 1, __ATOMIC_ACQ_REL)) {
        return;
    }
    /* Already mapped into every process: RTLD_NOLOAD only finds it. */
    vdso = ucxf_dlopen_real("linux-vdso.so.1", RTLD_LAZY | RTLD_NOLOAD);
    if (vdso != NULL) {
        f = dlsym(vdso, "__vdso_clock_gettime"); /* x86-64 */
        if (f == NULL) {
            f = dlsym(vdso, "__kernel_clock_gettime"); /* arm64 */
        }
    }
    if (f != NULL) {
        __atomic_store_n(&ucxf_rules_clock, (int (*)(clockid_t, struct timespec *))f, __ATOMIC_RELEASE);
    }
}

__attribute__((constructor)) static void ucxf_rules_init(void)
{
    struct timespec res;

    if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0 && res.tv_sec == 0 && res.tv_nsec > 0 &&
        res.tv_nsec <= 20000000) {
        ucxf_rules_tick_ns = (uint64_t)res.tv_nsec;
    }
}


/* How far a countdown rule's draws are looked ahead at once: a random
 * rule that acts on none of the next this many calls has the call after
 * them decided in the slow half, which looks ahead again. Each look is one
 * draw (about 15 instructions), as every matched call paid before; the
 * bound keeps one call from paying for thousands (prob=0.01). */
#define UCXF_RULE_LOOKAHEAD 128

/* The calls of hook h, from call k of countdown rule r on (in the thread
 * of ordinal o), that the rule's strategy passes before the first it may
 * act on: the same draws and pattern that ucxf_rules_decide applies, only
 * earlier, so the calls that fail do not change. UINT64_MAX: never. */
static uint64_t ucxf_rules_gap(const struct ucxf_config *cfg, const struct ucxf_rule *r, int h, uint32_t o,
                               uint64_t k)
{
    uint64_t g, x;

    switch (r->strategy) {
    case UCXF_STRATEGY_RANDOM:
        if (r->prob_units == 0) {
            return UINT64_MAX;
        }
        for (g = 0; g < UCXF_RULE_LOOKAHEAD; g++) {
            if (ucxf_rules_draw_acts(cfg, r, h, o, k + g, &x)) {
                return g;
            }
        }
        return UCXF_RULE_LOOKAHEAD;
    case UCXF_STRATEGY_PATTERN:
        for (g = 0; g < r->pattern_len; g++) {
            if (r->pattern[(k + g) % r->pattern_len]) {
                return g;
            }
        }
        return UINT64_MAX;
    default: /* acts on every call */
        return 0;
    }
}

void ucxf_rules_countdown_look_ahead(const struct ucxf_config *cfg, struct ucxf_thread *t, int h, uint32_t cd,
                                     uint64_t nr)
{
    t->until_fault[h] = ucxf_rules_gap(cfg, &cfg->rules[cd - 1], h, t->ordinal, nr - t->rule_base[cd - 1][h] + 1);
}

/* The countdown rules of the configuration t adopts: the matches counted
 * by the calls of their sure buckets under the one it leaves go into the
 * rules' counters, and each hook with one counts down from the rule's call
 * index (its calls since the thread first saw the rule). Inside
 * rule_cd_seq odd, so that a sum never sees a match twice or not at all. */
static void ucxf_rules_countdown_adopt(struct ucxf_thread *t, const struct ucxf_config *cfg)
{
    uint32_t seq = t->rule_cd_seq;
    int h, begun = 0;

    for (h = 0; h < UCXF_NUM_HOOKS; h++) {
        uint8_t old = t->rule_cd[h], cd = cfg->rule_countdown[h];
        uint64_t sure = cfg->rule_sure[h];

        if (old == 0 && cd == 0) {
            continue;
        }
        if (!begun) {
            __atomic_store_n(&t->rule_cd_seq, seq + 1, __ATOMIC_RELAXED);
            __atomic_thread_fence(__ATOMIC_RELEASE);
            begun = 1;
        }
        if (old != 0) {
            UCXF_ADD(t->rule[old - 1].matches, ucxf_sure_calls(&t->h[h], t->rule_cd_sure[h]) - t->rule_cd_base[h]);
        }
        __atomic_store_n(&t->rule_cd[h], cd, __ATOMIC_RELAXED);
        __atomic_store_n(&t->rule_cd_sure[h], sure, __ATOMIC_RELAXED);
        __atomic_store_n(&t->rule_cd_base[h], ucxf_sure_calls(&t->h[h], sure), __ATOMIC_RELAXED);
        if (cd != 0) {
            t->until_fault[h] =
                ucxf_rules_gap(cfg, &cfg->rules[cd - 1], h, t->ordinal, t->h[h].calls - t->rule_base[cd - 1][h]);
        }
    }
    if (begun) {
        __atomic_store_n(&t->rule_cd_seq, seq + 2, __ATOMIC_RELEASE);
    }
}

void ucxf_rules_rebase(struct ucxf_thread *t, const struct ucxf_config *cfg)
{
    uint32_t s;
    int h;

    /* Slots keep what they knew without rules: a rule set later is new anyway. */
    for (s = 0; cfg->nrules != 0 && s < UCXF_MAX_RULES; s++) {
        uint64_t uid = cfg->rules[s].uid;
        if (uid == 0 || t->rule_uid[s] == uid) {
            continue;
        }
        t->rule_uid[s] = uid;
        for (h = 0; h < UCXF_NUM_HOOKS; h++) {
            t->rule_base[s][h] = t->h[h].calls;
        }
    }
    ucxf_rules_countdown_adopt(t, cfg);
}

/* Waits d ns before the real call. Holds nothing: the rule and the
 * configuration are not touched after the sleep (a configuration is freed
 * ten seconds after it is replaced, and a delay may be longer). */
static void ucxf_rules_sleep(struct ucxf_call *c, struct ucxf_thread *t, uint32_t s, uint64_t d)
{
    int was_recording = c->cfg->recording;
    uint64_t t0       = ucxf_now_ns(), end = t0 + d, t1;
    struct timespec ts;

    ts.tv_sec  = (time_t)(end / 1000000000ull);
    ts.tv_nsec = (long)(end % 1000000000ull);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
    t1 = ucxf_now_ns();
    UCXF_INC(t->rule[s].delays);
    UCXF_ADD(t->rule[s].delay_ns, t1 - t0);
    c->cfg = ucxf_current();
    if (c->cfg->recording && !was_recording) {
        c->t0        = ucxf_rec_now(); /* recording started while we slept */
        c->recording = 1;
    }
}

/* A hold rule (delay-completion=, hang) acts: the call runs as asked and
 * fails nothing; its request is followed (ucxf_tracks) and its completion
 * held (deliver.c, defer.c). Only hooks that return a request with a
 * callback member reach here (control/rules.go refuses the others). */
static int ucxf_rules_hold(struct ucxf_call *c, const struct ucxf_rule *r)
{
    if (ucxf_hook_defers[c->hook]) {
        c->hold_ns = r->hold_ns;
    }
    return 0;
}

/* The matched rule r (slot s) acts on call number k of the hook: its
 * strategy chose the call (ucxf_rules_decide; x is the random draw). Apart
 * from the decision, so that the calls a rule lets pass pay for no call. */
static __attribute__((noinline)) int ucxf_rules_act(struct ucxf_call *c, const struct ucxf_config *cfg,
                                                    struct ucxf_thread *t, const struct ucxf_rule *r,
                                                    uint32_t s, uint64_t k, uint64_t x)
{
    const int8_t *codes = r->ncodes ? r->codes : cfg->codes;
    uint32_t ncodes     = r->ncodes ? r->ncodes : cfg->ncodes;
    uint64_t d          = 0;
    int code = 0;

    switch (r->strategy) {
    case UCXF_STRATEGY_RANDOM:
        if (ncodes > 0) {
            code = codes[(uint32_t)x % ncodes];
        }
        break;
    case UCXF_STRATEGY_PATTERN:
        if (ncodes > 0) {
            code = codes[t->rule[s].faults % ncodes];
        }
        break;
    default: /* delay only */
        break;
    }
    if (r->kill_ep) {
        code = r->kill_code != 0 ? r->kill_code : ucxf_epfail_default_code();
    }
    if (code < 0 && ucxf_hook_polls[c->hook] && c->poll_status != UCS_OK) {
        /* A status query fails only a request whose operation completed
         * (ucxf_poll_fault): the rule does not act on this poll, and
         * spends no budget on it. */
        return 0;
    }
    if (r->max_faults != 0) {
        /* Read first: once the budget is spent the line is only read. */
        if (__atomic_load_n(r->spent, __ATOMIC_RELAXED) >= r->max_faults ||
            __atomic_fetch_add(r->spent, 1, __ATOMIC_RELAXED) >= r->max_faults) {
            return 0;
        }
    }
    if (r->hold_ns != 0) {
        return ucxf_rules_hold(c, r);
    }
    if (code < 0) {
        UCXF_INC(t->rule[s].faults);
    }
    if (r->kill_ep && c->ep != NULL) {
        /* The endpoint dies just before this call, which then fails as
         * every later call on it does until libucp has the failure. */
        int inflight = r->inflight_code != 0 ? r->inflight_code : cfg->inflight_code;
        if (ucxf_ep_kill_now(c->ep, code, inflight) > 0) {
            /* Logged at the call's start, so that the failure takes the
             * killed call's position in the recording. */
            ucxf_record_ep_event(ucxf_ep_ordinal(c->ep), UCXF_EPEV_FAILURE, code, UCXF_EPCAUSE_RULE, inflight,
                                 c->t0);
        }
    }
    if (r->delay_max_ns != 0) {
        d = r->delay_min_ns;
        if (r->delay_max_ns > r->delay_min_ns) {
            uint64_t y = ucxf_mix(x ^ cfg->seed ^ (r->uid << 32) ^ ((uint64_t)t->ordinal << 20) ^ k ^
                                        0x5bd1e995ull);
            d += y % (r->delay_max_ns - r->delay_min_ns + 1);
        }
        ucxf_rules_sleep(c, t, s, d); /* r and cfg are not used after this */
    }
    return code;
}

/* The rules of hook h, in order, on call c (number nr of the hook in the
 * thread): the first that matches decides. count0: whether a match of the
 * first rule counts in its matches (not for a call of a countdown rule's
 * sure buckets, which its buckets' calls count). Inlined twice, so that
 * the hooks without a countdown rule run the loop they always ran. */
static inline __attribute__((always_inline)) int ucxf_rules_eval(struct ucxf_call *c, const struct ucxf_config *cfg,
                                                                 struct ucxf_thread *t, int h, uint64_t nr, int count0)
{
    uint64_t k = 0, x = 0;
    const struct ucxf_rule *r;
    uint32_t s;
    int i = ucxf_rules_match(cfg, t, h, c->size, c->ep, nr, &k);

    if (i < 0) {
        return 0;
    }
    s = cfg->hook_rules[h][i];
    r = &cfg->rules[s];
    if (count0 || i != 0) {
        UCXF_INC(t->rule[s].matches);
    }
    if (!ucxf_rules_chooses(cfg, r, h, t->ordinal, k, &x)) {
        return 0;
    }
    return ucxf_rules_act(c, cfg, t, r, s, k, x);
}

/* ucxf_rules_decide for a hook with a countdown rule: the countdown moves
 * on with every call of the hook, whichever half took it and whichever
 * rule matches (at 0 this call was the next the countdown rule may act
 * on, and the one after is looked up), and a call of the rule's sure
 * buckets is counted as a match by the buckets' calls
 * (ucxf_rules_countdown_adopt). Apart, so that the hooks without one keep
 * the code they had. */
static __attribute__((noinline)) int ucxf_rules_decide_countdown(struct ucxf_call *c, const struct ucxf_config *cfg,
                                                                 struct ucxf_thread *t, uint32_t cd)
{
    const int h       = c->hook;
    const uint64_t nr = t->h[h].calls - 1;

    ucxf_rules_countdown_step(cfg, t, h, cd, nr);
    return ucxf_rules_eval(c, cfg, t, h, nr, ucxf_rules_count0(cfg, h, c->size_bucket));
}

int ucxf_rules_decide(struct ucxf_call *c, const struct ucxf_config *cfg, struct ucxf_thread *t)
{
    const int h       = c->hook;
    const uint32_t cd = cfg->rule_countdown[h];

    if (cd != 0) {
        return ucxf_rules_decide_countdown(c, cfg, t, cd);
    }
    return ucxf_rules_eval(c, cfg, t, h, t->h[h].calls - 1 /* this call's number in the thread */, 1);
}
