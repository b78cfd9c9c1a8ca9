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
enum { MAX_PEERS = 1024 };  /* ranks of an expert group */

/* A thread that ends the job when a collective has waited longer than the limit: a rank that
 * died is mpirun's to report, but one that is stuck (stopped, swapping, in an endless loop)
 * would leave the others waiting forever. The message names this rank and the step; the exit
 * status makes the launcher stop every rank. No MPI call is made from the thread. */
static _Atomic long long watch_since_ms, watch_count;  /* the collective in progress (0: none) */
static const char *_Atomic watch_what = "a sum";
static void *watchdog(void *arg) {
    (void)arg;
    for (;;) {
        sleep(1);
        long long since = watch_since_ms;
        if (!since || moe_now_ms() - (double)since < watch_limit_s * 1e3) continue;
        char step[48] = "";
        if (watch_step >= 0) snprintf(step, sizeof step, ", step %lld", (long long)watch_step);
        fprintf(stderr, "%s (rank %d of %d%s): a collective (%s of %lld values) has waited %.0f s for the other "
                "ranks (--comm-timeout): one of them has died or is stuck; ending the job\n", watch_who, world.rank,
                world.world, step, watch_what, (long long)watch_count, watch_limit_s);
        fflush(stderr);
        _exit(1);
    }
    return NULL;
}

static void watch_begin(const char *what, int64_t n) {
    watch_what = what;
    watch_count = n;
    watch_since_ms = (long long)moe_now_ms();
}
static void watch_end(void) { watch_since_ms = 0; }

/* buf[0..n) (elements of `size` bytes) summed in place over comm, in pieces: MPI counts are int */
static void mpi_sum(MPI_Comm comm, void *buf, int64_t n, MPI_Datatype type, size_t size) {
    watch_begin("a sum", n);
    for (int64_t i = 0; i < n; i += 1 << 30) {
        int k = n - i < (1 << 30) ? (int)(n - i) : 1 << 30;
        MPI_Allreduce(MPI_IN_PLACE, (char *)buf + (size_t)i * size, k, type, MPI_SUM, comm);
    }
    watch_end();
}
static void mpi_f32(const moe_comm *c, float *buf, int64_t n) { (void)c; mpi_sum(MPI_COMM_WORLD, buf, n, MPI_FLOAT, 4); }
static void mpi_f64(const moe_comm *c, double *buf, int64_t n) { (void)c; mpi_sum(MPI_COMM_WORLD, buf, n, MPI_DOUBLE, 8); }

/* The two groups of each expert-parallel degree, made on first use (every rank makes the same
 * calls in the same order, so the splits match). */
enum { MAX_DEGREES = 16 };
static struct degree { int P; MPI_Comm group[2]; } degrees[MAX_DEGREES];
static int n_degrees;

static MPI_Comm group_of(int kind, int P) {
    if (kind == MOE_GROUP_WORLD || P <= 1) return kind == MOE_GROUP_EXPERT_DATA || kind == MOE_GROUP_WORLD
                                                      ? MPI_COMM_WORLD : MPI_COMM_SELF;
    for (int i = 0; i < n_degrees; i++)
        if (degrees[i].P == P) return degrees[i].group[kind == MOE_GROUP_EXPERT_DATA];
    if (n_degrees == MAX_DEGREES) return MPI_COMM_NULL;
    struct degree *d = &degrees[n_degrees++];
    d->P = P;
    MPI_Comm_split(MPI_COMM_WORLD, world.rank / P, world.rank, &d->group[0]);   /* blocks of P */
    MPI_Comm_split(MPI_COMM_WORLD, world.rank % P, world.rank, &d->group[1]);   /* stride P */
    return d->group[kind == MOE_GROUP_EXPERT_DATA];
}

static void mpi_group_sum(const moe_comm *c, int kind, int P, void *buf, int64_t n, int f64) {
    (void)c;
    MPI_Comm g = group_of(kind, P);
    int size = 1;
    MPI_Comm_size(g, &size);
    if (size > 1) mpi_sum(g, buf, n, f64 ? MPI_DOUBLE : MPI_FLOAT, f64 ? 8 : 4);
}

/* one peer's blocks as a datatype of rows at absolute byte displacements (MPI_BYTE with
 * count 0: nothing); *bytes counts them */
