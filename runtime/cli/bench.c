/* bench.c - `bench`: tokens per second and the per-kernel (per-step) time breakdown (a
 * student with --teacher: the teacher's share of the step); `bench --decode`: KV-cache
 * decoding latency against the machine's memory bandwidth. */
#include "cli.h"
#include "moe_start.h"
#include "moe_rng.h"
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* Peak resident set of this process from /proc (VmHWM): unlike getrusage's ru_maxrss it
 * does not inherit the peak of a parent that exec'ed us. Falls back to ru_maxrss. */
static long long peak_rss_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %lld kB", &kb) == 1) break;
    if (f) fclose(f);
    if (kb < 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        kb = ru.ru_maxrss;
    }
    return kb * 1024;
}

/* need: MOE_RT_INFER = forward, MOE_RT_GRADS = forward + backward, MOE_RT_OPTIMIZER = + AdamW.
 * The statistics are cleared first, so they describe the last step. */
static void one_step(moe_rt *rt, int need) {
    moe_rt_stats_clear(rt);
    if (need == MOE_RT_INFER) { moe_rt_run(rt, MOE_PHASE_FWD, MOE_PHASE_FWD); return; }
    moe_rt_zero_grads(rt);
    moe_rt_run(rt, MOE_PHASE_FWD, MOE_PHASE_BWD);
    if (need == MOE_RT_GRADS) return;
    rt->ctx.opt_step++;
    moe_rt_run(rt, MOE_PHASE_OPT, MOE_PHASE_OPT);
}

/* The memory bandwidth of this machine in GB/s: STREAM's triad a = b + s c over arrays far
 * larger than the caches, all threads, the best of 5 (2 reads and a write per element). */
static double triad_gbs(void) {
    const long n = 16L << 20;       /* 64 MiB per array */
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float)), *c = malloc(n * sizeof(float));
    double best = 0;
    if (a && b && c) {
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; i++) a[i] = 0.0f, b[i] = 1.0f, c[i] = 2.0f;
        for (int r = 0; r < 5; r++) {
            double t0 = moe_now_ms();
#pragma omp parallel for schedule(static)
            for (long i = 0; i < n; i++) a[i] = b[i] + 0.5f * c[i];
            double gbs = 3.0 * n * sizeof(float) / ((moe_now_ms() - t0) / 1e3) / 1e9;
            best = gbs > best ? gbs : best;
        }
    }
    free(a), free(b), free(c);
    return best;
}

/* This machine's sgemm rate in GFLOP/s at the current thread count: C = A B on 1024 x 1024
 * matrices, the best of 8 after a warm-up: the ceiling a training step's GEMMs work against.
 * bench measures it before and after the timed steps and keeps the better (a shared VM's
 * rate moves by 2x from one second to the next). */
static double sgemm_gflops(void) {
    const int n = 1024;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    double best = 0;
    for (long i = 0; a && b && c && i < (long)n * n; i++) a[i] = 1.0f / (float)(1 + i % 7), b[i] = 0.5f;
    for (int r = 0; a && b && c && r < 9; r++) {
        double t0 = moe_now_ms();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double g = 2.0 * n * n * n / ((moe_now_ms() - t0) / 1e3) / 1e9;
        if (r > 0 && g > best) best = g;
    }
    free(a), free(b), free(c);
    return best;
}

/* Weight bytes a decode pass of `rows` sequences must read: every non-expert weight once (of the
 * embedding tables a row per sequence, unless wte is also the output head) and the experts the
 * rows choose, min(E, rows x top_k) of each MoE layer's E (as if their choices were distinct);
 * with int8 experts (q8), their weights' int8 values and scales. */
static double decode_weight_bytes(const moe_program *p, int q8, int rows) {
    double bytes = 0;
    for (int i = 0; i < p->n_params; i++) {
        const moe_param_info *q = &p->params[i];
        double b = 4.0 * (double)q->numel, E = (double)q->shape[0];
        if (q8 && q->qoffset >= 0) b = (double)q->numel + 4.0 * (double)(q->shape[0] * q->shape[2]);
        if (q->expert) b *= fmin(E, (double)rows * p->top_k) / E;
        else if (!strcmp(q->name, "wpe.weight") || (!strcmp(q->name, "wte.weight") && !p->tied))
            b = 4.0 * (double)p->hidden * rows;
        bytes += b;
    }
    return bytes;
}
/* ... and the KV-cache bytes at position pos: keys and values of every layer up to pos */
static double decode_kv_bytes(const moe_program *p, int pos) {
    return 2.0 * 4.0 * (double)p->layers * (double)(p->hidden * p->kv_heads / p->heads) * (pos + 1);
}

