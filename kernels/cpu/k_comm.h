/* k_comm.h - communication steps on the CPU: collectives through the runtime's communicator
 * table (moe_program.h), which takes device buffers. In one process they are identities.
 * Not here: the all-to-all of a one-process expert group, a row copy (k_act.h: k_copy_rows).
 *
 * Expert parallelism (moe_abi.h, the received layout): the P ranks of a layer's expert group
 * hold L experts each, rank q the experts q L .. q L + L - 1. A rank's routed rows are ordered
 * expert by expert, so the rows for rank q are one block; the rows a rank receives are ordered
 * by its local expert, then by the rank they came from. Unlike the compute kernels these
 * allocate (the block tables, and MPI's own datatypes).
 */
#ifndef MOE_K_COMM_H
#define MOE_K_COMM_H
#include "k_common.h"
#include "k_optim.h" /* k_scale, k_sumsq */
#include "moe_program.h"

/* A bucket of the gradient buffer summed over its group (MOE_GROUP_DATA, or for the experts of
 * degree P MOE_GROUP_EXPERT_DATA: the ranks that hold the same experts, whose gradients
 * already sum their expert group's tokens) and divided by the data-parallel ranks: the mean
 * gradient. Start: in the background, once the backward has written the bucket (reduce: the
 * last micro-step); finish: in the optimizer, waiting for it or summing at once. */
static inline void k_allreduce_start(const moe_comm *comm, int reduce, int slot, int group, int P,
                                     float *grads /* [n] */, long n) {
    if (reduce && comm && moe_comm_data_size(comm) > 1) comm->sum_start(comm, slot, group, P, grads, n);
}
static inline void k_allreduce_finish(const moe_comm *comm, int slot, int group, int P, float *grads /* [n] */,
                                      long n) {
    if (!comm || moe_comm_data_size(comm) <= 1) return;
    comm->sum_finish(comm, slot, group, P, grads, n);
    k_scale(grads, 1.0f / (float)moe_comm_data_size(comm), n);
}

/* y [rows, width] (acc: +=) = res + b + the sum of x over the tensor group of T ranks: the whole
 * output of a layer split by rows (rows: S, or an expert-sliced layer's routed rows, the same on
 * every rank of the group). The parts are gathered and summed in rank order, so every rank of
 * the group gets the same bits whatever MPI's reduction order (the gates after the layer must
 * route alike on every rank of the group). */
static inline void k_tp_sum(const moe_comm *comm, int T, float *y, const float *x, const float *b, const float *res,
                            k_rows rows, long width, int acc) {
    long S = k_rows_get(rows), n = S * width;
    int parts = comm && comm->tensor > 1 ? T : 1;
    float *all = parts > 1 ? malloc(sizeof(float) * (size_t)n * (size_t)T) : NULL;
    if (parts > 1 && !all) abort();
    if (all) comm->allgather_f32(comm, MOE_GROUP_TENSOR, T, x, all, n);
    const float *src = all ? all : x;
#pragma omp parallel for schedule(static) if (n * parts >= K_OMP_MIN_WORK)
    for (long r = 0; r < S; r++)
        for (long j = 0; j < width; j++) {
            long i = r * width + j;
            float s = src[i];
            for (int q = 1; q < parts; q++) s += src[(long)q * n + i];
            if (b) s += b[j];
            if (res) s += res[i];
            y[i] = acc ? y[i] + s : s;
        }
    free(all);
}

/* The received layout of this rank's L experts (moe_abi.h) from the counts of every rank of
 * the group: counts [MOE_COUNTS_LEN(P L)] -> xcounts [MOE_XCOUNTS_LEN(L, P)] */
static inline void k_a2a_counts(const moe_comm *comm, int32_t *xcounts, const int32_t *counts, int P, int L) {
    int64_t (*blk)[2] = malloc(sizeof *blk * 2 * (size_t)P);
    if (!blk) abort();
    int64_t(*sblk)[2] = blk, (*rblk)[2] = blk + P;
    for (int q = 0; q < P; q++) {
        sblk[q][0] = MOE_CNT(P * L) + (int64_t)q * L, sblk[q][1] = L;
        rblk[q][0] = MOE_XSRC(L) + (int64_t)q * L, rblk[q][1] = L;
    }
    comm->exchange(comm, P, counts, (const int64_t(*)[2])sblk, 1, xcounts, (const int64_t(*)[2])rblk, 1, 4);
    free(blk);
    const int32_t *src = xcounts + MOE_XSRC(L);
    memset(xcounts, 0, sizeof(int32_t) * MOE_COUNTS_LEN(L));
    for (int e = 0; e < L; e++) {
        int32_t c = 0;
        for (int q = 0; q < P; q++) c += src[q * L + e];
        xcounts[MOE_CNT(L) + e] = c;
        xcounts[MOE_OFF(L) + e + 1] = xcounts[MOE_OFF(L) + e] + c;
    }
    xcounts[MOE_CAP(L)] = counts[MOE_CAP(P * L)];
}

/* The routed rows of width floats to the experts' ranks (to_experts: x in this rank's routed
 * order, y in the received layout) or back (x received, y routed) */
static inline void k_a2a_rows(const moe_comm *comm, float *y, const float *x, const int32_t *counts,
                              const int32_t *xcounts, int P, int L, long width, int to_experts) {
    int64_t (*blk)[2] = malloc(sizeof *blk * (size_t)P * (size_t)(L + 1));
    if (!blk) abort();
    int64_t(*tok)[2] = blk, (*exp)[2] = blk + P;     /* [P] routed blocks, [P][L] received blocks */
    const int32_t *off = counts + MOE_OFF(P * L), *xoff = xcounts + MOE_OFF(L), *src = xcounts + MOE_XSRC(L);
    for (int q = 0; q < P; q++) {
        tok[q][0] = off[q * L], tok[q][1] = off[q * L + L] - off[q * L];
        for (int e = 0; e < L; e++) {
            int64_t before = 0;
            for (int r = 0; r < q; r++) before += src[r * L + e];
            exp[q * L + e][0] = xoff[e] + before, exp[q * L + e][1] = src[q * L + e];
        }
    }
    const int64_t(*t)[2] = (const int64_t(*)[2])tok, (*e)[2] = (const int64_t(*)[2])exp;
    int64_t row = (int64_t)sizeof(float) * width;
    if (to_experts) comm->exchange(comm, P, x, t, 1, y, e, L, row);
    else comm->exchange(comm, P, x, e, L, y, t, 1, row);
    free(blk);
}

/* The global gradient norm in parts: norm_clip[0] (= if first) += the squares of g, summed
 * over `group` of degree P > 1 where each of its ranks holds other parameters (the expert
 * group for experts, the tensor group for split tensors); then k_grad_clip (k_optim.h) */
static inline void k_grad_sumsq(double *norm_clip /* [2] */, const moe_comm *comm, int group, int P,
                                const float *g /* [n] */, long n, int first) {
    double s = k_sumsq(g, n);
    if (P > 1 && comm) comm->group_sum(comm, group, P, &s, 1, 1);
    norm_clip[0] = first ? s : norm_clip[0] + s;
}
#endif
