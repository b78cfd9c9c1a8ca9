/* tune.h - kernel variants measured on this machine: which kernels have numbered variants
 * (the registry), the tuning database `moec tune` writes and `moec build` reads (one JSON
 * file), and applying it to a lowered program.
 *
 * An entry is keyed by the target, the machine (CPU model and thread count; the GPU), the
 * kernels' compiler (the C compiler; NVRTC), a hash of the kernel's template file, the kernel
 * and its shape ("E=8 K=512 N=2048 R=4096"); it holds the time of every variant and the
 * winner. An entry whose key does not match this build is ignored, never applied. Where the
 * database has no entry, the target's built-in rule stands (codegen/lower.c, tune_target_rule).
 */
#ifndef MOE_TUNE_H
#define MOE_TUNE_H
#include "lower.h"
#include <stddef.h>

#define TUNE_MAX_VARIANTS 8
#define TUNE_DIMS 5                 /* the sizes a shape has at most */

/* Where measurements hold: the target, the machine, the C compiler. */
typedef struct tune_where { const char *target, *device, *compiler; } tune_where;

/* A call of p whose kernel has variants: its shape (written to shape) and sizes, 0 for any
 * other call. The grouped expert GEMM: E, K, N, R (the routed rows at the compiled maximum),
 * "E=8 K=512 N=2048 R=4096"; attention: B, T, C, H, KV at the compiled maximum,
 * "B=8 T=256 C=512 H=8 KV=8"; a norm: S, C, "S=2048 C=512"; the activation: fn, R, W (the rows and
 * the output's width), "fn=1 R=2048 W=2048"; add and accumulate (adding): n, "n=1048576". */
int tune_shape(const char *target, const lw_program *p, const lw_call *k, char *shape, size_t n,
               int64_t dims[TUNE_DIMS]);
/* The families of kernels with variants: how a shape is written and measured. */
typedef enum {
    TUNE_NONE,          /* no variants */
    TUNE_EXPERT,        /* the grouped expert GEMM (k_moe.h) */
    TUNE_ATTENTION,     /* attention's tiles (k_attn.h) */
    TUNE_SPLIT,         /* an elementwise kernel's thread split (k_common.h) */
} tune_kind;
tune_kind tune_kind_of(const char *kernel);
/* How much work a shape is, to measure the costliest first. */
double tune_cost(const char *kernel, const int64_t dims[TUNE_DIMS]);
/* The number of variants of a kernel on a target (0: none) and its template file ("k_moe.h"). */
int tune_variants(const char *target, const char *kernel, const char **template_file);
/* The built-in rule of a target other than the cpu, whose rules the lowering applies
 * (codegen/lower.c): on cuda, v1 for every call with cuda variants, none for the others. */
void tune_target_rule(lw_program *p, const char *target);

/* This machine as the target sees it: the cpu's "CPU MODEL x N threads" (OMP_NUM_THREADS,
 * else the online cores), the cuda's first GPU, "NAME (compute capability 9.0)" or "no GPU". */
const char *tune_device(const char *target);
/* What compiles the target's kernels: cc (the C compiler's id) for the cpu, "NVRTC 12.4" for cuda. */
const char *tune_kernel_compiler(const char *target, const char *cc);
/* The default database: $XDG_CACHE_HOME/moec/tune.json, or ~/.cache/moec/tune.json. */
const char *tune_default_path(void);

typedef struct tune_db tune_db;
/* Reads path; a missing file is an empty database when missing_ok. NULL with err for a file
 * that is not a tuning database (a clear message, the file left as it is). */
tune_db *tune_db_load(const char *path, int missing_ok, char *err, size_t errlen);
void tune_db_destroy(tune_db *db);
/* The winning variant of (kernel, shape) under w, or 0 when the database has no entry. */
int tune_db_lookup(const tune_db *db, const tune_where *w, const char *kernel, const char *shape);
/* Records ms[1..nv] (ms[v] < 0: variant v failed its check) and the winner, replacing an
 * entry with the same key. 0, or -1 when out of memory. */
int tune_db_record(tune_db *db, const tune_where *w, const char *kernel, const char *shape, const double *ms, int nv,
                   int best);
/* Writes the database to path: under a lock on path.lock, adding the entries another run saved
 * there meanwhile (db's own win on equal keys), through a temporary file renamed over path.
 * 0, or -1 with err. */
int tune_db_save(tune_db *db, const char *path, char *err, size_t errlen);

/* Sets the variant of every call of target's program p that the database has an entry for
 * under this machine's key (call->tuned = 1), cc the C compiler's id. Returns how many calls
 * it set. The machine (for cuda, the GPU) is looked at only when db holds entries of target. */
int tune_apply(lw_program *p, const tune_db *db, const char *target, const char *cc);
#endif
