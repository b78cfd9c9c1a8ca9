/* k_optim.h - optimizer-step kernels on the CPU: sum of squares (for the global gradient
 * norm), scaling, AdamW with decoupled weight decay.
 *
 * k_sumsq splits x into K_SUMSQ_CHUNKS fixed chunks whatever the thread count, sums each in
 * double and adds the chunk sums in order: bitwise reproducible for any number of threads.
 * k_grad_norm and k_adamw_step are the forms the generated code calls: the norm and the clip
 * factor go to the statistics record in device memory, and AdamW reads the factor from there,
 * so the host never sees either until it downloads the record.
 * Not here: the cross-rank all-reduce of the gradients (k_comm.h).
 */
#ifndef MOE_K_OPTIM_H
#define MOE_K_OPTIM_H
#include "k_common.h"

#define K_SUMSQ_CHUNKS 256

/* sum_i x[i]^2 in double */
static inline double k_sumsq(const float *x /* [n] */, long n) {
    double part[K_SUMSQ_CHUNKS];
    long len = (n + K_SUMSQ_CHUNKS - 1) / K_SUMSQ_CHUNKS;
#pragma omp parallel for schedule(static) if (n >= 4 * K_OMP_MIN_WORK)
    for (int c = 0; c < K_SUMSQ_CHUNKS; c++) {
        long i0 = c * len, i1 = i0 + len < n ? i0 + len : n;
        double a = 0.0;
#pragma omp simd reduction(+ : a)
        for (long i = i0; i < i1; i++) a += (double)x[i] * x[i];
        part[c] = a;
    }
    double total = 0.0;
    for (int c = 0; c < K_SUMSQ_CHUNKS; c++) total += part[c];
    return total;
}

/* norm_clip[0] = ||g||, norm_clip[1] = the clip factor: max_norm / (||g|| + 1e-6) when the norm
 * exceeds max_norm > 0, else 1 (moe-semantics.md section 4: the true global norm). The
 * gradients carry grad_scale (an fp16 model's loss scale; 1): the norm is theirs divided by
 * it, and so is the factor AdamW multiplies them by. A norm that is not finite (fp16's
 * overflow) makes the factor 0, and AdamW then leaves every parameter and moment as it is. */
static inline void k_grad_clip(double *norm_clip /* [2]: the sum of squares on entry */, double max_norm,
                               float grad_scale) {
    double norm = sqrt(norm_clip[0]) / grad_scale;
    norm_clip[0] = norm;
    norm_clip[1] = !isfinite(norm) ? 0.0 : (max_norm > 0 && norm > max_norm ? max_norm / (norm + 1e-6) : 1.0) / grad_scale;
}
static inline void k_grad_norm(double *norm_clip /* [2] */, const float *g /* [n] */, long n, double max_norm,
                               float grad_scale) {
    norm_clip[0] = k_sumsq(g, n);
    k_grad_clip(norm_clip, max_norm, grad_scale);
}

/* x *= s (gradient clipping) */
static inline void k_scale(float *x /* [n] */, float s, long n) {
#pragma omp parallel for simd schedule(static) if (parallel: n >= K_OMP_MIN_WORK)
    for (long i = 0; i < n; i++) x[i] *= s;
}

/* One AdamW step at step number t (1-based), decoupled weight decay (pass wd = 0 for biases
 * and norms):
 *   g' = g grad_scale;  m = b1 m + (1-b1) g';  v = b2 v + (1-b2) g'^2;
 *   p -= lr (m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps) + wd p)       (wd uses p before the step) */
static inline void k_adamw(float *p /* [n] */, const float *g /* [n] */, float *m /* [n] */, float *v /* [n] */, long n,
                           float lr, float beta1, float beta2, float eps, float wd, float grad_scale, int t) {
    float ib1 = (float)(1.0 / (1.0 - pow((double)beta1, t))); /* bias corrections, in double */
    float ib2 = (float)(1.0 / (1.0 - pow((double)beta2, t)));
    float c1 = 1.0f - beta1, c2 = 1.0f - beta2;
    /* no `simd`: sqrtf sets errno, so the loop only vectorises under -fno-math-errno */
#pragma omp parallel for schedule(static) if (n >= K_OMP_MIN_WORK)
    for (long i = 0; i < n; i++) {
        float gi = g[i] * grad_scale;
        float mi = beta1 * m[i] + c1 * gi;
        float vi = beta2 * v[i] + c2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= lr * (mi * ib1 / (sqrtf(vi * ib2) + eps) + wd * p[i]);
    }
}

/* k_adamw with the clip factor that k_grad_norm left in device memory; none with a factor of 0
 * (gradients that are not finite: the step is skipped) */
static inline void k_adamw_step(float *p, const float *g, float *m, float *v, long n, float lr, float beta1,
                                float beta2, float eps, float wd, const double *clip, int t) {
    if (*clip != 0.0) k_adamw(p, g, m, v, n, lr, beta1, beta2, eps, wd, (float)*clip, t);
}
#endif
