/* test_matmul.c - k_matmul_fwd/bwd against a double reference and finite differences,
 * both weight layouts, with and without bias, acc flag and += of dW, db. */
#include "k_matmul.h"
#include "k_fused.h"
#include "kt.h"

typedef struct {
    int M, K, N, transW;
    double *x, *W, *b, *R, *y; /* b may be NULL */
} mm_ctx;

static void ref_matmul(double *y, const double *x, const double *W, const double *b, int M, int K, int N, int transW) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = b ? b[j] : 0.0;
            for (int k = 0; k < K; k++) s += x[(long)i * K + k] * (transW ? W[(long)j * K + k] : W[(long)k * N + j]);
            y[(long)i * N + j] = s;
        }
}
static double mm_loss(void *p) {
    mm_ctx *c = p;
    ref_matmul(c->y, c->x, c->W, c->b, c->M, c->K, c->N, c->transW);
    return kt_dot(c->y, c->R, (long)c->M * c->N);
}

static void run_case(int M, int K, int N, int transW, int bias) {
    KT_CASE("M=%d K=%d N=%d transW=%d bias=%d", M, K, N, transW, bias);
    long nx = (long)M * K, nw = (long)K * N, ny = (long)M * N;
    float *x = kt_rand(nx, -1, 1), *W = kt_rand(nw, -1, 1), *b = bias ? kt_rand(N, -1, 1) : NULL;
    float *R = kt_rand(ny, -1, 1), *y = kt_fill(ny, NAN);
    mm_ctx c = {M, K, N, transW, kt_dbl(x, nx), kt_dbl(W, nw), bias ? kt_dbl(b, N) : NULL, kt_dbl(R, ny),
                KT_NEW(double, ny)};

    /* forward: y may hold garbage before */
    k_matmul_fwd(y, x, W, b, M, K, N, transW);
    ref_matmul(c.y, c.x, c.W, c.b, M, K, N, transW);
    kt_close("y", y, c.y, ny, 1e-5);

    /* finite-difference gradients of sum(y * R) */
    double *gx = KT_NEW(double, nx), *gw = KT_NEW(double, nw), *gb = KT_NEW(double, N);
    kt_fd(gx, c.x, nx, mm_loss, &c);
    if (nw <= 4096) {
        kt_fd(gw, c.W, nw, mm_loss, &c);
    } else {    /* (differences over every weight cost K^2 N^2 M: minutes under the sanitizers) x^T R, summed in double */
        for (int k = 0; k < K; k++)
            for (int j = 0; j < N; j++) {
                double s = 0;
                for (int i = 0; i < M; i++) s += c.x[(long)i * K + k] * c.R[(long)i * N + j];
                gw[transW ? (long)j * K + k : (long)k * N + j] = s;
            }
    }
    if (bias) kt_fd(gb, c.b, N, mm_loss, &c);

    float *dx = kt_fill(nx, NAN), *dW0 = kt_rand(nw, -1, 1), *db0 = kt_rand(N, -1, 1);
    float *dW = kt_copy(dW0, nw), *db = kt_copy(db0, N);
    k_matmul_bwd(dx, dW, bias ? db : NULL, R, x, W, M, K, N, transW, 0);
    kt_close("dx (acc=0)", dx, gx, nx, 1e-4);
    double *wantW = kt_plus(dW0, gw, nw);
    kt_close("dW (+=)", dW, wantW, nw, 1e-4);
    if (bias) {
        double *wantb = kt_plus(db0, gb, N);
        kt_close("db (+=)", db, wantb, N, 1e-4);
        free(wantb);
    } else
        kt_bitwise("db untouched when NULL", db, db0, (size_t)N * sizeof(float));

    /* acc = 1 adds onto dx; dW/db NULL are skipped */
    float *dx1 = kt_rand(nx, -1, 1), *want1 = KT_NEW(float, nx);
    for (long i = 0; i < nx; i++) want1[i] = dx1[i] + dx[i];
    k_matmul_bwd(dx1, NULL, NULL, R, x, W, M, K, N, transW, 1);
    kt_close_f("dx (acc=1)", dx1, want1, nx, 1e-6);

    /* dW alone, twice: the second call adds the same again */
    float *dW2 = kt_fill(nw, 0.0f);
    k_matmul_bwd(NULL, dW2, NULL, R, x, W, M, K, N, transW, 0);
    k_matmul_bwd(NULL, dW2, NULL, R, x, W, M, K, N, transW, 0);
    for (long i = 0; i < nw; i++) gw[i] *= 2;
    kt_close("dW accumulated twice", dW2, gw, nw, 1e-4);

    free(x), free(W), free(b), free(R), free(y), free(c.x), free(c.W), free(c.b), free(c.R), free(c.y);
    free(gx), free(gw), free(gb), free(dx), free(dW0), free(db0), free(dW), free(db), free(wantW);
    free(dx1), free(want1), free(dW2);
}

