/* k_act.h - elementwise CPU kernels: GELU (tanh and erf forms), ReLU, SwiGLU, add,
 * gradient accumulation; and k_fast_expf, the vectorisable exp that the softmax kernels
 * (k_attn.h, k_xent.h) share.
 *
 * Not here: normalisation (k_norm.h), MoE gate/expert kernels (k_moe.h).
 * Loops are plain `omp simd` loops that GCC vectorises without -ffast-math (exp is
 * k_fast_expf, selects are bit masks), except the erf GELU, which calls libm. The OpenMP
 * thread split only starts above K_OMP_MIN_WORK elements (a fork costs microseconds).
 * In-place use (out == x, dx == dout) is allowed: every element is read then written at the
 * same index.
 */
#ifndef MOE_K_ACT_H
#define MOE_K_ACT_H
#include "k_common.h"


/* `omp simd` for a float max reduction: GCC vectorises `m = x > m ? x : m` under it, clang
 * (without -ffast-math) cannot and warns under -Wpass-failed, so there it is left out. */
#define K_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define K_SIMD_MAX(var)
#else
#define K_SIMD_MAX(var) K_PRAGMA(omp simd reduction(max : var))
#endif

/* c ? a : b as bit masks. GCC does not if-convert a float compare feeding a ?: under the
 * default -ftrapping-math, so a plain ?: or fmaxf in a loop body blocks vectorisation. */
static inline float k_selectf(int c, float a, float b) {
    union { float f; uint32_t u; } x, y;
    uint32_t m = 0u - (uint32_t)(c != 0);
    x.f = a;
    y.f = b;
    x.u = (x.u & m) | (y.u & ~m);
    return x.f;
}

/* exp(x) in fp32 without libm, so that loops calling it vectorise (glibc's vector expf is only
 * used under -ffast-math). Cephes expf: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial,
 * 2^n built in the exponent bits. Relative error < 1 ulp (0.67 eps measured over the range,
 * test_act checks < 2 eps). Inputs are clamped to
 * [-87.33, 88.3] (results 1.2e-38 .. 2.4e38, never 0 or inf), NaN propagates. */
static inline float k_fast_expf(float x) {
    x = k_selectf(x < -87.33654f, -87.33654f, x);
    x = k_selectf(x > 88.3f, 88.3f, x);
    /* round-to-nearest by the 1.5*2^23 trick: n sits in the low mantissa bits of t, which
     * gives 2^n with unsigned integer ops only (no float->int conversion, no libm call) */
    union { float f; uint32_t u; } t, e;
    t.f = x * 1.44269504088896341f + 12582912.0f;
    float n = t.f - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    e.u = (t.u - 0x4B400000u + 127u) << 23; /* n in [-126, 127]: a normal power of two */
    return p * e.f;
}

/* dx = g (acc = 0) or dx += g (acc = 1) for g = dout[i] * GRAD, GRAD an expression of i;
 * SIMD is `simd` or empty (a GRAD calling libm does not vectorise). Two loops rather than
 * `acc ? dx[i] + g : g`, whose conditional load does not vectorise. */
#define K_ACT_BWD_LOOP(n, acc, dx, dout, GRAD, SIMD)                                               \
    do {                                                                                           \
        if (acc) {                                                                                 \
            K_PRAGMA(omp parallel for SIMD schedule(static) if (parallel: K_PAR(n)))            \
            for (long i = 0; i < (n); i++) (dx)[i] += (dout)[i] * (GRAD);                          \
        } else {                                                                                   \
            K_PRAGMA(omp parallel for SIMD schedule(static) if (parallel: K_PAR(n)))            \
            for (long i = 0; i < (n); i++) (dx)[i] = (dout)[i] * (GRAD);                           \
        }                                                                                          \
    } while (0)

/* ---- GELU, tanh approximation (GPT-2): 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
 * Computed as x * sigmoid(2u), the same function (0.5 (1 + tanh u) = sigmoid(2u)) with one exp,
 * no cancellation, and tanh'(u) = 4 s (1 - s). */
