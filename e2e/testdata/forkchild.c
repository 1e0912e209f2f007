/*
 * forkchild: fork() without exec (and with it) in a UCX process.
 *
 *   forkchild PARENT_PUTS CHILD_PUTS [PROGRAM ARGS...]
 *
 * The parent creates its UCP context, prints READY, does PARENT_PUTS puts
 * and forks. Without PROGRAM the child creates a UCP context of its own (a
 * context must not cross fork()), does CHILD_PUTS puts, tears down and
 * calls exit() (so that atexit handlers run); with PROGRAM the child execs
 * it. Meanwhile the parent does PARENT_PUTS more puts, reaps the child
 * (waiting at most 30 s, then SIGKILL) and prints
 *
 *   CHILD-EXIT pid=<pid> status=<exit status or -signal> timeout=<0|1>
 *
 * then lingers until SIGINT or SIGTERM and exits 0. Parent puts are
 * thread=0, child puts thread=1.
 */
#include "fixture.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void puts_n(struct fx *f, int thread, unsigned long *seq, unsigned long n)
{
    unsigned long i;
    const char   *how;
    ucs_status_t  st;

    for (i = 0; i < n; i++) {
        st = fx_put(f, 0, 8, &how);
        fx_print_op(thread, (*seq)++, "put", 8, st, how);
    }
}

int main(int argc, char **argv)
{
    struct fx        f;
    struct sigaction sa;
    unsigned long    pputs, cputs, seq = 0;
    pid_t            child;
    int              wstatus = 0, timeout = 0, code;
    uint64_t         deadline;

    if (argc < 3) {
        fprintf(stderr, "usage: %s PARENT_PUTS CHILD_PUTS [PROGRAM ARGS...]\n", argv[0]);
        return 2;
    }
    pputs = strtoul(argv[1], NULL, 10);
    cputs = strtoul(argv[2], NULL, 10);
    setvbuf(stdout, NULL, _IOLBF, 0);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    fx_setup(&f, UCS_THREAD_MODE_SINGLE, 0);
    printf("READY pid=%d\n", (int)getpid());
    puts_n(&f, 0, &seq, pputs);
    fflush(stdout);

    child = fork();
    if (child < 0) {
        perror("fork");
        return 3;
    }
    if (child == 0) {
        struct fx     cf;
        unsigned long cseq = 0;

        printf("CHILD pid=%d\n", (int)getpid());
        if (argc > 3) {
            execv(argv[3], &argv[3]);
            perror("execv");
            _exit(127);
        }
        /* The parent's context belongs to the parent: a new one. */
        fx_setup(&cf, UCS_THREAD_MODE_SINGLE, 0);
        puts_n(&cf, 1, &cseq, cputs);
        fx_teardown(&cf);
        printf("CHILD-DONE puts=%lu\n", cseq);
        exit(0);
    }

    puts_n(&f, 0, &seq, pputs);
    deadline = fx_now_us() + 30000000ull;
    for (;;) {
        pid_t r = waitpid(child, &wstatus, WNOHANG);
        if (r == child) {
            break;
        }
        if (r < 0 || fx_now_us() > deadline) {
            timeout = 1;
            kill(child, SIGKILL);
            waitpid(child, &wstatus, 0);
            break;
        }
        fx_sleep_ms(5);
    }
    code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -WTERMSIG(wstatus);
    printf("CHILD-EXIT pid=%d status=%d timeout=%d\n", (int)child, code, timeout);
    while (!stop) {
        fx_sleep_ms(10);
    }
    fx_teardown(&f);
    printf("DONE\n");
    return 0;
}
