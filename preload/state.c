/*
 * ucxfault injector: the C side of the shared state and the fault decision.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ucxfault.h"
#include "record.h"
#include "rules.h"
#include "ucx_object.h"

void *ucxf_real[UCXF_NUM_HOOKS];

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

/* Whether calls of hook h must go through ucxf_enter under cfg: the one
 * definition behind ucxf_armed[] and the check at the top of ucxf_enter. */
static inline int ucxf_hook_armed(const struct ucxf_config *cfg, int h)
{
    return (cfg->enabled && cfg->hook_enabled[h]) || cfg->recording || cfg->kills;
}
static uint64_t ucxf_generation;
static int ucxf_ready;

/* Executable ranges of libucp, libucs, libuct and libucm: calls from there are internal. */
#define UCXF_MAX_RANGES 32
struct ucxf_ranges {
    int n;
    uintptr_t lo[UCXF_MAX_RANGES];
    uintptr_t hi[UCXF_MAX_RANGES];
};
static struct ucxf_ranges ucxf_no_ranges;
UCXF_HIDDEN const struct ucxf_ranges *ucxf_internal = &ucxf_no_ranges;

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
static struct ucxf_thread ucxf_no_thread;
UCXF_HIDDEN __thread struct ucxf_thread *ucxf_self __attribute__((tls_model("initial-exec"))) = &ucxf_no_thread;

static int ucxf_notify_pipe[2] = {-1, -1};
static int ucxf_notified;
static pid_t ucxf_owner_pid;
static char ucxf_socket_path[256];
static int ucxf_is_fork_child;

static void ucxf_warn_once(int *flag, const char *fmt, const char *arg)
{
    if (__atomic_exchange_n(flag, 1, __ATOMIC_RELAXED) == 0) {
        fprintf(stderr, "ucxfault: ");
        fprintf(stderr, fmt, arg);
        fputc('\n', stderr);
    }
}

static uint64_t ucxf_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* Threads                                                              */
/* ------------------------------------------------------------------ */

static void ucxf_thread_exit(void *arg)
{
    struct ucxf_thread *t = arg, **pp;
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
        for (k = 0; k < UCXF_CODE_SLOTS; k++) {
            ucxf_retired[h].codes[k] += t->h[h].codes[k];
        }
        for (k = 0; k < UCXF_SIZE_BUCKETS; k++) {
            ucxf_retired[h].size_calls[k] += t->h[h].size_calls[k];
            ucxf_retired[h].size_faults[k] += t->h[h].size_faults[k];
        }
    }
    ucxf_rules_retire(t);
    memset(t, 0, sizeof(*t));
    t->next           = ucxf_free_threads;
    ucxf_free_threads = t;
    pthread_mutex_unlock(&ucxf_threads_lock);
}

static struct ucxf_thread *ucxf_thread_new(void)
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
        t->ordinal   = ucxf_next_ordinal++;
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

/* This thread's state, created at its first counted call; NULL when out of memory. */
static inline struct ucxf_thread *ucxf_thread_self(void)
{
    struct ucxf_thread *t = ucxf_self;
    return UCXF_LIKELY(t != &ucxf_no_thread) ? t : ucxf_thread_new();
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
            /* Calls since the last fault, summed over threads. */
            out[h].calls_at_fault += __atomic_load_n(&t->h[h].calls, __ATOMIC_RELAXED) -
                                     __atomic_load_n(&t->h[h].calls_at_fault, __ATOMIC_RELAXED);
        }
    }
    pthread_mutex_unlock(&ucxf_threads_lock);
    if (threads != NULL) {
        *threads = n;
    }
}

/* Sums the per-thread rule counters by slot (see rules.c). */
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

/* ------------------------------------------------------------------ */
/* Resolution of the real functions                                     */
/* ------------------------------------------------------------------ */

struct ucxf_scan {
    struct ucxf_ranges *ranges;
    int libucp_copies;
    char libucp_path[4][256];
};

