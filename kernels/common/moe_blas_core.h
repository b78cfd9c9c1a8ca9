/* moe_blas_core.h - OpenBLAS's kernels for the processor it runs on.
 *
 * A DYNAMIC_ARCH OpenBLAS (Debian's) picks its kernels when it loads, from a table of the
 * processor models it knows. A processor newer than the table gets the fallback, Prescott's
 * SSE3 kernels: Debian 12's OpenBLAS 0.3.21 on an Intel family 6 model 207 (Emerald Rapids)
 * runs sgemm at 35 GFLOP/s on 2 cores instead of 250 with its Cooperlake kernels, and a
 * training step 4.4x slower. OPENBLAS_CORETYPE forces the choice but is read only at load,
 * before main. So moe_blas_best_core() runs first thing in main: when the user has not set
 * OPENBLAS_CORETYPE and the kernels OpenBLAS chose are of a lower class than the processor
 * supports (by its features, not its model number), the process executes itself again with
 * OPENBLAS_CORETYPE naming the best class, and MOE_BLAS_CORE_WAS saying what OpenBLAS had
 * picked (info and bench show both). Any OPENBLAS_CORETYPE the user sets is left alone.
 * Used by the executables' main (runtime/cli/main.c, compiled for the baseline processor) and
 * by the harness of `moec tune`.
 */
#ifndef MOE_BLAS_CORE_H
#define MOE_BLAS_CORE_H
#include <cblas.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

/* the classes of OpenBLAS x86-64 kernels worth forcing, weakest first; 0 = anything older */
static const char *const moe_blas_classes[] = {"", "Haswell", "SkylakeX", "Cooperlake"};

static inline int moe_blas_class_of(const char *core) {
    static const struct { const char *name; int cls; } known[] = {
        {"Haswell", 1}, {"Zen", 1}, {"SkylakeX", 2}, {"Cooperlake", 3}, {"SapphireRapids", 3}};
    for (size_t i = 0; core && i < sizeof known / sizeof known[0]; i++)
        if (!strcasecmp(core, known[i].name)) return known[i].cls;
    return 0;
}

/* the best class this processor can run: AVX512-BF16, AVX-512 (F, BW, DQ, VL), AVX2 + FMA */
static inline int moe_blas_class_supported(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512bf16")) return 3;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

/* Re-executes the process with better kernels where that applies (see above); returns when
 * nothing is to be done or the exec failed (the run then goes on with OpenBLAS's choice). */
static inline void moe_blas_best_core(char **argv) {
    if (getenv("OPENBLAS_CORETYPE")) return;
    const char *have = openblas_get_corename();
    int want = moe_blas_class_supported();
    if (want <= moe_blas_class_of(have)) return;
    if (setenv("OPENBLAS_CORETYPE", moe_blas_classes[want], 1) || setenv("MOE_BLAS_CORE_WAS", have ? have : "?", 1))
        return;
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE"); /* not re-executed: say nothing false */
    unsetenv("MOE_BLAS_CORE_WAS");
}

/* What runs: the kernels' name, and who chose them ("OpenBLAS", "OPENBLAS_CORETYPE", or
 * "moec" with *was = OpenBLAS's own pick). */
static inline const char *moe_blas_core(const char **chosen_by, const char **was) {
    const char *w = getenv("MOE_BLAS_CORE_WAS"), *forced = getenv("OPENBLAS_CORETYPE");
    *was = w;
    *chosen_by = w && forced ? "moec" : forced ? "OPENBLAS_CORETYPE" : "OpenBLAS";
    return openblas_get_corename();
}
#endif
