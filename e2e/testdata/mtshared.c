/*
 * mtshared: several threads putting through ONE worker and ONE endpoint
 * created with UCS_THREAD_MODE_MULTI (the example program gives each thread
 * a worker of its own).
 *
 *   mtshared THREADS PUTS
 *
 * Prints "READY pid=<pid> mode=<granted thread mode>", then each thread
 * does PUTS puts of 8 bytes at its own offset (all threads start together)
 * and prints an OP line per put; "DONE" when all threads are done. Then it
 * lingers until SIGINT or SIGTERM, so that a test can read the injector's
 * counters, and exits 0.
 */
#include "fixture.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

static struct fx          f;
static unsigned long      nputs;
static pthread_barrier_t  go;
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void *run(void *arg)
{
    int           id = (int)(intptr_t)arg;
    unsigned long i;
    const char   *how;
    ucs_status_t  st;

    pthread_barrier_wait(&go);
    for (i = 0; i < nputs; i++) {
        st = fx_put(&f, (size_t)id * 8, 8, &how);
        fx_print_op(id, i, "put", 8, st, how);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    ucp_worker_attr_t attr;
    struct sigaction  sa;
    pthread_t        *tids;
    int               n, i;

    if (argc != 3) {
        fprintf(stderr, "usage: %s THREADS PUTS\n", argv[0]);
        return 2;
    }
    n     = atoi(argv[1]);
    nputs = strtoul(argv[2], NULL, 10);
    if (n < 1 || n > FX_BUF / 8) {
        fprintf(stderr, "THREADS must be 1 to %d\n", FX_BUF / 8);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    fx_setup(&f, UCS_THREAD_MODE_MULTI, 0);
    memset(&attr, 0, sizeof(attr));
    attr.field_mask = UCP_WORKER_ATTR_FIELD_THREAD_MODE;
    FX_CHECK("ucp_worker_query", ucp_worker_query(f.worker, &attr));
    printf("READY pid=%d mode=%s\n", (int)getpid(),
           attr.thread_mode == UCS_THREAD_MODE_MULTI ? "multi" : "not-multi");

    tids = calloc((size_t)n, sizeof(*tids));
    pthread_barrier_init(&go, NULL, (unsigned)n);
    for (i = 0; i < n; i++) {
        if (pthread_create(&tids[i], NULL, run, (void *)(intptr_t)i) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 3;
        }
    }
    for (i = 0; i < n; i++) {
        pthread_join(tids[i], NULL);
    }
    printf("DONE\n");
    while (!stop) {
        fx_sleep_ms(10);
    }
    fx_teardown(&f);
    free(tids);
    return 0;
}
