/* test_quant.c - per-output-channel int8 (runtime/quant.h): every dequantised weight within
 * half its channel's scale of the original, the largest magnitude of each channel at +-127,
 * values in [-127, 127], a column of zeros exact, and dequantising s q. */
#include "quant.h"
#include "t_common.h"
#include <math.h>
#include <stdlib.h>

int main(void) {
    enum { E = 3, K = 45, N = 70 };
    static float w[E * K * N], back[E * K * N], s[E * N];
    static int8_t q[E * K * N];
    uint64_t st = 88172645463325252ull;
    for (int i = 0; i < E * K * N; i++) {
        st ^= st << 13, st ^= st >> 7, st ^= st << 17;
        w[i] = (float)((double)(st >> 11) / 9007199254740992.0 * 2.0 - 1.0) * (1 + i % 5);
    }
    for (int k = 0; k < K; k++) w[(1 * K + k) * N + 4] = 0.0f;     /* expert 1, column 4: zeros */
    w[(2 * K + 7) * N + 9] = 1e6f;                                   /* one outlier in its column */
    moe_q8_quantize(w, E, K, N, q, s);
    moe_q8_dequantize(q, s, E, K, N, back);
    int bad_bound = 0, bad_range = 0, bad_peak = 0;
    for (int e = 0; e < E; e++)
        for (int n = 0; n < N; n++) {
            float sc = s[e * N + n];
            int peak = 0;
            for (int k = 0; k < K; k++) {
                int i = (e * K + k) * N + n;
                bad_bound += fabsf(w[i] - back[i]) > 0.5f * sc * (1 + 1e-6f) + 1e-30f;
                bad_range += q[i] < -127;
                peak = abs(q[i]) > peak ? abs(q[i]) : peak;
                bad_bound += back[i] != sc * (float)q[i];
            }
            bad_peak += sc > 0 ? peak != 127 : peak != 0;
        }
    CHECK(bad_bound == 0);
    CHECK(bad_range == 0);
    CHECK(bad_peak == 0);
    CHECK(s[1 * N + 4] == 0.0f);
    CHECK(fabsf(s[2 * N + 9] - 1e6f / 127) <= 1e-6f * s[2 * N + 9]);
    return t_done("test_quant");
}
