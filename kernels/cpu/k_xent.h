/* k_xent.h - softmax cross-entropy over the vocabulary and the knowledge-distillation KL
 * (Mixture-of-Students), forward and backward, on the CPU.
 *
 * One OpenMP loop over tokens; each row is a few fused passes (max, exp + sum, normalise).
 * Sums over V run in float blocks of K_XENT_BLOCK added into a double, so a 50k vocabulary
 * keeps about fp32 precision. Losses come from log-sum-exp, not from log(prob), so a
 * probability that underflows still gives a finite loss.
 * Targets outside [0, V) (e.g. -1 as an ignore index) give loss 0 and a zero gradient row.
 */
#ifndef MOE_K_XENT_H
#define MOE_K_XENT_H
#include "k_common.h"
#include "k_act.h" /* k_fast_expf */

#ifndef K_XENT_BLOCK
#define K_XENT_BLOCK 512
#endif

static inline float k_xent_rowmax(const float *z, int V) {
    float mx = z[0];
K_SIMD_MAX(mx)
    for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
    return mx;
}

/* z[v] = exp(z[v] * a - b), returns the sum (float blocks into a double) */
static inline double k_xent_exp_sum(float *dst, const float *z, int V, float a, float b) {
    double total = 0.0;
    for (int v0 = 0; v0 < V; v0 += K_XENT_BLOCK) {
        int n = V - v0 < K_XENT_BLOCK ? V - v0 : K_XENT_BLOCK;
        float part = 0.0f;
#pragma omp simd reduction(+ : part)
        for (int v = 0; v < n; v++) {
            float e = k_fast_expf(z[v0 + v] * a - b);
            dst[v0 + v] = e;
            part += e;
        }
        total += part;
    }
    return total;
}

/* probs_inout: logits in, softmax out. losses[s] = logsumexp(z_s) - z_s[target].
 * lm (the statistics record's LM entry, may be NULL) += the mean of losses, summed in order. */
static inline void k_xent_fwd(float *probs_inout /* [S,V] */, float *losses /* [S] */, double *lm,
                              const int32_t *targets /* [S] */, int S, int V) {
#pragma omp parallel for schedule(static) if ((long)S * V >= K_OMP_MIN_WORK / 4)
    for (int s = 0; s < S; s++) {
        float *z = probs_inout + (long)s * V;
        int t = targets[s];
        float mx = k_xent_rowmax(z, V);
        float zt = (t >= 0 && t < V) ? z[t] : 0.0f;
        double sum = k_xent_exp_sum(z, z, V, 1.0f, mx);
        float inv = (float)(1.0 / sum);
#pragma omp simd
        for (int v = 0; v < V; v++) z[v] *= inv;
        losses[s] = (t >= 0 && t < V) ? (float)(log(sum) + (double)mx - (double)zt) : 0.0f;
    }
    if (lm) {
        double total = 0.0;
        for (int s = 0; s < S; s++) total += losses[s];
        *lm += total / (double)S;
    }
}

/* dlogits = (probs - onehot(target)) * scale; dlogits may alias probs. Overwrites (the logits
 * have no other consumer). */
static inline void k_xent_bwd(float *dlogits /* [S,V] */, const float *probs /* [S,V] */, const int32_t *targets /* [S] */,
                              float scale, int S, int V) {
#pragma omp parallel for schedule(static) if ((long)S * V >= K_OMP_MIN_WORK)
    for (int s = 0; s < S; s++) {
        const float *p = probs + (long)s * V;
        float *d = dlogits + (long)s * V;
        int t = targets[s];
        if (t < 0 || t >= V) {
            memset(d, 0, (size_t)V * sizeof(float));
            continue;
        }
#pragma omp simd
        for (int v = 0; v < V; v++) d[v] = p[v] * scale;
        d[t] -= scale;
    }
}

/* the gradient of loss_scale x the mean loss over the S tokens */
static inline void k_xent_bwd_mean(float *dlogits /* [S,V] */, const float *probs /* [S,V] */,
                                   const int32_t *targets /* [S] */, float loss_scale, int S, int V) {
    k_xent_bwd(dlogits, probs, targets, loss_scale / (float)S, S, V);
}

