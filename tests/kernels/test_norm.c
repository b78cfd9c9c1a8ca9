/* test_norm.c - LayerNorm and RMSNorm: forward (and saved statistics) against a double
 * reference, backward against finite differences, acc flag, += of dw/db, determinism. */
#include "k_norm.h"
#include "kt.h"

typedef struct {
    int S, C, rms;
    double *x, *w, *b, *R, *y;
} nm_ctx;

static void ref_norm(double *y, double *mean, double *rstd, const double *x, const double *w, const double *b, int S,
                     int C, int rms) {
    for (int s = 0; s < S; s++) {
        const double *r = x + (long)s * C;
        double m = 0, v = 0;
        if (!rms) {
            for (int c = 0; c < C; c++) m += r[c];
            m /= C;
        }
        for (int c = 0; c < C; c++) v += (r[c] - m) * (r[c] - m);
        double rs = 1.0 / sqrt(v / C + 1e-5);
        for (int c = 0; c < C; c++) y[(long)s * C + c] = (r[c] - m) * rs * w[c] + (rms ? 0.0 : b[c]);
        if (mean) mean[s] = m;
        if (rstd) rstd[s] = rs;
    }
}
static double nm_loss(void *p) {
    nm_ctx *c = p;
    ref_norm(c->y, NULL, NULL, c->x, c->w, c->b, c->S, c->C, c->rms);
    return kt_dot(c->y, c->R, (long)c->S * c->C);
}

static void run_case(int S, int C, int rms) {
    KT_CASE("%s S=%d C=%d", rms ? "rmsnorm" : "layernorm", S, C);
    long n = (long)S * C;
    float *x = kt_rand(n, -2, 3), *w = kt_rand(C, 0.5f, 1.5f), *b = kt_rand(C, -1, 1), *R = kt_rand(n, -1, 1);
    float *y = kt_fill(n, NAN), *mean = kt_fill(S, NAN), *rstd = kt_fill(S, NAN);
    nm_ctx c = {S, C, rms, kt_dbl(x, n), kt_dbl(w, C), kt_dbl(b, C), kt_dbl(R, n), KT_NEW(double, n)};
    double *rm = KT_NEW(double, S), *rr = KT_NEW(double, S);

    if (rms)
        k_rmsnorm_fwd(y, rstd, x, w, S, C);
    else
        k_layernorm_fwd(y, mean, rstd, x, w, b, S, C);
    ref_norm(c.y, rm, rr, c.x, c.w, c.b, S, C, rms);
    kt_close("out", y, c.y, n, 2e-6);
    kt_close("rstd", rstd, rr, S, 2e-6);
    if (!rms) kt_close("mean", mean, rm, S, 2e-6);

    /* NULL statistics are allowed in the forward (inference) */
    float *y2 = kt_fill(n, NAN);
    if (rms)
        k_rmsnorm_fwd(y2, NULL, x, w, S, C);
    else
        k_layernorm_fwd(y2, NULL, NULL, x, w, b, S, C);
    kt_bitwise("out without saved statistics", y, y2, (size_t)n * sizeof(float));

    double *gx = KT_NEW(double, n), *gw = KT_NEW(double, C), *gb = KT_NEW(double, C);
    kt_fd(gx, c.x, n, nm_loss, &c);
    kt_fd(gw, c.w, C, nm_loss, &c);
    if (!rms) kt_fd(gb, c.b, C, nm_loss, &c);

    float *dx = kt_fill(n, NAN), *dw0 = kt_rand(C, -1, 1), *db0 = kt_rand(C, -1, 1);
    float *dw = kt_copy(dw0, C), *db = kt_copy(db0, C);
    if (rms)
        k_rmsnorm_bwd(dx, dw, R, x, w, rstd, S, C, 0);
    else
        k_layernorm_bwd(dx, dw, db, R, x, w, mean, rstd, S, C, 0);
    /* C = 1 LayerNorm: the output is b whatever x is, so dx is ~0 and compared absolutely */
    if (!rms && C == 1) {
        double z = 0;
        for (long i = 0; i < n; i++) z = fabs(dx[i]) > z ? fabs(dx[i]) : z;
        KT_EXPECT(z < 1e-3, "dx should vanish, max %.3g", z);
    } else
        kt_close("dx (acc=0)", dx, gx, n, 2e-4);
    double *ww = kt_plus(dw0, gw, C), *wb = kt_plus(db0, gb, C);
    kt_close("dw (+=)", dw, ww, C, 2e-4);
    if (!rms) kt_close("db (+=)", db, wb, C, 2e-4);

    float *dx1 = kt_rand(n, -1, 1), *want1 = KT_NEW(float, n);
    for (long i = 0; i < n; i++) want1[i] = dx1[i] + dx[i];
    if (rms)
        k_rmsnorm_bwd(dx1, NULL, R, x, w, rstd, S, C, 1);
    else
        k_layernorm_bwd(dx1, NULL, NULL, R, x, w, mean, rstd, S, C, 1);
    kt_close_f("dx (acc=1)", dx1, want1, n, 1e-6);

    free(x), free(w), free(b), free(R), free(y), free(mean), free(rstd), free(y2);
    free(c.x), free(c.w), free(c.b), free(c.R), free(c.y), free(rm), free(rr), free(gx), free(gw), free(gb);
    free(dx), free(dw0), free(db0), free(dw), free(db), free(ww), free(wb), free(dx1), free(want1);
}

