/* comm_mpi.c - the world of processes an MPI launcher started (mpirun, srun): the
 * communicator the generated collectives call (moe_program.h's table), over MPI_COMM_WORLD.
 *
 * Built with MPI (MOE_HAVE_MPI) when CMake found it; without, moe_comm_start says so. Sums
 * are MPI_Allreduce in place on host memory, which is device memory on the cpu and cuda-emu
 * devices; the cuda device needs NCCL, which this does not do yet (the caller refuses it).
 */
#include "rt.h"
#include <stdio.h>
#include <stdlib.h>

/* the launchers' words for the number of processes */
static const char *const world_vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS",
                                         "MPI_LOCALNRANKS"};

int moe_comm_launched(const char **var) {
    for (size_t i = 0; i < sizeof world_vars / sizeof world_vars[0]; i++) {
        const char *v = getenv(world_vars[i]);
        if (v && atoi(v) > 1) {
            if (var) *var = world_vars[i];
            return atoi(v);
        }
    }
    return 1;
}

#ifdef MOE_HAVE_MPI
#include <mpi.h>

static moe_comm world;
static int started;

/* buf[0..n) (elements of `size` bytes) summed in place, in pieces: MPI counts are int */
static void mpi_sum(void *buf, int64_t n, MPI_Datatype type, size_t size) {
    for (int64_t i = 0; i < n; i += 1 << 30) {
        int k = n - i < (1 << 30) ? (int)(n - i) : 1 << 30;
        MPI_Allreduce(MPI_IN_PLACE, (char *)buf + (size_t)i * size, k, type, MPI_SUM, MPI_COMM_WORLD);
    }
}
static void mpi_f32(const moe_comm *c, float *buf, int64_t n) { (void)c; mpi_sum(buf, n, MPI_FLOAT, sizeof *buf); }
static void mpi_f64(const moe_comm *c, double *buf, int64_t n) { (void)c; mpi_sum(buf, n, MPI_DOUBLE, sizeof *buf); }

const moe_comm *moe_comm_start(int *argc, char ***argv, char *err, size_t errlen) {
    if (started) return &world;
    if (MPI_Init(argc, argv) != MPI_SUCCESS) {
        snprintf(err, errlen, "MPI_Init failed");
        return NULL;
    }
    started = 1;
    world = (moe_comm){NULL, 0, 1, mpi_f32, mpi_f64};
    MPI_Comm_rank(MPI_COMM_WORLD, &world.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world.world);
    return &world;
}

void moe_comm_finish(int failed) {
    if (!started) return;
    started = 0;
    /* A rank that fails leaves without MPI_Finalize, which waits for the others: its exit
     * status makes the launcher stop the job, also where the others wait in a collective. */
    if (!failed) MPI_Finalize();
}

const moe_comm *moe_comm_world(void) { return started ? &world : moe_comm_local(); }
#else
const moe_comm *moe_comm_start(int *argc, char ***argv, char *err, size_t errlen) {
    (void)argc, (void)argv;
    snprintf(err, errlen, "this build of moec has no MPI (install libopenmpi-dev and rebuild moec)");
    return NULL;
}
void moe_comm_finish(int failed) { (void)failed; }
const moe_comm *moe_comm_world(void) { return moe_comm_local(); }
#endif