#define K_GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define K_GELU_C 0.044715f

static inline float k_gelu_grad(float x) { /* d gelu / dx */
    float u = K_GELU_K * (x + K_GELU_C * x * x * x);
    float s = 1.0f / (1.0f + k_fast_expf(-2.0f * u));
    float du = K_GELU_K * (1.0f + 3.0f * K_GELU_C * x * x);
    return s + 2.0f * x * s * (1.0f - s) * du;
}

static inline void k_gelu_fwd(float *out /* [n] */, const float *x /* [n] */, long n) {
#pragma omp parallel for simd schedule(static) if (parallel: K_PAR(n))
    for (long i = 0; i < n; i++) {
        float xi = x[i];
        float u = K_GELU_K * (xi + K_GELU_C * xi * xi * xi);
        out[i] = xi / (1.0f + k_fast_expf(-2.0f * u));
    }
}

static inline void k_gelu_bwd(float *dx /* [n] */, const float *x /* [n] */, const float *dout /* [n] */, long n,
                              int acc) {
    K_ACT_BWD_LOOP(n, acc, dx, dout, k_gelu_grad(x[i]), simd);
}

/* ---- GELU, exact: 0.5 x (1 + erf(x / sqrt 2)). Uses libm erff/expf (scalar; this form is not
 * the model's default). */
static inline float k_gelu_erf_grad(float x) {
    return 0.5f * (1.0f + erff(x * 0.70710678118654752f)) + x * 0.3989422804014327f * expf(-0.5f * x * x);
}

