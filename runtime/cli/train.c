/* train.c - `train`: the training loop around the generated step.
 *
 * Step s, micro-step u reads the batch drawn from (seed, s, u) and the gates draw
 * their noise from the same counters, so a run resumed from the checkpoint of step s
 * repeats exactly the losses of an uninterrupted run (same thread count).
 */
#include "cli.h"
#include "log.h"
#include "moe_rng.h"
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Evaluation-mode LM loss over the first (up to) 8 batches of consecutive windows of the
 * training data: a fixed set, so the numbers are comparable across steps and runs. */
static double eval_loss(moe_rt *rt, const moe_data *data, int B, int T) {
    int64_t nb = moe_data_windows(data, T) / B;
    if (nb > 8) nb = 8;
    moe_stats st;
    if (nb == 0 || cli_eval_windows(rt, data, 0, nb, B, T, &st)) return NAN;
    return st.lm / (double)nb;
}

static int save(moe_rt *rt, const char *dir, int64_t step, uint64_t seed) {
    char path[4096], err[1024];
    snprintf(path, sizeof path, "%s/step-%08lld.safetensors", dir, (long long)step);
    if (moe_ckpt_save(rt, path, step, seed, 1, err, sizeof err)) { cli_fail("%s", err); return -1; }
    return 0;
}

/* What DIR may hold for this run: nothing of another run unless --overwrite (then it is
 * removed), and for --resume a complete checkpoint if there is any checkpoint at all.
 * *resume_from: the newest complete checkpoint's path and step (-1: none). 0 or -1 after a
 * message. */
static int check_dir(const char *dir, int resume, int overwrite, char *path, size_t n, int64_t *step) {
    int64_t newest;
    int files = moe_ckpt_scan(dir, &newest);
    *step = resume ? moe_ckpt_latest(dir, 1, path, n) : -1;
    if (resume && files && *step < 0) {
        cli_fail("%s holds checkpoint files (step %lld) but no complete checkpoint (weights and optimizer state): "
                 "nothing to resume; pass --overwrite instead of --resume to start afresh",
                 dir, (long long)newest);
        return -1;
    }
    if (!resume && files && !overwrite) {
        cli_fail("%s holds checkpoints of another run (up to step %lld): continue it with --resume, or pass "
                 "--overwrite to replace them", dir, (long long)newest);
        return -1;
    }
    char err[1024];
    if (!resume && files && moe_ckpt_remove_all(dir, err, sizeof err)) { cli_fail("%s", err); return -1; }
    return 0;
}

