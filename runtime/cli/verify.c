/* verify.c - `verify`: the cuda program's ops against the cpu program's, one at a time.
 *
 * An executable built with --target all carries both programs, planned alike (the same
 * buffers, offsets and steps). verify runs one training step (forward, backward, AdamW) of
 * the cpu program on the cpu device and of the cuda program on --device (cuda-emu or cuda),
 * then one step of the decode program for a few sequences at once, at a position past the
 * start, in KV caches the cpu program filled. Before each step the device's buffers are
 * made the CPU's, so each op runs on the same inputs on both; then every tensor the step
 * writes is compared: f32 and f64 by their normalised mean squared error sum((a-b)^2) /
 * sum(a^2) (ggml's test-backend-ops measure), i32 exactly. One line per tensor; exit 1 when
 * any is outside its tolerance. A student's teacher is initialised from the seed, so its
 * forward and the KD loss are checked too.
 *
 * --against cuda-emu checks the cuda program on --device against the same program under the
 * emulator instead: a half model's (dtype bf16|fp16) program, which the cpu program cannot
 * match (it computes in f32), is checked op by op so; half tensors compare with their own
 * tolerance (one rounding that lands the other way moves a value by 2^-8 of it in bf16).
 */
#include "cli.h"
#include "moe_half.h"
#include "moe_rng.h"
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NMSE_F32 1e-7       /* ggml's default for f32 ops */
#define NMSE_F64 1e-12
#define NMSE_HALF 1e-5      /* bf16 and f16 tensors (a half model against the emulator) */

static const moe_program *program_of(const char *target) {
    for (int i = 0; moe_programs[i]; i++)
        if (!strcmp(moe_programs[i]->target, target)) return moe_programs[i];
    return NULL;
}

/* the two schedules have the same plan: steps and the tensors each step writes */
static int same_schedule(const moe_schedule *a, const moe_schedule *b) {
    if (a->n_steps != b->n_steps || a->act_bytes != b->act_bytes) return 0;
    for (int i = 0; i < a->n_steps; i++) {
        const moe_step *x = &a->steps[i], *y = &b->steps[i];
        if (strcmp(x->name, y->name) || x->n_outs != y->n_outs) return 0;
        for (int j = 0; j < x->n_outs; j++)
            if (x->outs[j].buf != y->outs[j].buf || x->outs[j].dtype != y->outs[j].dtype ||
                x->outs[j].offset != y->outs[j].offset || x->outs[j].bytes != y->outs[j].bytes)
                return 0;
    }
    return 1;
}
static int same_plan(const moe_program *a, const moe_program *b) {
    for (int c = 0; c < MOE_BUF_COUNT; c++)     /* QPARAM: the decode program's (int8 on the cpu only) */
        if (c != MOE_BUF_QPARAM && a->buf_bytes[c] != b->buf_bytes[c]) return 0;
    return same_schedule(&a->train, &b->train) && same_schedule(&a->decode, &b->decode);
}

/* base and size of class c of rt (ACT: the training arena, or the decode program's; KV: every
 * slot's caches) */
static uint8_t *buf_of(const moe_rt *rt, int c, int decode, size_t *bytes) {
    const moe_program *p = rt->prog;
    *bytes = c == MOE_BUF_ACT ? (size_t)(decode ? p->decode.act_bytes : p->train.act_bytes)
           : !rt->buf[c] ? 0 : (size_t)p->buf_bytes[c] * (c == MOE_BUF_KV ? (size_t)rt->n_slots : 1);
    return c == MOE_BUF_ACT ? (decode ? rt->dec_act : rt->act) : rt->buf[c];
}

/* the device's buffers become the CPU's (staging is host memory, the same in both) */
static void copy_state(moe_rt *cpu, moe_rt *dev, int decode, uint8_t *host) {
    for (int c = 0; c < MOE_BUF_COUNT; c++) {
        size_t n;
        uint8_t *src = buf_of(cpu, c, decode, &n), *dst = buf_of(dev, c, decode, &n);
        if (c == MOE_BUF_STAGING || !n || !src || !dst) continue;
        cpu->dev->ops->download(cpu->dev, host, src, n);
        dev->dev->ops->upload(dev->dev, dst, host, n);
    }
}

typedef struct cmp { double nmse, max_diff; long long mismatches; } cmp;

