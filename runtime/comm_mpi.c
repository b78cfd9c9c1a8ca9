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
#include <string.h>

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

/* the layout (moe_comm_set_layout): the tensor groups' size, the expert groups' all-to-all */
static int tensor = 1, a2a_kind = MOE_A2A_AUTO, a2a_ranks_per_node;

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
 * calls in the same order, so the splits match); for a hierarchical all-to-all (G > 0) the
 * expert group's nodes of G ranks (intra) and its ranks at the same place on each node (inter).
 * The data-parallel and tensor groups of the layout (moe_program.h) likewise. */
enum { MAX_DEGREES = 16 };
static struct degree { int P, G; MPI_Comm group[2], intra, inter; } degrees[MAX_DEGREES];
static int n_degrees, host_ranks = 1;
static MPI_Comm data_group = MPI_COMM_NULL, tensor_group = MPI_COMM_NULL;

/* this rank's place in its data-parallel group, and in its expert group of degree P */
static int data_rank(void) { return world.rank / tensor; }
static int expert_rank(int P) { return data_rank() % P; }
static int64_t sent_messages, sent_bytes;   /* by this rank's exchanges, to other ranks */

static void mpi_traffic(const moe_comm *c, int64_t *messages, int64_t *bytes) {
    (void)c;
    *messages = sent_messages;
    *bytes = sent_bytes;
}
static void count_sent(int to_self, int64_t bytes) {
    if (to_self || bytes <= 0) return;
    sent_messages++;
    sent_bytes += bytes;
}

/* G ranks per node where the exchange of degree P is hierarchical, else 0 (flat) */
static int hier_nodes(int P) {
    int G = a2a_ranks_per_node > 0 ? a2a_ranks_per_node : host_ranks;
    int want = a2a_kind == MOE_A2A_HIERARCHICAL || (a2a_kind == MOE_A2A_AUTO && G < P);
    return want && G > 1 && G < P && P % G == 0 ? G : 0;
}

/* the groups of degree P > 1 (NULL past MAX_DEGREES degrees; the compiler makes at most 8) */
static struct degree *degree_of(int P) {
    for (int i = 0; i < n_degrees; i++)
        if (degrees[i].P == P) return &degrees[i];
    if (n_degrees == MAX_DEGREES) return NULL;
    struct degree *d = &degrees[n_degrees++];
    d->P = P;
    int t = world.rank % tensor;    /* within the data-parallel group of tensor rank t: */
    MPI_Comm_split(MPI_COMM_WORLD, data_rank() / P * tensor + t, world.rank, &d->group[0]);   /* blocks of P */
    MPI_Comm_split(MPI_COMM_WORLD, expert_rank(P) * tensor + t, world.rank, &d->group[1]);    /* stride P */
    d->G = hier_nodes(P);
    if (d->G) {
        int at = expert_rank(P);
        MPI_Comm_split(d->group[0], at / d->G, at, &d->intra);
        MPI_Comm_split(d->group[0], at % d->G, at, &d->inter);
    }
    return d;
}

static MPI_Comm group_of(int kind, int P) {
    if (tensor > 1 && data_group == MPI_COMM_NULL) {
        MPI_Comm_split(MPI_COMM_WORLD, world.rank % tensor, world.rank, &data_group);
        MPI_Comm_split(MPI_COMM_WORLD, data_rank(), world.rank, &tensor_group);
    }
    switch (kind) {
    case MOE_GROUP_DATA: return tensor > 1 ? data_group : MPI_COMM_WORLD;
    case MOE_GROUP_TENSOR: return tensor > 1 ? tensor_group : MPI_COMM_SELF;
    case MOE_GROUP_EXPERT:
    case MOE_GROUP_EXPERT_DATA:
        if (P <= 1) return kind == MOE_GROUP_EXPERT ? MPI_COMM_SELF : group_of(MOE_GROUP_DATA, 1);
        struct degree *d = degree_of(P);
        return d ? d->group[kind == MOE_GROUP_EXPERT_DATA] : MPI_COMM_NULL;
    case MOE_GROUP_WORLD: return MPI_COMM_WORLD;
    }
    return MPI_COMM_SELF;
}

static void mpi_group_sum(const moe_comm *c, int kind, int P, void *buf, int64_t n, int f64) {
    (void)c;
    MPI_Comm g = group_of(kind, P);
    int size = 1;
    MPI_Comm_size(g, &size);
    if (size > 1) mpi_sum(g, buf, n, f64 ? MPI_DOUBLE : MPI_FLOAT, f64 ? 8 : 4);
}

