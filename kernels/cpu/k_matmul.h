/* k_matmul.h - dense linear layer on the CPU: y = x W (+ b), and its backward.
 *
 * All GEMM work goes to OpenBLAS's cblas_sgemm, which threads itself; these functions must
 * therefore be called from outside OpenMP parallel regions (the pthread OpenBLAS serialises
 * concurrent threaded calls). The bias and its gradient are the only hand-written loops.
 * Not here: expert (grouped) matmuls, which live with the MoE kernels in k_moe.h.
 */
#ifndef MOE_K_MATMUL_H
#define MOE_K_MATMUL_H
#include "k_common.h"
#include <cblas.h>

#define K_MATMUL_COLS 64 /* column chunk of the bias gradient (one thread owns a chunk) */

/* y[M,N] = x[M,K] @ W (+ b). transW = 0: W is [K,N]; transW = 1: W is stored [N,K]
 * (the tied LM head multiplies by wte [V,d]). b [N] or NULL. y may not alias x or W. */
/* y [M,N] (acc: +=, else =) x [M,K] W [K,N] for a few rows, M <= K_FEW_ROWS (decoding a few
 * sequences together): sgemm would first copy (pack) all of W, which at these sizes costs more
 * than the product; here each 64-column stripe of W streams past once while the M x 64 sums
 * stay in registers (GCC vectors: 4 AVX-512 or 8 AVX2 registers a row). Measured against
 * OpenBLAS sgemm with W from memory: 1.7-2x at 2-4 rows. Stripes go over the threads. */
#define K_FEW_ROWS 4
typedef float k_v16 __attribute__((vector_size(64)));
static inline void k_few_stripe(float *y, const float *x, const float *W, int M, int K, int N, int n0, int acc) {
    k_v16 s[K_FEW_ROWS][4];
    memset(s, 0, sizeof s);
    for (int k = 0; k < K; k++) {
        k_v16 w[4];
        memcpy(w, W + (long)k * N + n0, sizeof w);
        for (int m = 0; m < M; m++) {
            float xv = x[(long)m * K + k];
            for (int j = 0; j < 4; j++) s[m][j] += xv * w[j];
        }
    }
    for (int m = 0; m < M; m++) {
        float *o = y + (long)m * N + n0, t[64];
        memcpy(t, s[m], sizeof t);
        for (int j = 0; j < 64; j++) o[j] = acc ? o[j] + t[j] : t[j];
    }
}
static inline void k_gemm_few(float *y, const float *x, const float *W, int M, int K, int N, int acc) {
    int full = N / 64;
#pragma omp parallel for schedule(static) if ((long)K * N >= 4 * K_OMP_MIN_WORK)
    for (int i = 0; i < full; i++) k_few_stripe(y, x, W, M, K, N, i * 64, acc);
    for (int m = 0; m < M; m++)         /* the last N % 64 columns */
        for (int n = full * 64; n < N; n++) {
            float v = 0.0f;
            for (int k = 0; k < K; k++) v += x[(long)m * K + k] * W[(long)k * N + n];
            y[(long)m * N + n] = acc ? y[(long)m * N + n] + v : v;
        }
}

static inline void k_matmul_fwd(float *y /* [M,N] */, const float *x /* [M,K] */, const float *W /* [K,N] or [N,K] */,
                                const float *b /* [N] or NULL */, int M, int K, int N, int transW) {
    if (M <= 0 || N <= 0) return;
    if (b) { /* y = b, then the GEMM adds (beta = 1 costs the same as OpenBLAS's beta = 0 pass) */
#pragma omp parallel for schedule(static) if ((long)M * N >= K_OMP_MIN_WORK)
        for (int i = 0; i < M; i++) memcpy(y + (long)i * N, b, (size_t)N * sizeof(float));
    }
    if (K <= 0) {
        if (!b) memset(y, 0, (size_t)M * N * sizeof(float));
        return;
    }
    if (M == 1) { /* one row (decoding): sgemm would copy all of W to pack it, sgemv streams it once */
        if (transW) cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0f, W, K, x, 1, b ? 1.0f : 0.0f, y, 1);
        else cblas_sgemv(CblasRowMajor, CblasTrans, K, N, 1.0f, W, N, x, 1, b ? 1.0f : 0.0f, y, 1);
        return;
    }
    if (M <= K_FEW_ROWS && !transW) { k_gemm_few(y, x, W, M, K, N, b != NULL); return; }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, transW ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, x, K, W,
                transW ? K : N, b ? 1.0f : 0.0f, y, N);
}

/* db [N] += the column sums of dy [M,N], summed in double over fixed column chunks with the rows
 * in order, so db is bitwise the same for any thread count */
static inline void k_bias_grad(float *db /* [N] */, const float *dy /* [M,N] */, int M, int N) {
    int nchunk = (N + K_MATMUL_COLS - 1) / K_MATMUL_COLS;
#pragma omp parallel for schedule(static) if ((long)M * N >= K_OMP_MIN_WORK)
    for (int c = 0; c < nchunk; c++) {
        int j0 = c * K_MATMUL_COLS, j1 = j0 + K_MATMUL_COLS < N ? j0 + K_MATMUL_COLS : N;
        double a[K_MATMUL_COLS] = {0}; /* double partial sums: M may be many thousand tokens */
        for (int i = 0; i < M; i++) {
            const float *r = dy + (long)i * N + j0;
#pragma omp simd
            for (int j = 0; j < j1 - j0; j++) a[j] += r[j];
        }
        for (int j = 0; j < j1 - j0; j++) db[j0 + j] += (float)a[j];
    }
}

/* Backward of k_matmul_fwd. dx [M,K] = dy W^T (acc: 0 overwrite, 1 add); dW (+=) x^T dy, in W's
 * own layout ([K,N], or [N,K] when transW); db [N] (+=) column sums of dy (k_bias_grad). Any of dx, dW, db may
 * be NULL to skip it. */
static inline void k_matmul_bwd(float *dx /* [M,K] */, float *dW /* [K,N] or [N,K] */, float *db /* [N] */,
                                const float *dy /* [M,N] */, const float *x /* [M,K] */,
                                const float *W /* [K,N] or [N,K] */, int M, int K, int N, int transW, int acc) {
    if (M <= 0 || N <= 0 || K < 0) return;
    if (dx && K > 0) {
        if (transW) /* W [N,K]: dx = dy W */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, K, N, 1.0f, dy, N, W, K, acc ? 1.0f : 0.0f,
                        dx, K);
        else /* W [K,N]: dx = dy W^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, K, N, 1.0f, dy, N, W, N, acc ? 1.0f : 0.0f, dx,
                        K);
    }
    if (dW && K > 0) {
        if (transW) /* dW [N,K] += dy^T x */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, M, 1.0f, dy, N, x, K, 1.0f, dW, K);
        else /* dW [K,N] += x^T dy */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, N, M, 1.0f, x, K, dy, N, 1.0f, dW, N);
    }
    if (db) k_bias_grad(db, dy, M, N);
}
#endif
