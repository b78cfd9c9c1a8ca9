/* quant.h - weight-only int8 for the expert weights (`OUT quantize`).
 *
 * Symmetric, one scale per output channel: for expert e and output column n of W [E, K, N]
 * ([in, out] per expert), s[e, n] = max_k |W[e, k, n]| / 127 and q[e, k, n] = round(W / s),
 * so the dequantised weight s q is within s / 2 of W (a column of zeros has s = 0, q = 0).
 * The decode program multiplies by q and scales the sums (k_moe_expert_q8_fwd); every other
 * program reads the dequantised weights.
 */
#ifndef MOE_QUANT_H
#define MOE_QUANT_H
#include <stdint.h>

/* q [E*K*N], s [E*N] from w [E*K*N]. */
void moe_q8_quantize(const float *w, int64_t E, int64_t K, int64_t N, int8_t *q, float *s);
/* w [E*K*N] = s q */
void moe_q8_dequantize(const int8_t *q, const float *s, int64_t E, int64_t K, int64_t N, float *w);
#endif
