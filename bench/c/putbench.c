/*
 * putbench.c - time 8-byte ucp_put_nbx calls over a self endpoint.
 *
 * Usage: putbench [-n N] [-t THREADS] [-w WARMUP] [-g GOFILE]
 * Each thread has its own worker, self endpoint and mapped buffer, and times
 * N puts in a tight loop with clock_gettime(CLOCK_MONOTONIC). Prints
 * "READY <pid>" after set-up; with -g it then waits until GOFILE exists (so
 * a probe can attach first). Prints "ns_per_call=<mean over threads>
 * errors=<count>" and "ns_min_chunk=<mean over threads>" at the end (the
 * fastest 50,000-put chunk of each thread), and one "thread=<i> ..." line
 * per thread.
 */
#define _GNU_SOURCE
#include <ucp/api/ucp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static ucp_context_h ctx;
static unsigned long n_calls = 1000000, n_warm = 10000;
static int nthreads = 1;
static const char *gofile;
/* -o: the operation timed: put (ucp_put_nbx), get (ucp_get_nbx), or
 * progress (one ucp_worker_progress call with nothing to do). */
static enum { OP_PUT, OP_GET, OP_PROGRESS } op = OP_PUT;
static pthread_barrier_t barrier;
#define CHUNK 50000UL

struct th {
    pthread_t tid;
    ucp_worker_h worker;
    ucp_ep_h ep;
    ucp_rkey_h rkey;
    ucp_mem_h memh;
    uint64_t raddr;
    char lbuf[64];
    double ns;
    double ns_min_chunk;
    unsigned long errors;
};

#define CHECK(what, st) do { ucs_status_t s_ = (st); if (s_ != UCS_OK) { \
    fprintf(stderr, "putbench: %s: %s\n", what, ucs_status_string(s_)); exit(3); } } while (0)

static void setup(struct th *t)
{
    ucp_worker_params_t wp;
    ucp_mem_map_params_t mp;
    ucp_ep_params_t ep;
    ucp_address_t *addr;
    size_t addr_len, rkey_len;
    void *rkey_buf, *rbuf;

    memset(&wp, 0, sizeof(wp));
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    CHECK("ucp_worker_create", ucp_worker_create(ctx, &wp, &t->worker));
    if (posix_memalign(&rbuf, 4096, 4096) != 0) exit(3);
    memset(&mp, 0, sizeof(mp));
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    mp.address = rbuf;
    mp.length = 4096;
    CHECK("ucp_mem_map", ucp_mem_map(ctx, &mp, &t->memh));
    t->raddr = (uint64_t)(uintptr_t)rbuf;
    CHECK("ucp_worker_get_address", ucp_worker_get_address(t->worker, &addr, &addr_len));
    memset(&ep, 0, sizeof(ep));
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
    ep.address = addr;
    CHECK("ucp_ep_create", ucp_ep_create(t->worker, &ep, &t->ep));
    CHECK("ucp_rkey_pack", ucp_rkey_pack(ctx, t->memh, &rkey_buf, &rkey_len));
    CHECK("ucp_ep_rkey_unpack", ucp_ep_rkey_unpack(t->ep, rkey_buf, &t->rkey));
    ucp_rkey_buffer_release(rkey_buf);
    ucp_worker_release_address(t->worker, addr);
}

static inline void put_loop(struct th *t, unsigned long n)
{
    ucp_request_param_t prm;
    memset(&prm, 0, sizeof(prm));
    for (unsigned long i = 0; i < n; i++) {
        ucs_status_ptr_t r;
        if (op == OP_PROGRESS) {
            ucp_worker_progress(t->worker);
            continue;
        }
        r = op == OP_GET ? ucp_get_nbx(t->ep, t->lbuf, 8, t->raddr, t->rkey, &prm)
                         : ucp_put_nbx(t->ep, t->lbuf, 8, t->raddr, t->rkey, &prm);
        if (UCS_PTR_IS_ERR(r)) {
            t->errors++;
        } else if (r != NULL) {
            while (ucp_request_check_status(r) == UCS_INPROGRESS) ucp_worker_progress(t->worker);
            ucp_request_free(r);
        }
    }
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void *run(void *arg)
{
    struct th *t = arg;
    put_loop(t, n_warm);
    t->errors = 0;
    pthread_barrier_wait(&barrier);
    double t0 = now_ns();
    /* Timed in chunks as well: the fastest chunk is the cost when nothing
     * else on the machine interferes (a VM's speed can change for a while). */
    t->ns_min_chunk = 1e30;
    for (unsigned long done = 0; done < n_calls;) {
        unsigned long k = n_calls - done < CHUNK ? n_calls - done : CHUNK;
        double c0 = now_ns();
        put_loop(t, k);
        double per = (now_ns() - c0) / (double)k;
        if (per < t->ns_min_chunk) {
            t->ns_min_chunk = per;
        }
        done += k;
    }
    t->ns = (now_ns() - t0) / (double)n_calls;
    return NULL;
}

int main(int argc, char **argv)
{
    int c;
    ucp_params_t p;
    while ((c = getopt(argc, argv, "n:t:w:g:o:")) != -1) {
        switch (c) {
        case 'n': n_calls = strtoul(optarg, NULL, 0); break;
        case 't': nthreads = atoi(optarg); break;
        case 'w': n_warm = strtoul(optarg, NULL, 0); break;
        case 'g': gofile = optarg; break;
        case 'o':
            if (strcmp(optarg, "put") == 0) op = OP_PUT;
            else if (strcmp(optarg, "get") == 0) op = OP_GET;
            else if (strcmp(optarg, "progress") == 0) op = OP_PROGRESS;
            else { fprintf(stderr, "putbench: -o put|get|progress\n"); return 2; }
            break;
        default: fprintf(stderr, "usage: putbench [-n N] [-t T] [-w W] [-g GOFILE] [-o put|get|progress]\n"); return 2;
        }
    }
    if (n_calls == 0 || nthreads < 1 || nthreads > 64) return 2;
    memset(&p, 0, sizeof(p));
    p.field_mask = UCP_PARAM_FIELD_FEATURES;
    p.features = UCP_FEATURE_RMA;
    CHECK("ucp_init", ucp_init(&p, NULL, &ctx));
    struct th *ts = calloc(nthreads, sizeof(*ts));
    for (int i = 0; i < nthreads; i++) setup(&ts[i]);
    printf("READY %d\n", (int)getpid());
    fflush(stdout);
    if (gofile != NULL) {
        while (access(gofile, F_OK) != 0) usleep(2000);
    }
    pthread_barrier_init(&barrier, NULL, nthreads);
    for (int i = 0; i < nthreads; i++) pthread_create(&ts[i].tid, NULL, run, &ts[i]);
    double sum = 0, sum_min = 0;
    unsigned long errs = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(ts[i].tid, NULL);
        printf("thread=%d ns_per_call=%.3f ns_min_chunk=%.3f\n", i, ts[i].ns, ts[i].ns_min_chunk);
        sum += ts[i].ns;
        sum_min += ts[i].ns_min_chunk;
        errs += ts[i].errors;
    }
    printf("ns_per_call=%.3f errors=%lu\n", sum / nthreads, errs);
    printf("ns_min_chunk=%.3f\n", sum_min / nthreads);
    fflush(stdout);
    /* Teardown is skipped on purpose: the measurement is done. */
    _exit(0);
}
