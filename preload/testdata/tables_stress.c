/*
 * Stress test of the injector's shared tables (defer.c, endpoint.c,
 * record.c): the failures
 * delivered on completion, the endpoint ordinals and the call log, driven by
 * many threads at once. Every entry is checked: a request's failure is its
 * own code (or, for a request only followed, 0 or the code its endpoint was
 * killed with), every thread sees one ordinal per endpoint and the ordinals
 * are 0..N-1, and every record the log returns is whole, once, with the
 * pool holding at least its capacity of the newest records, while threads
 * log into their own segments, exit, and new threads take their segments.
 *
 * Built and run by `make test-c`, with ThreadSanitizer (clang
 * -fsanitize=thread): a data race on these tables fails the run even where
 * the checks happen to pass. It links those three files alone; the symbols
 * they take from the rest of the injector are defined here.
 *
 * Usage: tables_stress [rounds]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ucxfault.h"
#include "record_fast.h"
#include "endpoint.h"
#include "defer.h"

#define THREADS   8
#define PER_ROUND 32   /* requests each thread holds at once */
#define EPS       1024 /* endpoints of the ordinal test */
#define KILL_EPS  4    /* endpoints the killer kills */
#define RING      (1u << 12)
#define PASSES    8    /* of each thread over the endpoints, one record each */
#define CHURN       64   /* short-lived threads, THREADS at a time */
#define CHURN_RECORDS 300  /* records each appends */

UCXF_HIDDEN int ucxf_progress_work;
UCXF_HIDDEN __thread struct ucxf_thread *ucxf_self __attribute__((tls_model("initial-exec")));

/* No configuration: deliveries are shown to no observer and not logged. */
const struct ucxf_config *ucxf_current(void)
{
    return NULL;
}

/* Kill-ep counts the requests it fails (thread.c); nothing to count here. */
void ucxf_count_completion_fault(int hook, int code, uint64_t size)
{
    (void)hook;
    (void)code;
    (void)size;
}

/* Endpoint counters (thread.c): none here, every endpoint counts 0. */
void ucxf_ep_counts_slot(int slot, struct ucxf_ep_counts *out)
{
    (void)slot;
    memset(out, 0, sizeof(*out));
}

void ucxf_ep_counts_sum(struct ucxf_ep_counts *out)
{
    memset(out, 0, sizeof(*out) * (UCXF_EP_SLOTS + 1));
}

/* Every followed request is still in flight when the killer looks. */
static ucs_status_t stub_check_status(void *request)
{
    (void)request;
    return UCS_INPROGRESS;
}

/* epfail.c (linked by endpoint.c): no libucp here, so kills are emulated. */
UCXF_HIDDEN void *ucxf_real[UCXF_NUM_HOOKS];
int ucxf_libucp_copies(char *buf, size_t len)
{
    (void)buf;
    (void)len;
    return 0;
}

void *ucxf_resolve(int hook)
{
    return hook == UCXF_HOOK_REQUEST_CHECK_STATUS ? (void *)stub_check_status : NULL;
}

static int rounds = 300;
static int failures;
static int stop_killer;
static char kill_eps[KILL_EPS]; /* their addresses are the endpoints */
static char eps[EPS];
static int32_t seen[THREADS][EPS];
static struct ucxf_thread threads[THREADS];
static uint64_t records_checked;

#define FAIL(...)                                                       \
    do {                                                                \
        if (__atomic_fetch_add(&failures, 1, __ATOMIC_RELAXED) < 20) {  \
            fprintf(stderr, "tables_stress: " __VA_ARGS__);             \
            fputc('\n', stderr);                                        \
        }                                                               \
    } while (0)

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x9e3779b97f4a7c15ull;
    return x ^ (x >> 29);
}

/* A request pointer unique to (thread, round, j), far from the sentinels. */
static void *request_of(int t, int round, int j)
{
    return (void *)(uintptr_t)(((uint64_t)(t + 1) << 40) | ((uint64_t)round * PER_ROUND + j) << 4);
}

/* The operation that returned it, as the table keeps it. */
static int hook_of(void *req)
{
    return (int)(mix((uint64_t)(uintptr_t)req) % UCXF_NUM_HOOKS);
}

