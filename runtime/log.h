/* log.h - the JSONL metrics log (one object per step) and the terminal progress line. */
#ifndef MOE_LOG_H
#define MOE_LOG_H
#include <stdint.h>
#include <stdio.h>

typedef struct moe_log moe_log;

/* What a run is: written once, as "run" in the first line a process logs (so a resumed run
 * records its own), and printed as the run's first line on stderr. */
typedef struct moe_run_info {
    const char *model, *device, *data, *eval_data;   /* eval_data NULL: the training data */
    int64_t data_tokens, resumed_from;                /* resumed_from -1: a fresh run */
    int64_t steps, batch, context, accumulate, eval_every, eval_batches, checkpoint_every;
    int processes, threads;
    uint64_t seed;
    const char *schedule;                             /* cosine | linear | constant */
    double lr, min_lr;
    int64_t warmup, steps_total;
    const char *overrides;                            /* the flags that overrode the .moe, e.g. "--lr --warmup" */
} moe_run_info;

typedef struct moe_step_metrics {
    int64_t step, steps;                /* step is 1-based; steps = total planned */
    int64_t first_step;                 /* steps done before this process started (resume): the ETA counts the rest */
    double loss, lm_loss, aux_loss, z_loss, kd_loss;
    int teacher;                        /* -1: no distill block; else whether the teacher ran this step */
    double eval_loss;                   /* evaluation-mode LM loss at train.eval_every steps, else NaN */
    double lr, grad_norm, tokens_per_s, dropped_fraction;
    double elapsed_s;                   /* wall time of the run, continued across resumes */
    double elapsed_before;              /* of that, the time before this process (ETA counts the rest) */
    double tokens;                      /* tokens trained on, from step 1 */
    double step_ms, gflops;             /* this step's wall time; its model FLOPs per second / 1e9 */
    int64_t a2a_messages, a2a_bytes;    /* expert parallelism: what rank 0's all-to-alls sent the other
                                         * ranks in this step (-1: no expert parallelism) */
    int n_moe;                          /* MoE layers */
    const int *experts;                 /* [n_moe] experts per MoE layer */
    const int *moe_block;               /* [n_moe] 0-based block index of each MoE layer */
    const float *const *loads;          /* [n_moe][experts] fraction of token-choices per expert */
    const char *warning;                /* the spike detector's finding, or NULL */
    double loss_scale;                  /* fp16: the step's dynamic loss scale; 0 otherwise */
    int skipped;                        /* fp16: its gradients overflowed and it was skipped */
    const moe_run_info *run;            /* set on the first step this process logs, else NULL */
} moe_step_metrics;

/* The spike detector: a loss far above that of uniform guessing (ln vocab), or a loss or
 * gradient norm far outside the run's own recent history (the median of the last
 * MOE_SPIKE_WINDOW steps). It warns; the NaN stop stays the training loop's. */
#define MOE_SPIKE_WINDOW 32
typedef struct moe_spike {
    double uniform;                                     /* ln(vocab) */
    double loss[MOE_SPIKE_WINDOW], gnorm[MOE_SPIKE_WINDOW];
    int n;                                              /* steps seen */
} moe_spike;
void moe_spike_init(moe_spike *s, int64_t vocab);
/* Adds the step's figures; returns NULL, or buf holding what is wrong with them. */
const char *moe_spike_check(moe_spike *s, double loss, double grad_norm, char *buf, size_t n);

/* path NULL = no JSONL file. Returns NULL and fills err on failure. */
moe_log *moe_log_open(const char *path, char *err, size_t errlen);
/* For --resume from checkpoint `step`: keeps the existing file's whole lines of steps up to
 * `step` (the steps logged after the checkpoint are run again) and appends after them. */
moe_log *moe_log_open_resume(const char *path, int64_t step, char *err, size_t errlen);
/* The elapsed_s of the last step kept by moe_log_open_resume (0 when none), so that a
 * resumed run's clock goes on. */
double moe_log_elapsed(const moe_log *l);
/* Appends the step's JSON line (flushed): step, run (when set), loss, lm_loss, aux_loss,
 * z_loss, kd_loss, teacher (a student's: whether its teacher ran), lr, grad_norm, tokens_per_s,
 * dropped_fraction, elapsed_s, tokens, step_ms, gflops, eval_loss (when
 * evaluated), warning (when set), loss_scale and skipped (an fp16 run), moe_layers [n_moe] (1-based layers: block + 1) and expert_load
 * [n_moe][experts]. Non-finite numbers are written as null. Returns 0 or -1; a failed write
 * leaves the file as it was, and moe_log_why says why. */
int moe_log_step(moe_log *l, const moe_step_metrics *m);
const char *moe_log_why(const moe_log *l);
void moe_log_close(moe_log *l);

/* Progress: on a terminal a single refreshed line "step 12/100 | loss 3.21 | 1.2k tok/s | ETA 0:42";
 * when `out` is not a terminal, a plain line every `every` steps and at the last step
 * (every <= 0: only the last step). The terminal line ends with a newline at the last step. */
void moe_progress(FILE *out, const moe_step_metrics *m, int every);
/* s as a JSON string; null when s is NULL or not UTF-8 (a path or a file may hold any bytes) */
struct json_t *moe_json_str(const char *s);

#endif
