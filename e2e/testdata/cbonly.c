/*
 * cbonly: tag sends and receives to self whose results are learned only in
 * their completion callbacks, each request freed inside its own callback and
 * never polled, as MPICH's ch4:ucx does.
 *
 *   cbonly [--ops N] [--size BYTES] [--start-file F] [--hold-at K --hold-file G]
 *          [--end-file E] [--free-sends]
 *
 * Iteration i sends one message with tag i (ucp_tag_send_nbx) and then posts
 * its receive (ucp_tag_recv_nbx), and progresses the worker until both have
 * completed (at most 5 s, then the receive is cancelled). A send that fails
 * at once has no receive posted. Each operation prints one OP line when its
 * result is known (the format of fixture.h, with fn=tag_send or tag_recv and
 * iter=i), in the order the results arrive:
 *
 *   how=immediate: the call returned the result (NULL or an error);
 *   how=completion: the callback gave it (the request is freed there).
 *
 * --free-sends: a send that returns a request frees it at once, before it
 * completes (ucp_request_free), and so never learns its result: printed as
 * status=0 how=freed.
 * --start-file: after READY, wait (at most 60 s) until F exists before the
 * first operation, so that a recording or a replay can be loaded.
 * --hold-at K: in iteration K, after the send returns its request and before
 * the receive is posted, print "INFLIGHT iter=K" and wait until G exists (at
 * most 60 s), so that the endpoint can be killed while the send is in flight
 * (use a rendezvous size, such as 1048576, so that the send waits for its
 * receive). Prints DONE failed=<n> at the end, then waits (at most 60 s) for
 * E to exist when --end-file is given, tears down and exits 0.
 */
#include "fixture.h"

#include <getopt.h>
#include <unistd.h>

struct op {
    unsigned long iter;
    const char   *fn;
    size_t        size;
    int           done;
};

static unsigned long failed;

static void op_done(struct op *o, ucs_status_t st, const char *how)
{
    o->done = 1;
    if (st != UCS_OK) {
        failed++;
    }
    fx_print_op(0, o->iter, o->fn, o->size, st, how);
}

static void on_send(void *req, ucs_status_t st, void *user)
{
    op_done(user, st, "completion");
    ucp_request_free(req);
}

static void on_recv(void *req, ucs_status_t st, const ucp_tag_recv_info_t *info, void *user)
{
    (void)info;
    op_done(user, st, "completion");
    ucp_request_free(req);
}

/* returned records the outcome of a call that returned ret: NULL and errors
 * are results now; a request reports through its callback. */
static void returned(struct op *o, ucs_status_ptr_t ret)
{
    if (ret == NULL) {
        op_done(o, UCS_OK, "immediate");
    } else if (UCS_PTR_IS_ERR(ret)) {
        op_done(o, UCS_PTR_STATUS(ret), "immediate");
    }
}

static void wait_file(const char *path)
{
    uint64_t deadline = fx_now_us() + 60000000ull;

    while (path != NULL && access(path, F_OK) != 0 && fx_now_us() < deadline) {
        fx_sleep_ms(1);
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"ops", required_argument, NULL, 'n'},
        {"size", required_argument, NULL, 's'},
        {"start-file", required_argument, NULL, 'f'},
        {"hold-at", required_argument, NULL, 'k'},
        {"hold-file", required_argument, NULL, 'g'},
        {"end-file", required_argument, NULL, 'e'},
        {"free-sends", no_argument, NULL, 'F'},
        {NULL, 0, NULL, 0},
    };
    unsigned long       nops = 10, i;
    long                hold = -1;
    size_t              size = 8;
    const char         *start_file = NULL, *hold_file = NULL, *end_file = NULL;
    char               *sbuf, *rbuf;
    struct fx           f;
    int                 c, free_sends = 0;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'n': nops = strtoul(optarg, NULL, 10); break;
        case 's': size = strtoul(optarg, NULL, 10); break;
        case 'f': start_file = optarg; break;
        case 'k': hold = strtol(optarg, NULL, 10); break;
        case 'g': hold_file = optarg; break;
        case 'e': end_file = optarg; break;
        case 'F': free_sends = 1; break;
        default:
            fprintf(stderr, "usage: cbonly [--ops N] [--size BYTES] [--start-file F] "
                            "[--hold-at K --hold-file G] [--end-file E] [--free-sends]\n");
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    sbuf = calloc(1, size + 1);
    rbuf = calloc(1, size + 1);
    if (sbuf == NULL || rbuf == NULL) {
        fx_die("malloc", UCS_ERR_NO_MEMORY);
    }
    fx_setup(&f, UCS_THREAD_MODE_SINGLE, UCP_FEATURE_TAG);
    printf("READY pid=%d\n", (int)getpid());
    wait_file(start_file);

    for (i = 0; i < nops; i++) {
        struct op           send = {i, "tag_send", size, 0}, recv = {i, "tag_recv", size, 0};
        ucp_request_param_t sp, rp;
        ucs_status_ptr_t    sreq, rreq = NULL;
        uint64_t            deadline;

        memset(&sp, 0, sizeof(sp));
        sp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
        sp.cb.send      = on_send;
        sp.user_data    = &send;
        sreq            = ucp_tag_send_nbx(f.ep, sbuf, size, (ucp_tag_t)i, &sp);
        returned(&send, sreq);
        if (free_sends && UCS_PTR_IS_PTR(sreq)) {
            ucp_request_free(sreq); /* no callback will come */
            op_done(&send, UCS_OK, "freed");
        }
        if ((long)i == hold) {
            printf("INFLIGHT iter=%lu\n", i);
            wait_file(hold_file);
            ucp_worker_progress(f.worker);
        }
        if (UCS_PTR_IS_ERR(sreq)) {
            recv.done = 1; /* nothing will come */
        } else {
            memset(&rp, 0, sizeof(rp));
            rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
            rp.cb.recv      = on_recv;
            rp.user_data    = &recv;
            rreq            = ucp_tag_recv_nbx(f.worker, rbuf, size, (ucp_tag_t)i, (ucp_tag_t)-1, &rp);
            returned(&recv, rreq);
        }
        deadline = fx_now_us() + 5000000ull;
        while (!send.done || !recv.done) {
            ucp_worker_progress(f.worker);
            if (fx_now_us() > deadline && !recv.done && UCS_PTR_IS_PTR(rreq)) {
                ucp_request_cancel(f.worker, rreq);
                deadline = fx_now_us() + 5000000ull;
            } else if (fx_now_us() > deadline) {
                fprintf(stderr, "iteration %lu: a callback never came\n", i);
                return 4;
            }
        }
    }
    printf("DONE failed=%lu\n", failed);
    wait_file(end_file);
    fx_teardown(&f);
    free(sbuf);
    free(rbuf);
    return 0;
}
