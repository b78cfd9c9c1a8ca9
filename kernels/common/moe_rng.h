/* moe_rng.h - counter-based random numbers and the string hash, for host and device code.
 *
 * Every random draw of the project (initialisation, batch positions, jitter, Gumbel noise,
 * random token selection, sampling) is a pure function of (stream, index): a stream is a
 * hash of (seed, a, b), an index picks one number of it. Nothing is sequential, so threads,
 * ranks, devices and resumed runs draw the same numbers in any order. The runtime (init,
 * sampling), the CPU kernels and the GPU kernels include this one file; MOE_HD marks the
 * functions for both sides of a CUDA compilation. A parameter's init stream is keyed by a
 * hash of its name that the compiler computes (util/hash.h) and the program carries.
 */
#ifndef MOE_RNG_H
#define MOE_RNG_H

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define MOE_HD __host__ __device__ __forceinline__
#else
#define MOE_HD static inline
#endif
#if defined(__CUDACC_RTC__)
typedef unsigned long long uint64_t;   /* NVRTC has no <stdint.h> */
#else
#include <math.h>
#include <stdint.h>
#endif

/* splitmix64's finaliser */
MOE_HD uint64_t moe_mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/* the stream of (seed, a, b); streams of distinct triples are independent */
MOE_HD uint64_t moe_rng_stream(uint64_t seed, uint64_t a, uint64_t b) {
    return moe_mix64(moe_mix64(seed ^ moe_mix64(a)) ^ moe_mix64(b + 0x632BE59BD9B4E019ull));
}
/* uniform in (0, 1), never 0 or 1 */
MOE_HD double moe_uniform(uint64_t stream, uint64_t i) {
    return ((double)(moe_mix64(stream + i * 0xD1B54A32D192ED03ull) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
/* standard normal: Box-Muller, one of the pair */
MOE_HD double moe_normal(uint64_t stream, uint64_t i) {
    double u1 = moe_uniform(stream, 2 * i), u2 = moe_uniform(stream, 2 * i + 1);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
MOE_HD double moe_gumbel(uint64_t stream, uint64_t i) { return -log(-log(moe_uniform(stream, i))); }

/* The stream of micro-step `micro` of optimizer step `step`: the noise of the gates (each
 * layer derives its own from it). Distinct (step, micro) pairs never share a stream. */
MOE_HD uint64_t moe_rng_micro(uint64_t seed, uint64_t step, uint64_t micro) {
    return moe_rng_stream(seed ^ 0x6A7E5EED0015Eull, step, micro);
}

#endif