static int ucxf_scan_object(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct ucxf_scan *scan = arg;
    int i, libucp;

    (void)size;
    if (info->dlpi_name == NULL || !ucxf_is_ucx_object(info->dlpi_name, &libucp)) {
        return 0;
    }
    if (libucp) {
        if (scan->libucp_copies < 4) {
            snprintf(scan->libucp_path[scan->libucp_copies], sizeof(scan->libucp_path[0]),
                     "%s", info->dlpi_name);
        }
        scan->libucp_copies++;
    }
    for (i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        struct ucxf_ranges *r = scan->ranges;
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X) || r->n >= UCXF_MAX_RANGES) {
            continue;
        }
        r->lo[r->n] = info->dlpi_addr + ph->p_vaddr;
        r->hi[r->n] = r->lo[r->n] + ph->p_memsz;
        r->n++;
    }
    return 0;
}

static struct ucxf_scan ucxf_last_scan; /* under ucxf_scan_lock */
static int ucxf_nresolved; /* hooks resolved so far */
static pthread_mutex_t ucxf_scan_lock = PTHREAD_MUTEX_INITIALIZER;

/* Two or more libucp files are mapped: each call is routed to the copy its
 * caller is linked with (ucxf_route), and every hook takes the slow half. */
UCXF_HIDDEN int ucxf_multi_copy;

/* Callers were found outside UCX under the old internal ranges, or
 * trusted under the old configuration: every thread goes through
 * ucxf_enter again (which closes the race with its own store). */
static void ucxf_forget_fast_callers(void)
{
    struct ucxf_thread *t;
    int h;

    pthread_mutex_lock(&ucxf_threads_lock);
    for (t = ucxf_threads; t != NULL; t = t->next) {
        for (h = 0; h < UCXF_NUM_HOOKS; h++) {
            __atomic_store_n(&t->fast_caller[h], NULL, __ATOMIC_RELAXED);
        }
    }
    pthread_mutex_unlock(&ucxf_threads_lock);
}

/* Re-reads the UCX objects mapped now: after a hook is first resolved and
 * after every dlopen(). A new table is published only when something
 * changed; a superseded one is left allocated, because a hook on another
 * thread may still be reading it. */
static void ucxf_refresh_ranges(void)
{
    const struct ucxf_ranges *cur;
    struct ucxf_scan scan;
    int h;

    memset(&scan, 0, sizeof(scan));
    scan.ranges = calloc(1, sizeof(*scan.ranges));
    if (scan.ranges == NULL) {
        return;
    }
    pthread_mutex_lock(&ucxf_scan_lock);
    dl_iterate_phdr(ucxf_scan_object, &scan);
    cur = __atomic_load_n(&ucxf_internal, __ATOMIC_ACQUIRE);
    if (cur->n == scan.ranges->n && memcmp(cur->lo, scan.ranges->lo, sizeof(cur->lo)) == 0 &&
        memcmp(cur->hi, scan.ranges->hi, sizeof(cur->hi)) == 0 &&
        ucxf_last_scan.libucp_copies == scan.libucp_copies) {
        pthread_mutex_unlock(&ucxf_scan_lock);
        free(scan.ranges);
        return;
    }
    ucxf_last_scan = scan;
    if (scan.libucp_copies > 1 && !__atomic_load_n(&ucxf_multi_copy, __ATOMIC_ACQUIRE)) {
        /* Before the ranges: ucxf_enter trusts no caller once it sees both. */
        __atomic_store_n(&ucxf_multi_copy, 1, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&ucxf_progress_work, 1 << 20, __ATOMIC_SEQ_CST);
        for (h = 0; h < UCXF_NUM_HOOKS; h++) {
            __atomic_store_n(&ucxf_armed[h], 1, __ATOMIC_RELEASE);
        }
    }
    __atomic_store_n(&ucxf_internal, scan.ranges, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&ucxf_scan_lock);
    ucxf_forget_fast_callers();
}

int ucxf_libucp_loaded(void)
{
    struct ucxf_scan scan;
    struct ucxf_ranges r;

    memset(&scan, 0, sizeof(scan));
    memset(&r, 0, sizeof(r));
    scan.ranges = &r;
    dl_iterate_phdr(ucxf_scan_object, &scan);
    return scan.libucp_copies > 0;
}

static int ucxf_is_ours(void *p);

