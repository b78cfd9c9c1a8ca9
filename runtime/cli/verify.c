/* verify.c - `verify`: the cuda program's ops against the cpu program's, one at a time.
 *
 * An executable built with --target all carries both programs, planned alike (the same
 * buffers, offsets and steps). verify runs one training step (forward, backward, AdamW) of
 * the cpu program on the cpu device and of the cuda program on --device (cuda-emu or cuda).
 * Before each step the device's buffers are made the CPU's, so each op runs on the same
 * inputs on both; then every tensor the step writes is compared: f32 and f64 by their
 * normalised mean squared error sum((a-b)^2) / sum(a^2) (ggml's test-backend-ops measure),
 * i32 exactly. One line per tensor; exit 1 when any is outside its tolerance. A student's
 * teacher is initialised from the seed, so its forward and the KD loss are checked too.
 */
#include "cli.h"
#include "moe_rng.h"
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NMSE_F32 1e-7       /* ggml's default for f32 ops */
#define NMSE_F64 1e-12

static const moe_program *program_of(const char *target) {
    for (int i = 0; moe_programs[i]; i++)
        if (!strcmp(moe_programs[i]->target, target)) return moe_programs[i];
    return NULL;
}

/* the two programs have the same plan: buffers, steps and the tensors each step writes */
static int same_plan(const moe_program *a, const moe_program *b) {
    if (a->train.n_steps != b->train.n_steps || a->train.act_bytes != b->train.act_bytes) return 0;
    for (int c = 0; c < MOE_BUF_COUNT; c++)     /* QPARAM: the decode program's (int8 on the cpu only) */
        if (c != MOE_BUF_QPARAM && a->buf_bytes[c] != b->buf_bytes[c]) return 0;
    for (int i = 0; i < a->train.n_steps; i++) {
        const moe_step *x = &a->train.steps[i], *y = &b->train.steps[i];
        if (strcmp(x->name, y->name) || x->n_outs != y->n_outs) return 0;
        for (int j = 0; j < x->n_outs; j++)
            if (x->outs[j].buf != y->outs[j].buf || x->outs[j].dtype != y->outs[j].dtype ||
                x->outs[j].offset != y->outs[j].offset || x->outs[j].bytes != y->outs[j].bytes)
                return 0;
    }
    return 1;
}

/* base and size of class c of rt (ACT: the training arena) */
static uint8_t *buf_of(const moe_rt *rt, int c, size_t *bytes) {
    *bytes = c == MOE_BUF_ACT ? (size_t)rt->prog->train.act_bytes : rt->buf[c] ? (size_t)rt->prog->buf_bytes[c] : 0;
    return c == MOE_BUF_ACT ? rt->act : rt->buf[c];
}

/* the device's buffers become the CPU's (staging is host memory, the same in both) */
static void copy_state(moe_rt *cpu, moe_rt *dev, uint8_t *host) {
    for (int c = 0; c < MOE_BUF_COUNT; c++) {
        size_t n;
        uint8_t *src = buf_of(cpu, c, &n), *dst = buf_of(dev, c, &n);
        if (c == MOE_BUF_STAGING || !n || !src || !dst) continue;
        cpu->dev->ops->download(cpu->dev, host, src, n);
        dev->dev->ops->upload(dev->dev, dst, host, n);
    }
}

typedef struct cmp { double nmse, max_diff; long long mismatches; } cmp;

static cmp compare(int dtype, const void *a, const void *b, int64_t bytes) {
    cmp r = {0, 0, 0};
    double num = 0, den = 0;
    if (dtype == MOE_I32) {
        const int32_t *x = a, *y = b;
        for (int64_t i = 0; i < bytes / 4; i++) r.mismatches += x[i] != y[i];
        return r;
    }
    int64_t n = bytes / (dtype == MOE_F64 ? 8 : 4);
    for (int64_t i = 0; i < n; i++) {
        double x = dtype == MOE_F64 ? ((const double *)a)[i] : ((const float *)a)[i];
        double y = dtype == MOE_F64 ? ((const double *)b)[i] : ((const float *)b)[i];
        double d = x - y;
        if (x != y && !(fabs(d) <= r.max_diff)) r.max_diff = isnan(d) ? NAN : fabs(d);
        num += d * d;
        den += x * x;
    }
    r.nmse = den > 0 ? num / den : num > 0 ? INFINITY : 0;
    return r;
}

