/* comm_mpi.c - the world of processes an MPI launcher started (mpirun, srun): the
 * communicator the generated collectives call (moe_program.h's table), over MPI_COMM_WORLD.
 *
 * Built with MPI (MOE_HAVE_MPI) when CMake found it; without, moe_comm_start says so. Sums
 * are MPI_Allreduce in place on host memory, which is device memory on the cpu and cuda-emu
 * devices; the cuda device needs NCCL, which this does not do yet (the caller refuses it).
 */
#include "rt.h"
#include <stdatomic.h>
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

/* The watchdog's settings: how long a collective may wait, what a message starts with, and
 * the step the command is in (-1: none). */
static double watch_limit_s = 300;
static char watch_who[128] = "moe";
static _Atomic long long watch_step = -1;

void moe_comm_set_timeout(double seconds, const char *who) {
    watch_limit_s = seconds;
    snprintf(watch_who, sizeof watch_who, "%s", who);
}
void moe_comm_set_step(long long step) { watch_step = step; }

#ifdef MOE_HAVE_MPI
#include <mpi.h>
#include <pthread.h>
#include <unistd.h>

static moe_comm world;
static int started;

/* A thread that ends the job when a collective has waited longer than the limit: a rank that
 * died is mpirun's to report, but one that is stuck (stopped, swapping, in an endless loop)
 * would leave the others waiting forever. The message names this rank and the step; the exit
 * status makes the launcher stop every rank. No MPI call is made from the thread. */
static _Atomic long long watch_since_ms, watch_count;  /* the collective in progress (0: none) */
static void *watchdog(void *arg) {
    (void)arg;
    for (;;) {
        sleep(1);
        long long since = watch_since_ms;
        if (!since || moe_now_ms() - (double)since < watch_limit_s * 1e3) continue;
        char step[48] = "";
        if (watch_step >= 0) snprintf(step, sizeof step, ", step %lld", (long long)watch_step);
        fprintf(stderr, "%s (rank %d of %d%s): a collective (a sum of %lld values) has waited %.0f s for the other "
                "ranks (--comm-timeout): one of them has died or is stuck; ending the job\n", watch_who, world.rank,
                world.world, step, (long long)watch_count, watch_limit_s);
        fflush(stderr);
        _exit(1);
    }
    return NULL;
}

/* buf[0..n) (elements of `size` bytes) summed in place, in pieces: MPI counts are int */
static void mpi_sum(void *buf, int64_t n, MPI_Datatype type, size_t size) {
    watch_count = n;
    watch_since_ms = (long long)moe_now_ms();
    for (int64_t i = 0; i < n; i += 1 << 30) {
        int k = n - i < (1 << 30) ? (int)(n - i) : 1 << 30;
        MPI_Allreduce(MPI_IN_PLACE, (char *)buf + (size_t)i * size, k, type, MPI_SUM, MPI_COMM_WORLD);
    }
    watch_since_ms = 0;
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
    pthread_t t;
    if (world.world > 1 && watch_limit_s > 0 && !pthread_create(&t, NULL, watchdog, NULL)) pthread_detach(t);
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
