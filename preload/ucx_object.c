/*
 * ucxfault injector: the UCX objects mapped in the process. Resolution of
 * the real functions, the executable ranges of UCX's own libraries (a call
 * from there is libucp calling itself: never faulted, never counted), the
 * list of libucp copies, and the routing of each call to its caller's copy
 * when there are two. Which file is a UCX object is ucx_object.h's
 * predicate.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ucxfault.h"
#include "dlopen.h"
#include "ucx_object.h"

void *ucxf_real[UCXF_NUM_HOOKS];


static struct ucxf_ranges ucxf_no_ranges;
UCXF_HIDDEN const struct ucxf_ranges *ucxf_internal = &ucxf_no_ranges;

static int ucxf_notify_pipe[2] = {-1, -1};
static int ucxf_notified;

static void ucxf_warn_once(int *flag, const char *fmt, const char *arg)
{
    if (__atomic_exchange_n(flag, 1, __ATOMIC_RELAXED) == 0) {
        fprintf(stderr, "ucxfault: ");
        fprintf(stderr, fmt, arg);
        fputc('\n', stderr);
    }
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

/* Re-reads the UCX objects mapped now: after a hook is first resolved and
 * after every ucxf_dlopen_real(). A new table is published only when something
 * changed; a superseded one is left allocated, because a hook on another
 * thread may still be reading it. */
static void ucxf_refresh_ranges(void)
{
    const struct ucxf_ranges *cur;
    struct ucxf_scan scan;

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
    if (scan.libucp_copies > 1) {
        ucxf_config_multi_copy(); /* before the ranges */
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
        void *h = ucxf_dlopen_real(scan.libucp_path[i], RTLD_NOLOAD | RTLD_LAZY);
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

int ucxf_is_ours(void *p)
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
     * mapped is asked, by the path it was loaded from: ucxf_dlopen_real() of a soname
     * with RTLD_NOLOAD still searches the file system (two openat() each),
     * which every process start, with or without UCX, paid for every hook. */
    memset(&scan, 0, sizeof(scan));
    memset(&r, 0, sizeof(r));
    scan.ranges = &r;
    dl_iterate_phdr(ucxf_scan_object, &scan);
    for (i = 0; i < scan.libucp_copies && i < 4; i++) {
        void *h = ucxf_dlopen_real(scan.libucp_path[i], RTLD_NOLOAD | RTLD_LAZY);
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
            void *h = r->path[0] != '\0' ? ucxf_dlopen_real(r->path, RTLD_NOLOAD | RTLD_LAZY) : NULL;
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

/* At start (init.c): the notification pipe, and the hooks libucp already
 * mapped defines. */
void ucxf_objects_init(void)
{
    int h;

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
}

/* Around fork() (init.c), in the order they nest: routing may open a
 * library, whose scan clears the threads' callers. */
void ucxf_objects_fork_prepare(void)
{
    pthread_mutex_lock(&ucxf_route_lock);
    pthread_mutex_lock(&ucxf_scan_lock);
}

void ucxf_objects_fork_parent(void)
{
    pthread_mutex_unlock(&ucxf_scan_lock);
    pthread_mutex_unlock(&ucxf_route_lock);
}

void ucxf_objects_fork_child(void)
{
    pthread_mutex_init(&ucxf_scan_lock, NULL);
    pthread_mutex_init(&ucxf_route_lock, NULL);
}
