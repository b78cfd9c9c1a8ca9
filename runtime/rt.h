/* rt.h - the runtime around a generated program: device, buffers, executor, statistics,
 * initialisation, checkpoints.
 *
 * One allocation per buffer class on the device the command chose (device.h), sized by the
 * program's plan: parameters, gradients, optimizer state, IO, and an activation arena per
 * schedule; host staging mirrors IO. The executor walks a schedule's step table and keeps
 * per-step times for `bench`. Everything the host needs of device memory (the statistics,
 * the logits, the weights for a checkpoint) comes back through the device's download;
 * everything it puts there (tokens, initial weights, a checkpoint) goes through upload.
 * Nothing here knows an op: the generated steps do the work.
 */
#ifndef MOE_RT_H
#define MOE_RT_H
#include <stddef.h>
#include <stdint.h>
#include "device.h"
#include "moe_program.h"

/* Communicators (comm_local.c, comm_mpi.c). moe_comm_world is the one the runtime hands to
 * the generated collectives: MPI's world once moe_comm_start has run, else the local one. */
const moe_comm *moe_comm_local(void);
int moe_comm_launched(const char **var);   /* processes a launcher started (1: none); var: its variable */
const moe_comm *moe_comm_start(int *argc, char ***argv, char *err, size_t errlen);  /* NULL: why in err */
const moe_comm *moe_comm_world(void);
void moe_comm_finish(int failed);          /* failed: leave at once (the launcher stops the job) */
/* The collective watchdog: a sum that waits longer than seconds (0: forever) ends the job with
 * a message that starts with who; set before moe_comm_start. The step it names: */
void moe_comm_set_timeout(double seconds, const char *who);
void moe_comm_set_step(long long step);
/* the layout, on every rank alike once started: the ranks of a tensor group (parallel.tensor;
 * they must divide the world), the expert groups' all-to-all (MOE_A2A_*) and the ranks per node
 * (0: those of each host) */
void moe_comm_set_layout(int tensor, int kind, int ranks_per_node);

/* fp16's dynamic loss scale (a program whose half is MOE_F16), as DeepSpeed's defaults: the
 * loss gradient is multiplied by `scale` so that small gradients survive the fp16 GEMM
 * operands; a step whose gradients overflow (a norm that is not finite) is skipped (AdamW
 * leaves every parameter and moment as it is, kernels/cpu/k_optim.h) and the scale halves,
 * down to 1; after MOE_SCALE_WINDOW steps in a row without overflow it doubles. Skipped steps
 * do not count as AdamW steps. Checkpoints carry it (metadata loss_scale, scale_good,
 * skipped_steps). */
#define MOE_SCALE_INIT 65536.0
#define MOE_SCALE_WINDOW 1000
typedef struct moe_scaler { double scale; int64_t good, skipped; } moe_scaler;
/* after an optimizer step whose global gradient norm was grad_norm: 1 when it was skipped */
int moe_scaler_update(moe_scaler *s, double grad_norm);

typedef struct moe_rt {
    const moe_program *prog;
    moe_device *dev;
    moe_ctx ctx;
    uint8_t *buf[MOE_BUF_COUNT];    /* device buffers by class; STAGING is host memory */
    uint8_t *act;                   /* the training schedule's arena (ACT) */
    uint8_t *dec_act;               /* the decode program's arena (decode.B_max rows) */
    int n_slots;                    /* decode slots: KV caches in buf[MOE_BUF_KV], buf_bytes[KV] each */
    int32_t *tokens, *targets;      /* [S_max] host staging: fill, then moe_rt_upload_batch */
    float *dec_logits;              /* [n_slots, vocab] host copy of the last decode step's logits */
    double *step_ms;                /* [train.n_steps] accumulated time per step (bench) */
    moe_kernel **kern;              /* [prog->n_kernels] compiled by the device at creation */
    int timing;
    int kd;                         /* distil: run the teacher's forward and the KD loss (steps of
                                     * kind MOE_STEP_KD); needs moe_ckpt_load_teacher first */
    int q8;                         /* the loaded weights: 0 fp32, 1 int8 experts (dequantised in PARAM),
                                     * 2 int8 experts that decoding reads as such (QPARAM) */
    moe_scaler scaler;              /* fp16: the dynamic loss scale (1 for other programs) */
    char err[512];                  /* the first device call that failed, or empty */
} moe_rt;

/* What a runtime holds besides the parameters and the arena. */
enum { MOE_RT_INFER = 0, MOE_RT_GRADS = 1, MOE_RT_OPTIMIZER = 2 /* gradients and AdamW state */ };

/* Opens `device` (NULL: the default) and allocates the buffers; NULL with a message on
 * failure. `need` is MOE_RT_*; `decode` is the number of decode slots: sequences decoding at
 * the same time, each with its KV cache; 0 for none. */
moe_rt *moe_rt_create(const moe_program *p, const char *device, int need, int decode, char *err, size_t errlen);
void moe_rt_destroy(moe_rt *rt);
/* NULL while every device call has succeeded, else the first failure (one line). A command
 * checks it before it reports or writes a result. */