int ucxf_libucp_copies(char *buf, size_t len)
{
    struct ucxf_scan scan;
    struct ucxf_ranges r;
    size_t off = 0;
    int i;

    memset(&scan, 0, sizeof(scan));
    memset(&r, 0, sizeof(r));
    scan.ranges = &r;
    dl_iterate_phdr(ucxf_scan_object, &scan);
    if (len > 0) {
        buf[0] = '\0';
    }
    for (i = 0; i < scan.libucp_copies && i < 4 && off < len; i++) {
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? "\n" : "", scan.libucp_path[i]);
    }
    return scan.libucp_copies;
}

/*
 * The i-th mapped libucp: its file, and its version as that copy's own
 * ucp_get_version_string() reports it (a constant string; nothing else of
 * libucp runs). Returns how many copies are mapped. For status: a user sees
 * which UCX is being tested, a wheel's or NIXL's renamed copy included.
 */
int ucxf_libucp_file(int i, char *path, size_t plen, char *version, size_t vlen)
{
    struct ucxf_scan scan;
    struct ucxf_ranges r;

    memset(&scan, 0, sizeof(scan));
    memset(&r, 0, sizeof(r));
    scan.ranges = &r;
    dl_iterate_phdr(ucxf_scan_object, &scan);
    if (plen > 0) {
        path[0] = '\0';
    }
    if (vlen > 0) {
        version[0] = '\0';
    }
    if (i >= 0 && i < scan.libucp_copies && i < 4) {
        void *h = dlopen(scan.libucp_path[i], RTLD_NOLOAD | RTLD_LAZY);
        snprintf(path, plen, "%s", scan.libucp_path[i]);
        if (h != NULL) {
            const char *(*get)(void) = (const char *(*)(void))dlsym(h, "ucp_get_version_string");
            if (get != NULL && !ucxf_is_ours((void *)get)) {
                snprintf(version, vlen, "%s", get());
            }
            dlclose(h);
        }
    }
    return scan.libucp_copies;
}

static int ucxf_is_ours(void *p)
{
    Dl_info mine, theirs;

    if (dladdr((void *)ucxf_resolve, &mine) == 0 || dladdr(p, &theirs) == 0) {
        return 0;
    }
    return mine.dli_fbase == theirs.dli_fbase;
}

static void *ucxf_lookup(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    struct ucxf_scan scan;
    struct ucxf_ranges r;
    int i;

    if (p != NULL && !ucxf_is_ours(p)) {
        return p;
    }
    /* libucp opened RTLD_LOCAL by a plugin is not in the global scope that
     * RTLD_NEXT searches; its own handle finds it. Only a libucp already
     * mapped is asked, by the path it was loaded from: dlopen() of a soname
     * with RTLD_NOLOAD still searches the file system (two openat() each),
     * which every process start, with or without UCX, paid for every hook. */
    memset(&scan, 0, sizeof(scan));
    memset(&r, 0, sizeof(r));
    scan.ranges = &r;
    dl_iterate_phdr(ucxf_scan_object, &scan);
    for (i = 0; i < scan.libucp_copies && i < 4; i++) {
        void *h = dlopen(scan.libucp_path[i], RTLD_NOLOAD | RTLD_LAZY);
        if (h == NULL) {
            continue;
        }
        p = dlsym(h, name);
        dlclose(h);
        if (p != NULL && !ucxf_is_ours(p)) {
            return p;
        }
    }
    return NULL;
}

/* 1 when a libucp mapped now exports hook's function (for status: rows
 * newer than the running release are wrapped but have nothing to call). */
int ucxf_hook_exists(int hook)
{
    return __atomic_load_n(&ucxf_real[hook], __ATOMIC_ACQUIRE) != NULL || ucxf_lookup(ucxf_hook_names[hook]) != NULL;
}

static int ucxf_unresolved_warned[UCXF_NUM_HOOKS];

void *ucxf_resolve(int hook)
{
    void *p = ucxf_lookup(ucxf_hook_names[hook]);

    if (p == NULL) {
        ucxf_warn_once(&ucxf_unresolved_warned[hook],
                       "%s called but no libucp defines it; returning UCS_ERR_UNSUPPORTED",
                       ucxf_hook_names[hook]);
        return NULL;
    }
    ucxf_refresh_ranges();
    __atomic_store_n(&ucxf_real[hook], p, __ATOMIC_RELEASE);
    __atomic_add_fetch(&ucxf_nresolved, 1, __ATOMIC_RELEASE);
    /* Tell the control plane that libucp is here (it starts the socket
     * only for processes that use UCX). write() is safe anywhere. */
    if (__atomic_exchange_n(&ucxf_notified, 1, __ATOMIC_RELAXED) == 0 && ucxf_notify_pipe[1] >= 0) {
        ssize_t rc = write(ucxf_notify_pipe[1], "u", 1);
        (void)rc;
    }
    return p;
}

