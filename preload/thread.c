/*
 * ucxfault injector: threads and their counters.
 *
 * Each thread that makes a counted call gets a block (struct ucxf_thread)
 * that only it writes; the control plane sums the blocks under the threads
 * lock, and a thread that exits folds its counts into the retired totals
 * under the same lock. The lowest layer: it calls no other file of the
 * injector.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ucxfault.h"

/* Per-thread counters; the list only grows, blocks of exited threads are reused. */
static pthread_mutex_t ucxf_threads_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ucxf_thread *ucxf_threads;
static struct ucxf_thread *ucxf_free_threads;
static struct ucxf_hook_counters ucxf_retired[UCXF_NUM_HOOKS];
static uint32_t ucxf_next_ordinal;
static pthread_key_t ucxf_thread_key;
/* A thread's state, or ucxf_no_thread until its first counted call (and
 * after it exits): never NULL, so that ucxf_fast_decide need not test it.
 * ucxf_no_thread's generation, 0, is that of the default configuration,
 * whose fast[] is all 0, and its fast_caller[] stays NULL. */
UCXF_HIDDEN struct ucxf_thread ucxf_no_thread;
UCXF_HIDDEN __thread struct ucxf_thread *ucxf_self __attribute__((tls_model("initial-exec"))) = &ucxf_no_thread;

/* Endpoint counters of threads that exited, by endpoint slot; under the
 * threads lock. */
static struct ucxf_ep_counts ucxf_ep_retired[UCXF_EP_SLOTS + 1];
#define UCXF_EP_COUNTS_BYTES (sizeof(struct ucxf_ep_counts) * (UCXF_EP_SLOTS + 1))

/* Counters of rules of threads that exited, by slot; under the threads lock. */
static struct ucxf_rule_counters ucxf_rules_retired[UCXF_MAX_RULES];

/* Adds one thread's rule counters (t != NULL) or the retired totals
 * (t == NULL) to out. Under the threads lock. A thread's countdown rules
 * (ucxf_config.rule_countdown) count their matches as the calls of their
 * sure size buckets since the thread adopted the configuration (from
 * rule_cd_base), folded into rule[].matches when it adopts another,
 * inside rule_cd_seq odd: read until the sequence count is even and the
 * same before and after. */
static void ucxf_rules_add(struct ucxf_rule_counters *out, const struct ucxf_thread *t)
{
    struct ucxf_rule_counters in[UCXF_MAX_RULES];
    uint32_t s, s1 = 0, s2 = 0;
    int h, tries = 0;

    if (t == NULL) {
        memcpy(in, ucxf_rules_retired, sizeof(in));
    } else {
        do {
            s1 = __atomic_load_n(&t->rule_cd_seq, __ATOMIC_ACQUIRE);
            for (s = 0; s < UCXF_MAX_RULES; s++) {
                in[s].matches  = __atomic_load_n(&t->rule[s].matches, __ATOMIC_RELAXED);
                in[s].faults   = __atomic_load_n(&t->rule[s].faults, __ATOMIC_RELAXED);
                in[s].delays   = __atomic_load_n(&t->rule[s].delays, __ATOMIC_RELAXED);
                in[s].delay_ns = __atomic_load_n(&t->rule[s].delay_ns, __ATOMIC_RELAXED);
            }
            for (h = 0; h < UCXF_NUM_HOOKS; h++) {
                uint8_t cd = __atomic_load_n(&t->rule_cd[h], __ATOMIC_RELAXED);
                if (cd != 0 && cd <= UCXF_MAX_RULES) {
                    uint64_t sure = __atomic_load_n(&t->rule_cd_sure[h], __ATOMIC_RELAXED);
                    in[cd - 1].matches += ucxf_sure_calls(&t->h[h], sure) -
                                          __atomic_load_n(&t->rule_cd_base[h], __ATOMIC_RELAXED);
                }
            }
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            s2 = __atomic_load_n(&t->rule_cd_seq, __ATOMIC_RELAXED);
            /* Bounded: a thread that forked away while adopting a
             * configuration leaves its count odd in the child for good. */
        } while ((s1 != s2 || (s1 & 1)) && ++tries < 1000);
    }
    for (s = 0; s < UCXF_MAX_RULES; s++) {
        out[s].matches += in[s].matches;
        out[s].faults += in[s].faults;
        out[s].delays += in[s].delays;
        out[s].delay_ns += in[s].delay_ns;
    }
}