/* Its injected code, -1..-100, or 0 for a request that is only followed. */
static int code_of(void *req, int j)
{
    return j % 4 == 0 ? 0 : -(int)(1 + mix((uint64_t)(uintptr_t)req) % 100);
}

static int kill_code(int e)
{
    return -(20 + e);
}

static void *defer_worker(void *arg)
{
    int t = (int)(intptr_t)arg, round, j;

    for (round = 0; round < rounds; round++) {
        for (j = 0; j < PER_ROUND; j++) {
            void *req = request_of(t, round, j);
            int code  = code_of(req, j);
            void *ep  = code == 0 ? &kill_eps[(t + j) % KILL_EPS] : NULL;
            if (ucxf_defer_put(req, code, ep, hook_of(req), (uint64_t)j) != 0) {
                FAIL("put %p: table full", req);
            }
        }
        for (j = 0; j < PER_ROUND; j++) {
            void *req = request_of(t, round, j);
            int want  = code_of(req, j);
            int got   = ucxf_defer_peek(req);
            int e     = (t + j) % KILL_EPS;
            if (want != 0 ? got != want : got != 0 && got != kill_code(e)) {
                FAIL("peek %p: got %d, want %d (followed on endpoint %d: %d)", req, got, want, e,
                     kill_code(e));
            }
        }
        for (j = 0; j < PER_ROUND; j++) {
            /* What a status query and a free read: the operation's own
             * fields, never another request's. */
            void *req = request_of(t, round, j);
            struct ucxf_defer_info di;
            if (ucxf_defer_deliver(req, &di) != 0 || di.hook != hook_of(req) || di.size != (uint64_t)j) {
                FAIL("deliver %p: hook %d size %llu, want %d and %d", req, di.hook,
                     (unsigned long long)di.size, hook_of(req), j);
            }
            if (j % 2 == 0) {
                if (ucxf_defer_take(req, &di) != 0 || !di.delivered || di.hook != hook_of(req)) {
                    FAIL("take %p: delivered %d hook %d", req, di.delivered, di.hook);
                }
            }
        }
        for (j = 0; j < PER_ROUND; j++) {
            void *req = request_of(t, round, j);
            ucxf_defer_forget(req);
            if (ucxf_defer_peek(req) != 0) {
                FAIL("peek %p after forget: %d", req, ucxf_defer_peek(req));
            }
        }
    }
    return NULL;
}

/* Held completions (hang) on the kill endpoints, with the killer ending
 * some holds and the worker cancelling the others: a hold ends once, with
 * the kill's code or -16, and every counter of holds goes back to 0. */
static void *hold_worker(void *arg)
{
    int t = (int)(intptr_t)arg, round, j, code;

    for (round = 0; round < rounds; round++) {
        for (j = 0; j < PER_ROUND; j++) {
            void *req = request_of(t, round, j);
            if (ucxf_defer_put_hold(req, 0, &kill_eps[(t + j) % KILL_EPS], hook_of(req), (uint64_t)j,
                                    UCXF_HOLD_HANG) != 0) {
                FAIL("put_hold %p: table full", req);
            }
        }
        for (j = 0; j < PER_ROUND; j++) {
            void *req = request_of(t, round, j);
            int e     = (t + j) % KILL_EPS, held;
            if (j % 2 == 0) {
                ucxf_defer_cancel(req);
            }
            held = ucxf_defer_held(req, &code);
            if (held < 0 || (held == 0 && code != UCS_ERR_CANCELED && code != kill_code(e)) ||
                (held == 1 && j % 2 == 0)) {
                FAIL("held %p: %d code %d (cancelled %d, kill code %d)", req, held, code, j % 2 == 0, kill_code(e));
            }
            if (held == 0 && (ucxf_defer_held(req, &held) != 0 || held != code)) {
                FAIL("held %p: the hold ended with %d, then %d", req, code, held);
            }
        }
        for (j = 0; j < PER_ROUND; j++) {
            ucxf_defer_forget(request_of(t, round, j));
        }
    }
    return NULL;
}