/* ------------------------------------------------------------------ */
/* Two copies of libucp: each call to its caller's own                  */
/* ------------------------------------------------------------------ */

/* An object that calls hooked functions, and where its calls go. */
struct ucxf_route {
    uintptr_t lo, hi;   /* its executable segments */
    char path[256];     /* as the loader names it; "" for the program */
    void *fn[UCXF_NUM_HOOKS];
    int8_t copy[UCXF_NUM_HOOKS]; /* index in ucxf_route_copies, -1 if none */
};
#define UCXF_MAX_ROUTES 64
#define UCXF_MAX_COPIES 4
static struct ucxf_route ucxf_routes[UCXF_MAX_ROUTES];
static int ucxf_nroutes;
static pthread_mutex_t ucxf_route_lock = PTHREAD_MUTEX_INITIALIZER;
static char ucxf_route_copies[UCXF_MAX_COPIES][256];
static int ucxf_ncopies;
static uint64_t ucxf_routed[UCXF_MAX_COPIES]; /* calls sent to each copy */

struct ucxf_route_find {
    uintptr_t addr;
    struct ucxf_route *r;
};

static int ucxf_route_scan(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct ucxf_route_find *f = arg;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    int i;

    (void)size;
    for (i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            uintptr_t a = info->dlpi_addr + ph->p_vaddr;
            lo          = a < lo ? a : lo;
            hi          = a + ph->p_memsz > hi ? a + ph->p_memsz : hi;
        }
    }
    if (f->addr < lo || f->addr >= hi) {
        return 0;
    }
    f->r->lo = lo;
    f->r->hi = hi;
    snprintf(f->r->path, sizeof(f->r->path), "%s", info->dlpi_name != NULL ? info->dlpi_name : "");
    return 1;
}

/* The index of the libucp copy that defines p, added if new. Under the lock. */
static int ucxf_route_copy_of(void *p)
{
    Dl_info info;
    int i;

    if (dladdr(p, &info) == 0 || info.dli_fname == NULL) {
        return -1;
    }
    for (i = 0; i < ucxf_ncopies; i++) {
        if (strcmp(ucxf_route_copies[i], info.dli_fname) == 0) {
            return i;
        }
    }
    if (ucxf_ncopies == UCXF_MAX_COPIES) {
        return -1;
    }
    snprintf(ucxf_route_copies[ucxf_ncopies], sizeof(ucxf_route_copies[0]), "%s", info.dli_fname);
    return ucxf_ncopies++;
}

/*
 * With two libucp copies mapped, the function a call must reach: the one
 * its caller's object would have bound to without the injector, that is
 * the definition found in the caller's own dependencies (dlsym on its
 * handle, which does not search the preloaded injector). libucp calling its
 * own exported functions is routed to itself the same way. The program and
 * objects whose dependencies define nothing get dflt. Resolved once per
 * object and function; the slow half calls it only when ucxf_multi_copy.
 */