static void ucxf_thread_exit(void *arg)
{
    struct ucxf_thread *t = arg, **pp;
    struct ucxf_ep_counts *epc = t->ep_cnt;
    int h, k;

    ucxf_self = &ucxf_no_thread; /* the block is reused: a later call starts anew */
    pthread_mutex_lock(&ucxf_threads_lock);
    for (pp = &ucxf_threads; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    }
    /* Fold into the retired totals under the same lock Go sums under, so a
     * sum never counts a thread twice or not at all. */
    for (h = 0; h < UCXF_NUM_HOOKS; h++) {
        ucxf_retired[h].calls  += t->h[h].calls;
        ucxf_retired[h].faults += t->h[h].faults;
        /* Its calls after its last fault stay in the sum (ucxf_stats_sum). */
        ucxf_retired[h].calls_at_fault += t->h[h].calls - t->h[h].calls_at_fault;
        for (k = 0; k < UCXF_CODE_SLOTS; k++) {
            ucxf_retired[h].codes[k] += t->h[h].codes[k];
        }
        for (k = 0; k < UCXF_SIZE_BUCKETS; k++) {
            ucxf_retired[h].size_calls[k] += t->h[h].size_calls[k];
            ucxf_retired[h].size_faults[k] += t->h[h].size_faults[k];
        }
    }
    ucxf_rules_add(ucxf_rules_retired, t);
    if (epc != NULL) {
        for (k = 0; k <= UCXF_EP_SLOTS; k++) {
            ucxf_ep_retired[k].calls += epc[k].calls;
            ucxf_ep_retired[k].faults += epc[k].faults;
        }
    }
    memset(t, 0, sizeof(*t));
    t->next           = ucxf_free_threads;
    ucxf_free_threads = t;
    pthread_mutex_unlock(&ucxf_threads_lock);
    if (epc != NULL) {
        munmap(epc, UCXF_EP_COUNTS_BYTES); /* no sum reads it: t left the list under the lock */
    }
}

struct ucxf_ep_counts *ucxf_ep_counts_cell(struct ucxf_thread *t, int slot)
{
    struct ucxf_ep_counts *epc = t->ep_cnt;

    if (epc == NULL) {
        /* Anonymous pages: untouched ones cost no memory. */
        void *p = mmap(NULL, UCXF_EP_COUNTS_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            return NULL;
        }
        epc = p;
        /* Published under the lock, which the sums read it under. */
        pthread_mutex_lock(&ucxf_threads_lock);
        t->ep_cnt = epc;
        pthread_mutex_unlock(&ucxf_threads_lock);
    }
    return &epc[slot < 0 || slot >= UCXF_EP_SLOTS ? UCXF_EP_SLOTS : slot];
}

/* Adds every thread's endpoint counters of slots [lo, hi] to out[0..]. */
static void ucxf_ep_counts_add(int lo, int hi, struct ucxf_ep_counts *out)
{
    struct ucxf_thread *t;
    int k;

    pthread_mutex_lock(&ucxf_threads_lock);
    for (k = lo; k <= hi; k++) {
        out[k - lo].calls += ucxf_ep_retired[k].calls;
        out[k - lo].faults += ucxf_ep_retired[k].faults;
    }
    for (t = ucxf_threads; t != NULL; t = t->next) {
        const struct ucxf_ep_counts *epc = t->ep_cnt;
        if (epc == NULL) {
            continue;
        }
        for (k = lo; k <= hi; k++) {
            out[k - lo].calls += __atomic_load_n(&epc[k].calls, __ATOMIC_RELAXED);
            out[k - lo].faults += __atomic_load_n(&epc[k].faults, __ATOMIC_RELAXED);
        }
    }
    pthread_mutex_unlock(&ucxf_threads_lock);
}

void ucxf_ep_counts_sum(struct ucxf_ep_counts *out)
{
    memset(out, 0, UCXF_EP_COUNTS_BYTES);
    ucxf_ep_counts_add(0, UCXF_EP_SLOTS, out);
}

void ucxf_ep_counts_slot(int slot, struct ucxf_ep_counts *out)
{
    memset(out, 0, sizeof(*out));
    if (slot >= 0 && slot <= UCXF_EP_SLOTS) {
        ucxf_ep_counts_add(slot, slot, out);
    }
}

struct ucxf_thread *ucxf_thread_new(void)
{
    struct ucxf_thread *t;

    pthread_mutex_lock(&ucxf_threads_lock);
    t = ucxf_free_threads;
    if (t != NULL) {
        ucxf_free_threads = t->next;
    } else {
        t = calloc(1, sizeof(*t));
    }
    if (t != NULL) {
        t->ordinal     = ucxf_next_ordinal++;
        t->ep_cnt_cell = &t->ep_sink;
        t->tid       = (int32_t)syscall(SYS_gettid);
        t->next      = ucxf_threads;
        ucxf_threads = t;
    }
    pthread_mutex_unlock(&ucxf_threads_lock);
    if (t != NULL) {
        pthread_setspecific(ucxf_thread_key, t);
        ucxf_self = t;
    }
    return t;
}