/* The gradient buckets' sums in the background (overlap with the backward): started with
 * MPI_Iallreduce, and driven on by every later start (MPI_Testall; Open MPI progresses a
 * non-blocking collective only inside MPI calls, and the backward's exchanges make more). */
static MPI_Request bucket_req[MOE_MAX_BUCKETS];
static char bucket_started[MOE_MAX_BUCKETS];   /* (a request MPI_Testall completed is MPI_REQUEST_NULL) */
static int buckets_ready;

static void mpi_sum_start(const moe_comm *c, int slot, int kind, int P, float *buf, int64_t n) {
    (void)c;
    if (slot < 0 || slot >= MOE_MAX_BUCKETS || n > (1 << 30)) return;     /* finish sums it */
    if (!buckets_ready)
        for (int i = 0; i < MOE_MAX_BUCKETS; i++) bucket_req[i] = MPI_REQUEST_NULL;
    buckets_ready = 1;
    MPI_Comm g = group_of(kind, P);
    int size = 1;
    MPI_Comm_size(g, &size);
    if (size <= 1 || bucket_started[slot]) return;
    MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, g, &bucket_req[slot]);
    bucket_started[slot] = 1;
    int done;
    MPI_Testall(MOE_MAX_BUCKETS, bucket_req, &done, MPI_STATUSES_IGNORE);
}

static void mpi_sum_finish(const moe_comm *c, int slot, int kind, int P, float *buf, int64_t n) {
    if (slot >= 0 && slot < MOE_MAX_BUCKETS && bucket_started[slot]) {
        watch_begin("a sum", n);
        MPI_Wait(&bucket_req[slot], MPI_STATUS_IGNORE);     /* (returns at once for a completed one) */
        watch_end();
        bucket_started[slot] = 0;
        return;
    }
    mpi_group_sum(c, kind, P, buf, n, 0);
}

/* an exchange's bookkeeping; without it the exchange cannot be made, and a rank that leaves
 * makes mpirun stop the job */
static void *must_alloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "%s (rank %d): out of memory for an all-to-all's buffers\n", watch_who, world.rank);
        _exit(1);
    }
    return p;
}

/* one peer's blocks as a datatype of rows at absolute byte displacements (MPI_BYTE with
 * count 0: nothing); *bytes counts them */
