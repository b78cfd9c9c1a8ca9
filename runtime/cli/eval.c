/* eval.c - `eval` (mean losses over consecutive windows) and `grad` (gradient of the
 * training loss on the first batch, written as safetensors). With R data-parallel ranks (the
 * processes, or their tensor groups), data rank r evaluates batches r, r + R, ... and rank 0
 * prints the means over all of them; `grad` takes the first R batches, one per data rank, and
 * rank 0 writes the gradient of their mean loss.
 * With --teacher (a student) the teacher runs beside it: eval adds kd_loss, grad's loss has
 * the KD term. */
#include "cli.h"
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

typedef struct evopts { moe_rt *rt; moe_data *data; int B, T; long long max_batches; char ckpt[4096]; int64_t step; } evopts;

/* a and b name one existing file */
static int same_file(const char *a, const char *b) {
    struct stat x, y;
    return a && b && stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

/* common set-up: flags, device, runtime, checkpoint, data, batch shape. 0 to go on, -1 after
 * --help, else the exit status after a message. */
static int setup(const char *cmd, moe_flag *f, int nf, int argc, char **argv, int need, evopts *o) {
    int r = moe_args_parse(moe_prog_name, cmd, argc, argv, f, nf);
    if (r) return r > 0 ? -1 : MOE_EXIT_USAGE;
    const moe_program *p = cli_prog;
    long long B, T;
    if (moe_arg_int(f, nf, "--batch", p->batch, 1, INT_MAX, &B) || moe_arg_int(f, nf, "--seq", p->context, 1, INT_MAX, &T) ||
        moe_arg_int(f, nf, "--max-batches", LLONG_MAX, 1, LLONG_MAX, &o->max_batches))   /* eval's, before any loading */
        return MOE_EXIT_USAGE;
    if (!moe_arg(f, nf, "--data")) { cli_fail("--data FILE is required"); return MOE_EXIT_USAGE; }
    if (!moe_arg(f, nf, "--checkpoint")) { cli_fail("--checkpoint PATH is required"); return MOE_EXIT_USAGE; }
    o->rt = cli_rt(need, 0, moe_arg(f, nf, "--device"));
    if (!o->rt) return MOE_EXIT_FAIL;
    char err[512];
    if (moe_rt_shape(o->rt, (int)B, (int)T, err, sizeof err)) { cli_fail("%s", err); return MOE_EXIT_FAIL; }
    if ((r = cli_load(o->rt, moe_arg(f, nf, "--checkpoint"), o->ckpt, sizeof o->ckpt, &o->step)) ||
        (r = cli_teacher(o->rt, moe_arg(f, nf, "--teacher"))))
        return r;
    if (!(o->data = cli_data(moe_arg(f, nf, "--data")))) return MOE_EXIT_FAIL;
    o->B = (int)B; o->T = (int)T;
    if (moe_data_windows(o->data, T) < B) {
        snprintf(err, sizeof err, "%s: %lld tokens do not fill one batch of %d x %d (+1 target)",
                 moe_data_name(o->data), (long long)moe_data_tokens(o->data), o->B, o->T);
        cli_fail("%s", err);
        return MOE_EXIT_FAIL;
    }
    return 0;
}

static void teardown(evopts *o) {
    moe_data_close(o->data);
    moe_rt_destroy(o->rt);
}

/* {"lm_loss", "aux_loss", "z_loss", "tokens", "batches", "dropped_fraction", "perplexity",
 * "bits_per_token" (or "bits_per_byte" for a byte vocabulary), "checkpoint", "kd_loss" (with
 * --teacher: tau^2 x the mean KL, before distill.weight), "step"} */
int cli_eval(int argc, char **argv) {
    moe_flag f[] = {{"--checkpoint", 1, "weights (a file, or a directory: its newest checkpoint)", NULL},
                    {"--data", 1, "token file (.bin), bytes file, or synthetic", NULL},
                    {"--batch", 1, "sequences per forward pass (default train.batch)", NULL},
                    {"--seq", 1, "tokens per sequence (default context)", NULL},
                    {"--max-batches", 1, "evaluate at most N batches (default: all the data holds)", NULL},
                    {"--teacher", 1, "a student's teacher checkpoint: adds kd_loss", NULL},
                    {"--device", 1, "cpu|cuda|cuda-emu", NULL}};
    int nf = (int)(sizeof f / sizeof f[0]);
    evopts o = {0};
    int r = setup("eval", f, nf, argc, argv, MOE_RT_INFER, &o);
    if (r) { teardown(&o); return r < 0 ? MOE_EXIT_OK : r; }
    int64_t nb = moe_data_windows(o.data, o.T) / o.B;
    if (nb > o.max_batches) nb = o.max_batches;
    moe_stats st;
    if (cli_eval_windows(o.rt, o.data, 0, nb, o.B, o.T, &st)) { teardown(&o); return MOE_EXIT_FAIL; }
    if (o.rt->ctx.comm->rank != 0) { teardown(&o); return MOE_EXIT_OK; }   /* rank 0 prints */
    double lm = st.lm / (double)nb;
    printf("{\"lm_loss\": %s, \"aux_loss\": %s, \"z_loss\": %s, \"tokens\": %lld, \"batches\": %lld, "
           "\"dropped_fraction\": %.9g, \"perplexity\": %s, \"%s\": %s, \"checkpoint\": ",
           cli_json_num(lm).s, cli_json_num(st.aux / nb).s, cli_json_num(st.z / nb).s, (long long)(nb * o.B * o.T),
           (long long)nb, st.choices > 0 ? st.dropped / st.choices : 0.0, cli_json_num(exp(lm)).s,
           cli_prog->vocab == 256 ? "bits_per_byte" : "bits_per_token", cli_json_num(lm / log(2.0)).s);
    cli_json_string(o.ckpt);
    if (o.rt->kd) printf(", \"kd_loss\": %s", cli_json_num(st.kd / nb).s);
    if (o.step >= 0) printf(", \"step\": %lld}\n", (long long)o.step);
    else printf(", \"step\": null}\n");
    teardown(&o);
    return MOE_EXIT_OK;
}

int cli_grad(int argc, char **argv) {
    moe_flag f[] = {{"--checkpoint", 1, "weights", NULL},
                    {"--data", 1, "token file (.bin), bytes file, or synthetic", NULL},
                    {"--out", 1, "safetensors file for the gradients", NULL},
                    {"--batch", 1, "sequences (default train.batch)", NULL},
                    {"--seq", 1, "tokens per sequence (default context)", NULL},
                    {"--teacher", 1, "a student's teacher checkpoint: the loss has the KD term", NULL},
                    {"--device", 1, "cpu|cuda|cuda-emu", NULL}};
    int nf = (int)(sizeof f / sizeof f[0]);
    evopts o = {0};
    int r = setup("grad", f, nf, argc, argv, MOE_RT_GRADS, &o);
    if (!r && !moe_arg(f, nf, "--out")) { cli_fail("--out FILE is required"); r = MOE_EXIT_USAGE; }
    if (!r && same_file(moe_arg(f, nf, "--out"), o.ckpt)) {
        cli_fail("--out %s is the checkpoint being read: the gradients would replace the weights", moe_arg(f, nf, "--out"));
        r = MOE_EXIT_FAIL;
    }
    if (r) { teardown(&o); return r < 0 ? MOE_EXIT_OK : r; }
    moe_rt *rt = o.rt;
    const moe_comm *w = rt->ctx.comm;
    int R = moe_comm_data_size(w);      /* a batch per data-parallel rank */
    if (moe_data_windows(o.data, o.T) < (int64_t)o.B * R) {
        cli_fail("%s: %lld tokens do not fill %d batches of %d x %d (+1 target), one per data-parallel rank",
                 moe_data_name(o.data), (long long)moe_data_tokens(o.data), R, o.B, o.T);
        teardown(&o);
        return MOE_EXIT_FAIL;
    }
    rt->ctx.mode = MOE_MODE_GRAD;
    rt->ctx.loss_scale = 1.0f / (float)R;   /* the sum over the ranks is then the mean */
    moe_data_window_batch(o.data, (int64_t)moe_comm_data_rank(w) * o.B, o.B, o.T, rt->tokens, rt->targets);
    moe_rt_upload_batch(rt);
    moe_rt_zero_grads(rt);
    moe_rt_run(rt, MOE_PHASE_FWD, MOE_PHASE_BWD);
    moe_rt_grads_sum(rt);
    char err[1024];
    int rc = 0;
    if ((w->rank == 0 || cli_save_together(rt->prog)) && moe_ckpt_save_grads(rt, moe_arg(f, nf, "--out"), err, sizeof err)) {
        cli_fail("%s", err);
        rc = 1;
    }
    teardown(&o);
    return rc;
}
