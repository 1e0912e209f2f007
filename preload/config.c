/*
 * ucxfault injector: the published configuration.
 *
 * Go builds a struct ucxf_config, publishes it whole through one pointer
 * (ucxf_publish) and never changes it afterwards; the hooks read it with
 * plain loads. Publishing recomputes ucxf_armed[], what each hook's fast
 * half may decide alone (fast[], rule_buckets[]), and makes every thread
 * look again at its trusted callers.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ucxfault.h"

/*
 * Every hook starts armed: until the Go control plane has read the
 * environment (it initialises on a thread of its own while the host starts),
 * a call must wait for it, or the first calls of a run would escape the
 * configured faults and a seeded run would not repeat.
 */
UCXF_HIDDEN volatile uint8_t ucxf_armed[UCXF_NUM_HOOKS] = {
    [0 ... UCXF_NUM_HOOKS - 1] = 1,
};

static struct ucxf_config ucxf_default_config; /* disabled, all zero */
UCXF_HIDDEN const struct ucxf_config *ucxf_cfg = &ucxf_default_config;

static uint64_t ucxf_generation;
UCXF_HIDDEN int ucxf_ready;


/* Two or more libucp files are mapped: each call is routed to the copy its
 * caller is linked with (ucxf_route), and every hook takes the slow half. */
UCXF_HIDDEN int ucxf_multi_copy;

/* Callbacks waiting in some thread's list, kills waiting for progress, and
 * 1 << 20 once two libucp copies are mapped: while it is 0 the
 * ucp_worker_progress wrapper is one load and a branch. */
UCXF_HIDDEN int ucxf_progress_work;

/* A second libucp copy is mapped (ucx_object.c): every hook takes the slow
 * half from now on, which routes each call to its caller's copy. */
void ucxf_config_multi_copy(void)
{
    int h;

    if (__atomic_load_n(&ucxf_multi_copy, __ATOMIC_ACQUIRE)) {
        return;
    }
    /* Before the ranges: ucxf_enter trusts no caller once it sees both. */
    __atomic_store_n(&ucxf_multi_copy, 1, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&ucxf_progress_work, 1 << 20, __ATOMIC_SEQ_CST);
    for (h = 0; h < UCXF_NUM_HOOKS; h++) {
        __atomic_store_n(&ucxf_armed[h], 1, __ATOMIC_RELEASE);
    }
}

struct ucxf_config *ucxf_config_new(void)
{
    return calloc(1, sizeof(struct ucxf_config));
}

const struct ucxf_config *ucxf_current(void)
{
    return __atomic_load_n(&ucxf_cfg, __ATOMIC_ACQUIRE);
}

/* The size buckets (see struct ucxf_config) where some rule of hook h can
 * match: a rule whose size range meets the bucket's. 0 without rules. */
static uint64_t ucxf_rule_buckets(const struct ucxf_config *cfg, int h)
{
    uint64_t mask = 0;
    uint32_t i;
    int b;

    for (i = 0; i < cfg->hook_nrules[h]; i++) {
        const struct ucxf_rule *r = &cfg->rules[cfg->hook_rules[h][i]];
        for (b = 0; b < UCXF_SIZE_BUCKETS; b++) {
            uint64_t lo = b == 0 ? 0 : 1ull << (b - 1);
            uint64_t hi = b == 0 ? 0 : (b == 64 ? UINT64_MAX : (1ull << b) - 1);
            if (r->min_size <= hi && r->max_size >= lo) {
                mask |= 1ull << (b < 63 ? b : 63);
            }
        }
    }
    return mask;
}

/* The size buckets whose every size lies in r's size range (bit 63: both
 * buckets 63 and 64). */
static uint64_t ucxf_rule_sure(const struct ucxf_rule *r)
{
    uint64_t mask = 0;
    int b, in63 = 0;

    for (b = 0; b < UCXF_SIZE_BUCKETS; b++) {
        uint64_t lo = b == 0 ? 0 : 1ull << (b - 1);
        uint64_t hi = b == 0 ? 0 : (b == 64 ? UINT64_MAX : (1ull << b) - 1);
        int in = r->min_size <= lo && r->max_size >= hi;
        if (b < 63) {
            mask |= (uint64_t)in << b;
        } else if (b == 63) {
            in63 = in;
        } else if (in63 && in) {
            mask |= 1ull << 63;
        }
    }
    return mask;
}

