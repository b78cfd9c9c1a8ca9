/* log.h - the JSONL metrics log (one object per step) and the terminal progress line. */
#ifndef MOE_LOG_H
#define MOE_LOG_H
#include <stdint.h>
#include <stdio.h>

typedef struct moe_log moe_log;

typedef struct moe_step_metrics {
    int64_t step, steps;                /* step is 1-based; steps = total planned */
    double loss, lm_loss, aux_loss, z_loss, kd_loss;
    double eval_loss;                   /* evaluation-mode LM loss at train.eval_every steps, else NaN */
    double lr, grad_norm, tokens_per_s, dropped_fraction;
    double elapsed_s;                   /* wall time since training started (for ETA) */
    int n_moe;                          /* MoE layers */
    const int *experts;                 /* [n_moe] experts per MoE layer */
    const int *moe_block;               /* [n_moe] 0-based block index of each MoE layer */
    const float *const *loads;          /* [n_moe][experts] fraction of token-choices per expert */
} moe_step_metrics;

/* path NULL = no JSONL file. Returns NULL and fills err on failure. */
moe_log *moe_log_open(const char *path, char *err, size_t errlen);
/* For --resume from checkpoint `step`: keeps the existing file's whole lines of steps up to
 * `step` (the steps logged after the checkpoint are run again) and appends after them. */
moe_log *moe_log_open_resume(const char *path, int64_t step, char *err, size_t errlen);
/* Appends the step's JSON line (flushed): step, loss, lm_loss, aux_loss, z_loss, kd_loss, lr,
 * grad_norm, tokens_per_s, dropped_fraction, elapsed_s, moe_layers [n_moe] (block indices)
 * and expert_load [n_moe][experts]. Non-finite numbers are written as null. Returns 0 or -1;
 * a failed write leaves the file as it was, and moe_log_why says why. */
int moe_log_step(moe_log *l, const moe_step_metrics *m);
const char *moe_log_why(const moe_log *l);
void moe_log_close(moe_log *l);

/* Progress: on a terminal a single refreshed line "step 12/100 | loss 3.21 | 1.2k tok/s | ETA 0:42";
 * when `out` is not a terminal, a plain line every `every` steps and at the last step
 * (every <= 0: only the last step). The terminal line ends with a newline at the last step. */
void moe_progress(FILE *out, const moe_step_metrics *m, int every);
#endif