/* the weights of checkpoint `path`, or from the seed without one: 0, or the exit status after a message */
static int load_or_init(moe_rt *rt, const char *path) {
    char err[512];
    if (path) return cli_load(rt, path, NULL, 0, NULL);
    if (!moe_rt_init_params(rt, (uint64_t)rt->prog->seed, err, sizeof err)) return 0;
    cli_fail("%s", err);
    return MOE_EXIT_FAIL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One round of bench --decode: the next token of each of B sequences (slot b holds sequence b)
 * at position pos, their rows together through the decode program; tok: in, then the greedy
 * next tokens out. rows [2B]: scratch. */
static void decode_round(moe_rt *rt, int B, int pos, int32_t *tok, int32_t *rows) {
    const moe_program *p = rt->prog;
    for (int b = 0; b < B; b++) rows[b] = pos, rows[B + b] = b;
    const float *lg = moe_rt_decode_rows(rt, B, tok, rows, rows + B);
    for (int b = 0; b < B; b++, lg += p->vocab) {
        int best = 0;
        for (int v = 1; v < p->vocab; v++) best = lg[v] > lg[best] ? v : best;
        tok[b] = best;
    }
}

/* bench --decode: B sequences in B decode slots, their prompts through the decode program
 * (prefill, a token of every sequence at a time), then `tokens` rounds timed one by one, a
 * round giving every sequence its next token (greedy) */
static int bench_decode(const char *device, const char *ckpt, int B, long long P, long long N, int json) {
    const moe_program *p = cli_prog;
    if (P + N > p->context) {
        cli_fail("--prompt-len %lld + --tokens %lld exceed the context (%lld)", P, N, (long long)p->context);
        return MOE_EXIT_USAGE;
    }
    moe_rt *rt = cli_rt(MOE_RT_INFER, B, device);
    if (!rt) return MOE_EXIT_FAIL;
    int rc = load_or_init(rt, ckpt);
    if (rc) { moe_rt_destroy(rt); return rc; }
    double *ms = malloc(sizeof(double) * (size_t)N), t0 = moe_now_ms();
    double bytes = 0;     /* weights and caches read by the timed rounds, in moe_rt_decode_rows's passes */
    for (int b0 = 0, D = (int)p->decode.B_max; b0 < B; b0 += D)
        bytes += decode_weight_bytes(p, rt->q8 == 2, B - b0 < D ? B - b0 : D) * (double)N;
    if (!ms) { cli_fail("out of memory"); moe_rt_destroy(rt); return MOE_EXIT_FAIL; }
    int32_t *tok = calloc((size_t)B, sizeof *tok), *rows = calloc(2 * (size_t)B, sizeof *rows);
    if (!tok || !rows) { cli_fail("out of memory"); free(ms), free(tok), free(rows); moe_rt_destroy(rt); return MOE_EXIT_FAIL; }
    for (long long t = 0; t < P; t++) {     /* the prompts: token t of sequence b is (7t + b + 1) mod V */
        for (int b = 0; b < B; b++) tok[b] = (int32_t)((t * 7 + b + 1) % p->vocab);
        decode_round(rt, B, (int)t, tok, rows);
    }
    double prefill = moe_now_ms() - t0;
    for (long long i = 0; i < N; i++) {
        double s = moe_now_ms();
        decode_round(rt, B, (int)(P + i), tok, rows);
        ms[i] = moe_now_ms() - s;
        bytes += B * decode_kv_bytes(p, (int)(P + i));
    }
    free(tok), free(rows);
    if (moe_rt_error(rt)) { cli_fail("%s", moe_rt_error(rt)); free(ms); moe_rt_destroy(rt); return MOE_EXIT_FAIL; }
    double total = 0;
    for (long long i = 0; i < N; i++) total += ms[i];
    qsort(ms, (size_t)N, sizeof ms[0], cmp_double);
    double med = ms[N / 2], p90 = ms[(N * 9) / 10 < N ? (N * 9) / 10 : N - 1], tps = (double)B * N / (total / 1e3);
    double per_token = bytes / ((double)N * B), achieved = per_token * tps / 1e9, probe = triad_gbs();
    if (json)
        printf("{\"model\": \"%s\", \"mode\": \"decode\", \"batch\": %d, \"prompt_len\": %lld, \"tokens\": %lld, "
               "\"prefill_ms\": %.3f, \"latency_ms_median\": %.4f, \"latency_ms_p90\": %.4f, \"tokens_per_s\": %.2f, "
               "\"bytes_per_token\": %.0f, \"achieved_gbs\": %.3f, \"probe_gbs\": %.3f, \"bandwidth_ratio\": %.3f, "
               "\"threads\": %d, \"peak_rss_bytes\": %lld, \"expert_weights\": \"%s\"}\n", p->model, B, P, N, prefill,
               med, p90, tps, per_token, achieved, probe, probe > 0 ? achieved / probe : 0.0, omp_get_max_threads(),
               peak_rss_bytes(), rt->q8 == 2 ? "int8" : "f32");
    else
        printf("%s decode%s, %d sequence%s: prompts of %lld tokens in %.1f ms; %lld rounds (a token for each sequence) "
               "at %.3f ms median (p90 %.3f), %.1f tokens/s;\n"
               "  %.1f MB read per token: %.2f GB/s of this machine's %.2f GB/s (triad) = %.0f%% of the bandwidth "
               "limit\n", p->model, rt->q8 == 2 ? " (int8 experts)" : "", B, B > 1 ? "s" : "", P, prefill, N, med, p90,
               tps, per_token / 1e6, achieved, probe, probe > 0 ? 100.0 * achieved / probe : 0.0);
    free(ms);
    moe_rt_destroy(rt);
    return MOE_EXIT_OK;
}

int cli_bench(int argc, char **argv) {
    moe_flag f[] = {{"--train", 0, "forward, backward and AdamW (default)", NULL},
                    {"--grad", 0, "forward and backward only (no optimizer state)", NULL},
                    {"--infer", 0, "forward only, evaluation mode", NULL},
                    {"--decode", 0, "KV-cache decoding of one sequence: latency per token, memory bandwidth", NULL},
                    {"--prompt-len", 1, "--decode: prompt tokens first (default 16)", NULL},
                    {"--tokens", 1, "--decode: tokens timed (default 64)", NULL},
                    {"--batch", 1, "sequences (default train.batch; --decode: 1)", NULL},
                    {"--seq", 1, "tokens per sequence (default context)", NULL},
                    {"--steps", 1, "timed steps (default 10)", NULL},
                    {"--warmup", 1, "untimed steps first (default 2)", NULL},
                    {"--teacher", 1, "a student's teacher: its checkpoint, or init (from the seed)", NULL},
                    {"--checkpoint", 1, "weights to run (default: initialised from the seed); --decode reads an int8 "
                     "checkpoint (quantize) as int8", NULL},
                    {"--json", 0, "one JSON object", NULL},
                    {"--device", 1, "cpu|cuda|cuda-emu", NULL}};
    int nf = (int)(sizeof f / sizeof f[0]);
    int r = moe_args_parse(moe_prog_name, "bench", argc, argv, f, nf);
    if (r) return r > 0 ? MOE_EXIT_OK : MOE_EXIT_USAGE;
    const moe_program *p = cli_prog;
    long long B, T, steps, warm;
    if (moe_arg_int(f, nf, "--batch", p->batch, 1, INT_MAX, &B) || moe_arg_int(f, nf, "--seq", p->context, 1, INT_MAX, &T) ||
        moe_arg_int(f, nf, "--steps", 10, 1, INT_MAX, &steps) || moe_arg_int(f, nf, "--warmup", 2, 0, INT_MAX, &warm))
        return MOE_EXIT_USAGE;
    const char *tpath = moe_arg(f, nf, "--teacher");
    if (moe_arg(f, nf, "--decode")) {
        long long P, N;
        if (tpath) { cli_fail("--teacher: the decode program has no teacher"); return MOE_EXIT_USAGE; }
        if (moe_arg_int(f, nf, "--prompt-len", 16, 1, INT_MAX, &P) || moe_arg_int(f, nf, "--tokens", 64, 1, INT_MAX, &N))
            return MOE_EXIT_USAGE;
        long long slots;
        if (moe_arg_int(f, nf, "--batch", 1, 1, 4096, &slots)) return MOE_EXIT_USAGE;
        return bench_decode(moe_arg(f, nf, "--device"), moe_arg(f, nf, "--checkpoint"), (int)slots, P, N,
                            moe_arg(f, nf, "--json") != NULL);
    }
    int need = moe_arg(f, nf, "--infer") ? MOE_RT_INFER : moe_arg(f, nf, "--grad") ? MOE_RT_GRADS : MOE_RT_OPTIMIZER;
    int train = need != MOE_RT_INFER;
    static const char *const mode_name[] = {"infer", "grad", "train"};
    moe_rt *rt = cli_rt(need, 0, moe_arg(f, nf, "--device"));
    if (!rt) return 1;
    char err[512];
    moe_data *data = NULL;
    if (moe_rt_shape(rt, (int)B, (int)T, err, sizeof err)) { cli_fail("%s", err); moe_rt_destroy(rt); return 1; }
    if (!(data = cli_data("synthetic"))) { moe_rt_destroy(rt); return 1; }
    if ((r = load_or_init(rt, moe_arg(f, nf, "--checkpoint")))) {
        moe_data_close(data);
        moe_rt_destroy(rt);
        return r;
    }
    if ((tpath && (!strcmp(tpath, "init") ? moe_rt_init_teacher(rt, (uint64_t)p->seed, err, sizeof err)
                                          : moe_ckpt_load_teacher(rt, tpath, err, sizeof err)))) {
        cli_fail("%s%s", tpath ? "--teacher: " : "", err);
        moe_data_close(data);
        moe_rt_destroy(rt);
        return 1;
    }
    moe_data_train_batch(data, (uint64_t)p->seed, 0, 0, (int)B, (int)T, rt->tokens, rt->targets);
    moe_rt_upload_batch(rt);
    rt->ctx.mode = train ? MOE_MODE_TRAIN : MOE_MODE_EVAL;
    rt->ctx.rng = moe_rng_micro((uint64_t)p->seed, 0, 0);
    moe_lr_sched sched = moe_lr_program(p);
    rt->ctx.lr = (float)moe_lr_at(&sched, 0);
    for (long long i = 0; i < warm; i++) one_step(rt, need);
    /* A device that queues work (a GPU) is timed twice: the steps as they run, ended by
     * reading the statistics back; then step by step, each waited for, for the breakdown. On
     * one that works as it is called, one timed pass gives both. */
    int queued = rt->dev->stream != NULL;
    const moe_schedule *sc = &p->train;
    memset(rt->step_ms, 0, sizeof(double) * (size_t)sc->n_steps);
    rt->timing = !queued;
    double peak = queued ? 0.0 : sgemm_gflops(), t0 = moe_now_ms();
    for (long long i = 0; i < steps; i++) one_step(rt, need);
    moe_stats st;
    moe_rt_stats_read(rt, &st);     /* routing of the last step: the expert work actually done */
    double total = moe_now_ms() - t0, step_ms = total / (double)steps;
    rt->timing = 1;
    for (long long i = 0; queued && i < steps; i++) one_step(rt, need);
    rt->timing = 0;
    long long rss = peak_rss_bytes();
    if (moe_rt_error(rt)) { cli_fail("%s", moe_rt_error(rt)); moe_data_close(data); moe_rt_destroy(rt); return 1; }
    double tps = (double)B * T / (step_ms / 1e3);
    /* the roofline: model FLOPs of the step (6 per active parameter and token for training,
     * 2 for a forward, plus attention's; the MFU convention of moe_train_flops_per_token)
     * against the sgemm rate measured now, and the memory the plan allocates against the RSS */
    double flops = moe_train_flops_per_token(p, T) * (double)B * (double)T / (train ? 1.0 : 3.0);
    double gflops = flops / (step_ms / 1e3) / 1e9, again = queued ? 0.0 : sgemm_gflops(), plan = 0;
    if (again > peak) peak = again;
    for (int b = 0; b < MOE_BUF_COUNT; b++) plan += (double)rt->ctx.size[b];
    double sum = 0, kd = 0;     /* kd: the teacher's forward and the KD loss */
    for (int i = 0; i < sc->n_steps; i++) {
        sum += rt->step_ms[i];
        if (sc->steps[i].kind & MOE_STEP_KD) kd += rt->step_ms[i];
    }
    if (moe_arg(f, nf, "--json")) {
        printf("{\"model\": \"%s\", \"mode\": \"%s\", \"batch\": %lld, \"seq\": %lld, \"tokens_per_s\": %.3f, "
               "\"step_ms\": %.4f, \"peak_rss_bytes\": %lld, \"arena_bytes\": %lld, \"dropped_fraction\": %.6f, ",
               p->model, mode_name[need], B, T, tps, step_ms, rss, (long long)sc->act_bytes,
               st.choices > 0 ? st.dropped / st.choices : 0.0);
        if (rt->kd) printf("\"teacher_ms\": %.4f, \"teacher_share\": %.5f, ", kd / steps, sum > 0 ? kd / sum : 0.0);
        const char *by, *was, *core = moe_start_blas(&by, &was);
        printf("\"flops_per_step\": %.0f, \"gflops\": %.3f, \"sgemm_gflops\": %.3f, \"sgemm_share\": %.4f, "
               "\"plan_bytes\": %.0f, \"blas_core\": \"%s\", \"blas_core_chosen_by\": \"%s\", \"kernels\": [",
               flops, gflops, peak, peak > 0 ? gflops / peak : 0.0, plan, core, by);
        int first = 1;
        for (int i = 0; i < sc->n_steps; i++) {
            if (rt->step_ms[i] == 0.0) continue;
            printf("%s{\"name\": \"%s\", \"ms\": %.5f, \"share\": %.5f}", first ? "" : ", ", sc->steps[i].name,
                   rt->step_ms[i] / steps, sum > 0 ? rt->step_ms[i] / sum : 0.0);
            first = 0;
        }
        printf("], \"variants\": %s}\n", p->variants);
    } else {
        printf("%s %s: batch %lld x %lld, %.1f tokens/s, %.2f ms/step, peak RSS %.1f MiB\n", p->model,
               mode_name[need], B, T, tps, step_ms, rss / 1048576.0);
        printf("  %.2f GFLOP per step (model FLOPs), %.1f GFLOP/s", flops / 1e9, gflops);
        if (peak > 0) printf(" = %.2f of this machine's sgemm (%.1f GFLOP/s on 1024^3, %d threads)", gflops / peak, peak,
                             omp_get_max_threads());
        printf("; peak RSS %.2fx the %.1f MiB the plan allocates\n", plan > 0 ? rss / plan : 0.0, plan / 1048576.0);
        if (rt->kd)
            printf("  teacher %s: its forward and the KD loss take %.3f ms, %.1f%% of the step\n", p->teacher->model,
                   kd / steps, sum > 0 ? 100.0 * kd / sum : 0.0);
        /* the 25 most expensive steps */
        int *idx = malloc(sizeof(int) * (size_t)sc->n_steps);
        for (int i = 0; idx && i < sc->n_steps; i++) idx[i] = i;
        for (int i = 1; idx && i < sc->n_steps; i++) {
            int v = idx[i], j = i - 1;
            while (j >= 0 && rt->step_ms[idx[j]] < rt->step_ms[v]) { idx[j + 1] = idx[j]; j--; }
            idx[j + 1] = v;
        }
        for (int i = 0; idx && i < sc->n_steps && i < 25; i++)
            printf("  %8.3f ms  %5.1f%%  %s\n", rt->step_ms[idx[i]] / steps,
                   sum > 0 ? 100.0 * rt->step_ms[idx[i]] / sum : 0.0, sc->steps[idx[i]].name);
        free(idx);
    }
    moe_data_close(data);
    moe_rt_destroy(rt);
    return 0;
}
