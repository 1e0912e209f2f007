/*
 * mpideath.c: what an MPI application sees when the peer rank dies, for the
 * real-against-emulated comparison of e2e/mpideath_test.go.
 *
 *   mpirun -np 2 ./mpideath DIR
 *
 * Ranks 0 and 1 exchange a small and a large message both ways (so that
 * the UCX endpoints between them are connected), print
 *
 *   READY pid=<pid> rank=<r>
 *
 * (rank 0 first posts an MPI_Isend of 1 MiB to rank 1, which rank 1 never
 * receives: a rendezvous send in flight at the death), and then rank 1
 * sleeps until it is killed or ends (SIGTERM): it takes no further part.
 * Rank 0 waits until DIR/go exists (the test creates it once rank 1 is
 * dead, or once the kill rule is set), progresses MPI for 300 ms (a dead
 * peer is noticed by then), and then posts, one at a time, each operation
 * towards rank 1 and waits for it with MPI_Test for at most 1 s:
 *
 *   small   MPI_Isend of 8 bytes (eager)
 *   large   MPI_Isend of 1 MiB (rendezvous)
 *   recv    MPI_Irecv of 8 bytes from rank 1 (rank 1 never sends)
 *   ssend   MPI_Issend of 8 bytes (needs rank 1's answer)
 *
 * and last waits, the same way, for the send posted before the death:
 *
 *   inflight  MPI_Isend of 1 MiB posted before READY
 *
 * Errors are returned, not fatal (MPI_ERRORS_RETURN). Each operation's
 * outcome goes to DIR/rank0.out, not to stdout: a launcher may lose a dead
 * rank's output channel and with it the living ranks' (MPICH's Hydra 4.0
 * does), and a write to a closed pipe would end rank 0. Each line is
 *
 *   MD op=<name> post=<rc> post_class=<class> done=<0|1> rc=<rc> class=<class>
 *
 * post is what the posting call returned; done says whether MPI_Test ever
 * reported the request complete, and rc/class what it returned then (or
 * the last MPI_Test's return when it never completed). Classes are printed
 * as MPI_Error_class gives them, 0 for success. A request still pending
 * after 1 s is left alone (cancelling one towards a dead peer can hang).
 * Rank 0 then writes DONE and, as rank 1, sleeps until the test ends the job
 * (MPI_Finalize would wait for rank 1; a tool may still ask rank 0's
 * state).
 */
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LARGE (1 << 20)

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int errclass(int rc)
{
    int cls = rc;

    if (rc != MPI_SUCCESS && MPI_Error_class(rc, &cls) != MPI_SUCCESS) {
        cls = -1;
    }
    return cls;
}

/* wait posts an operation's outcome: MPI_Test until done or 1 s. */
static FILE *out;

static void wait_op(const char *name, int post, MPI_Request *rq)
{
    double end = now() + 1.0;
    int    done = 0, rc = post;

    if (post == MPI_SUCCESS) {
        while (!done && now() < end) {
            rc = MPI_Test(rq, &done, MPI_STATUS_IGNORE);
            if (rc != MPI_SUCCESS) {
                done = 1;
            }
        }
    }
    fprintf(out, "MD op=%s post=%d post_class=%d done=%d rc=%d class=%d\n", name, post,
            errclass(post), done, rc, errclass(rc));
    fflush(out);
}

int main(int argc, char **argv)
{
    static char big[LARGE], bigin[LARGE], early[LARGE];
    char        small[8] = "payload", in[8], path[4096];
    int         rank, size, other;
    MPI_Request rq, inflight = MPI_REQUEST_NULL;
    int         inflight_post = MPI_SUCCESS;

    if (argc != 2) {
        fprintf(stderr, "usage: mpideath DIR\n");
        return 2;
    }
    MPI_Init(&argc, &argv);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != 2) {
        fprintf(stderr, "SETUP-ERROR mpideath runs on 2 ranks, not %d\n", size);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    other = 1 - rank;
    memset(big, rank + 1, sizeof(big));
    if (MPI_Sendrecv(small, sizeof(small), MPI_CHAR, other, 1, in, sizeof(in), MPI_CHAR, other, 1,
                     MPI_COMM_WORLD, MPI_STATUS_IGNORE) != MPI_SUCCESS ||
        MPI_Sendrecv(big, LARGE, MPI_CHAR, other, 2, bigin, LARGE, MPI_CHAR, other, 2,
                     MPI_COMM_WORLD, MPI_STATUS_IGNORE) != MPI_SUCCESS ||
        MPI_Barrier(MPI_COMM_WORLD) != MPI_SUCCESS) {
        fprintf(stderr, "SETUP-ERROR warm-up exchange failed\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    if (rank == 0) {
        inflight_post = MPI_Isend(early, LARGE, MPI_CHAR, 1, 14, MPI_COMM_WORLD, &inflight);
    }
    printf("READY pid=%d rank=%d\n", (int)getpid(), rank);
    fflush(stdout);
    if (rank == 1) {
        for (;;) {
            pause();
        }
    }
    snprintf(path, sizeof(path), "%s/rank0.out", argv[1]);
    out = fopen(path, "w");
    if (out == NULL) {
        perror(path);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    signal(SIGPIPE, SIG_IGN);
    snprintf(path, sizeof(path), "%s/go", argv[1]);
    while (access(path, F_OK) != 0) {
        usleep(5000);
    }
    {
        double end = now() + 0.3;
        int    flag;

        while (now() < end) {
            MPI_Iprobe(MPI_ANY_SOURCE, 99, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE);
        }
    }
    wait_op("small", MPI_Isend(small, sizeof(small), MPI_CHAR, 1, 10, MPI_COMM_WORLD, &rq), &rq);
    wait_op("large", MPI_Isend(big, LARGE, MPI_CHAR, 1, 11, MPI_COMM_WORLD, &rq), &rq);
    wait_op("recv", MPI_Irecv(in, sizeof(in), MPI_CHAR, 1, 12, MPI_COMM_WORLD, &rq), &rq);
    wait_op("ssend", MPI_Issend(small, sizeof(small), MPI_CHAR, 1, 13, MPI_COMM_WORLD, &rq), &rq);
    wait_op("inflight", inflight_post, &inflight);
    fprintf(out, "DONE rank=0\n");
    fclose(out);
    for (;;) {
        pause();
    }
}