static MPI_Datatype blocks_type(const int64_t (*blk)[2], int nb, MPI_Datatype row, int64_t row_bytes, int *count,
                                int64_t *bytes) {
    int *len = malloc(sizeof *len * (size_t)(nb + 1));
    MPI_Aint *disp = malloc(sizeof *disp * (size_t)(nb + 1));
    int k = 0;
    for (int i = 0; len && disp && i < nb; i++)
        if (blk[i][1] > 0) {
            len[k] = (int)blk[i][1];
            disp[k++] = (MPI_Aint)(blk[i][0] * row_bytes);
            *bytes += blk[i][1] * row_bytes;
        }
    MPI_Datatype t = MPI_BYTE;
    if (k) {
        MPI_Type_create_hindexed(k, len, disp, row, &t);
        MPI_Type_commit(&t);
    }
    *count = k > 0;
    free(len);
    free(disp);
    return t;
}

static void mpi_exchange(const moe_comm *c, int P, const void *send, const int64_t (*sblk)[2], int ns, void *recv,
                         const int64_t (*rblk)[2], int nr, int64_t row_bytes) {
    (void)c;
    MPI_Comm g = group_of(MOE_GROUP_EXPERT, P);
    int sc[MAX_PEERS], rc[MAX_PEERS], zero[MAX_PEERS] = {0};
    MPI_Datatype st[MAX_PEERS], rt[MAX_PEERS];
    int64_t bytes = 0;
    MPI_Datatype row;
    MPI_Type_contiguous((int)row_bytes, MPI_BYTE, &row);
    MPI_Type_commit(&row);
    for (int q = 0; q < P; q++) {
        st[q] = blocks_type(sblk + q * ns, ns, row, row_bytes, &sc[q], &bytes);
        rt[q] = blocks_type(rblk + q * nr, nr, row, row_bytes, &rc[q], &bytes);
    }
    watch_begin("an exchange", bytes / 4);
    MPI_Alltoallw(send, sc, zero, st, recv, rc, zero, rt, g);
    watch_end();
    for (int q = 0; q < P; q++) {
        if (st[q] != MPI_BYTE) MPI_Type_free(&st[q]);
        if (rt[q] != MPI_BYTE) MPI_Type_free(&rt[q]);
    }
    MPI_Type_free(&row);
}

static void mpi_gather(const moe_comm *c, int P, const float *mine, float *all, int64_t n) {
    (void)c;
    MPI_Comm g = group_of(MOE_GROUP_EXPERT, P);
    int me = 0;
    MPI_Comm_rank(g, &me);
    watch_begin("a gather", n);
    /* in pieces of at most 2^30 floats per rank: piece i of every rank lands at all[p n + i] */
    for (int64_t i = 0; i < n; i += 1 << 28) {
        int k = n - i < (1 << 28) ? (int)(n - i) : 1 << 28;
        MPI_Datatype row;
        MPI_Type_vector(1, k, 1, MPI_FLOAT, &row);
        MPI_Datatype spaced;    /* one piece per rank, n floats apart */
        MPI_Type_create_resized(row, 0, (MPI_Aint)(n * (int64_t)sizeof(float)), &spaced);
        MPI_Type_commit(&spaced);
        MPI_Gather(mine + i, k, MPI_FLOAT, me == 0 ? all + i : NULL, 1, spaced, 0, g);
        MPI_Type_free(&spaced);
        MPI_Type_free(&row);
    }
    watch_end();
}

const moe_comm *moe_comm_start(int *argc, char ***argv, char *err, size_t errlen) {
    if (started) return &world;
    if (MPI_Init(argc, argv) != MPI_SUCCESS) {
        snprintf(err, errlen, "MPI_Init failed");
        return NULL;
    }
    started = 1;
    world = (moe_comm){NULL, 0, 1, mpi_f32, mpi_f64, mpi_group_sum, mpi_exchange, mpi_gather};
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
    if (failed) return;
    for (int i = 0; i < n_degrees; i++) {
        MPI_Comm_free(&degrees[i].group[0]);
        MPI_Comm_free(&degrees[i].group[1]);
    }
    n_degrees = 0;
    MPI_Finalize();
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
