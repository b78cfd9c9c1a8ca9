/* test_comm.c - the expert groups' all-to-all of runtime/comm_mpi.c under mpirun -np 4, flat
 * and hierarchical (2 nodes of 2 ranks): every row lands in its block, and the messages and
 * bytes each rank sends other ranks are those of the formulas
 *   flat:          P - 1 messages, the rows for the other ranks;
 *   hierarchical:  G - 1 messages of N row counts, G - 1 of rows within the node (the rows for
 *                  every rank (m, j), j != l), N - 1 between the nodes (the rows the node's
 *                  ranks send rank (m, l), m != n);
 * and the sums over the groups of degree 2 are over the right ranks; then, with tensor groups of
 * 2 ranks ({0,1}, {2,3}: data-parallel groups {0,2}, {1,3}), the data, tensor and expert groups
 * and the all-gather over a tensor group. */
#include "rt.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define CHECK(c, ...) do { if (!(c)) { failures++; printf("FAIL rank %d: ", me); printf(__VA_ARGS__); printf("\n"); } } while (0)

enum { W = 3 };     /* floats per row */
static int rows(int from, int to) { return 1 + (from * 7 + to * 3) % 5; }
static float value(int from, int to, int i, int k) { return (float)(1000 * from + 100 * to + 10 * i + k); }

