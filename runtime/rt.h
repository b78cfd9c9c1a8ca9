/* rt.h - the runtime around a generated program: buffers, executor, init, checkpoints.
 *
 * One allocation per category through the device table (parameters, gradients, the two
 * AdamW moments, the arena); the executor walks the program's step table and keeps
 * per-step times for `bench`. Nothing here knows an op: the generated steps do the work.
 */
#ifndef MOE_RT_H
#define MOE_RT_H
#include <stddef.h>
#include <stdint.h>
#include "moe_program.h"

/* Device table: where buffers live and how bytes move. The CPU device is plain memory;
 * a GPU device slots in with the same entries. */
typedef struct moe_device {
    const char *name;
    void *(*alloc)(size_t bytes);           /* zeroed, 64-byte aligned, NULL on failure */
    void (*free)(void *p);
    void (*upload)(void *dst, const void *src, size_t bytes);
    void (*download)(void *dst, const void *src, size_t bytes);
    void (*sync)(void);
} moe_device;

const moe_device *moe_device_cpu(void);
const moe_comm *moe_comm_local(void);

typedef struct moe_rt moe_rt;

struct moe_rt {
    const moe_program *prog;
    const moe_device *dev;
    moe_ctx ctx;
    float *params, *grads, *adam_m, *adam_v, *arena, *dec_arena;
    double *stats;                  /* aux, z, dropped, choices: 4 x n_moe */
    int32_t *tokens, *targets;      /* [S_max] */
    int64_t n_loads;                /* sum of experts */
    double *step_ms;                /* [n_steps] accumulated time per step (bench) */
    int timing;
};

/* What a runtime holds besides the parameters and the arena. */
enum { MOE_RT_INFER = 0, MOE_RT_GRADS = 1, MOE_RT_OPTIMIZER = 2 /* gradients and AdamW state */ };

/* Returns NULL and fills err on failure (allocation). `need` is MOE_RT_*; `decode`
 * allocates the KV-cache arena. */
moe_rt *moe_rt_create(const moe_program *p, int need, int decode, char *err, size_t errlen);
void moe_rt_destroy(moe_rt *rt);

/* Initialises every parameter from the seed (moe-semantics.md section 1). */
void moe_rt_init_params(moe_rt *rt, uint64_t seed);

/* Runs the steps whose phase is in [first, last] of the training program. */
void moe_rt_run(moe_rt *rt, int first_phase, int last_phase);
/* Forward up to, not including, the loss: the logits of every position stay in the arena. */
void moe_rt_logits(moe_rt *rt);
/* One decode step for the token at position pos; returns the logits [vocab]. */
const float *moe_rt_decode(moe_rt *rt, int32_t token, int pos);

/* Sets the batch shape; fails (with a message) past the compiled maximum. */
int moe_rt_shape(moe_rt *rt, int B, int T, char *err, size_t errlen);
/* Mean of the per-token LM loss of the last forward. */
double moe_rt_lm_loss(const moe_rt *rt);
/* Monotonic clock in milliseconds (step timing, bench, progress). */
double moe_now_ms(void);

/* Checkpoints (safetensors, moe-language.md section 7). */
int moe_ckpt_save(const moe_rt *rt, const char *path, int64_t step, int with_optimizer, char *err, size_t errlen);
/* Loads weights (and, when opt_step != NULL, the optimizer state and step) from PATH. */
int moe_ckpt_load(moe_rt *rt, const char *path, int64_t *opt_step, char *err, size_t errlen);
/* The newest complete checkpoint in DIR ("DIR/step-000123.safetensors"), or -1 if none. */
int64_t moe_ckpt_latest(const char *dir, char *path, size_t pathlen);
/* PATH as given, or the newest checkpoint when PATH is a directory. */
int moe_ckpt_resolve(const char *path, char *out, size_t outlen, char *err, size_t errlen);
/* Writes the gradient buffer with the checkpoint's tensor names. */
int moe_ckpt_save_grads(const moe_rt *rt, const char *path, char *err, size_t errlen);
#endif
