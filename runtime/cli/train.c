/* train.c - `train`: the training loop around the generated step.
 *
 * Step s, micro-step u reads the batch drawn from (seed, s, u) and the gates draw
 * their noise from the same counters, so a run resumed from the checkpoint of step s
 * repeats exactly the losses of an uninterrupted run (same thread count).
 * Ctrl-C ends the run after the current step, with a checkpoint when there is a --checkpoint
 * directory (exit 130); a second Ctrl-C stops at once.
 * With R data-parallel ranks (mpirun: the processes, or the tensor groups of parallel.tensor
 * ranks), data rank r trains on micro-batches u R + r of the step's draw, so R ranks of batch B
 * see what one process of batch R B sees; the generated step averages the gradients. Rank 0 alone prepares the checkpoint directory, writes checkpoints, the log and
 * the console; the ranks agree after every step, so a failure or an interrupt on any of them
 * stops all of them at the same step.
 * A student (a model with a distill block) runs its teacher's forward and the KD loss on steps
 * 1 .. distill.stop_step (every step without one), with the teacher's weights from --teacher;
 * after that it trains on its own losses and the teacher's steps no longer run (staged KD).
 * Evaluations measure the student alone.
 */
#include "cli.h"
#include "log.h"
#include "moe_rng.h"
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Evaluation-mode LM loss over the first (up to) nb batches of consecutive windows of `data`
 * (held-out data, or the training data): a fixed set, so values compare across steps and runs. */
static double eval_loss(moe_rt *rt, const moe_data *data, int64_t nb, int B, int T) {
    if (moe_data_windows(data, T) / B < nb) nb = moe_data_windows(data, T) / B;
    moe_stats st;
    int kd = rt->kd;
    rt->kd = 0;                 /* the student alone */
    int failed = nb == 0 || cli_eval_windows(rt, data, 0, nb, B, T, &st);
    rt->kd = kd;
    return failed ? NAN : st.lm / (double)nb;
}

/* "until step N" or "on every step": how long a student distils */
static const char *kd_span(char *buf, size_t n) {
    const moe_teacher *tc = cli_prog->teacher;
    if (tc->stop_step < 0) return "on every step";
    snprintf(buf, n, "until step %lld", (long long)tc->stop_step);
    return buf;
}

/* Staged KD: the teacher's checkpoint loaded when the run has steps with the KD term (from
 * start + 1 to kd_until), else a note that --teacher is not needed. 0, or an exit status. */
static int load_teacher(moe_rt *rt, const char *path, int64_t start, int64_t steps, int64_t kd_until, int lead) {
    const moe_teacher *tc = cli_prog->teacher;
    char span[64];
    if (!tc) return 0;
    if (start >= kd_until || start >= steps) {
        if (path && lead)
            fprintf(stderr, "--teacher %s is not loaded: distillation ends at step %lld (distill.stop_step) and this run "
                    "starts after it\n", path, (long long)kd_until);
        return 0;
    }
    if (!path) {
        cli_fail("model %s distils from its teacher %s %s: pass --teacher CHECKPOINT (a checkpoint of %s)",
                 cli_prog->model, tc->model, kd_span(span, sizeof span), tc->model);
        return MOE_EXIT_USAGE;
    }
    return cli_teacher(rt, path);
}

static volatile sig_atomic_t interrupts;

static void on_interrupt(int sig) {
    if (interrupts++) {         /* the second: stop at once */
        signal(sig, SIG_DFL);
        raise(sig);
    }
}