/* large enough for the threaded paths: outputs and parameter gradients bitwise equal for 1
 * and several threads, still matching the reference */
static void run_threads(int rms) {
    int S = 700, C = 67;
    KT_CASE("%s threads S=%d C=%d", rms ? "rmsnorm" : "layernorm", S, C);
    long n = (long)S * C;
    float *x = kt_rand(n, -2, 3), *w = kt_rand(C, 0.5f, 1.5f), *b = kt_rand(C, -1, 1), *R = kt_rand(n, -1, 1);
    float *y[2], *mean[2], *rstd[2], *dx[2], *dw[2], *db[2];
    int nt = omp_get_max_threads();
    for (int r = 0; r < 2; r++) {
        omp_set_num_threads(r == 0 ? 1 : (nt > 1 ? nt : 2));
        y[r] = kt_fill(n, 0), mean[r] = kt_fill(S, 0), rstd[r] = kt_fill(S, 0), dx[r] = kt_fill(n, 0);
        dw[r] = kt_fill(C, 0), db[r] = kt_fill(C, 0);
        if (rms) {
            k_rmsnorm_fwd(y[r], rstd[r], x, w, S, C);
            k_rmsnorm_bwd(dx[r], dw[r], R, x, w, rstd[r], S, C, 0);
        } else {
            k_layernorm_fwd(y[r], mean[r], rstd[r], x, w, b, S, C);
            k_layernorm_bwd(dx[r], dw[r], db[r], R, x, w, mean[r], rstd[r], S, C, 0);
        }
    }
    omp_set_num_threads(nt);
    kt_bitwise("out", y[0], y[1], (size_t)n * sizeof(float));
    kt_bitwise("dx", dx[0], dx[1], (size_t)n * sizeof(float));
    kt_bitwise("dw", dw[0], dw[1], (size_t)C * sizeof(float));
    kt_bitwise("db", db[0], db[1], (size_t)C * sizeof(float));
    double *xd = kt_dbl(x, n), *wd = kt_dbl(w, C), *bd = kt_dbl(b, C), *yd = KT_NEW(double, n);
    ref_norm(yd, NULL, NULL, xd, wd, bd, S, C, rms);
    kt_close("out", y[1], yd, n, 2e-6);
    /* dw reference: sum_s R * xhat */
    double *gw = KT_NEW(double, C), *m = KT_NEW(double, S), *rs = KT_NEW(double, S);
    ref_norm(yd, m, rs, xd, wd, bd, S, C, rms);
    for (int c = 0; c < C; c++) {
        gw[c] = 0;
        for (int s = 0; s < S; s++) gw[c] += R[(long)s * C + c] * (xd[(long)s * C + c] - m[s]) * rs[s];
    }
    kt_close("dw", dw[1], gw, C, 1e-5);
    for (int r = 0; r < 2; r++) free(y[r]), free(mean[r]), free(rstd[r]), free(dx[r]), free(dw[r]), free(db[r]);
    free(x), free(w), free(b), free(R), free(xd), free(wd), free(bd), free(yd), free(gw), free(m), free(rs);
}

