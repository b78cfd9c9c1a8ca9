/* quant.c - per-output-channel int8 (quant.h). */
#include "quant.h"
#include <math.h>

void moe_q8_quantize(const float *w, int64_t E, int64_t K, int64_t N, int8_t *q, float *s) {
    for (int64_t e = 0; e < E; e++) {
        const float *we = w + e * K * N;
        float *se = s + e * N;
        for (int64_t n = 0; n < N; n++) se[n] = 0.0f;
        for (int64_t k = 0; k < K; k++)
            for (int64_t n = 0; n < N; n++) se[n] = fmaxf(se[n], fabsf(we[k * N + n]));
        for (int64_t n = 0; n < N; n++) se[n] /= 127.0f;
        for (int64_t k = 0; k < K; k++)
            for (int64_t n = 0; n < N; n++) {
                float v = se[n] > 0.0f ? nearbyintf(we[k * N + n] / se[n]) : 0.0f;
                q[e * K * N + k * N + n] = (int8_t)fminf(127.0f, fmaxf(-127.0f, v));
            }
    }
}

void moe_q8_dequantize(const int8_t *q, const float *s, int64_t E, int64_t K, int64_t N, float *w) {
    for (int64_t e = 0; e < E; e++)
        for (int64_t k = 0; k < K; k++)
            for (int64_t n = 0; n < N; n++) w[(e * K + k) * N + n] = s[e * N + n] * (float)q[(e * K + k) * N + n];
}
