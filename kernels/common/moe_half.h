/* moe_half.h - bf16 and IEEE half (f16) from and to f32, on bit patterns, round to nearest
 * even; one code for the runtime (C: the cpu device widens a half model's GEMM operands),
 * the emulator (C++) and the CUDA kernels (NVRTC, which has no _Float16 and whose host-side
 * twin, the emulator, may be built by a compiler without one either). Floats come in and go
 * out as their bits (callers convert with memcpy, or __float_as_uint on the GPU).
 * Subnormals are kept and rounded; a NaN stays a quiet NaN of the same sign (its payload's
 * top bits kept), infinities stay infinite, and f32 values beyond f16's range (65520 and
 * up, the first that rounds past 65504) become infinities, as IEEE rounding and the GPU's
 * cvt.rn.f16.f32 make them.
 */
#ifndef MOE_HALF_H
#define MOE_HALF_H
#include "moe_abi.h"      /* uint16_t, uint32_t (NVRTC has no <stdint.h>) */
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define MOE_HALF_FN static __host__ __device__ inline
#else
#define MOE_HALF_FN static inline
#endif

MOE_HALF_FN uint16_t moe_bf16_from_f32(uint32_t u) {
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);   /* NaN: quiet */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
MOE_HALF_FN uint32_t moe_bf16_to_f32(uint16_t h) { return (uint32_t)h << 16; }

MOE_HALF_FN uint16_t moe_f16_from_f32(uint32_t u) {
    uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  /* NaN: quiet */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);                      /* 65520 and up: inf */
    if (a >= 0x38800000u)                                                          /* 2^-14 and up: normal */
        return (uint16_t)(sign | ((a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u) >> 13));
    if (a < 0x33000000u) return (uint16_t)sign;                                    /* below 2^-25: zero */
    /* subnormal: the 24-bit significand in units of 2^-24, rounded (may reach 2^-14, the
     * smallest normal, whose encoding follows on) */
    uint32_t shift = 126u - (a >> 23), m = (a & 0x7fffffu) | 0x800000u;
    uint32_t r = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    return (uint16_t)(sign | (r + (rem > half || (rem == half && (r & 1u)))));
}
MOE_HALF_FN uint32_t moe_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31u, m = h & 1023u;
    if (e == 31) return sign | 0x7f800000u | m << 13;          /* inf, NaN */
    if (e) return sign | (e + 112u) << 23 | m << 13;          /* normal: rebias 15 -> 127 */
    if (!m) return sign;                                       /* zero */
    int sh = 0;                                                /* subnormal: m 2^-24, normalised */
    while (!(m & 1024u)) m <<= 1, sh++;
    return sign | (uint32_t)(113 - sh) << 23 | (m & 1023u) << 13;
}
#endif
