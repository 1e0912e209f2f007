/*
 * ucxfault injector: the process life cycle. Start (constructor, ucxf_init),
 * fork (the injector's locks and the fork gate, forkgate.c), exit (the
 * control socket), and what the control plane asks about them. The
 * outermost file: it calls the others, none calls it.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ucxfault.h"
#include "record.h"

static pid_t ucxf_owner_pid;
static char ucxf_socket_path[256];
static int ucxf_is_fork_child;

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

/* One line at exit, on stderr (UCX_FAULT_EXIT_SUMMARY=1, which inject sets)
 * and appended to $UCX_FAULT_SUMMARY_FILE:
 * the counts and the settings a person needs to repeat the run (the seed
 * above all), so that a CI job that failed keeps them. Only a process that
 * loaded libucp says anything: the shells and tools that inherit the
 * preload stay silent. The counts are since the process started (a reset
 * does not clear them). write(2) only: this may be a fork() child. */
static void ucxf_exit_summary(void)
{
    static struct ucxf_hook_counters sums[UCXF_NUM_HOOKS];
    const struct ucxf_config        *cfg;
    const char                      *say, *path;
    uint64_t                         calls = 0, faults = 0;
    char                             line[4096];
    int                              h, n, fd;

    if (!__atomic_load_n(&ucxf_ready, __ATOMIC_ACQUIRE)) {
        return;
    }
    cfg = ucxf_current();
    ucxf_stats_sum(sums, NULL);
    for (h = 0; h < UCXF_NUM_HOOKS; h++) {
        calls += sums[h].calls;
        faults += sums[h].faults;
    }
    /* Silent in a process that never used UCX (a shell under an inherited
     * preload); a plugin that used it and was dlclosed before exit still
     * gets its line, with the seed that repeats the run. */
    if (!ucxf_libucp_loaded() && calls == 0) {
        return;
    }
    n = snprintf(line, sizeof(line), "ucxfault[%d]: exit: %llu %s in %llu %s; %s\n", (int)getpid(),
                 (unsigned long long)faults, faults == 1 ? "fault" : "faults", (unsigned long long)calls,
                 calls == 1 ? "call" : "calls", cfg->summary != NULL ? cfg->summary : "no settings read");
    if (n <= 0) {
        return;
    }
    if ((size_t)n >= sizeof(line)) {
        n = sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    /* On stderr only when asked (ucxfault inject asks): a host preloaded
     * by hand keeps its stderr to itself. */
    say = getenv("UCX_FAULT_EXIT_SUMMARY");
    if (say != NULL && (strcmp(say, "1") == 0 || strcmp(say, "true") == 0 || strcmp(say, "yes") == 0)) {
        if (write(2, line, (size_t)n) < 0) {
            /* nowhere else to say it */
        }
    }
    path = getenv("UCX_FAULT_SUMMARY_FILE");
    if (path != NULL && path[0] != '\0') {
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            ucxf_say("opening UCX_FAULT_SUMMARY_FILE for the exit summary failed");
        } else {
            if (write(fd, line, (size_t)n) < 0) {
                ucxf_say("writing the exit summary to UCX_FAULT_SUMMARY_FILE failed");
            }
            close(fd);
        }
    }
}

static void ucxf_atexit(void)
{
    struct timespec pause = {0, 100000};
    uint64_t        deadline;

    ucxf_exit_summary();

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
    ucxf_objects_fork_prepare();
    ucxf_threads_fork_prepare();
    ucxf_record_fork_prepare();
    ucxf_fork_gate_late = ucxf_gate_close() != 0;
}

static void ucxf_atfork_parent(void)
{
    ucxf_gate_open();
    ucxf_record_fork_parent();
    ucxf_threads_fork_parent();
    ucxf_objects_fork_parent();
}

static void ucxf_atfork_child(void)
{
    ucxf_gate_child();
    ucxf_threads_fork_child();
    ucxf_record_fork_child();
    ucxf_objects_fork_child();
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
    ucxf_owner_pid = getpid();
    ucxf_threads_init();
    ucxf_objects_init();
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


int ucxf_in_fork_child(void)
{
    return ucxf_is_fork_child;
}
