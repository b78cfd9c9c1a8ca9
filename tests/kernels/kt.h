/* kt.h - helpers shared by the CPU kernel tests: random inputs, comparisons against
 * double-precision references, central finite differences, a failure count.
 *
 * A comparison is normwise: max_i |got_i - want_i| <= tol * max_i |want_i| (plus a floor so an
 * all-zero reference does not divide by zero), which is the right measure for gradients
 * whose small entries come from cancellation. Every failure prints the test case.
 */
#ifndef MOE_KT_H
#define MOE_KT_H
#include "k_common.h"
#include <omp.h>
#include <stdio.h>

static int kt_failures = 0, kt_checks = 0;
static char kt_case[256] = ""; /* the shapes being tested, printed with any failure */

#define KT_CASE(...) snprintf(kt_case, sizeof kt_case, __VA_ARGS__)
#define KT_EXPECT(cond, ...)                                                                       \
    do {                                                                                           \
        kt_checks++;                                                                               \
        if (!(cond)) {                                                                             \
            kt_failures++;                                                                         \
            fprintf(stderr, "FAIL %s:%d [%s] %s: ", __FILE__, __LINE__, kt_case, #cond);           \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

static inline void *kt_alloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}
#define KT_NEW(type, n) ((type *)kt_alloc((size_t)(n) * sizeof(type)))

static uint64_t kt_seed = 1;
/* n floats uniform in [lo, hi), from a fresh stream each call */
static inline float *kt_rand(long n, float lo, float hi) {
    float *x = KT_NEW(float, n);
    uint64_t st = moe_rng_stream(12345, kt_seed++, 0);
    for (long i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * moe_uniform(st, (uint64_t)i));
    return x;
}
static inline float *kt_fill(long n, float value) {
    float *x = KT_NEW(float, n);
    for (long i = 0; i < n; i++) x[i] = value;
    return x;
}
static inline float *kt_copy(const float *a, long n) {
    float *x = KT_NEW(float, n);
    memcpy(x, a, (size_t)n * sizeof(float));
    return x;
}
static inline double *kt_dbl(const float *a, long n) {
    double *x = KT_NEW(double, n);
    for (long i = 0; i < n; i++) x[i] = a[i];
    return x;
}
static inline double kt_maxabs(const double *a, long n) {
    double m = 0;
    for (long i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

/* normwise comparison of a float result against a double reference */
static inline int kt_close(const char *what, const float *got, const double *want, long n, double tol) {
    double scale = kt_maxabs(want, n), worst = 0;
    long at = -1;
    if (scale < 1e-30) scale = 1e-30;
    for (long i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (!(e <= worst)) { /* also catches NaN */
            worst = isnan(e) ? INFINITY : e;
            at = i;
        }
    }
    int ok = worst <= tol * scale;
    KT_EXPECT(ok, "%s: max err %.3g (rel %.3g > tol %.1g) at [%ld]: got %.9g want %.9g", what, worst, worst / scale,
              tol, at, at >= 0 ? got[at] : 0.0, at >= 0 ? want[at] : 0.0);
    return ok;
}
/* float result against float result (e.g. acc=1 against base + acc=0 result) */
static inline int kt_close_f(const char *what, const float *got, const float *want, long n, double tol) {
    double *w = kt_dbl(want, n);
    int ok = kt_close(what, got, w, n, tol);
    free(w);
    return ok;
}
static inline int kt_bitwise(const char *what, const void *a, const void *b, size_t bytes) {
    int ok = memcmp(a, b, bytes) == 0;
    KT_EXPECT(ok, "%s: results differ bitwise", what);
    return ok;
}

/* want_i = base_i + delta_i, the expected contents after an accumulating backward */
static inline double *kt_plus(const float *base, const double *delta, long n) {
    double *x = KT_NEW(double, n);
    for (long i = 0; i < n; i++) x[i] = (double)base[i] + delta[i];
    return x;
}

/* central differences: g[i] = (f(x + h e_i) - f(x - h e_i)) / 2h for a loss f that reads x
 * (a double array inside ctx) */
typedef double (*kt_loss_fn)(void *ctx);
static inline void kt_fd(double *g, double *x, long n, kt_loss_fn f, void *ctx) {
    const double h = 1e-5;
    for (long i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + h;
        double lp = f(ctx);
        x[i] = x0 - h;
        double lm = f(ctx);
        x[i] = x0;
        g[i] = (lp - lm) / (2 * h);
    }
}
static inline double kt_dot(const double *a, const double *b, long n) {
    double s = 0;
    for (long i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static inline int kt_report(const char *name) {
    if (kt_failures)
        fprintf(stderr, "%s: %d of %d checks FAILED\n", name, kt_failures, kt_checks);
    else
        printf("%s: all %d checks passed\n", name, kt_checks);
    return kt_failures ? 1 : 0;
}
#endif