static void *killer(void *arg)
{
    uint64_t n = 0;

    (void)arg;
    while (!__atomic_load_n(&stop_killer, __ATOMIC_ACQUIRE)) {
        int e = (int)(n++ % KILL_EPS);
        ucxf_defer_kill(&kill_eps[e], kill_code(e));
    }
    return NULL;
}

/* Record k of thread t: one in four through the recording fast half's
 * append (ucxf_record_pass: no duration, nothing injected), the rest
 * through ucxf_record_append (duration k). */
static void append_or_pass(int t, struct ucxf_call *c, int k)
{
    if (k % 4 == 2) {
        ucxf_self = &threads[t];
        ucxf_record_pass(c->hook, c->ep, c->size, c->t0, -(k % 50), (void *)(uintptr_t)(c->t0 | 1));
        return;
    }
    ucxf_record_append(c, -(k % 50), (void *)(uintptr_t)(c->t0 | 1), c->t0 + (uint64_t)k);
}

/* Each thread looks up every endpoint, in its own order, and appends a
 * record for each. */
static void *ep_worker(void *arg)
{
    int t = (int)(intptr_t)arg, k, pass;

    for (pass = 0; pass < PASSES; pass++) {
    for (k = 0; k < EPS; k++) {
        int i = (int)((k * (2 * t + 1) + t * 97) % EPS);
        struct ucxf_call c;
        memset(&c, 0, sizeof(c));
        seen[t][i] = ucxf_ep_ordinal(&eps[i]);
        c.hook   = (t + k) % UCXF_NUM_HOOKS;
        c.ep     = &eps[i];
        c.size   = ((uint64_t)t << 32) | (uint64_t)k;
        c.t0     = mix(c.size);
        c.thread = &threads[t];
        c.injected = k & 1;
        append_or_pass(t, &c, k);
    }
    }
    return NULL;
}

/* Peers: each thread closes and re-creates its own endpoints (at the same
 * addresses, as UCX reuses them) with a new client/server peer each time,
 * while a reader lists every endpoint's row; a peer name is whole when it
 * reads as 127.0.0.1:PORT with a port some thread gave. */
#define PEER_EPS    4
#define PEER_ROUNDS 64
static char peer_eps[THREADS][PEER_EPS];
static unsigned long long peer_rows_checked;

static void *peer_worker(void *arg)
{
    int t = (int)(intptr_t)arg, r, j;

    for (r = 0; r < PEER_ROUNDS; r++) {
        for (j = 0; j < PEER_EPS; j++) {
            struct sockaddr_in sin;
            ucp_ep_params_t params;
            char want[UCXF_PEER_MAX];
            unsigned port = 1024u + (unsigned)((t * PEER_EPS + j) * PEER_ROUNDS + r);

            memset(&sin, 0, sizeof(sin));
            sin.sin_family      = AF_INET;
            sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            sin.sin_port        = htons((uint16_t)port);
            memset(&params, 0, sizeof(params));
            params.field_mask       = UCP_EP_PARAM_FIELD_SOCK_ADDR;
            params.sockaddr.addr    = (const struct sockaddr *)&sin;
            params.sockaddr.addrlen = sizeof(sin);
            ucxf_ep_set_closed(&peer_eps[t][j]);
            ucxf_ep_set_info(&peer_eps[t][j], NULL, NULL, NULL, NULL, ucxf_peer_of_params(&params));
            snprintf(want, sizeof(want), "127.0.0.1:%u", port);
            if (ucxf_ep_peer_hash(&peer_eps[t][j]) != ucxf_peer_hash(want)) {
                FAIL("endpoint %d of thread %d, round %d: its peer is not %s", j, t, r, want);
            }
        }
    }
    return NULL;
}

static void *peer_reader(void *arg)
{
    static struct ucxf_ep_row rows[UCXF_EP_SLOTS + UCXF_EP_GONE];
    (void)arg;
    while (!__atomic_load_n(&stop_killer, __ATOMIC_ACQUIRE)) {
        int n = ucxf_ep_rows(rows, UCXF_EP_SLOTS + UCXF_EP_GONE), i;
        for (i = 0; i < n; i++) {
            unsigned port;
            char tail;
            if (rows[i].peer[0] == '\0') {
                continue;
            }
            if (sscanf(rows[i].peer, "127.0.0.1:%u%c", &port, &tail) != 1 || port < 1024 ||
                port >= 1024u + THREADS * PEER_EPS * PEER_ROUNDS) {
                FAIL("endpoint %d: peer %.64s is not one a thread gave", rows[i].ordinal, rows[i].peer);
            }
            peer_rows_checked++;
        }
    }
    return NULL;
}