const char *moe_rt_error(const moe_rt *rt);

/* Initialises every parameter from the seed (moe-semantics.md section 1). 0 or -1 (err). */
int moe_rt_init_params(moe_rt *rt, uint64_t seed, char *err, size_t errlen);

/* A student's teacher (prog->teacher): its parameter buffer (TPARAM) allocated once; then its
 * weights from the seed as its own run would start (init_teacher, for benchmarks) or from its
 * checkpoint (moe_ckpt_load_teacher). The last two set rt->kd. 0, or -1 (err). */
int moe_rt_teacher_buffer(moe_rt *rt, char *err, size_t errlen);
int moe_rt_init_teacher(moe_rt *rt, uint64_t seed, char *err, size_t errlen);

/* The int8 expert weights the decode program reads (QPARAM; prog->buf_bytes[MOE_BUF_QPARAM] > 0
 * where it can): allocated when a quantized checkpoint is loaded (moe_ckpt_load), released when
 * an fp32 one is, so that decoding reads the weights just loaded. 0, or -1 (err). */
int moe_rt_q8_buffer(moe_rt *rt, char *err, size_t errlen);
void moe_rt_q8_release(moe_rt *rt);

/* Sets the batch shape; fails (with a message) past the compiled maximum. */
int moe_rt_shape(moe_rt *rt, int B, int T, char *err, size_t errlen);
/* Uploads the B*T tokens and targets of the host staging (rt->tokens, rt->targets). */
void moe_rt_upload_batch(moe_rt *rt);
/* Runs the training schedule's steps whose phase is in [first, last]. */
void moe_rt_run(moe_rt *rt, int first_phase, int last_phase);
/* Runs step i of the training schedule alone (`verify`). */
void moe_rt_run_step(moe_rt *rt, int i);
/* The forward without its loss steps: the logits of every position stay in the arena. */
void moe_rt_logits(moe_rt *rt);
/* Downloads rows [row0, row0 + n) of the logits [S, vocab] of the last forward. */
void moe_rt_read_logits(moe_rt *rt, int64_t row0, int64_t n, float *out);
/* One decode step of n sequences together (n <= n_slots; passes of decode.B_max rows): row r
 * decodes token tok[r] at position pos[r] of the sequence in slot slot[r] (< n_slots;
 * distinct). Returns their
 * logits [n, vocab] (host memory, valid until the next call). A slot starts a new sequence by
 * decoding position 0: the cache beyond the position is never read. */
const float *moe_rt_decode_rows(moe_rt *rt, int n, const int32_t *tok, const int32_t *pos, const int32_t *slot);
/* verify: one pass of the decode program, step by step: moe_rt_decode_begin uploads k <=
 * decode.B_max rows as moe_rt_decode_rows does and gives the context the decode program's
 * arena and shape, returning the context it replaced (rt->ctx = it ends the pass);
 * moe_rt_run_decode_step runs the decode program's step i. */
moe_ctx moe_rt_decode_begin(moe_rt *rt, int k, const int32_t *tok, const int32_t *pos, const int32_t *slot);
void moe_rt_run_decode_step(moe_rt *rt, int i);
/* ... of one sequence: moe_rt_decode_rows with one row */
const float *moe_rt_decode(moe_rt *rt, int slot, int32_t token, int pos);
/* Clears the gradient buffer (once per optimizer step). */
void moe_rt_zero_grads(moe_rt *rt);

/* The statistics record (moe_abi.h): kernels add to it, the host clears it and reads it. */
void moe_rt_stats_clear(moe_rt *rt);
typedef struct moe_stats {
    double lm;                      /* sum over forward passes of the mean per-token LM loss */
    double aux, z, dropped, choices; /* sums over MoE layers (and passes) */
    double grad_norm;               /* of the last optimizer step */
    double kd;                      /* sum over forward passes of tau^2 x the mean KL (distilling) */
    const double *record;           /* the whole record (host staging): MoE layer i's expert
                                     * loads start at record + prog->stat_loads[i] */
} moe_stats;
/* Downloads the record and sums it up. */
void moe_rt_stats_read(moe_rt *rt, moe_stats *s);
/* After moe_rt_stats_read on every rank: the records summed (mean: averaged) over the ranks,
 * summed up again. Nothing in one process. A collective: every rank calls it. */
void moe_rt_stats_reduce(moe_rt *rt, moe_stats *s, int mean);
/* The gradient buffer summed over the data-parallel group (a collective); nothing in one process. */
void moe_rt_grads_sum(moe_rt *rt);
/* the statistics record (device) into host[n_stats], or back from it */
void moe_rt_stats_copy(moe_rt *rt, double *host, int back);
/* the expert-parallel degree of parameter q (1: every rank holds it whole), and the global index
 * of the first of its experts this rank holds (0 without expert parallelism) */
