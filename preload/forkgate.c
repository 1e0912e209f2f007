/*
 * ucxfault injector: the injector's own threads never hold a lock of the
 * host's libraries across fork().
 *
 * Why: UCX 1.13's libucs constructor installs libucm's memory hooks in every
 * process that loads it, by patching the entry of libc's mmap, munmap,
 * mremap, madvise, brk, sbrk, shmat and shmdt ("bistro" mode, the default on
 * x86_64: UCX_MEM_MMAP_HOOK_MODE=bistro in `ucx_info -c`). From then on each
 * of these calls, glibc's own calls included (thread stacks in
 * pthread_create, a new malloc arena, the munmap of a large free()), holds
 * libucm's event rwlock for reading. A thread inside one at the moment of
 * fork() leaves the child a reader that never leaves, and the child's
 * ucp_init waits for the write lock forever (ucm_event_enter_exclusive under
 * ucm_mmap_install). The Go runtime's threads made such calls at any time:
 * its heap through cgo's x_cgo_mmap/x_cgo_munmap (libc's mmap), its threads
 * through pthread_create, and C code it calls through malloc and free.
 *
 * What this file does (the link redirects the library's own references with
 * -Wl,--wrap, see main.go; nothing is exported, the host's calls are not
 * touched):
 *  - mmap and munmap of the library (the Go heap, via x_cgo_mmap) are raw
 *    system calls: they never enter libucm, or libc.
 *  - Every thread the library starts (pthread_create, called by the Go
 *    runtime only) is marked as the injector's. The calls of the library
 *    that can reach a host lock (pthread_create itself; malloc, calloc,
 *    realloc and free; dlsym, dladdr and dl_iterate_phdr, which take the
 *    loader's locks) pass a gate when made by an injector thread.
 *  - fork() closes the gate (ucxf_gate_close, from the library's
 *    pthread_atfork prepare handler) and waits until no injector thread is
 *    inside one of those calls; threads that arrive meanwhile wait at the
 *    gate, holding nothing of the host's. The parent and the child reopen
 *    it. The wait is bounded (UCXF_GATE_WAIT_NS): a thread inside can only
 *    be held up by a host thread (libucm's writer, a malloc arena), never by
 *    the forking one, but fork() must not hang even if that were wrong.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ucxfault.h"

#define UCXF_GATE_WAIT_NS 2000000000ull

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void  __real_free(void *p);
int   __real_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg);
void *__real_dlsym(void *handle, const char *name);
int   __real_dladdr(const void *addr, Dl_info *info);
int   __real_dl_iterate_phdr(int (*cb)(struct dl_phdr_info *, size_t, void *), void *data);

/* The wrappers: referenced by the link (-Wl,--wrap), never exported. */
UCXF_HIDDEN void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
UCXF_HIDDEN int   __wrap_munmap(void *addr, size_t len);
UCXF_HIDDEN void *__wrap_malloc(size_t n);
UCXF_HIDDEN void *__wrap_calloc(size_t n, size_t size);
UCXF_HIDDEN void *__wrap_realloc(void *p, size_t n);
UCXF_HIDDEN void  __wrap_free(void *p);
UCXF_HIDDEN int   __wrap_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg);
UCXF_HIDDEN void *__wrap_dlsym(void *handle, const char *name);
UCXF_HIDDEN int   __wrap_dladdr(const void *addr, Dl_info *info);
UCXF_HIDDEN int   __wrap_dl_iterate_phdr(int (*cb)(struct dl_phdr_info *, size_t, void *), void *data);

/* Closed while a fork() is under way. */
static int ucxf_gate_closed;
/* Injector threads inside a gated call. */
static int ucxf_gate_inside;
/* Set by the first pthread_create: the Go runtime has started. */
static int ucxf_runtime_started;

/* This thread was started by the library (a Go runtime thread). */
static __thread int ucxf_gate_mine __attribute__((tls_model("initial-exec")));
/* Gated calls this thread is inside (they nest: a wrapper may call another). */
static __thread int ucxf_gate_depth __attribute__((tls_model("initial-exec")));

static void ucxf_gate_pause(void)
{
    /* A raw nanosleep: nothing of libc's but the syscall. */
    struct timespec ts = {0, 20000};
    syscall(SYS_nanosleep, &ts, NULL);
}

static inline void ucxf_gate_enter(int always)
{
    if (!always && !ucxf_gate_mine) {
        return; /* a host thread: its calls are its own business */
    }
    if (ucxf_gate_depth++ > 0) {
        return;
    }
    for (;;) {
        __atomic_add_fetch(&ucxf_gate_inside, 1, __ATOMIC_SEQ_CST);
        if (!__atomic_load_n(&ucxf_gate_closed, __ATOMIC_SEQ_CST)) {
            return;
        }
        /* A fork is under way: step back out and wait, holding nothing. */
        __atomic_sub_fetch(&ucxf_gate_inside, 1, __ATOMIC_SEQ_CST);
        while (__atomic_load_n(&ucxf_gate_closed, __ATOMIC_ACQUIRE)) {
            ucxf_gate_pause();
        }
    }
}