/* The slot + 1 of hook h's countdown rule under cfg (see
 * ucxf_config.rule_countdown), else 0: the hook's first rule, when it has
 * no condition but sizes and every counted call of h reaches the rules
 * (ucxf_enter: the hook is injected into and no kill can fail a call
 * before them). */
_Static_assert(UCXF_MAX_RULES < 256, "a rule's slot + 1 is kept in a byte");

static uint8_t ucxf_rule_countdown(const struct ucxf_config *cfg, int h)
{
    const struct ucxf_rule *r;
    uint32_t s;

    if (cfg->hook_nrules[h] == 0 || !cfg->enabled || !cfg->hook_enabled[h] || !ucxf_hook_faultable[h] ||
        cfg->kills) {
        return 0;
    }
    s = cfg->hook_rules[h][0];
    r = &cfg->rules[s];
    if (r->call_first != 0 || r->call_last != UINT64_MAX || r->call_step > 1 || r->windowed || r->endpoint >= 0 ||
        r->peer != 0) {
        return 0;
    }
    return (uint8_t)(s + 1);
}

/* A replayed hook whose schedule fails nothing and kills nothing: every
 * call passes, as under the random strategy at 0 %, so the fast half may
 * pass it (no cursor is needed). */
static int ucxf_replay_quiet(const struct ucxf_config *cfg, int h)
{
    const struct ucxf_schedule *s = cfg->replay_global ? &cfg->replay_all : &cfg->replay[h];

    return cfg->strategy == UCXF_STRATEGY_REPLAY && s->events_end == 0;
}

/* Publishes cfg and returns the configuration it replaces. The caller (Go)
 * frees the old one after a grace period: a hook reads a configuration for
 * nanoseconds, never across a sleep or a call into libucp. */