void ucxf_stats_sum(struct ucxf_hook_counters *out, uint64_t *threads)
{
    struct ucxf_thread *t;
    uint64_t n = 0;
    int h, k;

    pthread_mutex_lock(&ucxf_threads_lock);
    memcpy(out, ucxf_retired, sizeof(ucxf_retired));
    for (t = ucxf_threads; t != NULL; t = t->next) {
        n++;
        for (h = 0; h < UCXF_NUM_HOOKS; h++) {
            out[h].calls  += __atomic_load_n(&t->h[h].calls, __ATOMIC_RELAXED);
            out[h].faults += __atomic_load_n(&t->h[h].faults, __ATOMIC_RELAXED);
            for (k = 0; k < UCXF_CODE_SLOTS; k++) {
                out[h].codes[k] += __atomic_load_n(&t->h[h].codes[k], __ATOMIC_RELAXED);
            }
            for (k = 0; k < UCXF_SIZE_BUCKETS; k++) {
                out[h].size_calls[k] += __atomic_load_n(&t->h[h].size_calls[k], __ATOMIC_RELAXED);
                out[h].size_faults[k] += __atomic_load_n(&t->h[h].size_faults[k], __ATOMIC_RELAXED);
            }
            /* Calls since the last fault, summed over threads, those
             * that exited included (ucxf_retired). */
            out[h].calls_at_fault += __atomic_load_n(&t->h[h].calls, __ATOMIC_RELAXED) -
                                     __atomic_load_n(&t->h[h].calls_at_fault, __ATOMIC_RELAXED);
        }
    }
    pthread_mutex_unlock(&ucxf_threads_lock);
    if (threads != NULL) {
        *threads = n;
    }
}

/* Sums the per-thread rule counters by slot (see rules.c; retired ones kept here). */
void ucxf_rule_stats_sum(struct ucxf_rule_counters *out)
{
    struct ucxf_thread *t;

    pthread_mutex_lock(&ucxf_threads_lock);
    ucxf_rules_add(out, NULL);
    for (t = ucxf_threads; t != NULL; t = t->next) {
        ucxf_rules_add(out, t);
    }
    pthread_mutex_unlock(&ucxf_threads_lock);
}

/* Callers were found outside UCX under the old internal ranges, or
 * trusted under the old configuration: every thread goes through
 * ucxf_enter again (which closes the race with its own store). */
void ucxf_forget_fast_callers(void)
{
    struct ucxf_thread *t;
    int h;

    pthread_mutex_lock(&ucxf_threads_lock);
    for (t = ucxf_threads; t != NULL; t = t->next) {
        for (h = 0; h < UCXF_NUM_HOOKS; h++) {
            __atomic_store_n(&t->fast_caller[h], NULL, __ATOMIC_RELAXED);
            __atomic_store_n(&t->rec_caller[h], NULL, __ATOMIC_RELAXED);
            __atomic_store_n(&t->trk_caller[h], NULL, __ATOMIC_RELAXED);
        }
    }
    pthread_mutex_unlock(&ucxf_threads_lock);
}

/* Counts a failure of hook counters hc, with its code and size bucket, and
 * restarts the hook's calls since the last fault. */
void ucxf_count_code(struct ucxf_hook_counters *hc, int code, int bucket)
{
    UCXF_INC(hc->faults);
    UCXF_INC(hc->codes[-code]);
    UCXF_INC(hc->size_faults[bucket]);
    __atomic_store_n(&hc->calls_at_fault, hc->calls, __ATOMIC_RELAXED);
}

/* Counts, on the calling thread, a failure that no call decided: a request
 * of hook in flight on an endpoint that kill-ep killed (ucxf_defer_kill). */
void ucxf_count_completion_fault(int hook, int code, uint64_t size)
{
    struct ucxf_thread *t;

    if (hook < 0 || hook >= UCXF_NUM_HOOKS || code >= 0 || code < -100) {
        return;
    }
    t = ucxf_thread_self();
    if (t != NULL) {
        ucxf_count_code(&t->h[hook], code, (int)ucxf_size_bucket(size));
    }
}

void ucxf_threads_init(void)
{
    pthread_key_create(&ucxf_thread_key, ucxf_thread_exit);
}

/* Around fork() (init.c): the child never inherits the lock held. */
void ucxf_threads_fork_prepare(void)
{
    pthread_mutex_lock(&ucxf_threads_lock);
}

void ucxf_threads_fork_parent(void)
{
    pthread_mutex_unlock(&ucxf_threads_lock);
}

void ucxf_threads_fork_child(void)
{
    pthread_mutex_init(&ucxf_threads_lock, NULL);
}
