/*
 * forkinit: a program that forks at start-up and creates its UCP context in
 * the child, as Python multiprocessing workers and launchers do.
 *
 *   forkinit
 *
 * The parent forks first thing in main (while an injector loaded with the
 * program may still be starting). The child does ucp_config_read, ucp_init,
 * ucp_worker_create and one ucp_mem_map (the first hooked call), prints
 *
 *   CHILD pid=<pid> init-us=<n> first-hook-us=<n> first-hook-status=<n>
 *
 * (the time its UCP set-up took, the time the first hooked call took and
 * what it returned: an injected failure proves the injector's settings
 * apply in the child)
 * and calls _exit(0). The parent waits at most 10 s and prints
 *
 *   CHILD-EXIT pid=<pid> status=<exit status or -signal> hang=<0|1> fork-us=<n>
 *
 * (fork-us: how long the fork() call took in the parent).
 *
 * A hung child is left stopped for a debugger when FORKINIT_KEEP is set
 * (its pid is printed), else killed. Exit status: 0, or 1 on a hang.
 */
#define _GNU_SOURCE
#include <ucp/api/ucp.h>

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000;
}

static void child(void)
{
    ucp_config_t       *config;
    ucp_params_t        p;
    ucp_worker_params_t wp;
    ucp_context_h       ctx;
    ucp_worker_h        worker;
    ucp_mem_map_params_t mp;
    ucp_mem_h           memh;
    static char         buf[4096];
    uint64_t            t0, t1, t2;
    ucs_status_t        st;

    t0 = now_us();
    if (ucp_config_read(NULL, NULL, &config) != UCS_OK) {
        _exit(3);
    }
    memset(&p, 0, sizeof(p));
    p.field_mask = UCP_PARAM_FIELD_FEATURES;
    p.features   = UCP_FEATURE_RMA;
    if (ucp_init(&p, config, &ctx) != UCS_OK) {
        _exit(3);
    }
    ucp_config_release(config);
    memset(&wp, 0, sizeof(wp));
    wp.field_mask  = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    if (ucp_worker_create(ctx, &wp, &worker) != UCS_OK) {
        _exit(3);
    }
    memset(&mp, 0, sizeof(mp));
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    mp.address    = buf;
    mp.length     = sizeof(buf);
    t1 = now_us();
    st = ucp_mem_map(ctx, &mp, &memh);
    t2 = now_us();
    printf("CHILD pid=%d init-us=%llu first-hook-us=%llu first-hook-status=%d\n", (int)getpid(),
           (unsigned long long)(t1 - t0), (unsigned long long)(t2 - t1), (int)st);
    fflush(stdout);
    _exit(0);
}

int main(void)
{
    pid_t    pid, r;
    int      wstatus = 0, hang = 0, code;
    uint64_t deadline, t0, fork_us;

    t0      = now_us();
    pid     = fork();
    fork_us = now_us() - t0;
    if (pid < 0) {
        perror("fork");
        return 3;
    }
    if (pid == 0) {
        child();
    }
    deadline = now_us() + 10000000ull;
    for (;;) {
        r = waitpid(pid, &wstatus, WNOHANG);
        if (r == pid) {
            break;
        }
        if (r < 0 || now_us() > deadline) {
            hang = 1;
            if (getenv("FORKINIT_KEEP") != NULL) {
                kill(pid, SIGSTOP);
                printf("CHILD-EXIT pid=%d status=0 hang=1 fork-us=%llu kept\n", (int)pid,
                       (unsigned long long)fork_us);
                return 1;
            }
            kill(pid, SIGKILL);
            waitpid(pid, &wstatus, 0);
            break;
        }
        usleep(1000);
    }
    code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -WTERMSIG(wstatus);
    printf("CHILD-EXIT pid=%d status=%d hang=%d fork-us=%llu\n", (int)pid, code, hang,
           (unsigned long long)fork_us);
    return hang;
}
