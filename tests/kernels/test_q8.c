/* test_q8.c - k_moe_expert_q8_fwd (decoding with int8 expert weights) against a double
 * reference of x (s q) + b over each expert's rows; shapes that leave partial column blocks
 * and a K that is no multiple of 4, experts without rows, with and without bias; and without
 * int8 weights (NULL) it is variant 3 of the f32 kernel, bit for bit. */
#include "k_moe.h"
#include "kt.h"

static void run_case(int E, int K, int N, int bias, const int *rows) {
    KT_CASE("E=%d K=%d N=%d bias=%d", E, K, N, bias);
    int32_t counts[MOE_COUNTS_LEN(8)] = {0};
    int32_t *off = counts + MOE_OFF(E);
    off[0] = 0;
    for (int e = 0; e < E; e++) off[e + 1] = off[e] + rows[e];
    int R = off[E];
    long nq = (long)E * K * N;
    float *x = kt_rand((long)R * K, -1, 1), *s = kt_rand((long)E * N, 0, 0.02f), *b = bias ? kt_rand((long)E * N, -1, 1) : NULL;
    float *u = kt_rand(nq, -127.5f, 127.5f), *W = kt_rand(nq, -1, 1);
    int8_t *q = KT_NEW(int8_t, nq);
    for (long i = 0; i < nq; i++) q[i] = (int8_t)lrintf(u[i]);
    if (N > 1) s[1] = 0.0f;      /* a column of zeros quantises to scale 0 */
    float *y = kt_fill((long)R * N, NAN), *y3 = kt_fill((long)R * N, NAN), *yn = kt_fill((long)R * N, NAN);
    double *want = KT_NEW(double, (long)R * N + 1);
    for (int e = 0; e < E; e++)
        for (int r = off[e]; r < off[e + 1]; r++)
            for (int n = 0; n < N; n++) {
                double acc = 0;
                for (int k = 0; k < K; k++) acc += (double)x[(long)r * K + k] * q[((long)e * K + k) * N + n];
                want[(long)r * N + n] = acc * s[(long)e * N + n] + (b ? b[(long)e * N + n] : 0.0);
            }
    k_moe_expert_q8_fwd(y, x, W, q, s, b, counts, E, K, N);
    kt_close("y", y, want, (long)R * N, 1e-5);
    k_moe_expert_fwd(y3, x, W, b, counts, E, K, N, 3);
    k_moe_expert_q8_fwd(yn, x, W, NULL, NULL, b, counts, E, K, N);
    kt_bitwise("no int8 weights: variant 3", yn, y3, sizeof(float) * (size_t)R * N);
    free(x), free(s), free(b), free(u), free(W), free(q), free(y), free(y3), free(yn), free(want);
}

int main(void) {
    run_case(1, 8, 4, 0, (int[]){1});
    run_case(3, 37, 300, 1, (int[]){2, 0, 1});
    run_case(4, 64, 256, 0, (int[]){0, 1, 0, 3});
    run_case(2, 513, 7, 1, (int[]){1, 2});
    run_case(8, 130, 600, 1, (int[]){1, 0, 0, 2, 0, 0, 1, 1});
    run_case(3, 66, 300, 1, (int[]){6, 1, 9});     /* several row groups per expert (decoding together) */
    return kt_report("kernels_q8");
}