/* A record is whole when its fields agree with what its writer derived
 * from (thread, k). */
static void check_record(const struct ucxf_record *r, const int32_t *ordinal_of_ep)
{
    uint64_t t = r->size >> 32, k = r->size & 0xffffffffu;

    if (t >= THREADS || k >= EPS || r->t_ns != mix(r->size) || r->req != (r->t_ns | 1) ||
        r->duration_ns != (k % 4 == 2 ? 0 : k) || r->thread != threads[t].ordinal || r->tid != (uint32_t)threads[t].tid ||
        r->hook != (t + k) % UCXF_NUM_HOOKS || r->status != -(int)(k % 50) ||
        r->flags != ((k & 1) ? UCXF_REC_INJECTED : 0)) {
        FAIL("torn record %llu: size %#llx t_ns %#llx req %#llx duration %llu thread %u tid %u hook %u "
             "status %d flags %u",
             (unsigned long long)r->seq, (unsigned long long)r->size, (unsigned long long)r->t_ns,
             (unsigned long long)r->req, (unsigned long long)r->duration_ns, r->thread, r->tid, r->hook,
             r->status, r->flags);
        return;
    }
    if (ordinal_of_ep != NULL) {
        int i = (int)((k * (2 * t + 1) + t * 97) % EPS);
        if (r->ep != ordinal_of_ep[i]) {
            FAIL("record %llu: endpoint ordinal %d, the table says %d", (unsigned long long)r->seq, r->ep,
                 ordinal_of_ep[i]);
        }
    }
}

/* Copies the log slot by slot and, every few passes, whole with
 * ucxf_record_snapshot, while the writers run: every record returned must
 * be whole, and a snapshot must not return one record twice. */
/* A snapshot's records: each whole, and no (segment, index) twice. Returns
 * the records it holds. */
static uint64_t check_snapshot(const struct ucxf_record *snap, uint64_t n, uint64_t head, const int32_t *ordinal_of_ep)
{
    uint64_t i, held = 0;
    uint64_t *keys = malloc(n * sizeof(*keys));

    for (i = 0; i < n; i++) {
        if (snap[i].seq == 0) {
            continue;
        }
        check_record(&snap[i], ordinal_of_ep);
        keys[held++] = ((uint64_t)snap[i].seg << 40) | snap[i].seq;
    }
    qsort(keys, held, sizeof(*keys), cmp_u64);
    for (i = 1; i < held; i++) {
        if (keys[i] == keys[i - 1]) {
            FAIL("snapshot returns record %llu of segment %llu twice", (unsigned long long)(keys[i] & ((1ull << 40) - 1)),
                 (unsigned long long)(keys[i] >> 40));
        }
    }
    if (held > head) {
        FAIL("snapshot holds %llu records, %llu were appended", (unsigned long long)held, (unsigned long long)head);
    }
    free(keys);
    return held;
}

static void *ring_reader(void *arg)
{
    uint64_t checked = 0, slots = ucxf_record_slots(), pass = 0, i, head;
    struct ucxf_record *snap = calloc(slots, sizeof(*snap));

    (void)arg;
    while (!__atomic_load_n(&stop_killer, __ATOMIC_ACQUIRE)) {
        if (pass++ % 4 == 3) {
            uint64_t n = ucxf_record_snapshot(snap, &head);
            if (n != slots) {
                FAIL("snapshot copied %llu slots of %llu", (unsigned long long)n, (unsigned long long)slots);
            }
            check_snapshot(snap, n, head, NULL);
            checked += n;
            continue;
        }
        for (i = 0; i < slots; i++) {
            struct ucxf_record r;
            if (ucxf_record_read(i, &r)) {
                check_record(&r, NULL);
                checked++;
            }
        }
    }
    free(snap);
    __atomic_add_fetch(&records_checked, checked, __ATOMIC_RELAXED);
    return NULL;
}

