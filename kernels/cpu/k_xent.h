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
#include "k_matmul.h"

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

/* One row of logits z with target t: z becomes exp(z - max) (unnormalised), *sum their sum;
 * *loss = logsumexp - z[t] (0 for a target outside [0, V)). Returns the log-sum-exp. */
static inline double k_xent_row(float *z, int t, int V, double *sum, float *loss) {
    float mx = k_xent_rowmax(z, V);
    float zt = (t >= 0 && t < V) ? z[t] : 0.0f;
    *sum = k_xent_exp_sum(z, z, V, 1.0f, mx);
    double lse = log(*sum) + (double)mx;
    *loss = (t >= 0 && t < V) ? (float)(lse - (double)zt) : 0.0f;
    return lse;
}

/* lm (the statistics record's LM entry, may be NULL) += the mean of losses, summed in order */
static inline void k_xent_add_mean(double *lm, const float *losses, int S) {
    if (!lm) return;
    double total = 0.0;
    for (int s = 0; s < S; s++) total += losses[s];
    *lm += total / (double)S;
}

/* probs_inout: logits in, softmax out. losses[s] = logsumexp(z_s) - z_s[target]; lm as
 * k_xent_add_mean. */
static inline void k_xent_fwd(float *probs_inout /* [S,V] */, float *losses /* [S] */, double *lm,
                              const int32_t *targets /* [S] */, int S, int V) {
#pragma omp parallel for schedule(static) if ((long)S * V >= K_OMP_MIN_WORK / 4)
    for (int s = 0; s < S; s++) {
        float *z = probs_inout + (long)s * V;
        double sum;
        k_xent_row(z, targets[s], V, &sum, &losses[s]);
        float inv = (float)(1.0 / sum);
#pragma omp simd
        for (int v = 0; v < V; v++) z[v] *= inv;
    }
    k_xent_add_mean(lm, losses, S);
}

/* The LM head fused with its cross-entropy (HEAD_XENT): logits = x W ([S,K] x [K,V], or W [V,K]
 * with transW, the tied head) made `rows` rows at a time in tile [rows, V], so that [S, V] never
 * exists. Per row as k_xent_fwd (k_xent_row), and lse[s] = the log-sum-exp, kept for the
 * backward. */
static inline void k_head_xent_fwd(float *losses /* [S] */, float *lse /* [S] */, double *lm, float *tile /* [rows,V] */,
                                   const float *x /* [S,K] */, const float *W, const int32_t *targets /* [S] */, int S,
                                   int K, int V, int rows, int transW) {
    for (int r0 = 0; r0 < S; r0 += rows) {
        int n = S - r0 < rows ? S - r0 : rows;
        k_matmul_fwd(tile, x + (long)r0 * K, W, NULL, n, K, V, transW);
#pragma omp parallel for schedule(static) if ((long)n * V >= K_OMP_MIN_WORK / 4)
        for (int i = 0; i < n; i++) {
            double sum;
            lse[r0 + i] = (float)k_xent_row(tile + (long)i * V, targets[r0 + i], V, &sum, &losses[r0 + i]);
        }
    }
    k_xent_add_mean(lm, losses, S);
}

/* Its backward, block by block: the tile's logits again, dlogits = (exp(z - lse) - onehot(target))
 * loss_scale / S in the tile, then dx rows (acc: add) = dlogits W^T and dW += x^T dlogits. */
static inline void k_head_xent_bwd(float *dx /* [S,K] */, float *dW, float *tile /* [rows,V] */, const float *x,
                                   const float *W, const int32_t *targets, const float *lse /* [S] */,
                                   float loss_scale, int S, int K, int V, int rows, int transW, int acc) {
    float scale = loss_scale / (float)S;
    for (int r0 = 0; r0 < S; r0 += rows) {
        int n = S - r0 < rows ? S - r0 : rows;
        k_matmul_fwd(tile, x + (long)r0 * K, W, NULL, n, K, V, transW);
#pragma omp parallel for schedule(static) if ((long)n * V >= K_OMP_MIN_WORK / 4)
        for (int i = 0; i < n; i++) {
            float *z = tile + (long)i * V;
            int s = r0 + i, t = targets[s];
            if (t < 0 || t >= V) {
                memset(z, 0, (size_t)V * sizeof(float));
                continue;
            }
            float m = lse[s];
#pragma omp simd
            for (int v = 0; v < V; v++) z[v] = k_fast_expf(z[v] - m) * scale;
            z[t] -= scale;
        }
        k_matmul_bwd(dx + (long)r0 * K, dW, NULL, tile, x + (long)r0 * K, W, n, K, V, transW, acc);
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
#pragma omp parallel for simd schedule(static) if (parallel: n >= K_OMP_MIN_WORK)
        for (long i = 0; i < n; i++) dzs[i] += c * (ps[i] - pt[i]);
    } else {
#pragma omp parallel for simd schedule(static) if (parallel: n >= K_OMP_MIN_WORK)
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