void *ucxf_route(int hook, void *caller, void *dflt)
{
    uintptr_t a = (uintptr_t)caller;
    struct ucxf_route *r = NULL;
    int i, n = __atomic_load_n(&ucxf_nroutes, __ATOMIC_ACQUIRE), copy;
    void *fn;

    for (i = 0; i < n; i++) {
        if (a >= ucxf_routes[i].lo && a < ucxf_routes[i].hi) {
            r = &ucxf_routes[i];
            break;
        }
    }
    if (r == NULL || (fn = __atomic_load_n(&r->fn[hook], __ATOMIC_ACQUIRE)) == NULL) {
        pthread_mutex_lock(&ucxf_route_lock);
        if (r == NULL) {
            struct ucxf_route_find f = {a, NULL};
            if (ucxf_nroutes == UCXF_MAX_ROUTES) {
                pthread_mutex_unlock(&ucxf_route_lock);
                return dflt;
            }
            f.r = &ucxf_routes[ucxf_nroutes];
            memset(f.r, 0, sizeof(*f.r));
            if (!dl_iterate_phdr(ucxf_route_scan, &f)) {
                pthread_mutex_unlock(&ucxf_route_lock);
                return dflt;
            }
            r = f.r;
            __atomic_store_n(&ucxf_nroutes, ucxf_nroutes + 1, __ATOMIC_RELEASE);
        }
        fn = r->fn[hook];
        if (fn == NULL) {
            void *h = r->path[0] != '\0' ? dlopen(r->path, RTLD_NOLOAD | RTLD_LAZY) : NULL;
            fn = h != NULL ? dlsym(h, ucxf_hook_names[hook]) : NULL;
            if (h != NULL) {
                dlclose(h); /* RTLD_NOLOAD took a reference */
            }
            if (fn == NULL || ucxf_is_ours(fn)) {
                fn = dflt;
            }
            r->copy[hook] = (int8_t)ucxf_route_copy_of(fn);
            __atomic_store_n(&r->fn[hook], fn, __ATOMIC_RELEASE);
        }
        pthread_mutex_unlock(&ucxf_route_lock);
    }
    copy = r->copy[hook];
    if (copy >= 0) {
        __atomic_add_fetch(&ucxf_routed[copy], 1, __ATOMIC_RELAXED);
    }
    return fn;
}

/* The i-th libucp copy calls were routed to: its path in buf and the calls
 * sent to it. Returns how many copies there are. */
