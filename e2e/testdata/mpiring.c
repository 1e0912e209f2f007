/*
 * mpiring.c: a small MPI job whose point-to-point traffic goes through Open
 * MPI's pml ucx, which keeps its requests on the stack.
 *
 *   mpirun ... --mca pml ucx ./mpiring [ITERS]
 *
 * Each iteration: a token passed around the ring (MPI_Isend, MPI_Recv,
 * MPI_Wait), a 100,000-double MPI_Sendrecv (rendezvous size: 800 kB) and an
 * MPI_Allreduce. Errors are returned, not fatal (MPI_ERRORS_RETURN): each is
 * printed as
 *
 *   MPIERR rank=<r> op=<name> rc=<code> msg=<text>
 *
 * and the job goes on. Prints READY pid=<pid> rank=<r> after MPI_Init and
 * DONE rank=<r> errors=<n> before MPI_Finalize. Built by the tests with mpicc.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define BIG 100000

static int errors;

static void check(const char *what, int rc, int rank)
{
    char msg[MPI_MAX_ERROR_STRING];
    int  len = 0;

    if (rc == MPI_SUCCESS) {
        return;
    }
    MPI_Error_string(rc, msg, &len);
    printf("MPIERR rank=%d op=%s rc=%d msg=%s\n", rank, what, rc, msg);
    errors++;
}

int main(int argc, char **argv)
{
    int     rank, size, i, iter, iters = 20;
    double *a, *b, sum, total;

    MPI_Init(&argc, &argv);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc > 1) {
        iters = atoi(argv[1]);
    }
    a = calloc(BIG, sizeof(double));
    b = calloc(BIG, sizeof(double));
    if (a == NULL || b == NULL) {
        fprintf(stderr, "SETUP-ERROR calloc\n");
        MPI_Abort(MPI_COMM_WORLD, 3);
    }
    printf("READY pid=%d rank=%d\n", (int)getpid(), rank);
    fflush(stdout);
    for (iter = 0; iter < iters; iter++) {
        int         next = (rank + 1) % size, prev = (rank + size - 1) % size;
        int         token = rank, got = -1;
        MPI_Request rq;

        for (i = 0; i < BIG; i++) {
            a[i] = rank + i + iter;
        }
        check("isend", MPI_Isend(&token, 1, MPI_INT, next, 1, MPI_COMM_WORLD, &rq), rank);
        check("recv", MPI_Recv(&got, 1, MPI_INT, prev, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE), rank);
        check("wait", MPI_Wait(&rq, MPI_STATUS_IGNORE), rank);
        check("sendrecv", MPI_Sendrecv(a, BIG, MPI_DOUBLE, next, 2, b, BIG, MPI_DOUBLE, prev, 2,
                                       MPI_COMM_WORLD, MPI_STATUS_IGNORE), rank);
        sum = b[BIG - 1];
        check("allreduce", MPI_Allreduce(&sum, &total, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), rank);
    }
    printf("DONE rank=%d errors=%d\n", rank, errors);
    free(a);
    free(b);
    MPI_Finalize();
    return 0;
}