/* The thread-split variants (k_common.h; moec tune picks one) agree with v1 bitwise on shapes
 * below, between and above their thresholds (4096 and 32768 elements), on 2 threads or more. */
static void run_split(int rms) {
    static const int shapes[][2] = {{32, 128}, {127, 256}, {300, 129}};
    int nt = omp_get_max_threads();
    omp_set_num_threads(nt > 1 ? nt : 2);
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int S = shapes[i][0], C = shapes[i][1];
        long n = (long)S * C;
        KT_CASE("%s split variants S=%d C=%d", rms ? "rmsnorm" : "layernorm", S, C);
        float *x = kt_rand(n, -2, 2), *w = kt_rand(C, 0.5f, 1.5f), *b = kt_rand(C, -1, 1), *R = kt_rand(n, -1, 1);
        float *y[3], *mean[3], *rstd[3], *dx[3], *dw[3], *db[3];
        for (int v = 0; v < 3; v++) {
            y[v] = kt_fill(n, 0), mean[v] = kt_fill(S, 0), rstd[v] = kt_fill(S, 0), dx[v] = kt_fill(n, 0);
            dw[v] = kt_fill(C, 0), db[v] = kt_fill(C, 0);
        }
        if (rms) {
            k_rmsnorm_fwd_v1(y[0], rstd[0], x, w, S, C), k_rmsnorm_bwd_v1(dx[0], dw[0], R, x, w, rstd[0], S, C, 0);
            k_rmsnorm_fwd_v2(y[1], rstd[1], x, w, S, C), k_rmsnorm_bwd_v2(dx[1], dw[1], R, x, w, rstd[1], S, C, 0);
            k_rmsnorm_fwd_v3(y[2], rstd[2], x, w, S, C), k_rmsnorm_bwd_v3(dx[2], dw[2], R, x, w, rstd[2], S, C, 0);
        } else {
            k_layernorm_fwd_v1(y[0], mean[0], rstd[0], x, w, b, S, C);
            k_layernorm_bwd_v1(dx[0], dw[0], db[0], R, x, w, mean[0], rstd[0], S, C, 0);
            k_layernorm_fwd_v2(y[1], mean[1], rstd[1], x, w, b, S, C);
            k_layernorm_bwd_v2(dx[1], dw[1], db[1], R, x, w, mean[1], rstd[1], S, C, 0);
            k_layernorm_fwd_v3(y[2], mean[2], rstd[2], x, w, b, S, C);
            k_layernorm_bwd_v3(dx[2], dw[2], db[2], R, x, w, mean[2], rstd[2], S, C, 0);
        }
        for (int v = 1; v < 3; v++) {
            kt_bitwise("out", y[v], y[0], (size_t)n * sizeof(float));
            kt_bitwise("dx", dx[v], dx[0], (size_t)n * sizeof(float));
            kt_bitwise("dw", dw[v], dw[0], (size_t)C * sizeof(float));
            kt_bitwise("db", db[v], db[0], (size_t)C * sizeof(float));
        }
        KT_EXPECT(k_split == 1, "a variant left the split at %d", k_split);
        for (int v = 0; v < 3; v++) free(y[v]), free(mean[v]), free(rstd[v]), free(dx[v]), free(dw[v]), free(db[v]);
        free(x), free(w), free(b), free(R);
    }
    omp_set_num_threads(nt);
}

int main(void) {
    static const int shapes[][2] = {{1, 1}, {3, 7}, {1, 3}, {5, 32}, {4, 67}, {2, 100}};
    for (int rms = 0; rms < 2; rms++) {
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) run_case(shapes[i][0], shapes[i][1], rms);
        run_threads(rms);
    }
    for (int rms = 0; rms < 2; rms++) run_split(rms);   /* after the others: their random inputs stay as they were */
    return kt_report("test_norm");
}
