/*
 * Ping-pong between ranks 0 and 1: the C reference for the mpi.latency check.
 *
 *   mpirun -np 2 cf-mpi-pingpong [BYTES [ITERATIONS [REPEATS [WARMUP]]]]
 *
 * Rank 0 prints one line "CFJSON {...}" with the one-way time (half a round trip) of every
 * repeat in microseconds, the hosts of both ranks and the library version.
 * Build: mpicc -O2 -o cf-mpi-pingpong pingpong.c (the mpi role does it on every MPI host).
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REPEATS 100

static long arg(int argc, char **argv, int index, long fallback)
{
    return argc > index ? strtol(argv[index], NULL, 10) : fallback;
}

int main(int argc, char **argv)
{
    int rank, size, peer, len;
    char host[MPI_MAX_PROCESSOR_NAME], peer_host[MPI_MAX_PROCESSOR_NAME];
    char library[MPI_MAX_LIBRARY_VERSION_STRING];
    double one_way_us[MAX_REPEATS];

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long bytes = arg(argc, argv, 1, 8);
    long iterations = arg(argc, argv, 2, 1000);
    long repeats = arg(argc, argv, 3, 5);
    long warmup = arg(argc, argv, 4, 100);
    if (size != 2 || bytes < 1 || iterations < 1 || repeats < 1 || repeats > MAX_REPEATS || warmup < 0) {
        if (rank == 0)
            fprintf(stderr, "usage: mpirun -np 2 %s [BYTES>=1 [ITERATIONS>=1 [REPEATS 1..%d [WARMUP>=0]]]]"
                            " (got %d ranks)\n", argv[0], MAX_REPEATS, size);
        MPI_Finalize();
        return 2;
    }
    char *buffer = calloc((size_t)bytes, 1);
    if (buffer == NULL) {
        fprintf(stderr, "rank %d: cannot allocate %ld bytes\n", rank, bytes);
        MPI_Abort(MPI_COMM_WORLD, 3);
    }
    peer = 1 - rank;
    MPI_Get_processor_name(host, &len);
    MPI_Sendrecv(host, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, peer, 1, peer_host, MPI_MAX_PROCESSOR_NAME,
                 MPI_CHAR, peer, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    MPI_Get_library_version(library, &len);
    for (long r = -1; r < repeats; r++) {
        long count = r < 0 ? warmup : iterations;
        MPI_Barrier(MPI_COMM_WORLD);
        double start = MPI_Wtime();
        for (long i = 0; i < count; i++) {
            if (rank == 0) {
                MPI_Send(buffer, (int)bytes, MPI_BYTE, 1, 0, MPI_COMM_WORLD);
                MPI_Recv(buffer, (int)bytes, MPI_BYTE, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            } else {
                MPI_Recv(buffer, (int)bytes, MPI_BYTE, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                MPI_Send(buffer, (int)bytes, MPI_BYTE, 0, 0, MPI_COMM_WORLD);
            }
        }
        if (r >= 0)
            one_way_us[r] = (MPI_Wtime() - start) / (2.0 * (double)iterations) * 1e6;
    }
    if (rank == 0) {
        for (char *c = library; *c; c++)
            if (*c == '"' || *c == '\\' || *c == '\n' || *c == '\t')
                *c = ' ';
        printf("CFJSON {\"job\": \"pingpong.c\", \"bytes\": %ld, \"iterations\": %ld, \"hosts\": [\"%s\", \"%s\"], "
               "\"library\": \"%s\", \"one_way_us\": [", bytes, iterations, host, peer_host, library);
        for (long r = 0; r < repeats; r++)
            printf("%s%.4f", r ? ", " : "", one_way_us[r]);
        printf("]}\n");
        fflush(stdout);
    }
    free(buffer);
    MPI_Finalize();
    return 0;
}