int main(int argc, char **argv) {
    char err[256];
    const moe_comm *c = moe_comm_start(&argc, &argv, err, sizeof err);
    int me = c ? c->rank : -1;
    if (!c || c->world != 4) { printf("needs mpirun -np 4: %s\n", c ? "" : err); return 1; }
    enum { P = 4, G = 2, N = P / G };
    int n = me / G, l = me % G;
    for (int hier = 0; hier <= 1; hier++) {
        moe_comm_set_layout(1, hier ? MOE_A2A_HIERARCHICAL : MOE_A2A_FLAT, G);
        /* send: the rows for rank q in two blocks, ranks in reverse order in the buffer;
         * receive: one block per sender, senders in reverse order */
        int64_t sblk[P][2][2], rblk[P][1][2], at = 0;
        float send[P * 5 * W], recv[P * 5 * W];
        for (int q = P - 1; q >= 0; q--) {
            int r = rows(me, q), half = r / 2;
            sblk[q][0][0] = at + (r - half), sblk[q][0][1] = half;    /* the first rows after the second */
            sblk[q][1][0] = at, sblk[q][1][1] = r - half;
            for (int i = 0; i < r; i++)
                for (int k = 0; k < W; k++) {
                    int64_t row = i < half ? sblk[q][0][0] + i : at + (i - half);
                    send[row * W + k] = value(me, q, i, k);
                }
            at += r;
        }
        at = 0;
        for (int q = P - 1; q >= 0; q--) rblk[q][0][0] = at, rblk[q][0][1] = rows(q, me), at += rows(q, me);
        memset(recv, 0, sizeof recv);
        int64_t m0, b0, m1, b1;
        c->traffic(c, &m0, &b0);
        c->exchange(c, P, send, (const int64_t(*)[2])sblk, 2, recv, (const int64_t(*)[2])rblk, 1, W * sizeof(float));
        c->traffic(c, &m1, &b1);
        for (int q = 0; q < P; q++)
            for (int i = 0; i < rows(q, me); i++)
                for (int k = 0; k < W; k++)
                    CHECK(recv[(rblk[q][0][0] + i) * W + k] == value(q, me, i, k), "%s: row %d from %d holds %g",
                          hier ? "hierarchical" : "flat", i, q, recv[(rblk[q][0][0] + i) * W + k]);
        int64_t msg = 0, bytes = 0, rb = W * sizeof(float);
        if (!hier) {
            for (int q = 0; q < P; q++) if (q != me) msg++, bytes += rows(me, q) * rb;
        } else {
            msg = (G - 1) + (G - 1) + (N - 1);
            bytes = (G - 1) * N * 8;
            for (int j = 0; j < G; j++)
                for (int m = 0; m < N && j != l; m++) bytes += rows(me, m * G + j) * rb;
            for (int m = 0; m < N; m++)
                for (int k = 0; k < G && m != n; k++) bytes += rows(n * G + k, m * G + l) * rb;
        }
        CHECK(m1 - m0 == msg && b1 - b0 == bytes, "%s: sent %lld messages, %lld bytes; the formula says %lld, %lld",
              hier ? "hierarchical" : "flat", (long long)(m1 - m0), (long long)(b1 - b0), (long long)msg,
              (long long)bytes);
        if (me == 0) printf("%s all-to-all, P = %d, G = %d: %lld messages, %lld bytes from rank 0\n",
                            hier ? "hierarchical" : "flat", P, G, (long long)(m1 - m0), (long long)(b1 - b0));
    }
    /* degree 2: the expert group {0,1} or {2,3}, the expert-data group {0,2} or {1,3} */
    float v[2] = {(float)(1 << me), (float)(1 << me)};
    c->group_sum(c, MOE_GROUP_EXPERT, 2, &v[0], 1, 0);
    c->group_sum(c, MOE_GROUP_EXPERT_DATA, 2, &v[1], 1, 0);
    CHECK(v[0] == (float)(me < 2 ? 1 + 2 : 4 + 8), "expert group sum %g", v[0]);
    CHECK(v[1] == (float)(me % 2 ? 2 + 8 : 1 + 4), "expert-data group sum %g", v[1]);
    float mine[2] = {(float)me, (float)me + 0.5f}, all[4] = {0};
    c->gather_f32(c, 2, mine, me % 2 ? NULL : all, 2);
    if (me % 2 == 0)
        CHECK(all[0] == me && all[1] == me + 0.5f && all[2] == me + 1 && all[3] == me + 1.5f, "gather %g %g %g %g",
              all[0], all[1], all[2], all[3]);
    moe_comm_set_layout(2, MOE_A2A_FLAT, 0);
    CHECK(c->tensor == 2 && moe_comm_data_rank(c) == me / 2 && moe_comm_data_size(c) == 2 &&
          moe_comm_tensor_rank(c) == me % 2, "the layout of tensor groups of 2");
    float s[4] = {(float)(1 << me), (float)(1 << me), (float)(1 << me), (float)(1 << me)};
    c->group_sum(c, MOE_GROUP_TENSOR, 2, &s[0], 1, 0);
    c->group_sum(c, MOE_GROUP_DATA, 1, &s[1], 1, 0);
    c->group_sum(c, MOE_GROUP_EXPERT, 2, &s[2], 1, 0);       /* the data ranks of one block */
    c->group_sum(c, MOE_GROUP_EXPERT_DATA, 2, &s[3], 1, 0);  /* one block: this rank alone */
    CHECK(s[0] == (float)(me < 2 ? 1 + 2 : 4 + 8), "tensor group sum %g", s[0]);
    CHECK(s[1] == (float)(me % 2 ? 2 + 8 : 1 + 4), "data group sum %g", s[1]);
    CHECK(s[2] == s[1], "expert group sum %g (within the data-parallel group)", s[2]);
    CHECK(s[3] == (float)(1 << me), "expert-data group sum %g", s[3]);
    float part[3] = {(float)me, (float)me + 0.25f, (float)me + 0.5f}, both[6] = {0};
    c->allgather_f32(c, MOE_GROUP_TENSOR, 2, part, both, 3);
    for (int q = 0; q < 2; q++)
        for (int i = 0; i < 3; i++)
            CHECK(both[3 * q + i] == (float)(me / 2 * 2 + q) + 0.25f * (float)i, "all-gather [%d] = %g", 3 * q + i,
                  both[3 * q + i]);
    moe_comm_finish(0);
    if (me == 0 && !failures) printf("ok\n");
    return failures ? 1 : 0;
}
