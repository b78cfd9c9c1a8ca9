/* k_common.h - shared by every CPU kernel template: includes, conventions, row counts.
 *
 * Kernel templates are `static` C functions; the generated code calls them with the
 * model's sizes as literal constants so the C compiler specialises each call site.
 * Conventions for every kernel:
 *   - tensors are row-major, shapes written beside each argument; S = B*T tokens, flat
 *     token index s = b*T + t;
 *   - backward kernels ADD into parameter gradients (zeroed once per optimizer step);
 *     for activation gradients an `acc` flag says: 0 = overwrite, 1 = add;
 *   - a kernel never allocates: scratch comes planned from the caller;
 *   - threading is OpenMP with static schedules, so results are bitwise reproducible
 *     for a given thread count.
 * Random numbers and the shared records come from ../common (moe_rng.h, moe_abi.h).
 */
#ifndef MOE_K_COMMON_H
#define MOE_K_COMMON_H
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "moe_abi.h"
#include "moe_rng.h"

#ifndef K_RESTRICT
#define K_RESTRICT restrict
#endif

/* elements below which a kernel stays on one thread (a fork costs microseconds) */
#ifndef K_OMP_MIN_WORK
#define K_OMP_MIN_WORK 32768L
#endif

/* The thread split of the elementwise kernels (k_act.h, k_norm.h), a numbered variant that
 * `moec tune` measures: 1 (the rule) threads from K_OMP_MIN_WORK elements, 2 one thread,
 * 3 threads from an eighth of that. Their loops fork when K_PAR(work) holds; a variant
 * function k_NAME_vN (K_SPLIT_VARIANTS) sets the split for one call. Thread-local: ranks that
 * share a process run their steps on threads of their own. */
static _Thread_local int k_split = 1;
static inline int k_par(long work, long min) {
    return k_split == 2 ? 0 : work >= (k_split == 3 ? min / 8 : min);
}
#define K_PAR(work) k_par((long)(work), K_OMP_MIN_WORK)
#define K_SPLIT_VARIANT(v, name, params, args)                                                    \
    static inline void k_##name##_v##v params {                                                   \
        int outer = k_split;                                                                      \
        k_split = v;                                                                              \
        k_##name args;                                                                            \
        k_split = outer;                                                                          \
    }
#define K_SPLIT_VARIANTS(name, params, args)                                                      \
    K_SPLIT_VARIANT(1, name, params, args) K_SPLIT_VARIANT(2, name, params, args)                 \
    K_SPLIT_VARIANT(3, name, params, args)

/* A row count known on the host (n), or one the kernel reads from device memory (dev:
 * the routed rows R that a gate wrote, which the host never sees). */
typedef struct k_rows { long n; const int32_t *dev; } k_rows;
#define K_ROWS(n) ((k_rows){(n), NULL})
#define K_ROWS_DEV(p) ((k_rows){0, (p)})
static inline long k_rows_get(k_rows r) { return r.dev ? (long)*r.dev : r.n; }
#endif
