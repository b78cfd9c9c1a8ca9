/* moe_gate.h - the gate's rules that decide routing, shared by the CPU and the CUDA kernels
 * (host and device code: MOE_HD), so that every target routes identically: the choice of
 * experts for one token, the capacity, a token's rows and output weights, and the record
 * of the layer's results.
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
#include "moe_abi.h"
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

#define MOE_FLT_EPSILON 1.19209290e-07f

/* The capacity with token dropping: ceil(S / E * cf_eff), cf_eff = k * cf (eval_cf outside
 * training and grad) in double rounded once to fp32, the rest in fp32 (DeepSpeed's
 * arithmetic, moe-semantics.md); at least min_capacity. */
MOE_HD int moe_gate_capacity(int S, int E, int k, int mode, double cf, double eval_cf, int min_capacity) {
    double c = mode == MOE_MODE_TRAIN || mode == MOE_MODE_GRAD ? cf : eval_cf;
    float cf_eff = (float)(k * c);
    int cap = (int)ceilf((float)S / (float)E * cf_eff);
    return cap > min_capacity ? cap : min_capacity;
}

/* Once the slots are known (ri[k + j]: the slot in its expert, -1 when dropped): the rows
 * (slot + the expert's first row off[e]) and the output weights w [k] of one token:
 * p[e] for k = 1, p[e] over the kept choices' sum otherwise, 0 when dropped. Returns the
 * token's dropped choices. */
MOE_HD int moe_gate_rows(int32_t *ri, float *w, const float *p, const int32_t *off, int k) {
    int dropped = 0;
    float sum = 0.0f;
    for (int j = 0; j < k; j++) {
        if (ri[k + j] < 0) { dropped++; continue; }
        ri[k + j] += off[ri[j]];
        sum += p[ri[j]];
    }
    float denom = sum > MOE_FLT_EPSILON ? sum : MOE_FLT_EPSILON;
    for (int j = 0; j < k; j++) w[j] = ri[k + j] < 0 ? 0.0f : k == 1 ? p[ri[j]] : p[ri[j]] / denom;
    return dropped;
}

/* The layer's results once every token is routed: capacity and drops into its counts
 * record; l_aux, z (the mean of lse^2), drops, choices and per-expert loads added to its
 * statistics (moe_abi.h). */
MOE_HD void moe_gate_record(int32_t *counts, double *stats, double *loads, int E, int C, int dropped, double laux,
                            double z, int S, int k) {
    counts[MOE_CAP(E)] = C;
    counts[MOE_DROPPED(E)] = dropped;
    stats[MOE_STAT_AUX] += laux;
    stats[MOE_STAT_Z] += z;
    stats[MOE_STAT_DROPPED] += dropped;
    stats[MOE_STAT_CHOICES] += (double)S * k;
    for (int e = 0; e < E; e++) loads[e] += (double)counts[MOE_LOAD(E) + e];
}
#endif