/* Threads that log a few records and exit, one after the other and many
 * at once: a segment of an exited thread goes to a new thread, its count
 * going on, and the chunk it held goes back to the pool. */
static void *churn_worker(void *arg)
{
    int t = (int)(intptr_t)arg, k;

    for (k = 0; k < CHURN_RECORDS; k++) {
        struct ucxf_call c;
        memset(&c, 0, sizeof(c));
        c.hook     = (t + k) % UCXF_NUM_HOOKS;
        c.size     = ((uint64_t)t << 32) | (uint64_t)k;
        c.t0       = mix(c.size);
        c.thread   = &threads[t];
        c.injected = k & 1;
        append_or_pass(t, &c, k);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t th[THREADS], kth, rth;
    int32_t ordinal_of_ep[EPS];
    char used[EPS];
    uint64_t head, i, slots, shead, held, churned;
    struct ucxf_record *snap;
    int t;

    if (argc > 1) {
        rounds = atoi(argv[1]);
    }
    if (ucxf_record_alloc(RING) != 0) {
        fprintf(stderr, "tables_stress: allocating the call log\n");
        return 1;
    }
    /* Times as given: the checks compare them with what the writers
     * derived (the counter's conversion to ns is not under test here). */
    ucxf_rec_tsc = 0;
    for (t = 0; t < THREADS; t++) {
        threads[t].ordinal = (uint32_t)t + 1;
        threads[t].tid     = 1000 + t;
    }

    /* Failures on completion, with a killer running through them. */
    pthread_create(&kth, NULL, killer, NULL);
    for (t = 0; t < THREADS; t++) {
        pthread_create(&th[t], NULL, defer_worker, (void *)(intptr_t)t);
    }
    for (t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
    }
    __atomic_store_n(&stop_killer, 1, __ATOMIC_RELEASE);
    pthread_join(kth, NULL);
    if (ucxf_defer_pending() != 0 || ucxf_defer_overflow() != 0) {
        FAIL("after every request was forgotten: %llu pending, %llu lost",
             (unsigned long long)ucxf_defer_pending(), (unsigned long long)ucxf_defer_overflow());
    }
    if (ucxf_defer_kill_count() == 0) {
        FAIL("the killer never failed a request: the kill path was not exercised");
    }

    /* Held completions, cancelled and killed. */
    __atomic_store_n(&stop_killer, 0, __ATOMIC_RELEASE);
    pthread_create(&kth, NULL, killer, NULL);
    for (t = 0; t < THREADS; t++) {
        pthread_create(&th[t], NULL, hold_worker, (void *)(intptr_t)t);
    }
    for (t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
    }
    __atomic_store_n(&stop_killer, 1, __ATOMIC_RELEASE);
    pthread_join(kth, NULL);
    if (ucxf_defer_pending() != 0 || __atomic_load_n(&ucxf_defer_holds, __ATOMIC_RELAXED) != 0) {
        FAIL("after every held request was forgotten: %llu pending, %llu holds",
             (unsigned long long)ucxf_defer_pending(),
             (unsigned long long)__atomic_load_n(&ucxf_defer_holds, __ATOMIC_RELAXED));
    }

    /* Endpoint ordinals and the call log, with a reader copying records. */
    __atomic_store_n(&stop_killer, 0, __ATOMIC_RELEASE);
    pthread_create(&rth, NULL, ring_reader, NULL);
    for (t = 0; t < THREADS; t++) {
        pthread_create(&th[t], NULL, ep_worker, (void *)(intptr_t)t);
    }
    for (t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
    }
    __atomic_store_n(&stop_killer, 1, __ATOMIC_RELEASE);
    pthread_join(rth, NULL);

    /* Peers of re-created endpoints, with a reader of the rows. */
    __atomic_store_n(&stop_killer, 0, __ATOMIC_RELEASE);
    pthread_create(&rth, NULL, peer_reader, NULL);
    for (t = 0; t < THREADS; t++) {
        pthread_create(&th[t], NULL, peer_worker, (void *)(intptr_t)t);
    }
    for (t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
    }
    __atomic_store_n(&stop_killer, 1, __ATOMIC_RELEASE);
    pthread_join(rth, NULL);

    memset(used, 0, sizeof(used));
    for (i = 0; i < EPS; i++) {
        ordinal_of_ep[i] = ucxf_ep_ordinal(&eps[i]);
        if (ordinal_of_ep[i] < 0 || ordinal_of_ep[i] >= EPS || used[ordinal_of_ep[i]]++) {
            FAIL("endpoint %llu: ordinal %d is out of 0..%d or given twice", (unsigned long long)i,
                 ordinal_of_ep[i], EPS - 1);
        }
        for (t = 0; t < THREADS; t++) {
            if (seen[t][i] != ordinal_of_ep[i]) {
                FAIL("endpoint %llu: thread %d saw ordinal %d, the table holds %d", (unsigned long long)i, t,
                     seen[t][i], ordinal_of_ep[i]);
            }
        }
    }
    head = ucxf_record_head();
    if (head != (uint64_t)THREADS * EPS * PASSES) {
        FAIL("call log head %llu, want %d", (unsigned long long)head, THREADS * EPS * PASSES);
    }
    /* Every thread has exited: its segment's records are all whole, each
     * once, and the pool holds at least the capacity's worth of them (the
     * spare chunks cover the chunks threads were filling). */
    slots = ucxf_record_slots();
    snap  = calloc(slots, sizeof(*snap));
    ucxf_record_snapshot(snap, &shead);
    if (shead != head) {
        FAIL("snapshot head %llu, want %llu", (unsigned long long)shead, (unsigned long long)head);
    }
    held = check_snapshot(snap, slots, shead, ordinal_of_ep);
    if (held < RING) {
        FAIL("the log holds %llu records of %llu appended, fewer than its capacity %u", (unsigned long long)held,
             (unsigned long long)head, RING);
    }

    /* Short-lived threads, with a reader copying the log; then a clear. */
    __atomic_store_n(&stop_killer, 0, __ATOMIC_RELEASE);
    pthread_create(&rth, NULL, ring_reader, NULL);
    for (i = 0; i < CHURN; i += THREADS) {
        for (t = 0; t < THREADS; t++) {
            pthread_create(&th[t], NULL, churn_worker, (void *)(intptr_t)t);
        }
        for (t = 0; t < THREADS; t++) {
            pthread_join(th[t], NULL);
        }
    }
    __atomic_store_n(&stop_killer, 1, __ATOMIC_RELEASE);
    pthread_join(rth, NULL);
    churned = ucxf_record_head() - head;
    if (churned != (uint64_t)CHURN * CHURN_RECORDS) {
        FAIL("%llu records appended by the short-lived threads, want %d", (unsigned long long)churned,
             CHURN * CHURN_RECORDS);
    }
    ucxf_record_snapshot(snap, &shead);
    held = check_snapshot(snap, slots, shead, NULL);
    if (held < RING) {
        FAIL("after the short-lived threads the log holds %llu records, fewer than its capacity %u",
             (unsigned long long)held, RING);
    }
    ucxf_record_clear();
    ucxf_record_snapshot(snap, &shead);
    if (shead != 0 || check_snapshot(snap, slots, shead, NULL) != 0) {
        FAIL("after a clear: head %llu, records returned", (unsigned long long)shead);
    }
    free(snap);
    if (failures > 0) {
        fprintf(stderr, "tables_stress: %d checks failed\n", failures);
        return 1;
    }
    printf("tables_stress: %d threads x %d rounds x %d requests, %llu kills; %d endpoints; "
           "%llu records, then %llu from %d short-lived threads, %llu copied while written; "
           "%d re-creations with new peers, %llu endpoint rows read meanwhile: all checked\n",
           THREADS, rounds, PER_ROUND, (unsigned long long)ucxf_defer_kill_count(), EPS,
           (unsigned long long)head, (unsigned long long)churned, CHURN, (unsigned long long)records_checked,
           THREADS * PEER_EPS * PEER_ROUNDS, peer_rows_checked);
    return 0;
}