int moe_param_degree(const moe_param_info *q);
int64_t moe_rt_first_expert(const moe_rt *rt, const moe_param_info *q);
/* tensor slicing: the index in the whole tensor of element j of the part of q that tensor rank
 * t holds (j itself for a tensor held whole) */
int64_t moe_tp_index(const moe_param_info *q, int t, int64_t j);

/* Bytes this process may still allocate (mem.c), or -1 if unknown; `why` names the limit
 * that binds (MemAvailable, the cgroup's memory.max, ulimit -v, ...). */
int64_t moe_mem_available(char *why, size_t n);

/* The learning rate: linear warmup over `warmup` steps, then the `kind` (MOE_SCHED_*) decay
 * from lr to min_lr, reached at step `steps` (the schedule's length, not necessarily the run's). */
typedef struct moe_lr_sched {
    int kind;
    double lr, min_lr;
    int64_t warmup, steps;
} moe_lr_sched;
moe_lr_sched moe_lr_program(const moe_program *p);     /* the .moe's train block */
double moe_lr_at(const moe_lr_sched *s, int64_t step);  /* of 0-based step `step` */

/* Model FLOPs of training on one token at sequence length T (forward and backward, no
 * recomputation): 6 per active parameter (an expert tensor counts top_k of its E experts)
 * plus 12 x layers x T x hidden for attention's scores and mixing (PaLM's accounting). */
double moe_train_flops_per_token(const moe_program *p, int64_t T);

/* Monotonic clock in milliseconds (step timing, bench, progress). */
double moe_now_ms(void);

/* Checkpoints (safetensors, moe-language.md section 7). */
/* Writes PATH (and its optimizer file first), with metadata: format, model, step, seed,
 * model_hash (of the model's parameter table), content. */
int moe_ckpt_save(const moe_rt *rt, const char *path, int64_t step, uint64_t seed, int with_optimizer, char *err,
                  size_t errlen);
/* Loads the weights of PATH; *step (may be NULL): its step metadata, -1 when it has none.
 * A file `quantize` wrote (int8 expert weights) loads too: dequantised into the parameters,
 * and as int8 for the decode program where it reads them (rt->q8 says which). */
int moe_ckpt_load(moe_rt *rt, const char *path, int64_t *step, char *err, size_t errlen);
/* `quantize`: the loaded weights into PATH with every expert weight [E, K, N] as int8 NAME and
 * its per-output-channel scales NAME_scale [E, N] (quant.h); metadata as moe_ckpt_save's, content
 * "weights-int8". One process. *max_err: the largest |w - s q| / s (at most 0.5); *bytes: the
 * f32 and int8 bytes of the expert weights. */
int moe_ckpt_save_q8(const moe_rt *rt, const char *path, int64_t step, double *max_err, int64_t bytes[2], char *err,
                     size_t errlen);
/* Loads weights and optimizer state of checkpoint PATH of step `step` to continue a run with
 * seed `seed`: both files' step metadata must be that step, and their model hash and seed
 * this model's and this run's; an error names the file and what disagrees. */
int moe_ckpt_resume(moe_rt *rt, const char *path, int64_t step, uint64_t seed, char *err, size_t errlen);
/* The checkpoint files (weights or optimizer) in DIR; *newest: the highest step, or -1. */
int moe_ckpt_scan(const char *dir, int64_t *newest);
/* Removes every checkpoint file in DIR (train --overwrite). */
int moe_ckpt_remove_all(const char *dir, char *err, size_t errlen);
/* The step of the newest checkpoint in DIR ("DIR/step-000123.safetensors", its path in
 * `path`) with its optimizer file when need_optimizer, or -1 if none. */
int64_t moe_ckpt_latest(const char *dir, int need_optimizer, char *path, size_t pathlen);
/* 0 when a file can be created in DIR; else -1 with the reason (checked before a run). */
int moe_ckpt_writable(const char *dir, char *err, size_t errlen);
/* Removes the temporary files (NAME.tmp.PID) in DIR left by writers that were killed (no
 * process PID); their names go to `names`. The number removed. */
int moe_ckpt_clean_stale(const char *dir, char *names, size_t n);
/* PATH as given, or the newest checkpoint's weights when PATH is a directory. */
int moe_ckpt_resolve(const char *path, char *out, size_t outlen, char *err, size_t errlen);
/* Loads the teacher of a student (prog->teacher) from PATH, a checkpoint of the teacher model
 * (a file, or a directory: its newest), into the TPARAM buffer, and sets rt->kd. */
int moe_ckpt_load_teacher(moe_rt *rt, const char *path, char *err, size_t errlen);
/* Writes the gradient buffer with the checkpoint's tensor names. */
/* The weights as a Hugging Face safetensors file (metadata format "pt", our tensor names). */
int moe_ckpt_save_hf(const moe_rt *rt, const char *path, char *err, size_t errlen);
int moe_ckpt_save_grads(const moe_rt *rt, const char *path, char *err, size_t errlen);
#endif