/* kl[s] = sum_v pt (log pt - log ps), pt = softmax(zt/tau), ps = softmax(zs/tau); the logs come
 * from log-sum-exp, exact where a probability underflows. ps, pt are saved for the backward;
 * pt may be zt itself (each element is read before it is written). */
static inline void k_kd_fwd(float *kl /* [S] */, float *ps /* [S,V] */, float *pt /* [S,V] */, const float *zs /* [S,V] */,
                            const float *zt /* [S,V] */, float tau, int S, int V) {
    float itau = 1.0f / tau;
#pragma omp parallel for schedule(static) if ((long)S * V >= K_OMP_MIN_WORK / 4)
    for (int s = 0; s < S; s++) {
        const float *a = zs + (long)s * V, *b = zt + (long)s * V;
        float *qs = ps + (long)s * V, *qt = pt + (long)s * V;
        float ms = k_xent_rowmax(a, V) * itau, mt = k_xent_rowmax(b, V) * itau;
        /* the sums in double (the KL below depends on their logs); the teacher's exps are
         * stored nowhere yet, since pt may be zt */
        double sums = 0.0, sumt = 0.0;
#pragma omp simd reduction(+ : sums, sumt)
        for (int v = 0; v < V; v++) {
            float e = k_fast_expf(a[v] * itau - ms);
            qs[v] = e;
            sums += e;
            sumt += k_fast_expf(b[v] * itau - mt);
        }
        /* log pt - log ps = (b/tau - mt - log sumt) - (a/tau - ms - log sums) */
        float off = (float)((double)ms + log(sums) - (double)mt - log(sumt));
        float is = (float)(1.0 / sums), it = (float)(1.0 / sumt);
        /* summed in double: the terms cancel (KL is small where the two agree) */
        double total = 0.0;
#pragma omp simd reduction(+ : total)
        for (int v = 0; v < V; v++) {
            float bv = b[v], p = k_fast_expf(bv * itau - mt) * it;
            qs[v] *= is;
            qt[v] = p;
            total += (double)p * (double)((bv - a[v]) * itau + off);
        }
        kl[s] = (float)total;
    }
}

/* dzs (acc: 0 overwrite, 1 add) = d/dzs of scale * sum_s kl_s = scale / tau * (ps - pt) */
static inline void k_kd_bwd(float *dzs /* [S,V] */, const float *ps /* [S,V] */, const float *pt /* [S,V] */, float scale,
                            float tau, int S, int V, int acc) {
    float c = scale / tau;
    long n = (long)S * V;
    if (acc) {
#pragma omp parallel for simd schedule(static) if (n >= K_OMP_MIN_WORK)
        for (long i = 0; i < n; i++) dzs[i] += c * (ps[i] - pt[i]);
    } else {
#pragma omp parallel for simd schedule(static) if (n >= K_OMP_MIN_WORK)
        for (long i = 0; i < n; i++) dzs[i] = c * (ps[i] - pt[i]);
    }
}
/* The KD loss of the lowered program: the teacher's logits pt_inout become its probabilities,
 * kd (the statistics record's KD entry) += tau^2 x the mean of kl over the S tokens. */
static inline void k_kd_loss_fwd(float *ps /* [S,V] */, float *pt_inout /* [S,V] */, float *kl /* [S] */, double *kd,
                                 const float *zs /* [S,V] */, float tau, int S, int V) {
    k_kd_fwd(kl, ps, pt_inout, zs, pt_inout, tau, S, V);
    double total = 0.0;
    for (int s = 0; s < S; s++) total += kl[s];
    *kd += (double)tau * tau * total / (double)S;
}

/* the gradient of loss_scale x weight x tau^2 x the mean kl into the student's logits */
static inline void k_kd_loss_bwd(float *dzs /* [S,V] */, const float *ps /* [S,V] */, const float *pt /* [S,V] */,
                                 float weight, float tau, float loss_scale, int S, int V, int acc) {
    k_kd_bwd(dzs, ps, pt, weight * tau * tau * loss_scale / (float)S, tau, S, V, acc);
}
#endif
