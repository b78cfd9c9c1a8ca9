/* test_act.c - elementwise kernels: k_fast_expf accuracy, GELU (tanh, erf), ReLU, SwiGLU,
 * add, accumulate; forward against double references, backward against finite differences
 * (per element: each output depends on one or two inputs), acc flags. */
#include "k_act.h"
#include "kt.h"

static double ref_gelu(double x) { return 0.5 * x * (1 + tanh(sqrt(2 / 3.14159265358979323846) * (x + 0.044715 * x * x * x))); }
static double ref_gelu_erf(double x) { return 0.5 * x * (1 + erf(x / sqrt(2.0))); }
static double ref_relu(double x) { return x > 0 ? x : 0; }

static void test_expf(void) {
    KT_CASE("k_fast_expf");
    double worst = 0, at = 0;
    for (long i = 0; i <= 400000; i++) {
        float x = (float)(-87.0 + 175.0 * i / 400000.0);
        double want = exp((double)x), got = k_fast_expf(x), e = fabs(got - want) / want;
        if (e > worst) worst = e, at = x;
    }
    KT_EXPECT(worst < 2 * FLT_EPSILON, /* measured 0.67 eps */ "max rel err %.3g at x=%.9g", worst, at);
    KT_EXPECT(k_fast_expf(0.0f) == 1.0f, "exp(0) = %.9g", k_fast_expf(0.0f));
    KT_EXPECT(isfinite(k_fast_expf(1000.0f)) && k_fast_expf(1000.0f) > 1e38f, "exp(1000) = %g", k_fast_expf(1000.0f));
    KT_EXPECT(k_fast_expf(-1000.0f) >= 0.0f && k_fast_expf(-1000.0f) < 1e-37f, "exp(-1000) = %g",
              k_fast_expf(-1000.0f));
    KT_EXPECT(k_fast_expf(-INFINITY) < 1e-37f, "exp(-inf) = %g", k_fast_expf(-INFINITY));
    KT_EXPECT(isnan(k_fast_expf(NAN)), "exp(nan) = %g", k_fast_expf(NAN));
}

typedef void (*fwd_fn)(float *, const float *, long);
typedef void (*bwd_fn)(float *, const float *, const float *, long, int);

static void run_unary(const char *name, fwd_fn fwd, bwd_fn bwd, double (*ref)(double), long n, float lo, float hi) {
    KT_CASE("%s n=%ld", name, n);
    float *x = kt_rand(n, lo, hi), *R = kt_rand(n, -1, 1), *y = kt_fill(n, NAN);
    double *want = KT_NEW(double, n), *g = KT_NEW(double, n);
    for (long i = 0; i < n; i++) {
        if (ref == ref_relu && fabsf(x[i]) < 1e-3f) x[i] = 0.5f; /* keep off the kink */
        want[i] = ref(x[i]);
        double h = 1e-5;
        g[i] = R[i] * (ref((double)x[i] + h) - ref((double)x[i] - h)) / (2 * h);
    }
    fwd(y, x, n);
    kt_close("out", y, want, n, 2e-6);
    float *y2 = kt_copy(x, n); /* in place */
    fwd(y2, y2, n);
    kt_bitwise("out in place", y, y2, (size_t)n * sizeof(float));

    float *dx = kt_fill(n, NAN);
    bwd(dx, x, R, n, 0);
    kt_close("dx (acc=0)", dx, g, n, 1e-5);
    float *dx1 = kt_rand(n, -1, 1);
    double *w1 = kt_plus(dx1, g, n);
    bwd(dx1, x, R, n, 1);
    kt_close("dx (acc=1)", dx1, w1, n, 1e-5);
    float *d2 = kt_copy(R, n); /* dx aliasing dout */
    bwd(d2, x, d2, n, 0);
    kt_bitwise("dx in place over dout", dx, d2, (size_t)n * sizeof(float));
    free(x), free(R), free(y), free(want), free(g), free(y2), free(dx), free(dx1), free(w1), free(d2);
}

static double ref_silu(double g) { return g / (1 + exp(-g)); }

static void run_swiglu(int S, int f) {
    KT_CASE("swiglu S=%d f=%d", S, f);
    long nx = (long)S * 2 * f, ny = (long)S * f;
    float *x = kt_rand(nx, -4, 4), *R = kt_rand(ny, -1, 1), *y = kt_fill(ny, NAN);
    double *want = KT_NEW(double, ny), *g = KT_NEW(double, nx), h = 1e-5;
    for (int s = 0; s < S; s++) /* out[s,j] depends on g = x[s,j] and u = x[s,f+j] only */
        for (int j = 0; j < f; j++) {
            double gi = x[(long)s * 2 * f + j], ui = x[(long)s * 2 * f + f + j], r = R[(long)s * f + j];
            want[(long)s * f + j] = ref_silu(gi) * ui;
            g[(long)s * 2 * f + j] = r * ui * (ref_silu(gi + h) - ref_silu(gi - h)) / (2 * h);
            g[(long)s * 2 * f + f + j] = r * (ref_silu(gi) * (ui + h) - ref_silu(gi) * (ui - h)) / (2 * h);
        }
    k_swiglu_fwd(y, x, S, f);
    kt_close("out", y, want, ny, 2e-6);
    float *dx = kt_fill(nx, NAN);
    k_swiglu_bwd(dx, x, R, S, f, 0);
    kt_close("dx (acc=0)", dx, g, nx, 1e-5);
    float *dx1 = kt_rand(nx, -1, 1);
    double *w1 = kt_plus(dx1, g, nx);
    k_swiglu_bwd(dx1, x, R, S, f, 1);
    kt_close("dx (acc=1)", dx1, w1, nx, 1e-5);
    free(x), free(R), free(y), free(want), free(g), free(dx), free(dx1), free(w1);
}

