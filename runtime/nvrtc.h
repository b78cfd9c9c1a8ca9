/* nvrtc.h - compiling the cuda target's kernels with NVRTC, and the kernel cache.
 *
 * One module for both users: `moec build --target cuda` compiles a model's kernels for
 * sm_80 and sm_90 so that kernel errors show at build time, and the cuda device compiles
 * them at first use for the GPU it runs on; both go through the same cache, so a build on
 * the machine that runs it leaves nothing to compile at start. NVRTC is loaded with dlopen:
 * where it is missing, r->available is 0 and nothing is compiled. Errors come back as NVRTC's
 * log, which quotes the offending source lines.
 *
 * The cache: each cubin is kept in DIR/kernels/HASH-ARCH-nvrtcMAJ.MIN.cubin, keyed by the
 * source's hash, the architecture and NVRTC's version, where DIR is $MOEC_CACHE_DIR, or
 * $XDG_CACHE_HOME/moec, or ~/.cache/moec. An entry carries its length and a checksum; one
 * that is corrupt or truncated is compiled again and replaced (written to a temporary name,
 * then renamed). A source that compiled before is not compiled again.
 */
#ifndef MOE_NVRTC_H
#define MOE_NVRTC_H
#include <stddef.h>

typedef struct moe_nvrtc_result {
    int available;          /* NVRTC was found */
    int major, minor;       /* its version */
    double ms;              /* wall time of the compiles */
    int cached;             /* architectures found in the kernel cache */
} moe_nvrtc_result;

/* A compiled architecture: its cubin (malloc'ed; the caller frees it). */
typedef struct moe_cubin { void *data; size_t size; } moe_cubin;

/* Compiles `source` (named `name` in messages) for each of archs[0..narch) ("sm_80"), at most
 * 8, in parallel. With `out`, out[i] receives arch i's cubin. 0 when every compile succeeds
 * or NVRTC is missing (r->available says which); -1 with the logs in `log` (malloc'ed)
 * otherwise. */
int moe_nvrtc_compile(const char *source, const char *name, const char *const *archs, int narch, moe_nvrtc_result *r,
                      char **log, moe_cubin *out);
/* NVRTC's version: 0, or -1 where it is missing. */
int moe_nvrtc_version(int *major, int *minor);
#endif
