/* moe_gate.h - the gate's choice of experts for one token, shared by the CPU and the CUDA
 * kernels (host and device code: MOE_HD), so that every target routes identically.
 *
 * k = 1: the expert of the largest probability, or with rsample (noisy_gate = rsample, in
 * training) the largest logit plus Gumbel noise. k = 2: the first as for k = 1 without
 * noise; the second the largest logit among the others, or with `second` (second-expert
 * sampling, in training) the largest logit plus Gumbel noise. k > 2: the k largest
 * probabilities. Ties go to the lower expert index. Noise draws come from `stream` at index
 * s * E + e (moe-semantics.md section 2).
 */
#ifndef MOE_GATE_H
#define MOE_GATE_H
#include "moe_rng.h"

/* argmax of v[0..n) without `skip`, ties to the lower index */
MOE_HD int moe_argmax(const float *v, int n, int skip) {
    int best = -1;
    for (int e = 0; e < n; e++)
        if (e != skip && (best < 0 || v[e] > v[best])) best = e;
    return best;
}

/* argmax of lg[e] + Gumbel(stream, s * E + e) over e != skip */
MOE_HD int moe_argmax_gumbel(const float *lg, int E, int skip, uint64_t stream, uint64_t s) {
    int best = -1;
    double bv = 0.0;
    for (int e = 0; e < E; e++) {
        if (e == skip) continue;
        double v = lg[e] + moe_gumbel(stream, s * (uint64_t)E + (uint64_t)e);
        if (best < 0 || v > bv) { bv = v; best = e; }
    }
    return best;
}

/* ri[0..k): the token's choices in rank order, from its probabilities p and logits lg */
MOE_HD void moe_gate_choose(int32_t *ri, const float *p, const float *lg, int E, int k, int rsample, int second,
                            uint64_t stream, uint64_t s) {
    if (k == 1) {
        ri[0] = rsample ? moe_argmax_gumbel(lg, E, -1, stream ^ 0x45A3B1ull, s) : moe_argmax(p, E, -1);
    } else if (k == 2) {
        ri[0] = moe_argmax(p, E, -1);
        ri[1] = second ? moe_argmax_gumbel(lg, E, ri[0], stream ^ 0x2D0C5ull, s) : moe_argmax(lg, E, ri[0]);
    } else {
        for (int j = 0; j < k; j++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                int taken = 0;
                for (int q = 0; q < j; q++) taken |= ri[q] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            ri[j] = best;
        }
    }
}
#endif
