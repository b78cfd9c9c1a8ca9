/* k_fused.h - kernels the fusion pass creates: the residual add folded into a matmul. */
#ifndef MOE_K_FUSED_H
#define MOE_K_FUSED_H
#include "k_common.h"
#include "k_matmul.h"
#include <cblas.h>

/* y[M,N] = res[M,N] + x[M,K] W[K,N] + b[N]: one pass to seed y, then sgemm with beta = 1. */
static inline void k_matmul_res_fwd(float *y, const float *x, const float *W, const float *b, const float *res,
                                    int M, int K, int N) {
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < M; r++) {
        float *o = y + (int64_t)r * N;
        const float *q = res + (int64_t)r * N;
        if (b) for (int c = 0; c < N; c++) o[c] = q[c] + b[c];
        else memcpy(o, q, sizeof(float) * (size_t)N);
    }
    if (M == 1) cblas_sgemv(CblasRowMajor, CblasTrans, K, N, 1.0f, W, N, x, 1, 1.0f, y, 1);  /* k_matmul_fwd's reasons */
    else if (M <= K_FEW_ROWS) k_gemm_few(y, x, W, M, K, N, 1);
    else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, x, K, W, N, 1.0f, y, N);
}
#endif