static inline void ucxf_gate_leave(int always)
{
    if (!always && !ucxf_gate_mine) {
        return;
    }
    if (--ucxf_gate_depth > 0) {
        return;
    }
    __atomic_sub_fetch(&ucxf_gate_inside, 1, __ATOMIC_RELEASE);
}

int ucxf_gate_close(void)
{
    /* The forking thread may itself be inside (a signal handler that forks
     * on an injector thread): it is not waited for. */
    int      self     = ucxf_gate_depth > 0 ? 1 : 0;
    uint64_t deadline = 0;

    __atomic_store_n(&ucxf_gate_closed, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&ucxf_gate_inside, __ATOMIC_SEQ_CST) > self) {
        uint64_t now = ucxf_now_ns();
        if (deadline == 0) {
            deadline = now + UCXF_GATE_WAIT_NS;
        } else if (now > deadline) {
            return -1;
        }
        ucxf_gate_pause();
    }
    return 0;
}

void ucxf_gate_open(void)
{
    __atomic_store_n(&ucxf_gate_closed, 0, __ATOMIC_RELEASE);
}

void ucxf_gate_child(void)
{
    /* Only the forking thread is left, and it is inside nothing but what
     * it was inside itself. */
    __atomic_store_n(&ucxf_gate_inside, ucxf_gate_depth > 0 ? 1 : 0, __ATOMIC_RELAXED);
    __atomic_store_n(&ucxf_gate_closed, 0, __ATOMIC_RELEASE);
}

int ucxf_gate_runtime_started(void)
{
    return __atomic_load_n(&ucxf_runtime_started, __ATOMIC_ACQUIRE);
}

/* ------------------------------------------------------------------ */
/* Memory the Go runtime maps: straight to the kernel                   */
/* ------------------------------------------------------------------ */

void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    /* syscall() sets errno and returns -1 (MAP_FAILED) on failure. */
    return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

int __wrap_munmap(void *addr, size_t len)
{
    return (int)syscall(SYS_munmap, addr, len);
}

/* ------------------------------------------------------------------ */
/* Threads of the library                                               */
/* ------------------------------------------------------------------ */

struct ucxf_start {
    void *(*fn)(void *);
    void *arg;
};

static void *ucxf_thread_start(void *p)
{
    struct ucxf_start s = *(struct ucxf_start *)p;

    ucxf_gate_mine = 1;
    __wrap_free(p); /* gated: the first free may set up this thread's arena */
    return s.fn(s.arg);
}

int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    struct ucxf_start *s;
    int                err;

    __atomic_store_n(&ucxf_runtime_started, 1, __ATOMIC_RELEASE);
    /* Gated whoever calls: the first Go thread is created by the library's
     * constructor on a host thread, and glibc maps the stack here. */
    ucxf_gate_enter(1);
    s = __real_malloc(sizeof(*s));
    if (s == NULL) {
        ucxf_gate_leave(1);
        return EAGAIN;
    }
    s->fn  = fn;
    s->arg = arg;
    err    = __real_pthread_create(t, attr, ucxf_thread_start, s);
    if (err != 0) {
        __real_free(s);
    }
    ucxf_gate_leave(1);
    return err;
}

/* ------------------------------------------------------------------ */
/* Other calls that can reach a host lock                               */
/* ------------------------------------------------------------------ */

void *__wrap_malloc(size_t n)
{
    void *p;

    ucxf_gate_enter(0);
    p = __real_malloc(n);
    ucxf_gate_leave(0);
    return p;
}

void *__wrap_calloc(size_t n, size_t size)
{
    void *p;

    ucxf_gate_enter(0);
    p = __real_calloc(n, size);
    ucxf_gate_leave(0);
    return p;
}

void *__wrap_realloc(void *old, size_t n)
{
    void *p;

    ucxf_gate_enter(0);
    p = __real_realloc(old, n);
    ucxf_gate_leave(0);
    return p;
}

void __wrap_free(void *p)
{
    if (p == NULL) {
        return;
    }
    ucxf_gate_enter(0);
    __real_free(p);
    ucxf_gate_leave(0);
}

void *__wrap_dlsym(void *handle, const char *name)
{
    void *p;

    ucxf_gate_enter(0);
    p = __real_dlsym(handle, name);
    ucxf_gate_leave(0);
    return p;
}

int __wrap_dladdr(const void *addr, Dl_info *info)
{
    int r;

    ucxf_gate_enter(0);
    r = __real_dladdr(addr, info);
    ucxf_gate_leave(0);
    return r;
}

int __wrap_dl_iterate_phdr(int (*cb)(struct dl_phdr_info *, size_t, void *), void *data)
{
    int r;

    ucxf_gate_enter(0);
    r = __real_dl_iterate_phdr(cb, data);
    ucxf_gate_leave(0);
    return r;
}
