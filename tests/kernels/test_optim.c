/* test_optim.c - AdamW over several steps against a scalar double reference (with weight
 * decay, gradient scaling, zero gradients), k_sumsq against a double sum and bitwise across
 * calls and thread counts, k_scale. */
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

int main(void) {
    static const long sizes[] = {1, 7, 255, 257, 1000, 300001};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        run_sumsq(sizes[i]);
        run_adamw(sizes[i] < 100000 ? sizes[i] : 50001, 0.0f, 1.0f);
        run_adamw(sizes[i] < 100000 ? sizes[i] : 50001, 0.1f, 0.5f);
    }
    run_sumsq(0);
    return kt_report("test_optim");
}