const struct ucxf_config *ucxf_publish(struct ucxf_config *cfg)
{
    const struct ucxf_config *old;
    int h;

    cfg->generation = __atomic_add_fetch(&ucxf_generation, 1, __ATOMIC_RELAXED);
    if (cfg->strategy == UCXF_STRATEGY_RANDOM && cfg->ncodes == 0) {
        cfg->enabled = 0; /* never reached: Go validates; kept so C cannot divide by zero */
    }
    if (cfg->strategy == UCXF_STRATEGY_PATTERN && cfg->pattern_len == 0) {
        cfg->strategy = UCXF_STRATEGY_NONE;
    }
    /* The strategies whose next failure a thread counts down to
     * (until_fault[]): the random draw and the pattern's next X. */
    int counted = cfg->strategy == UCXF_STRATEGY_RANDOM || (cfg->strategy == UCXF_STRATEGY_PATTERN && cfg->ncodes != 0);
    for (h = 0; h < UCXF_NUM_HOOKS; h++) {
        /* What ucxf_enter would do for a counted call of h, decided here
         * once: nothing but the random draw or the pattern between two
         * failures, rules that no call of some sizes can match, or a
         * countdown rule between two calls it may act on. */
        cfg->rule_countdown[h] = ucxf_rule_countdown(cfg, h);
        cfg->rule_sure[h] = cfg->rule_countdown[h] ? ucxf_rule_sure(&cfg->rules[cfg->rule_countdown[h] - 1]) : 0;
        /* A countdown rule decides every call of its sure buckets, so no
         * later rule is consulted there: the fast half passes those calls
         * until the countdown says the rule may act. */
        cfg->rule_buckets[h] = ucxf_rule_buckets(cfg, h) & ~cfg->rule_sure[h];
        int alone = cfg->enabled && cfg->hook_enabled[h] && ucxf_hook_faultable[h] && !cfg->recording &&
                    !cfg->kills && !(ucxf_hook_defers[h] &&
                      (cfg->deferred_mode || cfg->follow_inflight || ucxf_hook_completion_only[h]));
        cfg->fast[h] = alone && (cfg->hook_nrules[h] != 0 || counted || ucxf_replay_quiet(cfg, h));
        /* The recording fast half: what fast[] would allow were it not
         * for the recording, or a hook the configuration injects nothing
         * into. Status queries keep ucxf_leave (completion deliveries). */
        {
            int inject = cfg->enabled && cfg->hook_enabled[h] && ucxf_hook_faultable[h];
            int bare   = inject && !(ucxf_hook_defers[h] && (cfg->deferred_mode || ucxf_hook_completion_only[h])) &&
                       (cfg->hook_nrules[h] != 0 || counted || ucxf_replay_quiet(cfg, h));
            /* The deferred fast half: a faultable hook that defers whose
             * requests are followed, in deferred mode or for an in-flight
             * code, and whose decision fast[] would allow, or that nothing
             * injects into (then armed only to follow its requests for an
             * in-flight code, ucxf_hook_armed). */
            cfg->fast_track[h] = ucxf_hook_defers[h] && !ucxf_hook_completion_only[h] && !cfg->recording &&
                                 !cfg->kills &&
                                 (inject ? (cfg->deferred_mode || cfg->follow_inflight) &&
                                               (cfg->hook_nrules[h] != 0 || counted || ucxf_replay_quiet(cfg, h))
                                         : cfg->follow_inflight);
            cfg->fast_rec[h] = cfg->recording && !cfg->kills && !cfg->deferred_mode && !ucxf_hook_polls[h] &&
                               (!inject || bare);
        }
        cfg->fast_after_replay[h] = alone && cfg->hook_nrules[h] == 0 && cfg->strategy == UCXF_STRATEGY_REPLAY &&
                                    !cfg->replay_cycle && !ucxf_hook_polls[h];
    }
    old = __atomic_exchange_n(&ucxf_cfg, cfg, __ATOMIC_SEQ_CST);
    ucxf_forget_fast_callers();
    for (h = 0; h < UCXF_NUM_HOOKS; h++) {
        uint8_t armed = (uint8_t)(ucxf_hook_armed(cfg, h) || __atomic_load_n(&ucxf_multi_copy, __ATOMIC_ACQUIRE));
        if (!__atomic_load_n(&ucxf_ready, __ATOMIC_ACQUIRE)) {
            armed = 1; /* still waiting for ucxf_set_ready */
        }
        __atomic_store_n(&ucxf_armed[h], armed, __ATOMIC_RELEASE);
    }
    return old == &ucxf_default_config ? NULL : old;
}

void ucxf_set_ready(void)
{
    const struct ucxf_config *cfg;
    int h;

    __atomic_store_n(&ucxf_ready, 1, __ATOMIC_RELEASE);
    cfg = ucxf_current();
    for (h = 0; h < UCXF_NUM_HOOKS; h++) {
        __atomic_store_n(&ucxf_armed[h],
                         (uint8_t)(ucxf_hook_armed(cfg, h) || __atomic_load_n(&ucxf_multi_copy, __ATOMIC_ACQUIRE)),
                         __ATOMIC_RELEASE);
    }
}

/* One line on stderr, with this process's pid, written with write(2): it
 * may run in a fork() child, where stdio is best left alone. */
void ucxf_say(const char *what)
{
    char buf[256];
    int  n = snprintf(buf, sizeof(buf), "ucxfault[%d]: %s\n", (int)getpid(), what);

    if (n > 0 && write(2, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1) < 0) {
        /* nowhere else to say it */
    }
}

void ucxf_wait_ready(void)
{
    static int warned;
    uint64_t deadline = ucxf_now_ns() + 2000000000ull;
    struct timespec pause = {0, 100000};

    while (!__atomic_load_n(&ucxf_ready, __ATOMIC_ACQUIRE)) {
        if (ucxf_now_ns() > deadline) {
            if (__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED) == 0) {
                ucxf_say("the injector has not read its settings after 2 s; calls pass through until it has");
            }
            ucxf_set_ready();
            return;
        }
        nanosleep(&pause, NULL);
    }
}
