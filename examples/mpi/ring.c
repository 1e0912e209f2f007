/*
 * ring.c - a small MPI workload for ucxfault.
 *
 * Each iteration passes a token around a ring of all ranks with MPI_Send /
 * MPI_Recv (pml ucx: ucp_tag_send_nbx / ucp_tag_recv_nbx) and then does
 * one-sided MPI_Put / MPI_Get on a window between two MPI_Win_fence calls
 * (osc ucx: ucp_put_nbi / ucp_get_nbi, completed by the fence's flush).
 *
 * Errors are returned, not fatal (MPI_ERRORS_RETURN on MPI_COMM_WORLD and on
 * the window). Any failed call prints
 *   MPIERR rank=<r> op=<call> code=<error code> <MPI_Error_string>
 * and calls MPI_Abort, so that an injected failure ends the whole job instead
 * of leaving the other ranks waiting forever. A wrong value (data that did not
 * arrive) prints MPIERR ... op=check and aborts too.
 *
 * Build:   mpicc -O2 -g -Wall -Wextra -Werror -o ring ring.c
 * Run:     see README.md
 */
#include <mpi.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int g_rank = -1;

static void fail(const char *op, int code)
{
    char msg[MPI_MAX_ERROR_STRING + 1];
    int  len = 0;

    msg[0] = '\0';
    if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) {
        snprintf(msg, sizeof(msg), "unknown error");
    } else {
        msg[len] = '\0';
    }
    printf("MPIERR rank=%d op=%s code=%d %s\n", g_rank, op, code, msg);
    fflush(stdout);
    MPI_Abort(MPI_COMM_WORLD, code == MPI_SUCCESS ? 1 : code);
    _exit(1); /* MPI_Abort does not return; be sure */
}

#define CHECK(_op, _call) \
    do { \
        int _rc = (_call); \
        if (_rc != MPI_SUCCESS) { \
            fail(_op, _rc); \
        } \
    } while (0)

static void check_value(const char *what, long got, long want)
{
    if (got != want) {
        printf("MPIERR rank=%d op=check code=-1 %s: got %ld, want %ld\n",
               g_rank, what, got, want);
        fflush(stdout);
        MPI_Abort(MPI_COMM_WORLD, 1);
        _exit(1);
    }
}