/* db is a column sum over many rows: bitwise equal for 1 and 2 threads, and accurate */
static void run_bias_determinism(void) {
    int M = 3000, N = 40, K = 3;
    KT_CASE("bias gradient determinism M=%d N=%d", M, N);
    float *dy = kt_rand((long)M * N, -1, 1), *x = kt_rand((long)M * K, -1, 1), *W = kt_rand((long)K * N, -1, 1);
    float *db1 = kt_fill(N, 0), *db2 = kt_fill(N, 0);
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    k_matmul_bwd(NULL, NULL, db1, dy, x, W, M, K, N, 0, 0);
    omp_set_num_threads(nt > 1 ? nt : 2);
    k_matmul_bwd(NULL, NULL, db2, dy, x, W, M, K, N, 0, 0);
    omp_set_num_threads(nt);
    kt_bitwise("db 1 thread vs several", db1, db2, (size_t)N * sizeof(float));
    double *want = KT_NEW(double, N);
    for (int j = 0; j < N; j++) {
        want[j] = 0;
        for (int i = 0; i < M; i++) want[j] += dy[(long)i * N + j];
    }
    kt_close("db", db1, want, N, 1e-6);
    free(dy), free(x), free(W), free(db1), free(db2), free(want);
}

/* the fused residual form, y = res + x W + b, over the sgemv, few-row and sgemm paths */
static void run_res(int M, int K, int N) {
    KT_CASE("matmul_res M=%d K=%d N=%d", M, K, N);
    float *x = kt_rand((long)M * K, -1, 1), *W = kt_rand((long)K * N, -1, 1), *b = kt_rand(N, -1, 1);
    float *res = kt_rand((long)M * N, -1, 1), *y = kt_fill((long)M * N, NAN);
    double *want = KT_NEW(double, (long)M * N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = (double)res[(long)i * N + j] + b[j];
            for (int k = 0; k < K; k++) s += (double)x[(long)i * K + k] * W[(long)k * N + j];
            want[(long)i * N + j] = s;
        }
    k_matmul_res_fwd(y, x, W, b, res, M, K, N);
    kt_close("y", y, want, (long)M * N, 1e-5);
    free(x), free(W), free(b), free(res), free(y), free(want);
}

int main(void) {
    for (int M = 1; M <= 6; M++) run_res(M, 37, 150);
    /* 2-4 rows: the few-row kernel (k_gemm_few), with whole 64-column stripes and a tail */
    static const int shapes[][3] = {{1, 1, 1}, {5, 7, 3}, {13, 17, 11}, {4, 1, 9}, {1, 8, 5}, {33, 20, 17}, {2, 64, 3},
                                    {2, 9, 64}, {3, 33, 200}, {4, 70, 131}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int transW = 0; transW < 2; transW++)
            for (int bias = 0; bias < 2; bias++) run_case(shapes[i][0], shapes[i][1], shapes[i][2], transW, bias);
    run_bias_determinism();
    return kt_report("test_matmul");
}
