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

/* buf = the mean of buf over all ranks */
static inline void k_allreduce_mean(const moe_comm *comm, float *buf /* [n] */, long n) {
    if (!comm || comm->world <= 1) return;
    comm->allreduce_f32(comm, buf, n);
    k_scale(buf, 1.0f / (float)comm->world, n);
}

/* Gradients of the experts of degree P: the sum over the ranks that hold the same experts,
 * over all ranks (each rank's expert gradients already sum its group's tokens) */
static inline void k_allreduce_experts(const moe_comm *comm, int P, float *buf /* [n] */, long n) {
    if (!comm || comm->world <= 1) return;
    comm->group_sum(comm, MOE_GROUP_EXPERT_DATA, P, buf, n, 0);
    k_scale(buf, 1.0f / (float)comm->world, n);
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
 * over the expert group of degree P for expert gradients (each rank holds other experts);
 * then k_grad_clip (k_optim.h) */
static inline void k_grad_sumsq(double *norm_clip /* [2] */, const moe_comm *comm, int P, const float *g /* [n] */,
                                long n, int first) {
    double s = k_sumsq(g, n);
    if (P > 1 && comm) comm->group_sum(comm, MOE_GROUP_EXPERT, P, &s, 1, 1);
    norm_clip[0] = first ? s : norm_clip[0] + s;
}
#endif
