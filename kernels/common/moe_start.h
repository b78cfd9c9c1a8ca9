/* moe_start.h - the environment OpenBLAS and OpenMP read when they load, put right before
 * main goes on. Used by the executables' main (runtime/cli/main.c, compiled for the baseline
 * processor) and by the harness of `moec tune`, so that both time the same kernels.
 *
 * Two settings are read by the libraries' constructors, before main, so the only way to
 * change them is for the process to execute itself again (same pid, same arguments) with
 * the variable set. moe_start() does that at most once, and never overrides a user's value:
 *
 * - OPENBLAS_CORETYPE. A DYNAMIC_ARCH OpenBLAS (Debian's) picks its kernels from a table of
 *   the processor models it knows; a processor newer than the table gets the fallback,
 *   Prescott's SSE3 kernels. Debian 12's OpenBLAS 0.3.21 does that on Intel's family 6
 *   model 207 (Emerald Rapids): sgemm at 35 GFLOP/s on 2 cores instead of 250, a training
 *   step 4.4x slower. When OpenBLAS's kernels are of a lower class than the processor
 *   supports (by its features, not its model number), the restart names the best class;
 *   MOE_START_BLAS_WAS keeps what OpenBLAS had picked, for info.
 * - GOMP_SPINCOUNT. libgomp's idle threads spin for 300,000 rounds at every barrier before
 *   they sleep; on a machine where another process keeps a core busy, the spinning takes the
 *   time the descheduled thread needs (a training step 10-15% slower than with passive
 *   waiting). Passive waiting in turn slows decoding, whose many short parallel regions each
 *   wake the threads (10-20% per token). A bounded spin of 10,000 rounds keeps most of both:
 *   unless the user set GOMP_SPINCOUNT or OMP_WAIT_POLICY, the restart sets it.
 */
#ifndef MOE_START_H
#define MOE_START_H
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

/* Restarts the process with the settings above where they apply; returns when nothing is to
 * be done, after the restart, or when the exec failed (the run then goes on as it is). */
static inline void moe_start(char **argv) {
    if (getenv("MOE_START_DONE")) return;
    int again = 0;
    if (!getenv("OPENBLAS_CORETYPE")) {
        const char *have = openblas_get_corename();
        int want = moe_blas_class_supported();
        if (want > moe_blas_class_of(have)) {
            again |= !setenv("OPENBLAS_CORETYPE", moe_blas_classes[want], 1) &&
                     !setenv("MOE_START_BLAS_WAS", have ? have : "?", 1);
        }
    }
    if (!getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT"))
        again |= !setenv("GOMP_SPINCOUNT", "10000", 1) && !setenv("MOE_START_WAIT", "1", 1);
    if (!again || setenv("MOE_START_DONE", "1", 1)) return;
    execv("/proc/self/exe", argv);
    unsetenv("MOE_START_DONE"); /* not restarted: report nothing that did not happen */
    if (getenv("MOE_START_BLAS_WAS")) unsetenv("OPENBLAS_CORETYPE"), unsetenv("MOE_START_BLAS_WAS");
    if (getenv("MOE_START_WAIT")) unsetenv("GOMP_SPINCOUNT"), unsetenv("MOE_START_WAIT");
}

/* What runs: OpenBLAS's kernels and who chose them ("OpenBLAS", "OPENBLAS_CORETYPE", or "moec"
 * with *was = OpenBLAS's own pick), and how idle OpenMP threads wait (moec's bounded spin, the
 * user's OMP_WAIT_POLICY or GOMP_SPINCOUNT, or libgomp's default). */
static inline const char *moe_start_blas(const char **chosen_by, const char **was) {
    const char *w = getenv("MOE_START_BLAS_WAS"), *forced = getenv("OPENBLAS_CORETYPE");
    *was = w;
    *chosen_by = w && forced ? "moec" : forced ? "OPENBLAS_CORETYPE" : "OpenBLAS";
    return openblas_get_corename();
}
static inline const char *moe_start_wait(void) {
    const char *p = getenv("OMP_WAIT_POLICY");
    if (getenv("MOE_START_WAIT")) return "spin 10000 rounds, then sleep (moec)";
    if (p) return p;
    return getenv("GOMP_SPINCOUNT") ? "GOMP_SPINCOUNT" : "spin, then sleep (libgomp's default)";
}
#endif