/* element i of a tensor of dtype (f32, f64, bf16, f16) */
static double value(int dtype, const void *p, int64_t i) {
    if (dtype == MOE_F64) return ((const double *)p)[i];
    if (dtype == MOE_F32) return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    uint32_t u = dtype == MOE_BF16 ? moe_bf16_to_f32(h) : moe_f16_to_f32(h);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static cmp compare(int dtype, const void *a, const void *b, int64_t bytes) {
    cmp r = {0, 0, 0};
    double num = 0, den = 0;
    if (dtype == MOE_I32) {
        const int32_t *x = a, *y = b;
        for (int64_t i = 0; i < bytes / 4; i++) r.mismatches += x[i] != y[i];
        return r;
    }
    int64_t n = bytes / (dtype == MOE_F64 ? 8 : dtype == MOE_F32 ? 4 : 2);
    for (int64_t i = 0; i < n; i++) {
        double x = value(dtype, a, i), y = value(dtype, b, i);
        double d = x - y;
        if (x != y && !(fabs(d) <= r.max_diff)) r.max_diff = isnan(d) ? NAN : fabs(d);
        num += d * d;
        den += x * x;
    }
    r.nmse = den > 0 ? num / den : num > 0 ? INFINITY : 0;
    return r;
}

static const char *const dt_name[] = {"f32", "bf16", "f16", "i32", "f64"};

/* step st (of the decode program: decode) from the same state on both, and a line per tensor
 * it writes; *tensors and *bad count them */
static void check_step(moe_rt *rc, moe_rt *rd, const moe_step *st, int i, int decode, uint8_t *ha, uint8_t *hb,
                       int *tensors, int *bad) {
    copy_state(rc, rd, decode, ha);
    if (decode) moe_rt_run_decode_step(rc, i), moe_rt_run_decode_step(rd, i);
    else moe_rt_run_step(rc, i), moe_rt_run_step(rd, i);
    for (int j = 0; j < st->n_outs; j++) {
        const moe_region *g = &st->outs[j];
        size_t n;
        rc->dev->ops->download(rc->dev, ha, buf_of(rc, g->buf, decode, &n) + g->offset, (size_t)g->bytes);
        rd->dev->ops->download(rd->dev, hb, buf_of(rd, g->buf, decode, &n) + g->offset, (size_t)g->bytes);
        cmp m = compare(g->dtype, ha, hb, g->bytes);
        int ok = g->dtype == MOE_I32 ? m.mismatches == 0
               : m.nmse <= (g->dtype == MOE_F64 ? NMSE_F64 : g->dtype == MOE_F32 ? NMSE_F32 : NMSE_HALF);
        (*tensors)++;
        *bad += !ok;
        if (g->dtype == MOE_I32)
            printf("  %-32s %-8s %s %lld of %lld differ%s\n", st->name, g->name, dt_name[g->dtype], m.mismatches,
                   (long long)(g->bytes / 4), ok ? "" : "  FAIL");
        else
            printf("  %-32s %-8s %s nmse %.2e, max |diff| %.2e%s\n", st->name, g->name, dt_name[g->dtype], m.nmse,
                   m.max_diff, ok ? "" : "  FAIL");
    }
}

int cli_verify(int argc, char **argv) {
    moe_flag f[] = {{"--batch", 1, "sequences (default train.batch)", NULL},
                    {"--seq", 1, "tokens per sequence (default context)", NULL},
                    {"--device", 1, "cuda|cuda-emu, the device checked (default cuda)", NULL},
                    {"--against", 1, "cpu (the cpu program, default) or cuda-emu (the cuda program on the emulator)",
                     NULL}};
    int nf = (int)(sizeof f / sizeof f[0]);
    int r = moe_args_parse(moe_prog_name, "verify", argc, argv, f, nf);
    if (r) return r > 0 ? MOE_EXIT_OK : MOE_EXIT_USAGE;
    const char *dev = moe_arg(f, nf, "--device") ? moe_arg(f, nf, "--device") : "cuda";
    const char *ref = moe_arg(f, nf, "--against") ? moe_arg(f, nf, "--against") : "cpu";
    int emu = !strcmp(ref, "cuda-emu");
    if (!emu && strcmp(ref, "cpu")) { cli_fail("--against takes cpu or cuda-emu, not '%s'", ref); return MOE_EXIT_USAGE; }
    if (!strcmp(dev, "cpu") || (emu && !strcmp(dev, "cuda-emu"))) {
        cli_fail("--device names the device checked against --against's: cuda%s", emu ? "" : " or cuda-emu");
        return MOE_EXIT_USAGE;
    }
    const moe_program *pc = program_of(emu ? "cuda" : "cpu"), *pd = program_of("cuda");
    if (!pd || !pc) {
        cli_fail("verify compares the cpu and cuda programs: build with moec build --target all%s",
                 pd ? " (or pass --against cuda-emu)" : "");
        return 1;
    }
    if (!same_plan(pc, pd)) {
        cli_fail("the cpu and cuda programs are planned differently: rebuild with moec build --target all");
        return 1;
    }
    long long B, T;
    if (moe_arg_int(f, nf, "--batch", pc->batch, 1, INT_MAX, &B) || moe_arg_int(f, nf, "--seq", pc->context, 1, INT_MAX, &T))
        return MOE_EXIT_USAGE;
    char err[512];
    int slots = pc->decode.B_max < 3 ? (int)pc->decode.B_max : 3;     /* sequences decoding together */
    moe_rt *rc = moe_rt_create(pc, ref, MOE_RT_OPTIMIZER, slots, err, sizeof err), *rd = NULL;
    moe_data *data = NULL;
    size_t big = 0;
    for (int c = 0; c < MOE_BUF_COUNT; c++) {
        size_t n = c == MOE_BUF_ACT ? (size_t)(pc->train.act_bytes > pc->decode.act_bytes ? pc->train.act_bytes
                                                                                          : pc->decode.act_bytes)
                 : (size_t)pc->buf_bytes[c] * (c == MOE_BUF_KV ? (size_t)slots : 1);
        if (n > big) big = n;
    }
    uint8_t *ha = malloc(big ? big : 1), *hb = malloc(big ? big : 1);
    int status = 1;
    if (!rc || !(rd = moe_rt_create(pd, dev, MOE_RT_OPTIMIZER, slots, err, sizeof err))) { cli_fail("%s", err); goto out; }
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
    printf("verify: the cuda program on %s against %s, one training step of %lld x %lld tokens,\n"
           "each op from the same state (tolerance: nmse %.0e for f32, %.0e for f64, %.0e for bf16 and f16; i32 "
           "exact)\n", dev, emu ? "itself on cuda-emu" : "the cpu program", B, T, NMSE_F32, NMSE_F64, NMSE_HALF);
    int tensors = 0, bad = 0;
    for (int i = 0; i < pc->train.n_steps && !moe_rt_error(rc) && !moe_rt_error(rd); i++)
        check_step(rc, rd, &pc->train.steps[i], i, 0, ha, hb, &tensors, &bad);
    /* decoding: the slots' KV caches filled by the cpu program over positions 0 .. P-1 (the
     * batch's first tokens), then one step of every slot at position P, op by op */
    int P = pc->context > 4 ? 4 : (int)pc->context - 1;
    int32_t tok[3], pos[3], slot[3];
    printf("decode: one step of %d sequences at position %d of their KV caches, each op from the same state\n",
           slots, P);
    for (int t = 0; t <= P && !moe_rt_error(rc); t++) {
        for (int j = 0; j < slots; j++)
            tok[j] = rc->tokens[((int64_t)j * T + t) % (B * T)], pos[j] = t, slot[j] = j;
        if (t < P) moe_rt_decode_rows(rc, slots, tok, pos, slot);
    }
    moe_ctx sc = moe_rt_decode_begin(rc, slots, tok, pos, slot), sd = moe_rt_decode_begin(rd, slots, tok, pos, slot);
    for (int i = 0; i < pc->decode.n_steps && !moe_rt_error(rc) && !moe_rt_error(rd); i++)
        check_step(rc, rd, &pc->decode.steps[i], i, 1, ha, hb, &tensors, &bad);
    rc->ctx = sc, rd->ctx = sd;
    if (moe_rt_error(rc) || moe_rt_error(rd)) {
        cli_fail("%s", moe_rt_error(rc) ? moe_rt_error(rc) : moe_rt_error(rd));
        goto out;
    }
    printf("%d training and %d decode steps, %d tensors: %s\n", pc->train.n_steps, pc->decode.n_steps, tensors,
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