static void run_add(long n) {
    KT_CASE("add/accumulate n=%ld", n);
    float *a = kt_rand(n, -1, 1), *b = kt_rand(n, -1, 1), *o = kt_fill(n, NAN);
    double *want = KT_NEW(double, n);
    for (long i = 0; i < n; i++) want[i] = (double)a[i] + b[i];
    k_add_fwd(o, a, b, n);
    kt_close("a + b", o, want, n, 1e-7);
    float *a2 = kt_copy(a, n);
    k_add_fwd(a2, a2, b, n); /* residual update in place */
    kt_bitwise("a += b in place", a2, o, (size_t)n * sizeof(float));
    float *d = kt_fill(n, NAN);
    k_accumulate(d, a, n, 0);
    kt_bitwise("accumulate acc=0 copies", d, a, (size_t)n * sizeof(float));
    k_accumulate(d, b, n, 1);
    kt_bitwise("accumulate acc=1 adds", d, o, (size_t)n * sizeof(float));
    free(a), free(b), free(o), free(want), free(a2), free(d);
}

/* The thread-split variants (k_common.h; moec tune picks one) agree with v1 bitwise, below,
 * between and above their thresholds (4096 and 32768 elements), for every activation. */
static void run_split(void) {
    static const long rows[] = {8, 60, 300};     /* x 128 wide: 1024, 7680, 38400 outputs */
    const long W = 128;
    int nt = omp_get_max_threads();
    omp_set_num_threads(nt > 1 ? nt : 2);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        for (int fn = MOE_ACT_GELU; fn <= MOE_ACT_SWIGLU; fn++) {
            long R = rows[i] * (fn == MOE_ACT_SWIGLU ? 1 : 4), n = R * W, nx = n * (fn == MOE_ACT_SWIGLU ? 2 : 1);
            KT_CASE("split variants fn=%d R=%ld W=%ld", fn, R, W);
            float *x = kt_rand(nx, -3, 3), *dy = kt_rand(n, -1, 1), *y[3], *dx[3], *sum[3];
            for (int v = 0; v < 3; v++) y[v] = kt_fill(n, 0), dx[v] = kt_fill(nx, 0), sum[v] = kt_copy(dy, n);
            k_act_fwd_v1(fn, y[0], x, K_ROWS(R), W), k_act_bwd_v1(fn, dx[0], x, dy, K_ROWS(R), W, 0);
            k_act_fwd_v2(fn, y[1], x, K_ROWS(R), W), k_act_bwd_v2(fn, dx[1], x, dy, K_ROWS(R), W, 0);
            k_act_fwd_v3(fn, y[2], x, K_ROWS(R), W), k_act_bwd_v3(fn, dx[2], x, dy, K_ROWS(R), W, 0);
            k_add_fwd_v1(y[0], y[0], dy, n), k_accumulate_v1(sum[0], x, n, 1);
            k_add_fwd_v2(y[1], y[1], dy, n), k_accumulate_v2(sum[1], x, n, 1);
            k_add_fwd_v3(y[2], y[2], dy, n), k_accumulate_v3(sum[2], x, n, 1);
            for (int v = 1; v < 3; v++) {
                kt_bitwise("act then add", y[v], y[0], (size_t)n * sizeof(float));
                kt_bitwise("act_bwd", dx[v], dx[0], (size_t)nx * sizeof(float));
                kt_bitwise("accumulate", sum[v], sum[0], (size_t)n * sizeof(float));
            }
            KT_EXPECT(k_split == 1, "a variant left the split at %d", k_split);
            for (int v = 0; v < 3; v++) free(y[v]), free(dx[v]), free(sum[v]);
            free(x), free(dy);
        }
    omp_set_num_threads(nt);
}

int main(void) {
    test_expf();
    run_split();
    static const long sizes[] = {1, 7, 1000, 70001}; /* the last one takes the threaded path */
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        long n = sizes[i];
        run_unary("gelu", k_gelu_fwd, k_gelu_bwd, ref_gelu, n, -6, 6);
        run_unary("gelu_erf", k_gelu_erf_fwd, k_gelu_erf_bwd, ref_gelu_erf, n, -6, 6);
        run_unary("relu", k_relu_fwd, k_relu_bwd, ref_relu, n, -3, 3);
        run_add(n);
    }
    run_unary("gelu wide", k_gelu_fwd, k_gelu_bwd, ref_gelu, 5000, -60, 60); /* saturated tails */
    static const int sw[][2] = {{1, 1}, {3, 5}, {4, 33}, {700, 60}};
    for (size_t i = 0; i < sizeof sw / sizeof sw[0]; i++) run_swiglu(sw[i][0], sw[i][1]);
    return kt_report("test_act");
}
