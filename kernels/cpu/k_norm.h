/* k_norm.h - LayerNorm and RMSNorm over the last axis (eps 1e-5), forward and backward.
 *
 * Forward and the input gradient are one OpenMP loop over tokens; row statistics are summed
 * in double. The weight/bias gradients reduce over tokens, so they run over fixed column
 * chunks (one thread owns a chunk, tokens summed in order into double partials): bitwise the
 * same result for any thread count, no atomics, no scratch.
 * Not here: the MoE gate's softmax (k_moe.h).
 */
#ifndef MOE_K_NORM_H
#define MOE_K_NORM_H
#include "k_common.h"

#define K_NORM_EPS 1e-5f
#define K_NORM_COLS 32 /* column chunk for the parameter-gradient reduction */

/* out = (x - mean) * rstd * w + b, rstd = 1 / sqrt(var + eps), var the biased variance; b NULL:
 * no bias (`bias = false`). mean/rstd are saved for the backward; either may be NULL (inference). */
static inline void k_layernorm_fwd(float *out /* [S,C] */, float *mean /* [S] */, float *rstd /* [S] */,
                                   const float *x /* [S,C] */, const float *w /* [C] */, const float *b /* [C] */,
                                   int S, int C) {
#pragma omp parallel for schedule(static) if (K_PAR((long)S * C))
    for (int s = 0; s < S; s++) {
        const float *xr = x + (long)s * C;
        float *o = out + (long)s * C;
        double sum = 0.0;
#pragma omp simd reduction(+ : sum)
        for (int c = 0; c < C; c++) sum += xr[c];
        float m = (float)(sum / C);
        double var = 0.0;
#pragma omp simd reduction(+ : var)
        for (int c = 0; c < C; c++) {
            float d = xr[c] - m;
            var += (double)d * d;
        }
        float r = (float)(1.0 / sqrt(var / C + (double)K_NORM_EPS));
        if (b) {
#pragma omp simd
            for (int c = 0; c < C; c++) o[c] = (xr[c] - m) * r * w[c] + b[c];
        } else {
#pragma omp simd
            for (int c = 0; c < C; c++) o[c] = (xr[c] - m) * r * w[c];
        }
        if (mean) mean[s] = m;
        if (rstd) rstd[s] = r;
    }
}

/* With xhat = (x - mean) rstd and g = w * dout:
 *   dx = rstd (g - mean_c(g) - xhat mean_c(g xhat))   (acc: 0 overwrite, 1 add)
 *   dw += sum_s dout xhat,  db += sum_s dout.  Any of dx, dw, db may be NULL. */
static inline void k_layernorm_bwd(float *dx /* [S,C] */, float *dw /* [C] */, float *db /* [C] */,
                                   const float *dout /* [S,C] */, const float *x /* [S,C] */, const float *w /* [C] */,
                                   const float *mean /* [S] */, const float *rstd /* [S] */, int S, int C, int acc) {
    if (dx) {
#pragma omp parallel for schedule(static) if (K_PAR((long)S * C))
        for (int s = 0; s < S; s++) {
            const float *xr = x + (long)s * C, *d = dout + (long)s * C;
            float *o = dx + (long)s * C;
            float m = mean[s], r = rstd[s];
            float s1 = 0.0f, s2 = 0.0f;
#pragma omp simd reduction(+ : s1, s2)
            for (int c = 0; c < C; c++) {
                float g = w[c] * d[c];
                s1 += g;
                s2 += g * (xr[c] - m) * r;
            }
            s1 /= C;
            s2 /= C;
            if (acc) {
#pragma omp simd
                for (int c = 0; c < C; c++) o[c] += r * (w[c] * d[c] - s1 - (xr[c] - m) * r * s2);
            } else {
#pragma omp simd
                for (int c = 0; c < C; c++) o[c] = r * (w[c] * d[c] - s1 - (xr[c] - m) * r * s2);
            }
        }
    }
    if (dw || db) {
        int nchunk = (C + K_NORM_COLS - 1) / K_NORM_COLS;
#pragma omp parallel for schedule(static) if (K_PAR((long)S * C))
        for (int k = 0; k < nchunk; k++) {
            int c0 = k * K_NORM_COLS, n = C - c0 < K_NORM_COLS ? C - c0 : K_NORM_COLS;
            double aw[K_NORM_COLS] = {0}, ab[K_NORM_COLS] = {0};
            for (int s = 0; s < S; s++) {
                const float *xr = x + (long)s * C + c0, *d = dout + (long)s * C + c0;
                float m = mean[s], r = rstd[s];
#pragma omp simd
                for (int c = 0; c < n; c++) {
                    aw[c] += d[c] * ((xr[c] - m) * r);
                    ab[c] += d[c];
                }
            }
            for (int c = 0; c < n; c++) {
                if (dw) dw[c0 + c] += (float)aw[c];
                if (db) db[c0 + c] += (float)ab[c];
            }
        }
    }
}