int ucxf_route_copy(int i, char *buf, size_t len, uint64_t *calls)
{
    int n;

    pthread_mutex_lock(&ucxf_route_lock);
    n = ucxf_ncopies;
    if (i >= 0 && i < n) {
        snprintf(buf, len, "%s", ucxf_route_copies[i]);
        *calls = __atomic_load_n(&ucxf_routed[i], __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&ucxf_route_lock);
    return n;
}

/* A dlopen() may have mapped UCX objects: another libucp copy, or the
 * first one, opened RTLD_LOCAL by a plugin. */
void ucxf_after_dlopen(void)
{
    if (__atomic_load_n(&ucxf_nresolved, __ATOMIC_ACQUIRE) != 0) {
        ucxf_refresh_ranges();
    }
}

int ucxf_notify_fd(void)
{
    return ucxf_notify_pipe[0];
}

/* ------------------------------------------------------------------ */
/* Configuration                                                        */
/* ------------------------------------------------------------------ */

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
    for (h = 0; h < UCXF_NUM_HOOKS; h++) {
        /* What ucxf_enter would do for a counted call of h, decided here
         * once: nothing but the random draw, or rules that no call of
         * some sizes can match. */
        cfg->rule_buckets[h] = ucxf_rule_buckets(cfg, h);
        cfg->fast[h] = cfg->enabled && cfg->hook_enabled[h] && ucxf_hook_faultable[h] &&
                       !cfg->recording && !cfg->kills &&
                       (cfg->hook_nrules[h] != 0 || cfg->strategy == UCXF_STRATEGY_RANDOM) &&
                       !(ucxf_hook_defers[h] && (cfg->deferred_mode || ucxf_hook_completion_only[h]));
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
static void ucxf_say(const char *what)
{
    char buf[256];
    int  n = snprintf(buf, sizeof(buf), "ucxfault[%d]: %s\n", (int)getpid(), what);

    if (n > 0 && write(2, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1) < 0) {
        /* nowhere else to say it */
    }
}

static void ucxf_wait_ready(void)
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

static void ucxf_rebase(struct ucxf_thread *t, const struct ucxf_config *cfg)
{
    int h;

    for (h = 0; h < UCXF_NUM_HOOKS; h++) {
        t->base_calls[h]  = t->h[h].calls;
        t->base_faults[h] = t->h[h].faults;
        t->until_fault[h] = UINT64_MAX;
        if (cfg->strategy == UCXF_STRATEGY_RANDOM && cfg->ncodes != 0 && cfg->hook_nrules[h] == 0) {
            t->until_fault[h] = ucxf_random_gap(cfg, ucxf_random_draw(cfg, t, h, UINT64_MAX));
        }
    }
    ucxf_rules_rebase(t, cfg);
    t->generation = cfg->generation;
}

/* The recorded outcome for this call: returns the code, and sets *deferred
 * when the recorded failure arrived on completion. */
static int ucxf_replay_next(const struct ucxf_config *cfg, int hook, int *deferred)
{
    const struct ucxf_schedule *s = cfg->replay_global ? &cfg->replay_all : &cfg->replay[hook];
    uint64_t pos;

    if (s->len == 0 || ucxf_hook_polls[hook]) {
        return 0;
    }
    pos = cfg->replay_global ? ucxf_record_replay_cursor_next() : ucxf_replay_cursor_next(hook);
    if (pos >= s->len) {
        if (!cfg->replay_cycle) {
            return 0;
        }
        pos %= s->len;
    }
    *deferred = s->deferred != NULL && s->deferred[pos];
    return s->codes[pos];
}

/*
 * Called on every failure injected without calling libucp (request NULL,
 * flags UCXF_MARK_INJECTED), and on every outcome the injector delivers on
 * completion (UCXF_MARK_COMPLETION: request is the operation's request, code
 * the status the application is given, UCXF_MARK_INJECTED when the injector
 * made it). It does nothing: `ucxfault observe` attaches a uprobe here,
 * because its probes on libucp never see those calls, nor what a trampoline
 * or a status query hands the application. The request lets the observer
 * give the outcome to the operation that returned it. Exported and never
 * inlined, so that it has a symbol.
 */
__attribute__((noinline, visibility("default"))) void
ucxf_fault_marker(int hook, int code, void *ep, uint64_t size, void *request, int flags)
{
    __asm__ volatile("" : : "r"(hook), "r"(code), "r"(ep), "r"(size), "r"(request), "r"(flags) : "memory");
}

/* Counts a failure of hook counters hc, with its code and size bucket, and
 * restarts the hook's calls since the last fault. */
static void ucxf_count_code(struct ucxf_hook_counters *hc, int code, int bucket)
{
    UCXF_INC(hc->faults);
    UCXF_INC(hc->codes[-code]);
    UCXF_INC(hc->size_faults[bucket]);
    __atomic_store_n(&hc->calls_at_fault, hc->calls, __ATOMIC_RELAXED);
}

/* Counts a failure injected now, without calling libucp, and shows it to
 * the observer. Returns code. */
static int ucxf_count_injected(struct ucxf_thread *t, int h, int code, void *ep, uint64_t size, int bucket)
{
    ucxf_count_code(&t->h[h], code, bucket);
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

/* An outcome handed to the application on completion (flags: UCXF_MARK_*):
 * shown to the observer, and logged when recording is on. */
void ucxf_delivered(int hook, int status, void *ep, uint64_t size, void *request, int flags)
{
    const struct ucxf_config *cfg = ucxf_current();

    ucxf_fault_marker(hook, status, ep, size, request, flags | UCXF_MARK_COMPLETION);
    if (cfg != NULL && cfg->recording) {
        ucxf_record_delivery(hook, status, ep, size, request, flags, ucxf_now_ns());
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
    if (!cfg->fast[h] || __atomic_load_n(&ucxf_multi_copy, __ATOMIC_SEQ_CST)) {
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
    if (UCXF_UNLIKELY(t->generation != cfg->generation)) {
        ucxf_rebase(t, cfg);
    }
    hc  = &t->h[h];
    idx = hc->calls - t->base_calls[h];
    UCXF_INC(hc->calls);
    c->size_bucket = ucxf_size_bucket(c->size);
    UCXF_INC(hc->size_calls[c->size_bucket]);
    if (cfg->recording) {
        c->t0        = ucxf_now_ns();
        c->recording = 1;
    }
    if (UCXF_UNLIKELY(cfg->kills) && c->ep != NULL && ucxf_hook_faultable[h]) {
        /* A killed endpoint fails every later operation at once, as UCX
         * does once it has seen its peer die. */
        code = ucxf_ep_kill_code(c->ep);
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
        break;
    case UCXF_STRATEGY_REPLAY: {
        int deferred = 0;
        code = ucxf_replay_next(cfg, h, &deferred);
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
}

/* After the real call: delivers failures that arrive on completion, and
 * logs the call. Returns a code to return instead of the real result, or 0. */
int ucxf_leave(struct ucxf_call *c, int status, void *request)
{
    int override = 0;

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
        if (request != NULL) {
            ucxf_defer_put(request, 0, c->ep, c->hook, c->size);
        }
        ucxf_defer_done(c, request != NULL);
    } else if (request != NULL && ucxf_defer_active()) {
        /* A request pointer used again (the application's own request
         * memory, UCP_OP_ATTR_FIELD_REQUEST) carries nothing over. */
        ucxf_defer_forget(request);
    }
    if (c->recording) {
        /* Decided at entry: the configuration read then may be freed by
         * now, if the real call took long and commands kept coming. */
        ucxf_record_append(c, status, request, ucxf_now_ns());
    }
    return override;
}

/* ------------------------------------------------------------------ */
/* Process life cycle                                                   */
/* ------------------------------------------------------------------ */

void ucxf_set_socket_path(const char *path)
{
    snprintf(ucxf_socket_path, sizeof(ucxf_socket_path), "%s", path);
}

/* The control plane is creating its socket (ucxf_listen_begin/_end), and
 * the process is exiting: each side sets its own flag, then reads the
 * other's (sequentially consistent), so at least one sees the other. */
static int ucxf_listening;
static int ucxf_exiting;

int ucxf_listen_begin(void)
{
    __atomic_store_n(&ucxf_listening, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&ucxf_exiting, __ATOMIC_SEQ_CST)) {
        __atomic_store_n(&ucxf_listening, 0, __ATOMIC_SEQ_CST);
        return -1; /* too late: no socket, nothing left behind */
    }
    return 0;
}

void ucxf_listen_end(void)
{
    __atomic_store_n(&ucxf_listening, 0, __ATOMIC_SEQ_CST);
}

static void ucxf_atexit(void)
{
    struct timespec pause = {0, 100000};
    uint64_t        deadline;

    /* A socket being created right now (libucp came late, the control
     * plane starts on a thread of its own) would appear after the unlink
     * below and outlive the process: wait for it, at most 200 ms. */
    __atomic_store_n(&ucxf_exiting, 1, __ATOMIC_SEQ_CST);
    deadline = ucxf_now_ns() + 200000000ull;
    while (__atomic_load_n(&ucxf_listening, __ATOMIC_SEQ_CST) && ucxf_now_ns() < deadline) {
        nanosleep(&pause, NULL);
    }
    /* Only the process that created the socket removes it: a forked child
     * exiting must not take its parent's socket away. */
    if (ucxf_socket_path[0] != '\0' && getpid() == ucxf_owner_pid) {
        unlink(ucxf_socket_path);
    }
}

/* What the last fork() found, for the child to act on. */
static int ucxf_fork_unread;    /* the settings were not read yet */
static int ucxf_fork_gate_late; /* an injector thread was still inside libc */
static int ucxf_fork_runtime;   /* the Go runtime had started */

/* Around fork(), in this order (see forkgate.c and docs/safety.md):
 * 1. If the Go runtime is reading the settings (it starts on a thread of
 *    its own while the host starts), wait until it has, at most 2 s: the
 *    child decides with the settings in force, and no control plane can
 *    arrive in it later.
 * 2. The injector's locks, in the order they nest (routing may open a
 *    library, whose scan clears the threads' callers), so that the child
 *    never inherits one held by a thread that is gone.
 * 3. The gate: no thread of the injector is inside a call that can hold a
 *    lock of the host's libraries (libucm's, the loader's) when the process
 *    is copied. Last, because a thread waiting at the gate may hold one of
 *    the locks of step 2 only before it enters the gate, never inside. */
static void ucxf_atfork_prepare(void)
{
    struct timespec pause = {0, 100000};
    uint64_t        deadline;

    ucxf_fork_runtime = ucxf_gate_runtime_started();
    if (ucxf_fork_runtime && !__atomic_load_n(&ucxf_ready, __ATOMIC_ACQUIRE)) {
        deadline = ucxf_now_ns() + 2000000000ull;
        while (!__atomic_load_n(&ucxf_ready, __ATOMIC_ACQUIRE) && ucxf_now_ns() < deadline) {
            nanosleep(&pause, NULL);
        }
    }
    ucxf_fork_unread = !__atomic_load_n(&ucxf_ready, __ATOMIC_ACQUIRE);
    pthread_mutex_lock(&ucxf_route_lock);
    pthread_mutex_lock(&ucxf_scan_lock);
    pthread_mutex_lock(&ucxf_threads_lock);
    ucxf_fork_gate_late = ucxf_gate_close() != 0;
}

static void ucxf_atfork_parent(void)
{
    ucxf_gate_open();
    pthread_mutex_unlock(&ucxf_threads_lock);
    pthread_mutex_unlock(&ucxf_scan_lock);
    pthread_mutex_unlock(&ucxf_route_lock);
}

static void ucxf_atfork_child(void)
{
    ucxf_gate_child();
    pthread_mutex_init(&ucxf_threads_lock, NULL);
    pthread_mutex_init(&ucxf_scan_lock, NULL);
    pthread_mutex_init(&ucxf_route_lock, NULL);
    ucxf_record_atfork_child();
    if (!ucxf_fork_runtime) {
        /* Forked by a constructor that ran before the library's Go
         * runtime started: the runtime starts in this process, which is
         * then a process of its own for the injector. */
        ucxf_owner_pid = getpid();
        return;
    }
    /* Only this thread survives the fork, and no Go thread: the C state
     * stays as it was (rules in force keep applying, counters go on), there
     * is no control plane in the child, and nothing here calls Go. */
    ucxf_is_fork_child = 1;
    if (ucxf_fork_unread) {
        /* No settings will ever come: do not wait for them. */
        ucxf_set_ready();
        ucxf_say("forked before the injector had read its settings; no faults in this process, calls pass through");
    }
    if (ucxf_fork_gate_late) {
        ucxf_say("forked while a thread of the injector had been inside libc for 2 s; UCX may hang in this process");
    }
}

static pthread_once_t ucxf_once = PTHREAD_ONCE_INIT;

static void ucxf_init_once(void)
{
    int h;

    ucxf_owner_pid = getpid();
    pthread_key_create(&ucxf_thread_key, ucxf_thread_exit);
    if (pipe2(ucxf_notify_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        ucxf_notify_pipe[0] = ucxf_notify_pipe[1] = -1;
    }
    for (h = 0; h < UCXF_NUM_HOOKS; h++) {
        void *p = ucxf_lookup(ucxf_hook_names[h]);
        if (p != NULL) {
            __atomic_store_n(&ucxf_real[h], p, __ATOMIC_RELEASE);
            ucxf_notified = 1;
        }
    }
    ucxf_refresh_ranges();
    pthread_atfork(ucxf_atfork_prepare, ucxf_atfork_parent, ucxf_atfork_child);
    atexit(ucxf_atexit);
}

void ucxf_init(void)
{
    pthread_once(&ucxf_once, ucxf_init_once);
}

/*
 * Runs after the Go runtime's own constructor (the link puts
 * _rt0_amd64_linux_lib first in .init_array), which only starts the runtime
 * on a thread of its own. Waiting here, at most 2 s, until it has read the
 * settings and opened its descriptors means that the host's main never runs
 * alongside the runtime's start-up: a single-threaded host (a shell) may
 * close a descriptor and reuse its number, and a descriptor the runtime
 * opened and closed meanwhile was the host's (docs/safety.md, "Processes
 * that never use UCX"). It costs the host the runtime's start-up (about a
 * millisecond, docs/benchmarks.md), which it paid in parallel before.
 */
__attribute__((constructor)) static void ucxf_constructor(void)
{
    struct timespec pause = {0, 20000};
    uint64_t        deadline;

    ucxf_init();
    if (!ucxf_gate_runtime_started()) {
        return; /* no Go runtime to wait for */
    }
    deadline = ucxf_now_ns() + 2000000000ull;
    while (!__atomic_load_n(&ucxf_ready, __ATOMIC_ACQUIRE) && ucxf_now_ns() < deadline) {
        nanosleep(&pause, NULL);
    }
}

int ucxf_deepbind_seen(void)
{
    return 0;
}

int ucxf_in_fork_child(void)
{
    return ucxf_is_fork_child;
}