int cli_train(int argc, char **argv) {
    moe_flag f[] = {{"--data", 1, "token file (.bin), bytes file, or synthetic (default)", NULL},
                    {"--steps", 1, "optimizer steps (default train.steps)", NULL},
                    {"--checkpoint", 1, "directory for checkpoints", NULL},
                    {"--resume", 0, "continue from the newest complete checkpoint in --checkpoint", NULL},
                    {"--overwrite", 0, "start afresh in a --checkpoint directory that holds another run", NULL},
                    {"--log", 1, "JSONL metrics, one object per step", NULL},
                    {"--teacher", 1, "teacher checkpoint (Mixture-of-Students)", NULL},
                    {"--seed", 1, "seed for init, data order and noise (default train.seed)", NULL},
                    {"--device", 1, "cpu|cuda|cuda-emu", NULL}};
    int nf = (int)(sizeof f / sizeof f[0]);
    int r = moe_args_parse(moe_prog_name, "train", argc, argv, f, nf);
    if (r) return r > 0 ? 0 : 1;
    const moe_program *p = cli_prog;
    long long steps, seed;
    if (moe_arg_int(f, nf, "--steps", p->train_steps, 0, INT_MAX, &steps) || moe_arg_int(f, nf, "--seed", p->seed, 0, LLONG_MAX, &seed)) return 1;
    const char *dir = moe_arg(f, nf, "--checkpoint");
    if (moe_arg(f, nf, "--resume") && !dir) { cli_fail("--resume needs --checkpoint DIR"); return 1; }
    if (moe_arg(f, nf, "--teacher")) {
        cli_fail("--teacher: this model has no distill block, or distillation is not built into this moec yet");
        return 1;
    }
    if (dir && mkdir(dir, 0777) != 0) {
        struct stat sb;
        int why = errno;
        if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            cli_fail("cannot create checkpoint directory %s: %s", dir, strerror(why == EEXIST ? ENOTDIR : why));
            return 1;
        }
    }
    char stale[1024], resume_path[4096], why[1024];
    if (dir && moe_ckpt_writable(dir, why, sizeof why)) { cli_fail("%s", why); return 1; }
    int cleaned = dir ? moe_ckpt_clean_stale(dir, stale, sizeof stale) : 0;
    if (cleaned) fprintf(stderr, "%s: removed %d temporary file%s of killed writers: %s\n", dir, cleaned,
                         cleaned > 1 ? "s" : "", stale);
    int64_t resume_step = -1;
    if (dir && check_dir(dir, moe_arg(f, nf, "--resume") != NULL, moe_arg(f, nf, "--overwrite") != NULL, resume_path,
                         sizeof resume_path, &resume_step))
        return 1;
    const char *spec = moe_arg(f, nf, "--data") ? moe_arg(f, nf, "--data") : "synthetic";
    moe_data *data = cli_data(spec);
    if (!data) return 1;
    moe_rt *rt = cli_rt(MOE_RT_OPTIMIZER, 0, moe_arg(f, nf, "--device"));
    if (!rt) { moe_data_close(data); return 1; }
    int B = (int)p->batch, T = (int)p->context, rc = 0;
    char err[1024];
    if (moe_data_tokens(data) < (int64_t)T + 1) {
        snprintf(err, sizeof err, "%s: %lld tokens, fewer than one sequence of %d (+1 target)", moe_data_name(data),
                 (long long)moe_data_tokens(data), T);
        cli_fail("%s", err);
        rc = 1;
    }
    int64_t start = 0;
    if (!rc && moe_arg(f, nf, "--resume")) {
        if (resume_step >= 0) {
            if (moe_ckpt_resume(rt, resume_path, resume_step, (uint64_t)seed, err, sizeof err)) {
                cli_fail("%s", err);
                rc = 1;
            } else {
                start = resume_step;
                fprintf(stderr, "resuming from %s (step %lld)\n", resume_path, (long long)start);
            }
        } else {
            fprintf(stderr, "no checkpoint in %s: starting from scratch\n", dir);
        }
    }
    if (!rc && start == 0 && moe_rt_init_params(rt, (uint64_t)seed, err, sizeof err)) { cli_fail("%s", err); rc = 1; }
    moe_log *log = NULL;
    if (!rc && moe_arg(f, nf, "--log")) {
        log = start > 0 ? moe_log_open_resume(moe_arg(f, nf, "--log"), start, err, sizeof err)
                        : moe_log_open(moe_arg(f, nf, "--log"), err, sizeof err);
        if (!log) { cli_fail("%s", err); rc = 1; }
    }
    /* per-layer expert load fractions for the log, at the record's indices */
    float **loads = calloc((size_t)p->n_moe + 1, sizeof *loads);
    float *load_buf = calloc((size_t)p->n_stats, sizeof(float));
    for (int i = 0; loads && load_buf && i < p->n_moe; i++) loads[i] = load_buf + p->stat_loads[i];
    if (!rc && (!loads || !load_buf)) { cli_fail("out of memory"); rc = 1; }
    moe_ctx *c = &rt->ctx;
    c->loss_scale = 1.0f / (float)p->accumulate;
    double t_start = (moe_now_ms() / 1e3);
    int every = steps >= 20 ? (int)(steps / 20) : 1;
    for (int64_t step = start; !rc && step < steps; step++) {
        double t0 = (moe_now_ms() / 1e3);
        moe_rt_zero_grads(rt);
        moe_rt_stats_clear(rt);
        c->mode = MOE_MODE_TRAIN;
        for (int u = 0; u < p->accumulate; u++) {
            c->rng = moe_rng_micro((uint64_t)seed, (uint64_t)step, (uint64_t)u);
            moe_data_train_batch(data, (uint64_t)seed, step, u, B, T, rt->tokens, rt->targets);
            moe_rt_upload_batch(rt);
            moe_rt_run(rt, MOE_PHASE_FWD, MOE_PHASE_BWD);
        }
        c->opt_step = (int)(step + 1);
        c->lr = (float)p->lr_at(step);
        moe_rt_run(rt, MOE_PHASE_OPT, MOE_PHASE_OPT);
        moe_stats st;
        moe_rt_stats_read(rt, &st);
        double n = (double)p->accumulate, t1 = (moe_now_ms() / 1e3);
        moe_step_metrics m = {
            .step = step + 1, .steps = steps, .lm_loss = st.lm / n, .aux_loss = st.aux / n, .z_loss = st.z / n,
            .lr = c->lr, .grad_norm = st.grad_norm, .tokens_per_s = (double)B * T * n / (t1 - t0),
            .dropped_fraction = st.choices > 0 ? st.dropped / st.choices : 0.0, .elapsed_s = t1 - t_start,
            .n_moe = p->n_moe, .experts = p->experts, .moe_block = p->moe_block, .loads = (const float *const *)loads};
        m.loss = m.lm_loss + p->aux_loss * m.aux_loss + p->z_loss * m.z_loss;
        for (int i = 0; i < p->n_moe; i++) {
            const double *l = st.record + p->stat_loads[i];
            double tot = 0;
            for (int e = 0; e < p->experts[i]; e++) tot += l[e];
            for (int e = 0; e < p->experts[i]; e++) loads[i][e] = tot > 0 ? (float)(l[e] / tot) : 0.0f;
        }
        m.eval_loss = p->eval_every > 0 && (step + 1) % p->eval_every == 0 ? eval_loss(rt, data, B, T) : NAN;
        if (moe_rt_error(rt)) {     /* the step's figures are not to be trusted: none is logged */
            cli_fail("%s", moe_rt_error(rt));
            rc = 1;
            break;
        }
        if (m.loss != m.loss) {
            cli_fail("loss is NaN at step %lld; stopping", (long long)(step + 1));
            rc = 1;
        }
        if (log && moe_log_step(log, &m)) { cli_fail("cannot write the log: %s", moe_log_why(log)); rc = 1; }
        moe_progress(stderr, &m, every);
        if (!rc && dir && ((p->checkpoint_every > 0 && (step + 1) % p->checkpoint_every == 0) || step + 1 == steps))
            rc = save(rt, dir, step + 1, (uint64_t)seed) ? 1 : 0;
    }
    moe_log_close(log);
    free(loads);
    free(load_buf);
    moe_data_close(data);
    moe_rt_destroy(rt);
    return rc;
}