/* out = x rstd w, rstd = 1 / sqrt(mean(x^2) + eps); rstd [S] saved (may be NULL). */
static inline void k_rmsnorm_fwd(float *out /* [S,C] */, float *rstd /* [S] */, const float *x /* [S,C] */,
                                 const float *w /* [C] */, int S, int C) {
#pragma omp parallel for schedule(static) if (K_PAR((long)S * C))
    for (int s = 0; s < S; s++) {
        const float *xr = x + (long)s * C;
        float *o = out + (long)s * C;
        double ss = 0.0;
#pragma omp simd reduction(+ : ss)
        for (int c = 0; c < C; c++) ss += (double)xr[c] * xr[c];
        float r = (float)(1.0 / sqrt(ss / C + (double)K_NORM_EPS));
#pragma omp simd
        for (int c = 0; c < C; c++) o[c] = xr[c] * r * w[c];
        if (rstd) rstd[s] = r;
    }
}

/* With xhat = x rstd, g = w dout:  dx = rstd (g - xhat mean_c(g xhat));  dw += sum_s dout xhat. */
static inline void k_rmsnorm_bwd(float *dx /* [S,C] */, float *dw /* [C] */, const float *dout /* [S,C] */,
                                 const float *x /* [S,C] */, const float *w /* [C] */, const float *rstd /* [S] */,
                                 int S, int C, int acc) {
    if (dx) {
#pragma omp parallel for schedule(static) if (K_PAR((long)S * C))
        for (int s = 0; s < S; s++) {
            const float *xr = x + (long)s * C, *d = dout + (long)s * C;
            float *o = dx + (long)s * C;
            float r = rstd[s], s2 = 0.0f;
#pragma omp simd reduction(+ : s2)
            for (int c = 0; c < C; c++) s2 += w[c] * d[c] * xr[c] * r;
            s2 /= C;
            if (acc) {
#pragma omp simd
                for (int c = 0; c < C; c++) o[c] += r * (w[c] * d[c] - xr[c] * r * s2);
            } else {
#pragma omp simd
                for (int c = 0; c < C; c++) o[c] = r * (w[c] * d[c] - xr[c] * r * s2);
            }
        }
    }
    if (dw) {
        int nchunk = (C + K_NORM_COLS - 1) / K_NORM_COLS;
#pragma omp parallel for schedule(static) if (K_PAR((long)S * C))
        for (int k = 0; k < nchunk; k++) {
            int c0 = k * K_NORM_COLS, n = C - c0 < K_NORM_COLS ? C - c0 : K_NORM_COLS;
            double aw[K_NORM_COLS] = {0};
            for (int s = 0; s < S; s++) {
                const float *xr = x + (long)s * C + c0, *d = dout + (long)s * C + c0;
                float r = rstd[s];
#pragma omp simd
                for (int c = 0; c < n; c++) aw[c] += d[c] * (xr[c] * r);
            }
            for (int c = 0; c < n; c++) dw[c0 + c] += (float)aw[c];
        }
    }
}

/* the thread-split variants as the generated code names them (k_common.h) */
K_SPLIT_VARIANTS(layernorm_fwd, (float *out, float *mean, float *rstd, const float *x, const float *w, const float *b,
                                 int S, int C), (out, mean, rstd, x, w, b, S, C))
K_SPLIT_VARIANTS(layernorm_bwd, (float *dx, float *dw, float *db, const float *dout, const float *x, const float *w,
                                 const float *mean, const float *rstd, int S, int C, int acc),
                 (dx, dw, db, dout, x, w, mean, rstd, S, C, acc))
K_SPLIT_VARIANTS(rmsnorm_fwd, (float *out, float *rstd, const float *x, const float *w, int S, int C),
                 (out, rstd, x, w, S, C))
K_SPLIT_VARIANTS(rmsnorm_bwd, (float *dx, float *dw, const float *dout, const float *x, const float *w,
                               const float *rstd, int S, int C, int acc), (dx, dw, dout, x, w, rstd, S, C, acc))
#endif