static inline void k_gelu_erf_fwd(float *out /* [n] */, const float *x /* [n] */, long n) {
#pragma omp parallel for schedule(static) if (K_PAR(4 * n))
    for (long i = 0; i < n; i++) out[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

static inline void k_gelu_erf_bwd(float *dx /* [n] */, const float *x /* [n] */, const float *dout /* [n] */,
                                  long n, int acc) {
    K_ACT_BWD_LOOP(n, acc, dx, dout, k_gelu_erf_grad(x[i]), );
}

/* ---- ReLU; the gradient at exactly 0 is 0. */
static inline void k_relu_fwd(float *out /* [n] */, const float *x /* [n] */, long n) {
#pragma omp parallel for simd schedule(static) if (parallel: K_PAR(n))
    for (long i = 0; i < n; i++) out[i] = k_selectf(x[i] > 0.0f, x[i], 0.0f);
}

static inline void k_relu_bwd(float *dx /* [n] */, const float *x /* [n] */, const float *dout /* [n] */, long n,
                              int acc) {
    if (acc) {
#pragma omp parallel for simd schedule(static) if (parallel: K_PAR(n))
        for (long i = 0; i < n; i++) dx[i] += k_selectf(x[i] > 0.0f, dout[i], 0.0f);
    } else {
#pragma omp parallel for simd schedule(static) if (parallel: K_PAR(n))
        for (long i = 0; i < n; i++) dx[i] = k_selectf(x[i] > 0.0f, dout[i], 0.0f);
    }
}

/* ---- SwiGLU: each row of x holds the gate half g then the up half u; out = silu(g) * u,
 * silu(g) = g * sigmoid(g). out may not alias x (different row widths). */
static inline void k_swiglu_fwd(float *out /* [S, f] */, const float *x /* [S, 2f] */, int S, int f) {
#pragma omp parallel for schedule(static) if (K_PAR((long)S * f))
    for (int s = 0; s < S; s++) {
        const float *g = x + (long)s * 2 * f, *u = g + f;
        float *o = out + (long)s * f;
#pragma omp simd
        for (int j = 0; j < f; j++) o[j] = g[j] / (1.0f + k_fast_expf(-g[j])) * u[j];
    }
}

/* dg = dout * u * sig(g) * (1 + g (1 - sig(g))), du = dout * silu(g) */
static inline void k_swiglu_bwd(float *dx /* [S, 2f] */, const float *x /* [S, 2f] */, const float *dout /* [S, f] */,
                                int S, int f, int acc) {
#pragma omp parallel for schedule(static) if (K_PAR((long)S * f))
    for (int s = 0; s < S; s++) {
        const float *g = x + (long)s * 2 * f, *u = g + f, *d = dout + (long)s * f;
        float *dg = dx + (long)s * 2 * f, *du = dg + f;
        if (acc) {
#pragma omp simd
            for (int j = 0; j < f; j++) {
                float sg = 1.0f / (1.0f + k_fast_expf(-g[j]));
                dg[j] += d[j] * u[j] * sg * (1.0f + g[j] * (1.0f - sg));
                du[j] += d[j] * g[j] * sg;
            }
        } else {
#pragma omp simd
            for (int j = 0; j < f; j++) {
                float sg = 1.0f / (1.0f + k_fast_expf(-g[j]));
                dg[j] = d[j] * u[j] * sg * (1.0f + g[j] * (1.0f - sg));
                du[j] = d[j] * g[j] * sg;
            }
        }
    }
}

/* ---- out = a + b (out may alias a or b: the residual update x = x + y) */
static inline void k_add_fwd(float *out /* [n] */, const float *a /* [n] */, const float *b /* [n] */, long n) {
#pragma omp parallel for simd schedule(static) if (parallel: K_PAR(n))
    for (long i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/* dst = src (acc = 0) or dst += src (acc = 1); the backward of a residual branch */
static inline void k_accumulate(float *dst /* [n] */, const float *src /* [n] */, long n, int acc) {
    if (!acc) {
        if (dst != src) memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
#pragma omp parallel for simd schedule(static) if (parallel: K_PAR(n))
    for (long i = 0; i < n; i++) dst[i] += src[i];
}

/* dst[0 : rows*width] = src[0 : rows*width]: the one-process form of a row exchange */
static inline void k_copy_rows(float *dst, const float *src, k_rows rows, long width) {
    long n = k_rows_get(rows) * width;
    if (dst != src && n > 0) memcpy(dst, src, (size_t)n * sizeof(float));
}

/* ---- the activation of an MLP as the generated code calls it: fn = MOE_ACT_*, rows known on
 * the host (S) or read from device memory (an expert's routed rows), width = the output width
 * (the input is twice as wide for SwiGLU) */
static inline void k_act_fwd(int fn, float *out, const float *x, k_rows rows, long width) {
    long r = k_rows_get(rows), n = r * width;
    switch (fn) {
    case MOE_ACT_GELU: k_gelu_fwd(out, x, n); break;
    case MOE_ACT_GELU_ERF: k_gelu_erf_fwd(out, x, n); break;
    case MOE_ACT_RELU: k_relu_fwd(out, x, n); break;
    case MOE_ACT_SWIGLU: k_swiglu_fwd(out, x, (int)r, (int)width); break;
    }
}

static inline void k_act_bwd(int fn, float *dx, const float *x, const float *dout, k_rows rows, long width, int acc) {
    long r = k_rows_get(rows), n = r * width;
    switch (fn) {
    case MOE_ACT_GELU: k_gelu_bwd(dx, x, dout, n, acc); break;
    case MOE_ACT_GELU_ERF: k_gelu_erf_bwd(dx, x, dout, n, acc); break;
    case MOE_ACT_RELU: k_relu_bwd(dx, x, dout, n, acc); break;
    case MOE_ACT_SWIGLU: k_swiglu_bwd(dx, x, dout, (int)r, (int)width, acc); break;
    }
}

/* the thread-split variants as the generated code names them (k_common.h) */
K_SPLIT_VARIANTS(act_fwd, (int fn, float *out, const float *x, k_rows rows, long width), (fn, out, x, rows, width))
K_SPLIT_VARIANTS(act_bwd, (int fn, float *dx, const float *x, const float *dout, k_rows rows, long width, int acc),
                 (fn, dx, x, dout, rows, width, acc))
K_SPLIT_VARIANTS(add_fwd, (float *out, const float *a, const float *b, long n), (out, a, b, n))
K_SPLIT_VARIANTS(accumulate, (float *dst, const float *src, long n, int acc), (dst, src, n, acc))
#endif
