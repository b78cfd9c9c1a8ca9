/* k_common.h - shared by every CPU kernel template: includes, the counter-based RNG.
 *
 * Kernel templates are `static` C functions; the generated code calls them with the
 * model's sizes as literal constants so the C compiler specialises each call site.
 * Conventions for every kernel:
 *   - tensors are fp32, row-major, shapes written beside each argument;
 *   - S = B*T tokens, flat token index s = b*T + t;
 *   - backward kernels ADD into parameter gradients (zeroed once per optimizer step);
 *     for activation gradients an `acc` flag says: 0 = overwrite, 1 = add.
 *   - threading is OpenMP with static schedules, so results are bitwise reproducible
 *     for a given thread count.
 */
#ifndef MOE_K_COMMON_H
#define MOE_K_COMMON_H
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef K_RESTRICT
#define K_RESTRICT restrict
#endif

/* splitmix64 finaliser: a counter-based generator, so any (stream, index) pair can be
 * drawn independently and in any order (threads, ranks, resumed runs agree). */
static inline uint64_t k_mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline uint64_t k_rng_stream(uint64_t seed, uint64_t a, uint64_t b) {
    return k_mix64(k_mix64(seed ^ k_mix64(a)) ^ k_mix64(b + 0x632BE59BD9B4E019ull));
}
/* uniform in (0, 1), never 0 or 1 */
static inline double k_uniform(uint64_t stream, uint64_t i) {
    return ((double)(k_mix64(stream + i * 0xD1B54A32D192ED03ull) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static inline double k_normal(uint64_t stream, uint64_t i) {   /* Box-Muller, one of the pair */
    double u1 = k_uniform(stream, 2 * i), u2 = k_uniform(stream, 2 * i + 1);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
static inline double k_gumbel(uint64_t stream, uint64_t i) { return -log(-log(k_uniform(stream, i))); }
#endif