/* a line of its own on stderr, below the progress line on a terminal */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (isatty(2)) fputc('\n', stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int save(moe_rt *rt, const char *dir, int64_t step, uint64_t seed) {
    char path[4096], err[1024];
    snprintf(path, sizeof path, "%s/step-%08lld.safetensors", dir, (long long)step);
    if (moe_ckpt_save(rt, path, step, seed, 1, err, sizeof err)) { cli_fail("%s", err); return -1; }
    return 0;
}

/* The checkpoint directory made, checked writable and cleaned of killed writers' files. What
 * it may hold for this run: nothing of another run unless --overwrite (then it is removed),
 * and for --resume a complete checkpoint if there is any checkpoint at all; path and *step:
 * the newest complete checkpoint (*step -1: none). 0, or -1 after a message. */
static int prepare_dir(const char *dir, int resume, int overwrite, char *path, size_t n, int64_t *step) {
    if (mkdir(dir, 0777) != 0) {
        struct stat sb;
        int why = errno;
        if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            cli_fail("cannot create checkpoint directory %s: %s", dir, strerror(why == EEXIST ? ENOTDIR : why));
            return -1;
        }
    }
    char stale[1024], why[1024];
    if (moe_ckpt_writable(dir, why, sizeof why)) { cli_fail("%s", why); return -1; }
    int cleaned = moe_ckpt_clean_stale(dir, stale, sizeof stale);
    if (cleaned) fprintf(stderr, "%s: removed %d temporary file%s of killed writers: %s\n", dir, cleaned,
                         cleaned > 1 ? "s" : "", stale);
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

/* the schedule as the .moe has it, with the flags that override it; usage errors print */
static int schedule(moe_flag *f, int nf, moe_lr_sched *sc, char *given, size_t n) {
    const moe_program *p = cli_prog;
    long long warmup, total;
    *sc = moe_lr_program(p);
    if (moe_arg_double(f, nf, "--lr", p->lr, &sc->lr) || moe_arg_double(f, nf, "--min-lr", p->min_lr, &sc->min_lr) ||
        moe_arg_int(f, nf, "--warmup", p->warmup, 0, INT_MAX, &warmup) ||
        moe_arg_int(f, nf, "--steps-total", p->train_steps, 1, INT_MAX, &total))
        return -1;
    if (!moe_arg(f, nf, "--min-lr") && sc->min_lr > sc->lr) sc->min_lr = sc->lr / 10;     /* as moec does */
    if (!(sc->lr > 0) || !(sc->min_lr >= 0) || sc->min_lr > sc->lr) {
        cli_fail("--lr must be positive and --min-lr from 0 to --lr (lr %g, min_lr %g)", sc->lr, sc->min_lr);
        return -1;
    }
    sc->warmup = warmup;
    sc->steps = total;
    given[0] = 0;
    static const char *const names[] = {"--lr", "--min-lr", "--warmup", "--steps-total", "--eval-every",
                                        "--eval-batches", "--seed", "--steps"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (moe_arg(f, nf, names[i]))
            snprintf(given + strlen(given), n - strlen(given), "%s%s", given[0] ? " " : "", names[i]);
    return 0;
}

int cli_train(int argc, char **argv) {
    moe_flag f[] = {{"--data", 1, "token file (.bin), bytes file, or synthetic (default: the built-in corpus)", NULL},
                    {"--eval-data", 1, "held-out data for the evaluations every train.eval_every steps", NULL},
                    {"--eval-batches", 1, "batches per evaluation (default train.eval_batches)", NULL},
                    {"--eval-every", 1, "evaluate every N steps, 0 = never (default train.eval_every)", NULL},
                    {"--steps", 1, "optimizer steps (default train.steps)", NULL},
                    {"--steps-total", 1, "the schedule's length: the step where lr reaches min_lr (default train.steps)", NULL},
                    {"--lr", 1, "peak learning rate (default train.lr)", NULL},
                    {"--min-lr", 1, "final learning rate (default train.min_lr)", NULL},
                    {"--warmup", 1, "warmup steps (default train.warmup)", NULL},
                    {"--checkpoint", 1, "directory for checkpoints", NULL},
                    {"--resume", 0, "continue from the newest complete checkpoint in --checkpoint", NULL},
                    {"--overwrite", 0, "start afresh in a --checkpoint directory that holds another run", NULL},
                    {"--log", 1, "JSONL metrics, one object per step", NULL},
                    {"--teacher", 1, "the teacher's checkpoint (a student: until distill.stop_step)", NULL},
                    {"--seed", 1, "seed for init, data order and noise (default train.seed)", NULL},
                    {"--no-overlap", 0, "several processes: sum the gradients after the backward, not while it runs", NULL},
                    {"--device", 1, "cpu|cuda|cuda-emu", NULL}};
    int nf = (int)(sizeof f / sizeof f[0]);
    int r = moe_args_parse(moe_prog_name, "train", argc, argv, f, nf);
    if (r) return r > 0 ? MOE_EXIT_OK : MOE_EXIT_USAGE;
    const moe_program *p = cli_prog;
    long long steps, seed, eval_every, eval_batches;
    moe_lr_sched sched;
    char overrides[160];
    if (moe_arg_int(f, nf, "--steps", p->train_steps, 0, INT_MAX, &steps) ||
        moe_arg_int(f, nf, "--seed", p->seed, 0, LLONG_MAX, &seed) ||
        moe_arg_int(f, nf, "--eval-every", p->eval_every, 0, INT_MAX, &eval_every) ||
        moe_arg_int(f, nf, "--eval-batches", p->eval_batches, 1, INT_MAX, &eval_batches) ||
        schedule(f, nf, &sched, overrides, sizeof overrides))
        return MOE_EXIT_USAGE;
    const char *dir = moe_arg(f, nf, "--checkpoint");
    if (moe_arg(f, nf, "--resume") && !dir) { cli_fail("--resume needs --checkpoint DIR"); return MOE_EXIT_USAGE; }
    const moe_teacher *tc = p->teacher;
    const char *tpath = moe_arg(f, nf, "--teacher");
    if (tpath && !tc) {
        cli_fail("--teacher: model %s has no distill block, so it takes no teacher", p->model);
        return MOE_EXIT_USAGE;
    }
    int64_t kd_until = !tc ? 0 : tc->stop_step < 0 ? INT64_MAX : tc->stop_step;   /* the last step with KD */
    const moe_comm *w = moe_comm_world();
    int lead = w->rank == 0, R = moe_comm_data_size(w);
    char resume_path[4096];
    int64_t resume_step = -1;
    int resume = moe_arg(f, nf, "--resume") != NULL;
    if (dir && cli_agree(lead ? prepare_dir(dir, resume, moe_arg(f, nf, "--overwrite") != NULL, resume_path,
                                            sizeof resume_path, &resume_step) : 0))
        return MOE_EXIT_FAIL;
    if (dir && resume && !lead) resume_step = moe_ckpt_latest(dir, 1, resume_path, sizeof resume_path);
    const char *spec = moe_arg(f, nf, "--data") ? moe_arg(f, nf, "--data") : "synthetic";
    const char *eval_spec = moe_arg(f, nf, "--eval-data");
    moe_data *data = cli_data(spec), *held = data && eval_spec ? cli_data(eval_spec) : NULL;
    if (!data || (eval_spec && !held)) { moe_data_close(data); return MOE_EXIT_FAIL; }
    moe_rt *rt = cli_rt(MOE_RT_OPTIMIZER, 0, moe_arg(f, nf, "--device"));
    if (!rt) { moe_data_close(data); moe_data_close(held); return MOE_EXIT_FAIL; }
    int B = (int)p->batch, T = (int)p->context, rc = 0;
    char err[1024];
    const moe_data *short_src = moe_data_tokens(data) < (int64_t)T + 1 ? data
                                : held && moe_data_windows(held, T) < B ? held : NULL;
    if (short_src) {
        snprintf(err, sizeof err, "%s: %lld tokens, fewer than %s of %d (+1 target)", moe_data_name(short_src),
                 (long long)moe_data_tokens(short_src), short_src == data ? "one sequence" : "one batch of sequences",
                 T);
        cli_fail("%s", err);
        rc = MOE_EXIT_FAIL;
    }
    int64_t start = 0;
    if (!rc && resume) {
        if (resume_step >= 0) {
            if (moe_ckpt_resume(rt, resume_path, resume_step, (uint64_t)seed, err, sizeof err)) {
                cli_fail("%s", err);
                rc = MOE_EXIT_FAIL;
            } else {
                start = resume_step;
                if (lead) fprintf(stderr, "resuming from %s (step %lld)\n", resume_path, (long long)start);
            }
        } else if (lead) {
            fprintf(stderr, "no checkpoint in %s: starting from scratch\n", dir);
        }
    }
    if (!rc && start == 0 && moe_rt_init_params(rt, (uint64_t)seed, err, sizeof err)) {
        cli_fail("%s", err);
        rc = MOE_EXIT_FAIL;
    }
    if (!rc) rc = load_teacher(rt, tpath, start, steps, kd_until, lead);
    int distil = rt->kd;
    /* the directory's config.json, once its checkpoints are known to be this model's */
    if (!rc && lead && dir && cli_write_config(dir, err, sizeof err)) { cli_fail("%s", err); rc = MOE_EXIT_FAIL; }
    moe_log *log = NULL;
    if (!rc && lead && moe_arg(f, nf, "--log")) {
        log = start > 0 ? moe_log_open_resume(moe_arg(f, nf, "--log"), start, err, sizeof err)
                        : moe_log_open(moe_arg(f, nf, "--log"), err, sizeof err);
        if (!log) { cli_fail("%s", err); rc = MOE_EXIT_FAIL; }
    }
    /* per-layer expert load fractions for the log, at the record's indices */
    float **loads = calloc((size_t)p->n_moe + 1, sizeof *loads);
    float *load_buf = calloc((size_t)p->n_stats, sizeof(float));
    for (int i = 0; loads && load_buf && i < p->n_moe; i++) loads[i] = load_buf + p->stat_loads[i];
    if (!rc && (!loads || !load_buf)) { cli_fail("out of memory"); rc = MOE_EXIT_FAIL; }
    moe_run_info run = {
        .model = p->model, .device = rt->dev->ops->name, .data = moe_data_name(data),
        .eval_data = held ? moe_data_name(held) : NULL, .data_tokens = moe_data_tokens(data),
        .resumed_from = start > 0 ? start : -1, .steps = steps, .batch = B, .context = T, .accumulate = p->accumulate,
        .eval_every = eval_every, .eval_batches = eval_batches, .checkpoint_every = p->checkpoint_every,
        .processes = w->world, .threads = omp_get_max_threads(), .seed = (uint64_t)seed,
        .schedule = cli_sched_name(sched.kind), .lr = sched.lr, .min_lr = sched.min_lr, .warmup = sched.warmup,
        .steps_total = sched.steps, .overrides = overrides[0] ? overrides : NULL};
    rc = cli_agree(rc);     /* a rank that could not start stops them all */
    if (!rc && lead) {
        char procs[160] = "", dp[64] = "data-parallel";
        if (moe_program_tensor_group(p) > 1)
            snprintf(dp, sizeof dp, "%d data-parallel x tensor groups of %d", R, moe_program_tensor_group(p));
        if (w->world > 1 && p->par_expert > 1)
            snprintf(procs, sizeof procs, "%d processes (%s, experts over groups of up to %d) x ", w->world, dp,
                     p->par_expert);
        else if (w->world > 1)
            snprintf(procs, sizeof procs, "%d processes (%s) x ", w->world, dp);
        fprintf(stderr, "train %s on %s: %s, %lld tokens%s; %lld steps of %d x %d x %lld tokens; lr %g (%s to %g over %lld "
                "steps, warmup %lld); %s%d thread%s%s%s\n", p->model, run.device, run.data, (long long)run.data_tokens,
                moe_arg(f, nf, "--data") ? "" : " (the built-in corpus: no --data given)", steps, B * R, T,
                (long long)p->accumulate, sched.lr, run.schedule, sched.min_lr, (long long)sched.steps,
                (long long)sched.warmup, procs, run.threads, run.threads > 1 ? "s" : "",
                overrides[0] ? "; overrides: " : "", overrides);
        char span[64];
        if (distil)
            fprintf(stderr, "distilling from teacher %s (%s) %s: temperature %g, weight %g\n", tc->model, tpath,
                    kd_span(span, sizeof span), tc->temperature, tc->weight);
    }
    if (!rc) {
        if (eval_every > 0 && moe_data_windows(held ? held : data, T) < B) {
            if (lead) fprintf(stderr, "no evaluations: %s holds fewer than one batch of %d windows of %d tokens\n",
                    moe_data_name(held ? held : data), B, T);
            eval_every = 0;
        }
        if (eval_every > 0 && lead)
            fprintf(stderr, "evaluating every %lld steps on %s%s\n", eval_every, held ? moe_data_name(held) : run.data,
                    held ? " (held out)" : " (the training data: pass --eval-data FILE for a held-out loss)");
    }
    struct sigaction sa = {.sa_handler = on_interrupt, .sa_flags = SA_RESTART}, old_sa;
    sigemptyset(&sa.sa_mask);
    interrupts = 0;
    sigaction(SIGINT, &sa, &old_sa);
    moe_ctx *c = &rt->ctx;
    int overlap = !moe_arg(f, nf, "--no-overlap");
    double before = moe_log_elapsed(log), t_start = moe_now_ms() / 1e3 - before;
    double flops_per_step = moe_train_flops_per_token(p, T) * B * T * (double)p->accumulate * R;
    int every = steps >= 20 ? (int)(steps / 20) : 1;
    moe_spike spike;
    moe_spike_init(&spike, p->vocab);
    int warned = 0;
    char warning[256];
    for (int64_t step = start; !rc && step < steps; step++) {
        double t0 = (moe_now_ms() / 1e3);
        moe_comm_set_step(step + 1);    /* 1-based, as the log counts */
        int64_t msg0, bytes0, msg1, bytes1;
        w->traffic(w, &msg0, &bytes0);
        moe_rt_zero_grads(rt);
        moe_rt_stats_clear(rt);
        rt->kd = distil && step < kd_until;
        if (distil && step == kd_until && lead)
            say("step %lld: distillation ends (distill.stop_step): from step %lld on the teacher no longer runs",
                (long long)step, (long long)(step + 1));
        c->mode = MOE_MODE_TRAIN;
        c->grad_scale = (float)rt->scaler.scale;   /* fp16: the dynamic loss scale; else 1 */
        c->loss_scale = (float)(rt->scaler.scale / (double)p->accumulate);
        for (int u = 0; u < p->accumulate; u++) {
            int mu = u * R + moe_comm_data_rank(w);    /* the micro-batch of the step's draw (R B per micro-step) */
            c->reduce = overlap && u == p->accumulate - 1;  /* its backward starts the sums of the buckets it completes */
            c->rng = moe_rng_micro((uint64_t)seed, (uint64_t)step, (uint64_t)mu);
            moe_data_train_batch(data, (uint64_t)seed, step, mu, B, T, rt->tokens, rt->targets);
            moe_rt_upload_batch(rt);
            moe_rt_run(rt, MOE_PHASE_FWD, MOE_PHASE_BWD);
        }
        c->opt_step = (int)(step + 1 - rt->scaler.skipped);    /* AdamW counts the steps it took */
        c->lr = (float)moe_lr_at(&sched, step);
        moe_rt_run(rt, MOE_PHASE_OPT, MOE_PHASE_OPT);
        moe_stats st;
        moe_rt_stats_read(rt, &st);
        moe_rt_stats_reduce(rt, &st, 1);    /* the mean over the ranks */
        double scale = rt->scaler.scale;
        int skipped = p->half == MOE_F16 && moe_scaler_update(&rt->scaler, st.grad_norm);
        w->traffic(w, &msg1, &bytes1);
        double n = (double)p->accumulate, t1 = (moe_now_ms() / 1e3);
        moe_step_metrics m = {
            .step = step + 1, .steps = steps, .first_step = start, .lm_loss = st.lm / n, .aux_loss = st.aux / n,
            .z_loss = st.z / n, .kd_loss = rt->kd ? st.kd / n : 0.0, .teacher = tc ? rt->kd : -1,
            .lr = c->lr, .grad_norm = st.grad_norm,
            .tokens_per_s = (double)B * T * n * R / (t1 - t0),
            .dropped_fraction = st.choices > 0 ? st.dropped / st.choices : 0.0, .elapsed_s = t1 - t_start,
            .elapsed_before = before, .tokens = (double)(step + 1) * B * T * n * R, .step_ms = (t1 - t0) * 1e3,
            .gflops = flops_per_step / (t1 - t0) / 1e9,
            .a2a_messages = p->par_expert > 1 ? msg1 - msg0 : -1, .a2a_bytes = p->par_expert > 1 ? bytes1 - bytes0 : -1,
            .n_moe = p->n_moe, .experts = p->experts, .moe_block = p->moe_block, .loads = (const float *const *)loads,
            .run = step == start ? &run : NULL, .loss_scale = p->half == MOE_F16 ? scale : 0.0, .skipped = skipped};
        m.loss = m.lm_loss + p->aux_loss * m.aux_loss + p->z_loss * m.z_loss + (tc ? tc->weight * m.kd_loss : 0.0);
        for (int i = 0; i < p->n_moe; i++) {
            const double *l = st.record + p->stat_loads[i];
            double tot = 0;
            for (int e = 0; e < p->experts[i]; e++) tot += l[e];
            for (int e = 0; e < p->experts[i]; e++) loads[i][e] = tot > 0 ? (float)(l[e] / tot) : 0.0f;
        }
        m.eval_loss = eval_every > 0 && (step + 1) % eval_every == 0 ? eval_loss(rt, held ? held : data, eval_batches, B, T)
                                                                      : NAN;
        if (moe_rt_error(rt)) {     /* the step's figures are not to be trusted: none is logged */
            cli_fail("%s", moe_rt_error(rt));
            rc = MOE_EXIT_FAIL;
            break;
        }
        if (m.loss != m.loss) {
            cli_fail("loss is NaN at step %lld; stopping", (long long)(step + 1));
            rc = MOE_EXIT_FAIL;
        } else if (!isfinite(st.grad_norm) && !skipped) {     /* (AdamW left the weights as they were) */
            cli_fail("the gradient norm is %g at step %lld; stopping", st.grad_norm, (long long)(step + 1));
            rc = MOE_EXIT_FAIL;
        }
        if (skipped && lead && rt->scaler.skipped <= 10)
            say("step %lld: fp16 gradients overflowed at loss scale %g: the step is skipped and the scale is now %g%s",
                (long long)(step + 1), scale, rt->scaler.scale,
                rt->scaler.skipped < 10 ? "" : log ? " (further skips go to the log only)" : " (no further skips are shown)");
        m.warning = moe_spike_check(&spike, m.loss, m.grad_norm, warning, sizeof warning);
        if (m.warning && lead && warned++ < 5)
            say("warning: step %lld: %s%s", (long long)(step + 1), m.warning,
                warned < 5 ? "" : log ? " (further warnings go to the log only)" : " (no further warnings are shown)");
        if (log && moe_log_step(log, &m)) { cli_fail("cannot write the log: %s", moe_log_why(log)); rc = MOE_EXIT_FAIL; }
        if (lead) moe_progress(stderr, &m, every);
        if (m.eval_loss == m.eval_loss && lead)
            say("step %lld: eval loss %.4f (%s)", (long long)(step + 1), m.eval_loss, held ? "held out" : "training data");
        int due = dir && ((p->checkpoint_every > 0 && (step + 1) % p->checkpoint_every == 0) || step + 1 == steps);
        if (w->world > 1) {    /* the ranks agree on an interrupt before the save */
            double v = interrupts > 0;
            w->allreduce_f64(w, &v, 1);
            if (v > 0 && !interrupts) interrupts = 1;
        }
        if (!rc && (lead || cli_save_together(p)) && (due || (dir && interrupts)))
            rc = save(rt, dir, step + 1, (uint64_t)seed) ? MOE_EXIT_FAIL : 0;
        rc = cli_agree(rc);
        if (!rc && interrupts && step + 1 < steps) {
            if (lead && dir)
                say("interrupted: saved %s/step-%08lld.safetensors; continue with --resume", dir, (long long)(step + 1));
            else if (lead)
                say("interrupted after step %lld (no --checkpoint: nothing saved)", (long long)(step + 1));
            rc = 130;
        }
    }
    sigaction(SIGINT, &old_sa, NULL);
    moe_log_close(log);
    free(loads);
    free(load_buf);
    moe_data_close(data);
    moe_data_close(held);
    moe_rt_destroy(rt);
    return rc;
}