static MPI_Datatype blocks_type(const int64_t (*blk)[2], int nb, MPI_Datatype row, int64_t row_bytes, int *count,
                                int64_t *bytes) {
    int *len = must_alloc(sizeof *len * (size_t)(nb + 1));
    MPI_Aint *disp = must_alloc(sizeof *disp * (size_t)(nb + 1));
    int k = 0;
    for (int i = 0; i < nb; i++)
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

static void hier_exchange(const struct degree *d, const void *send, const int64_t (*sblk)[2], int ns, void *recv,
                          const int64_t (*rblk)[2], int nr, int64_t row_bytes);

static void mpi_exchange(const moe_comm *c, int P, const void *send, const int64_t (*sblk)[2], int ns, void *recv,
                         const int64_t (*rblk)[2], int nr, int64_t row_bytes) {
    (void)c;
    const struct degree *d = degree_of(P);
    if (d->G) return hier_exchange(d, send, sblk, ns, recv, rblk, nr, row_bytes);
    int *sc = must_alloc(sizeof(int) * 3 * (size_t)P), *rc = sc + P, *zero = rc + P;
    MPI_Datatype *st = must_alloc(sizeof(MPI_Datatype) * 2 * (size_t)P), *rt = st + P;
    int64_t bytes = 0;
    MPI_Datatype row;
    MPI_Type_contiguous((int)row_bytes, MPI_BYTE, &row);
    MPI_Type_commit(&row);
    int me = expert_rank(P);
    for (int q = 0; q < P; q++) {
        int64_t out = 0;
        st[q] = blocks_type(sblk + q * ns, ns, row, row_bytes, &sc[q], &out);
        rt[q] = blocks_type(rblk + q * nr, nr, row, row_bytes, &rc[q], &bytes);
        count_sent(q == me, out);
        bytes += out;
        zero[q] = 0;
    }
    watch_begin("an exchange", bytes / 4);
    MPI_Alltoallw(send, sc, zero, st, recv, rc, zero, rt, d->group[0]);
    watch_end();
    for (int q = 0; q < P; q++) {
        if (st[q] != MPI_BYTE) MPI_Type_free(&st[q]);
        if (rt[q] != MPI_BYTE) MPI_Type_free(&rt[q]);
    }
    MPI_Type_free(&row);
    free(sc);
    free(st);
}

/* rows[i] of blocks blk[0 .. n) */
static int64_t rows_of(const int64_t (*blk)[2], int n) {
    int64_t r = 0;
    for (int i = 0; i < n; i++) r += blk[i][1];
    return r;
}

/* The hierarchical all-to-all of an expert group of P = N G ranks (rank n G + l is rank l of
 * node n). Stage 1, within the node: rank l sends rank j everything for ranks (m, j), m over
 * the nodes, after the row counts. Stage 2, between the nodes: rank (n, j) sends rank (m, j)
 * what its node's ranks sent for it, rank by rank. The rows arrive in the same order as the
 * flat exchange gives them (by sending rank, each rank's blocks in order), so the receiver
 * puts them in its blocks alike. Counts are rows (int: an MPI count). */
static void hier_exchange(const struct degree *d, const void *send, const int64_t (*sblk)[2], int ns, void *recv,
                          const int64_t (*rblk)[2], int nr, int64_t rb) {
    int P = d->P, G = d->G, N = P / G, me = expert_rank(P), n = me / G, l = me % G;
    int64_t *to = must_alloc(sizeof(int64_t) * (size_t)(3 * P)), *from = to + P, *cs = from + P, *cr;
    for (int q = 0; q < P; q++) to[q] = rows_of(sblk + q * ns, ns), from[q] = rows_of(rblk + q * nr, nr);
    for (int j = 0; j < G; j++)
        for (int m = 0; m < N; m++) cs[j * N + m] = to[m * G + j];
    cr = must_alloc(sizeof(int64_t) * (size_t)P);   /* cr[k N + m]: rows node rank k sends (m, l) */
    MPI_Datatype row;
    MPI_Type_contiguous((int)rb, MPI_BYTE, &row);
    MPI_Type_commit(&row);
    int *cnt = must_alloc(sizeof(int) * (size_t)(4 * (G > N ? G : N)));
    int *scnt = cnt, *sdsp = cnt + (G > N ? G : N), *rcnt = sdsp + (G > N ? G : N), *rdsp = rcnt + (G > N ? G : N);
    watch_begin("an exchange", rows_of(sblk, P * ns) * rb / 4);
    MPI_Alltoall(cs, N, MPI_INT64_T, cr, N, MPI_INT64_T, d->intra);
    for (int j = 0; j < G; j++) count_sent(j == l, (int64_t)sizeof(int64_t) * N);
    /* stage 1: for rank j of the node, the blocks for (m, j), m = 0 .. N-1 */
    int64_t s1 = rows_of(sblk, P * ns), r1 = 0;
    for (int k = 0; k < P; k++) r1 += cr[k];
    char *b1 = must_alloc((size_t)(s1 * rb)), *b2 = must_alloc((size_t)(r1 * rb));
    int64_t at = 0;
    for (int j = 0; j < G; j++) {
        sdsp[j] = (int)at;
        for (int m = 0; m < N; m++)
            for (int i = 0, q = m * G + j; i < ns; i++) {
                memcpy(b1 + at * rb, (const char *)send + sblk[q * ns + i][0] * rb, (size_t)(sblk[q * ns + i][1] * rb));
                at += sblk[q * ns + i][1];
            }
        scnt[j] = (int)(at - sdsp[j]);
        count_sent(j == l, scnt[j] * rb);
    }
    at = 0;
    for (int k = 0; k < G; k++) {
        rdsp[k] = (int)at;
        for (int m = 0; m < N; m++) at += cr[k * N + m];
        rcnt[k] = (int)(at - rdsp[k]);
    }
    MPI_Alltoallv(b1, scnt, sdsp, row, b2, rcnt, rdsp, row, d->intra);
    /* stage 2: for node m, what each rank k of this node sent for (m, l), k by k */
    free(b1);
    b1 = must_alloc((size_t)(r1 * rb));
    at = 0;
    for (int m = 0; m < N; m++) {
        sdsp[m] = (int)at;
        for (int k = 0; k < G; k++) {
            int64_t first = rdsp[k];
            for (int i = 0; i < m; i++) first += cr[k * N + i];
            memcpy(b1 + at * rb, b2 + first * rb, (size_t)(cr[k * N + m] * rb));
            at += cr[k * N + m];
        }
        scnt[m] = (int)(at - sdsp[m]);
        count_sent(m == n, scnt[m] * rb);
    }
    int64_t r2 = 0;
    for (int m = 0; m < N; m++) {
        rdsp[m] = (int)r2;
        for (int k = 0; k < G; k++) r2 += from[m * G + k];
        rcnt[m] = (int)(r2 - rdsp[m]);
    }
    free(b2);
    b2 = must_alloc((size_t)(r2 * rb));
    MPI_Alltoallv(b1, scnt, sdsp, row, b2, rcnt, rdsp, row, d->inter);
    watch_end();
    at = 0;     /* into the blocks of each sending rank, in rank order */
    for (int q = 0; q < P; q++)
        for (int i = 0; i < nr; i++) {
            memcpy((char *)recv + rblk[q * nr + i][0] * rb, b2 + at * rb, (size_t)(rblk[q * nr + i][1] * rb));
            at += rblk[q * nr + i][1];
        }
    MPI_Type_free(&row);
    free(b1);
    free(b2);
    free(cnt);
    free(cr);
    free(to);
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

/* every rank of the group gets the n floats of each, in group order (pieces of at most 2^28
 * floats per rank, as mpi_gather) */
static void mpi_allgather(const moe_comm *c, int kind, int P, const float *mine, float *all, int64_t n) {
    (void)c;
    MPI_Comm g = group_of(kind, P);
    watch_begin("a gather", n);
    for (int64_t i = 0; i < n; i += 1 << 28) {
        int k = n - i < (1 << 28) ? (int)(n - i) : 1 << 28;
        MPI_Datatype row, spaced;
        MPI_Type_vector(1, k, 1, MPI_FLOAT, &row);
        MPI_Type_create_resized(row, 0, (MPI_Aint)(n * (int64_t)sizeof(float)), &spaced);
        MPI_Type_commit(&spaced);
        MPI_Allgather(mine + i, k, MPI_FLOAT, all + i, 1, spaced, g);
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
    world = (moe_comm){NULL, 0, 1, 1, mpi_f32, mpi_f64, mpi_group_sum, mpi_exchange, mpi_gather, mpi_allgather,
                       mpi_traffic, mpi_sum_start, mpi_sum_finish};
    MPI_Comm_rank(MPI_COMM_WORLD, &world.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world.world);
    MPI_Comm host;     /* the ranks on this host: the nodes of a hierarchical all-to-all by default */
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world.rank, MPI_INFO_NULL, &host);
    MPI_Comm_size(host, &host_ranks);
    MPI_Comm_free(&host);
    pthread_t t;
    if (world.world > 1 && watch_limit_s > 0 && !pthread_create(&t, NULL, watchdog, NULL)) pthread_detach(t);
    return &world;
}

/* the groups made so far, freed (collective: every rank calls it alike) */
static void drop_degrees(void) {
    for (int i = 0; i < n_degrees; i++) {
        MPI_Comm_free(&degrees[i].group[0]);
        MPI_Comm_free(&degrees[i].group[1]);
        if (degrees[i].G) {
            MPI_Comm_free(&degrees[i].intra);
            MPI_Comm_free(&degrees[i].inter);
        }
    }
    n_degrees = 0;
    if (data_group != MPI_COMM_NULL) {
        MPI_Comm_free(&data_group);
        MPI_Comm_free(&tensor_group);
    }
}

/* on every rank alike: the groups made for another layout are made again */
void moe_comm_set_layout(int tensor_ranks, int kind, int ranks_per_node) {
    if (started) drop_degrees();
    tensor = world.tensor = tensor_ranks > 1 ? tensor_ranks : 1;
    a2a_kind = kind;
    a2a_ranks_per_node = ranks_per_node;
}

void moe_comm_finish(int failed) {
    if (!started) return;
    started = 0;
    /* A rank that fails leaves without MPI_Finalize, which waits for the others: its exit
     * status makes the launcher stop the job, also where the others wait in a collective. */
    if (failed) return;
    drop_degrees();
    MPI_Finalize();
}

const moe_comm *moe_comm_world(void) { return started ? &world : moe_comm_local(); }
#else
void moe_comm_set_layout(int tensor_ranks, int kind, int ranks_per_node) {
    tensor = tensor_ranks;
    a2a_kind = kind;
    a2a_ranks_per_node = ranks_per_node;
}
const moe_comm *moe_comm_start(int *argc, char ***argv, char *err, size_t errlen) {
    (void)argc, (void)argv;
    snprintf(err, errlen, "this build of moec has no MPI (install libopenmpi-dev and rebuild moec)");
    return NULL;
}
void moe_comm_finish(int failed) { (void)failed; }
const moe_comm *moe_comm_world(void) { return moe_comm_local(); }
#endif
