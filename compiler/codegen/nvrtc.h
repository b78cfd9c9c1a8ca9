/* nvrtc.h - compiling the cuda target's kernels with NVRTC at build time.
 *
 * NVRTC is loaded with dlopen, so moec builds and runs without the CUDA toolkit; where it is
 * missing the check is skipped with a warning. The source is compiled once per
 * architecture to a cubin, as the GPU device compiles it at run time; errors come back as
 * NVRTC's log, which quotes the offending source lines.
 *
 * The kernel cache: each cubin is kept in DIR/kernels/HASH-ARCH-nvrtcMAJ.MIN.cubin, keyed by
 * the source's hash, the architecture and NVRTC's version, where DIR is $MOEC_CACHE_DIR, or
 * $XDG_CACHE_HOME/moec, or ~/.cache/moec. An entry carries its length and a checksum; one
 * that is corrupt or truncated is compiled again and replaced (written to a temporary name,
 * then renamed). A source that compiled before is not compiled again.
 */
#ifndef MOE_NVRTC_H
#define MOE_NVRTC_H
#include <stddef.h>

typedef struct cg_nvrtc_result {
    int available;          /* NVRTC was found */
    int major, minor;       /* its version */
    double ms;              /* wall time of the compiles */
    int cached;             /* architectures found in the kernel cache */
} cg_nvrtc_result;

/* Compiles `source` (named `name` in messages) for each of archs[0..narch) ("sm_80"), the
 * architectures in parallel. 0 when every compile succeeds or NVRTC is missing (r->available
 * says which); -1 with the logs written to `log` (malloc'ed) otherwise. */
int cg_nvrtc_check(const char *source, const char *name, const char *const *archs, int narch, cg_nvrtc_result *r,
                   char **log);
#endif
