/* test_optim.c - AdamW over several steps against a scalar double reference (with weight
 * decay, gradient scaling, zero gradients), k_sumsq against a double sum and bitwise across
 * calls and thread counts, k_scale; the global norm and clip factor of gradients that carry
 * an fp16 loss scale, and the step skipped when they overflowed. */
#include "k_optim.h"
#include "kt.h"

static void run_adamw(long n, float wd, float grad_scale) {
    KT_CASE("adamw n=%ld wd=%g grad_scale=%g", n, wd, grad_scale);
    const float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f;
    float *p = kt_rand(n, -1, 1), *m = kt_fill(n, 0), *v = kt_fill(n, 0);
    double *pr = kt_dbl(p, n), *mr = KT_NEW(double, n), *vr = KT_NEW(double, n);
    memset(mr, 0, sizeof(double) * n), memset(vr, 0, sizeof(double) * n);
    for (int t = 1; t <= 6; t++) {
        float *g = kt_rand(n, -1, 1);
        if (t == 3)
            for (long i = 0; i < n; i += 3) g[i] = 0; /* some zero gradients: v may be tiny */
        k_adamw(p, g, m, v, n, lr, b1, b2, eps, wd, grad_scale, t);
        for (long i = 0; i < n; i++) {
            double gi = (double)g[i] * grad_scale;
            mr[i] = b1 * mr[i] + (1 - (double)b1) * gi;
            vr[i] = b2 * vr[i] + (1 - (double)b2) * gi * gi;
            double mh = mr[i] / (1 - pow(b1, t)), vh = vr[i] / (1 - pow(b2, t));
            pr[i] -= lr * (mh / (sqrt(vh) + eps) + wd * pr[i]);
        }
        free(g);
    }
    kt_close("p", p, pr, n, 1e-6);
    kt_close("m", m, mr, n, 1e-6);
    kt_close("v", v, vr, n, 1e-5);
    free(p), free(m), free(v), free(pr), free(mr), free(vr);
}

static void run_sumsq(long n) {
    KT_CASE("sumsq n=%ld", n);
    float *x = kt_rand(n, -3, 3);
    double want = 0;
    for (long i = 0; i < n; i++) want += (double)x[i] * x[i];
    double a = k_sumsq(x, n), b = k_sumsq(x, n);
    KT_EXPECT(fabs(a - want) <= 1e-12 * (want > 1 ? want : 1), "got %.17g want %.17g", a, want);
    kt_bitwise("two calls", &a, &b, sizeof a);
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    double c = k_sumsq(x, n);
    omp_set_num_threads(nt > 1 ? nt : 2);
    double d = k_sumsq(x, n);
    omp_set_num_threads(nt);
    kt_bitwise("1 thread vs several", &c, &d, sizeof c);
    kt_bitwise("1 thread vs default", &a, &c, sizeof c);

    float *y = kt_copy(x, n);
    k_scale(y, 0.25f, n);
    double *w = KT_NEW(double, n);
    for (long i = 0; i < n; i++) w[i] = 0.25 * x[i];
    kt_close("scale", y, w, n, 0);
    free(x), free(y), free(w);
}

/* gradients carrying scale s: the norm and clip factor are those of g / s (the factor then
 * divides s out); an infinite gradient makes the factor 0 and AdamW changes nothing */
static void run_grad_scale(long n, double max_norm, float s) {
    KT_CASE("grad_norm n=%ld max_norm=%g grad_scale=%g", n, max_norm, s);
    float *g = kt_rand(n, -1, 1), *gs = kt_copy(g, n);
    for (long i = 0; i < n; i++) gs[i] *= s;    /* s a power of two: exact */
    double want = 0, nc[2], ns[2];
    for (long i = 0; i < n; i++) want += (double)g[i] * g[i];
    want = sqrt(want);
    k_grad_norm(nc, g, n, max_norm, 1.0f);
    k_grad_norm(ns, gs, n, max_norm, s);
    double clip = max_norm > 0 && want > max_norm ? max_norm / (want + 1e-6) : 1.0;
    KT_EXPECT(fabs(nc[0] - want) <= 1e-12 * want && fabs(ns[0] - want) <= 1e-12 * want, "norm %.17g, scaled %.17g, "
              "want %.17g", nc[0], ns[0], want);
    KT_EXPECT(fabs(nc[1] - clip) <= 1e-12 && fabs(ns[1] * s - clip) <= 1e-12, "factor %.17g, scaled %.17g x %g, want "
              "%.17g", nc[1], ns[1], s, clip);
    gs[n / 2] = INFINITY;
    k_grad_norm(ns, gs, n, max_norm, s);
    KT_EXPECT(isinf(ns[0]) && ns[1] == 0.0, "overflowed: norm %g factor %g, want inf and 0", ns[0], ns[1]);
    float *p = kt_rand(n, -1, 1), *m = kt_rand(n, -1, 1), *v = kt_rand(n, 0, 1);
    float *p0 = kt_copy(p, n), *m0 = kt_copy(m, n), *v0 = kt_copy(v, n);
    k_adamw_step(p, gs, m, v, n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, &ns[1], 3);
    kt_bitwise("p after a skipped step", p, p0, sizeof(float) * (size_t)n);
    kt_bitwise("m after a skipped step", m, m0, sizeof(float) * (size_t)n);
    kt_bitwise("v after a skipped step", v, v0, sizeof(float) * (size_t)n);
    free(g), free(gs), free(p), free(m), free(v), free(p0), free(m0), free(v0);
}

int main(void) {
    static const long sizes[] = {1, 7, 255, 257, 1000, 300001};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        run_sumsq(sizes[i]);
        run_adamw(sizes[i] < 100000 ? sizes[i] : 50001, 0.0f, 1.0f);
        run_adamw(sizes[i] < 100000 ? sizes[i] : 50001, 0.1f, 0.5f);
    }
    run_sumsq(0);
    run_grad_scale(1000, 0.0, 65536.0f);
    run_grad_scale(1000, 1.0, 1024.0f);     /* the norm (about 18) is clipped to 1 */
    run_grad_scale(5, 100.0, 2.0f);
    return kt_report("test_optim");
}