int cli_verify(int argc, char **argv) {
    moe_flag f[] = {{"--batch", 1, "sequences (default train.batch)", NULL},
                    {"--seq", 1, "tokens per sequence (default context)", NULL},
                    {"--device", 1, "cuda|cuda-emu, checked against cpu (default cuda)", NULL}};
    int nf = (int)(sizeof f / sizeof f[0]);
    int r = moe_args_parse(moe_prog_name, "verify", argc, argv, f, nf);
    if (r) return r > 0 ? MOE_EXIT_OK : MOE_EXIT_USAGE;
    const moe_program *pc = program_of("cpu"), *pd = program_of("cuda");
    const char *dev = moe_arg(f, nf, "--device") ? moe_arg(f, nf, "--device") : "cuda";
    if (!pc || !pd) { cli_fail("verify compares the cpu and cuda programs: build with moec build --target all"); return 1; }
    if (!strcmp(dev, "cpu")) { cli_fail("--device names the device checked against the cpu: cuda or cuda-emu"); return MOE_EXIT_USAGE; }
    if (!same_plan(pc, pd)) {
        cli_fail("the cpu and cuda programs are planned differently: rebuild with moec build --target all");
        return 1;
    }
    long long B, T;
    if (moe_arg_int(f, nf, "--batch", pc->batch, 1, INT_MAX, &B) || moe_arg_int(f, nf, "--seq", pc->context, 1, INT_MAX, &T))
        return MOE_EXIT_USAGE;
    char err[512];
    moe_rt *rc = moe_rt_create(pc, "cpu", MOE_RT_OPTIMIZER, 0, err, sizeof err), *rd = NULL;
    moe_data *data = NULL;
    size_t big = 0;
    for (int c = 0; c < MOE_BUF_COUNT; c++) {
        size_t n = c == MOE_BUF_ACT ? (size_t)pc->train.act_bytes : (size_t)pc->buf_bytes[c];
        if (n > big) big = n;
    }
    uint8_t *ha = malloc(big ? big : 1), *hb = malloc(big ? big : 1);
    int status = 1;
    if (!rc || !(rd = moe_rt_create(pd, dev, MOE_RT_OPTIMIZER, 0, err, sizeof err))) { cli_fail("%s", err); goto out; }
    if (!ha || !hb) { cli_fail("out of memory"); goto out; }
    if (moe_rt_shape(rc, (int)B, (int)T, err, sizeof err) || moe_rt_shape(rd, (int)B, (int)T, err, sizeof err) ||
        moe_rt_init_params(rc, (uint64_t)pc->seed, err, sizeof err) ||
        (pc->teacher && (moe_rt_init_teacher(rc, (uint64_t)pc->seed, err, sizeof err) ||
                         moe_rt_teacher_buffer(rd, err, sizeof err)))) {
        cli_fail("%s", err);
        goto out;
    }
    if (!(data = cli_data("synthetic"))) goto out;
    moe_data_train_batch(data, (uint64_t)pc->seed, 0, 0, (int)B, (int)T, rc->tokens, rc->targets);
    moe_rt_upload_batch(rc);
    moe_rt_zero_grads(rc);
    moe_rt_stats_clear(rc);
    moe_rt *both[2] = {rc, rd};
    moe_lr_sched sched = moe_lr_program(pc);
    for (int k = 0; k < 2; k++) {
        moe_ctx *c = &both[k]->ctx;
        c->mode = MOE_MODE_TRAIN;
        c->rng = moe_rng_micro((uint64_t)pc->seed, 0, 0);
        c->lr = (float)moe_lr_at(&sched, 0);
        c->opt_step = 1;
    }
    printf("verify: the cuda program on %s against the cpu program, one training step of %lld x %lld tokens,\n"
           "each op from the same state (tolerance: nmse %.0e for f32, %.0e for f64; i32 exact)\n",
           dev, B, T, NMSE_F32, NMSE_F64);
    static const char *const dt[] = {"f32", "bf16", "f16", "i32", "f64"};
    int tensors = 0, bad = 0;
    for (int i = 0; i < pc->train.n_steps && !moe_rt_error(rc) && !moe_rt_error(rd); i++) {
        const moe_step *st = &pc->train.steps[i];
        copy_state(rc, rd, ha);
        moe_rt_run_step(rc, i);
        moe_rt_run_step(rd, i);
        for (int j = 0; j < st->n_outs; j++) {
            const moe_region *g = &st->outs[j];
            size_t n;
            rc->dev->ops->download(rc->dev, ha, buf_of(rc, g->buf, &n) + g->offset, (size_t)g->bytes);
            rd->dev->ops->download(rd->dev, hb, buf_of(rd, g->buf, &n) + g->offset, (size_t)g->bytes);
            cmp m = compare(g->dtype, ha, hb, g->bytes);
            int ok = g->dtype == MOE_I32 ? m.mismatches == 0 : m.nmse <= (g->dtype == MOE_F64 ? NMSE_F64 : NMSE_F32);
            tensors++;
            bad += !ok;
            if (g->dtype == MOE_I32)
                printf("  %-32s %-8s %s %lld of %lld differ%s\n", st->name, g->name, dt[g->dtype], m.mismatches,
                       (long long)(g->bytes / 4), ok ? "" : "  FAIL");
            else
                printf("  %-32s %-8s %s nmse %.2e, max |diff| %.2e%s\n", st->name, g->name, dt[g->dtype], m.nmse, m.max_diff,
                       ok ? "" : "  FAIL");
        }
    }
    if (moe_rt_error(rc) || moe_rt_error(rd)) {
        cli_fail("%s", moe_rt_error(rc) ? moe_rt_error(rc) : moe_rt_error(rd));
        goto out;
    }
    printf("%d steps, %d tensors: %s\n", pc->train.n_steps, tensors,
           bad ? "some outside their tolerance" : "all within their tolerance");
    if (bad) cli_fail("%d of %d tensors differ beyond their tolerance", bad, tensors);
    status = bad ? 1 : 0;
out:
    free(ha);
    free(hb);
    moe_data_close(data);
    moe_rt_destroy(rd);
    moe_rt_destroy(rc);
    return status;
}
