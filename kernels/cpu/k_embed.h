/* k_embed.h - token + position embedding on the CPU: x = wte[token] + wpe[position], and the
 * backward that scatters dx into the embedding tables.
 *
 * The backward reduces over tokens (a token id may repeat), so threads own fixed column chunks
 * and walk the tokens in order: deterministic for any thread count, no atomics.
 * Token ids are not checked here: they must lie in [0, V) (the data loader validates them).
 */
#ifndef MOE_K_EMBED_H
#define MOE_K_EMBED_H
#include "k_common.h"

#define K_EMBED_COLS 64 /* column chunk owned by one thread in the backward */

/* x[s] = wte[tok[s]] + (wpe ? wpe[position of s] : 0), s = b*T+t at position pos[s] (decoding:
 * a sequence per row), or t without pos */
static inline void k_embed_fwd(float *x /* [B*T, C] */, const int32_t *tok /* [B*T] */, const float *wte /* [V, C] */,
                               const float *wpe /* [maxT, C] or NULL */, const int32_t *pos /* [B*T] or NULL */, int B,
                               int T, int C) {
#pragma omp parallel for schedule(static) if ((long)B * T * C >= K_OMP_MIN_WORK)
    for (long s = 0; s < (long)B * T; s++) {
        const float *e = wte + (long)tok[s] * C;
        float *o = x + s * C;
        if (wpe) {
            const float *p = wpe + (long)(pos ? pos[s] : (int)(s % T)) * C;
#pragma omp simd
            for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
        } else
            memcpy(o, e, (size_t)C * sizeof(float));
    }
}

/* dwte[tok[s]] += dx[s]; dwpe[t] += sum_b dx[b*T+t] (positions from 0: training starts at 0).
 * dwpe may be NULL. */
static inline void k_embed_bwd(float *dwte /* [V, C] */, float *dwpe /* [maxT, C] or NULL */, const float *dx /* [B*T, C] */,
                               const int32_t *tok /* [B*T] */, int B, int T, int C) {
    int nchunk = (C + K_EMBED_COLS - 1) / K_EMBED_COLS;
    long S = (long)B * T;
#pragma omp parallel for schedule(static) if (S * C >= K_OMP_MIN_WORK)
    for (int k = 0; k < nchunk; k++) {
        int c0 = k * K_EMBED_COLS, n = C - c0 < K_EMBED_COLS ? C - c0 : K_EMBED_COLS;
        for (long s = 0; s < S; s++) {
            const float *d = dx + s * C + c0;
            float *e = dwte + (long)tok[s] * C + c0;
#pragma omp simd
            for (int c = 0; c < n; c++) e[c] += d[c];
            if (dwpe) {
                float *p = dwpe + (s % T) * C + c0;
#pragma omp simd
                for (int c = 0; c < n; c++) p[c] += d[c];
            }
        }
    }
}
#endif