static long parse_long(const char *opt, const char *s)
{
    char *end;
    long  v;

    errno = 0;
    v = strtol(s, &end, 0);
    if (errno != 0 || end == s || *end != '\0' || v < 0) {
        fprintf(stderr, "invalid value for %s: '%s'\n", opt, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    long     iters = 10, count = 1, i, k;
    int      size, left, right, quiet = 0, a;
    long    *sbuf, *rbuf, *wbuf, *gbuf;
    MPI_Win  win;
    MPI_Aint wbytes;
    const int tag = 42;

    /* MPI_Init's own failure cannot be returned: it is always fatal */
    MPI_Init(&argc, &argv);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    CHECK("MPI_Comm_rank", MPI_Comm_rank(MPI_COMM_WORLD, &g_rank));
    CHECK("MPI_Comm_size", MPI_Comm_size(MPI_COMM_WORLD, &size));
    setvbuf(stdout, NULL, _IOLBF, 0);

    for (a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--iters") == 0 && a + 1 < argc) {
            iters = parse_long("--iters", argv[++a]);
        } else if (strcmp(argv[a], "--count") == 0 && a + 1 < argc) {
            count = parse_long("--count", argv[++a]);
            if (count < 1 || count > (1L << 24)) {
                fprintf(stderr, "--count must be 1..16777216\n");
                exit(2);
            }
        } else if (strcmp(argv[a], "--quiet") == 0) {
            quiet = 1;
        } else {
            if (g_rank == 0) {
                fprintf(stderr, "usage: %s [--iters N] [--count LONGS] "
                        "[--quiet]\n", argv[0]);
            }
            MPI_Finalize();
            return 2;
        }
    }

    left  = (g_rank + size - 1) % size;
    right = (g_rank + 1) % size;

    sbuf = calloc((size_t)count, sizeof(long));
    rbuf = calloc((size_t)count, sizeof(long));
    gbuf = calloc((size_t)size, sizeof(long));
    if (sbuf == NULL || rbuf == NULL || gbuf == NULL) {
        fail("calloc", MPI_ERR_NO_MEM);
    }

    /* window: one long per rank; rank r puts into slot r of its right
     * neighbour and gets slot left-of-left... see the loop */
    wbytes = (MPI_Aint)((size_t)size * sizeof(long));
    CHECK("MPI_Win_allocate",
          MPI_Win_allocate(wbytes, sizeof(long), MPI_INFO_NULL,
                           MPI_COMM_WORLD, &wbuf, &win));
    CHECK("MPI_Win_set_errhandler",
          MPI_Win_set_errhandler(win, MPI_ERRORS_RETURN));
    memset(wbuf, 0, (size_t)wbytes);

    if (!quiet) {
        printf("READY rank=%d pid=%d size=%d iterations=%ld\n", g_rank,
               (int)getpid(), size, iters);
    }
    CHECK("MPI_Barrier", MPI_Barrier(MPI_COMM_WORLD));

    for (i = 0; i < iters; i++) {
        MPI_Status st;
        long       want;

        /* --- two-sided: token around the ring ------------------------- */
        if (g_rank == 0) {
            for (k = 0; k < count; k++) {
                sbuf[k] = i * 1000 + k;
            }
            CHECK("MPI_Send", MPI_Send(sbuf, (int)count, MPI_LONG, right, tag,
                                       MPI_COMM_WORLD));
            CHECK("MPI_Recv", MPI_Recv(rbuf, (int)count, MPI_LONG, left, tag,
                                       MPI_COMM_WORLD, &st));
            /* every other rank added 1 to each element */
            check_value("ring token", rbuf[0], i * 1000 + (size - 1));
        } else {
            CHECK("MPI_Recv", MPI_Recv(rbuf, (int)count, MPI_LONG, left, tag,
                                       MPI_COMM_WORLD, &st));
            for (k = 0; k < count; k++) {
                sbuf[k] = rbuf[k] + 1;
            }
            CHECK("MPI_Send", MPI_Send(sbuf, (int)count, MPI_LONG, right, tag,
                                       MPI_COMM_WORLD));
        }

        /* --- one-sided: put my value into the right neighbour's slot,
         * then read it back from there ------------------------------------ */
        want = (long)g_rank * 1000000 + i;
        CHECK("MPI_Win_fence", MPI_Win_fence(0, win));
        CHECK("MPI_Put", MPI_Put(&want, 1, MPI_LONG, right, g_rank, 1,
                                 MPI_LONG, win));
        CHECK("MPI_Win_fence", MPI_Win_fence(0, win));
        check_value("window slot written by left neighbour", wbuf[left],
                    (long)left * 1000000 + i);
        CHECK("MPI_Get", MPI_Get(&gbuf[0], 1, MPI_LONG, right, g_rank, 1,
                                 MPI_LONG, win));
        CHECK("MPI_Win_fence", MPI_Win_fence(0, win));
        check_value("MPI_Get of my slot at the right neighbour", gbuf[0],
                    want);

        if (!quiet && g_rank == 0) {
            printf("ITER rank=0 iter=%ld ok\n", i);
        }
    }

    CHECK("MPI_Barrier", MPI_Barrier(MPI_COMM_WORLD));
    CHECK("MPI_Win_free", MPI_Win_free(&win));
    if (g_rank == 0) {
        printf("RING-OK iterations=%ld\n", iters);
    }
    free(sbuf);
    free(rbuf);
    free(gbuf);
    CHECK("MPI_Finalize", MPI_Finalize());
    return 0;
}
