/* k_tune.h - the measuring side of `moec tune`: runs the numbered variants of a kernel on one
 * shape of a model, checks each against variant 1 on the same inputs, times it, and prints
 * one JSON line per variant:
 *   {"kernel": "moe_expert_fwd", "shape": "E=8 K=512 N=2048 R=4096", "variant": 2,
 *    "ms": 1.234, "rel_err": 0}
 * ms is the median of the repeats, summed over two routings of the R rows: balanced, and
 * skewed (one expert takes half); attention's variants (tiles) on one random input.
 * moec generates a main() that calls k_tune_expert or k_tune_attention once per (kernel, shape)
 * of the model, compiles it with the model's compiler flags and reads the lines.
 * Not here: choosing the winner and the database (compiler/codegen/tune.c).
 */
#ifndef MOE_K_TUNE_H
#define MOE_K_TUNE_H
#include "k_moe.h"
#include "k_attn.h"
#include "k_act.h"
#include "k_norm.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define K_TUNE_VARIANTS 3   /* of the grouped expert GEMM's forward (k_moe.h); its backward has 2 (v3 is
                               * v1 there); attention has K_ATTN_VARIANTS */

static double k_tune_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float *k_tune_rand(long n, uint64_t seed) {
    float *p = (float *)malloc((size_t)n * sizeof(float));
    for (long i = 0; p && i < n; i++) p[i] = (float)((double)(moe_mix64(seed + (uint64_t)i) >> 11) / 9007199254740992.0 - 0.5);
    return p;
}

/* a counts record (moe_abi.h): R rows over E experts, evenly, or (skew) half to expert 0 */
static void k_tune_counts(int32_t *counts, int E, int R, int skew) {
    int32_t *cnt = counts + MOE_CNT(E), *off = counts + MOE_OFF(E);
    int left = R;
    off[0] = 0;
    for (int e = 0; e < E; e++) {
        int n = e == E - 1 ? left : skew ? (e == 0 ? R / 2 : (R - R / 2) / (E - 1)) : R / E;
        cnt[e] = n;
        left -= n;
        off[e + 1] = off[e] + n;
    }
    counts[MOE_ROWS(E)] = R;
}

/* the largest |a - b| over the largest |b| */
static double k_tune_rel_err(const float *a, const float *b, long n) {
    double d = 0, m = 0;
    for (long i = 0; i < n; i++) {
        double x = a[i] - b[i];
        d = x > d ? x : -x > d ? -x : d;
        m = b[i] > m ? b[i] : -b[i] > m ? -b[i] : m;
    }
    return m > 0 ? d / m : d;
}

/* The median time in ms of `run(arg, v)` repeated for about `seconds` (3 to 64 times); the
 * caller has run it once already (the warm-up and its check). */
static double k_tune_median_ms(void (*run)(void *, int), void *arg, int v, double seconds) {
    double t[64], t0 = k_tune_now();
    int reps = 0;
    while (reps < 64 && (reps < 3 || k_tune_now() - t0 < seconds)) {
        double s = k_tune_now();
        run(arg, v);
        t[reps++] = k_tune_now() - s;
    }
    for (int i = 1; i < reps; i++) /* the median: sort the few repeats */
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) { double q = t[j]; t[j] = t[j - 1]; t[j - 1] = q; }
    return t[reps / 2] * 1e3;
}

/* One run of variant v: forward y = x W + b, or backward dx, dW, db (dW, db cleared first). */
static void k_tune_expert_run(int bwd, int v, float *out, float *dW, float *db, const float *x, const float *W,
                              const float *b, const float *dy, const int32_t *counts, int E, int K, int N) {
    if (!bwd) {
        k_moe_expert_fwd(out, x, W, b, counts, E, K, N, v);
        return;
    }
    memset(dW, 0, (size_t)E * K * N * sizeof(float));
    memset(db, 0, (size_t)E * N * sizeof(float));
    k_moe_expert_bwd(out, dW, db, dy, x, W, counts, E, K, N, 0, v);
}

typedef struct k_tune_expert_args {
    int bwd;
    float *out, *dW, *db;
    const float *x, *W, *b, *dy;
    const int32_t *counts;
    int E, K, N;
    int copies, turn;           /* the runs take W's copies in turn */
} k_tune_expert_args;
static void k_tune_expert_call(void *p, int v) {
    k_tune_expert_args *a = (k_tune_expert_args *)p;
    const float *W = a->W + (long)(a->turn++ % a->copies) * a->E * a->K * a->N;
    k_tune_expert_run(a->bwd, v, a->out, a->dW, a->db, a->x, W, a->b, a->dy, a->counts, a->E, a->K, a->N);
}

/* Copies of the weights the runs of a shape take in turn: one where the rows reuse each weight
 * many times, and where a row or so per expert streams it (decoding), enough for 64 MB, so
 * that the weights come from where a model's many layers keep them (beyond the core's own
 * caches), not hot from the previous run: there sgemm's packing of a copy costs most. */
static int k_tune_weight_copies(int bwd, int E, int R, long nw) {
    if (bwd || R > E) return 1;
    long c = (64L << 20) / (nw * (long)sizeof(float));
    return c < 1 ? 1 : c > 16 ? 16 : (int)c;
}

/* Every variant of the grouped expert GEMM (bwd: its backward) on E experts of [K, N] over R
 * routed rows, for about `budget` seconds in all. */
static void k_tune_expert(const char *kernel, int bwd, int E, int K, int N, int R, double budget) {
    long nx = (long)R * K, ny = (long)R * N, nw = (long)E * K * N;
    int copies = k_tune_weight_copies(bwd, E, R, nw);
    float *x = k_tune_rand(nx, 1), *W = k_tune_rand(nw * copies, 2), *b = k_tune_rand((long)E * N, 3);
    float *dy = k_tune_rand(ny, 4);
    long nout = bwd ? nx : ny;
    float *ref = (float *)malloc((size_t)nout * sizeof(float)), *out = (float *)malloc((size_t)nout * sizeof(float));
    float *dW = (float *)malloc((size_t)nw * sizeof(float)), *db = (float *)malloc((size_t)E * N * sizeof(float));
    int32_t *counts = (int32_t *)calloc((size_t)MOE_COUNTS_LEN(E), sizeof(int32_t));
    if (!x || !W || !b || !dy || !ref || !out || !dW || !db || !counts) {
        printf("{\"kernel\": \"%s\", \"error\": \"out of memory\"}\n", kernel);
        return;
    }
    double ms[K_TUNE_VARIANTS + 1] = {0}, err[K_TUNE_VARIANTS + 1] = {0};
    int nv = bwd ? 2 : K_TUNE_VARIANTS;
    k_tune_expert_args a = {bwd, out, dW, db, x, W, b, dy, counts, E, K, N, copies, 0};
    for (int skew = 0; skew < 2; skew++) {
        k_tune_counts(counts, E, R, skew);
        k_tune_expert_run(bwd, 1, ref, dW, db, x, W, b, dy, counts, E, K, N);
        for (int v = 1; v <= nv; v++) {
            k_tune_expert_run(bwd, v, out, dW, db, x, W, b, dy, counts, E, K, N);     /* warm-up and check */
            double e = k_tune_rel_err(out, ref, nout);
            err[v] = e > err[v] ? e : err[v];
            ms[v] += k_tune_median_ms(k_tune_expert_call, &a, v, budget / (2.0 * nv));
        }
    }
    for (int v = 1; v <= nv; v++)
        printf("{\"kernel\": \"%s\", \"shape\": \"E=%d K=%d N=%d R=%d\", \"variant\": %d, \"ms\": %.6f, "
               "\"rel_err\": %.3g}\n", kernel, E, K, N, R, v, ms[v], err[v]);
    fflush(stdout);
    free(x), free(W), free(b), free(dy), free(ref), free(out), free(dW), free(db), free(counts);
}

/* ---- attention (k_attn.h): its variants differ in their tiles */
typedef struct k_tune_attn_args {
    int bwd, B, T, C, H, KV;
    float *y, *lse, *dqkv, *delta;
    const float *qkv, *dy;
} k_tune_attn_args;
static void k_tune_attn_call(void *p, int v) {
    k_tune_attn_args *a = (k_tune_attn_args *)p;
    if (!a->bwd) k_attention_fwd_tiles(a->y, a->lse, a->qkv, a->B, a->T, a->C, a->H, a->KV, K_ATTN_QB(v), K_ATTN_KB(v));
    else k_attention_bwd_tiles(a->dqkv, a->delta, a->dy, a->qkv, a->y, a->lse, a->B, a->T, a->C, a->H, a->KV, 0,
                               K_ATTN_QB(v), K_ATTN_KB(v));
}

/* Every variant of the attention forward (bwd: backward) on B x T tokens of width C with H
 * query and KV key/value heads, for about `budget` seconds in all; each checked against v1
 * (the forward: its output; the backward: dqkv). */
static void k_tune_attention(const char *kernel, int bwd, int B, int T, int C, int H, int KV, double budget) {
    long S = (long)B * T, W = C + 2L * KV * (C / H), nout = bwd ? S * W : S * C;
    float *qkv = k_tune_rand(S * W, 5), *dy = k_tune_rand(S * C, 6), *y = (float *)malloc(sizeof(float) * S * C);
    float *lse = (float *)malloc(sizeof(float) * S * H), *delta = (float *)malloc(sizeof(float) * S * H);
    float *dqkv = (float *)malloc(sizeof(float) * S * W), *ref = (float *)malloc(sizeof(float) * nout);
    if (!qkv || !dy || !y || !lse || !delta || !dqkv || !ref) {
        printf("{\"kernel\": \"%s\", \"error\": \"out of memory\"}\n", kernel);
        return;
    }
    k_tune_attn_args a = {bwd, B, T, C, H, KV, y, lse, dqkv, delta, qkv, dy};
    double ms[K_ATTN_VARIANTS + 1] = {0}, err[K_ATTN_VARIANTS + 1] = {0};
    if (bwd) k_attention_fwd_v1(y, lse, qkv, B, T, C, H, KV);   /* what the backward reads */
    for (int v = 1; v <= K_ATTN_VARIANTS; v++) {
        k_tune_attn_call(&a, v);                                 /* warm-up and check */
        const float *out = bwd ? dqkv : y;
        if (v == 1) memcpy(ref, out, sizeof(float) * nout);
        err[v] = k_tune_rel_err(out, ref, nout);
        ms[v] = k_tune_median_ms(k_tune_attn_call, &a, v, budget / K_ATTN_VARIANTS);
    }
    for (int v = 1; v <= K_ATTN_VARIANTS; v++)
        printf("{\"kernel\": \"%s\", \"shape\": \"B=%d T=%d C=%d H=%d KV=%d\", \"variant\": %d, \"ms\": %.6f, "
               "\"rel_err\": %.3g}\n", kernel, B, T, C, H, KV, v, ms[v], err[v]);
    fflush(stdout);
    free(qkv), free(dy), free(y), free(lse), free(delta), free(dqkv), free(ref);
}

/* ---- the elementwise kernels (k_act.h, k_norm.h): their variants differ in the thread split */
enum { K_TUNE_LN_FWD, K_TUNE_LN_BWD, K_TUNE_RMS_FWD, K_TUNE_RMS_BWD, K_TUNE_ACT_FWD, K_TUNE_ACT_BWD, K_TUNE_ADD,
       K_TUNE_ACC, K_TUNE_SPLIT_KINDS };
static const char *const k_tune_split_names[K_TUNE_SPLIT_KINDS] = {
    "layernorm_fwd", "layernorm_bwd", "rmsnorm_fwd", "rmsnorm_bwd", "act_fwd", "act_bwd", "add_fwd", "accumulate"};

typedef struct k_tune_split_args {
    int kind, fn, S, C;         /* S x C: a norm's rows and width; the activation's R x W; add's n x 1 */
    float *out, *dw, *db;       /* the output (y, dx, dst), a norm's parameter gradients */
    float *mean, *rstd;         /* a norm's statistics: the forward writes them, the backward reads them */
    const float *x, *dy, *w, *b;
} k_tune_split_args;

static void k_tune_split_call(void *p, int v) {
    k_tune_split_args *a = (k_tune_split_args *)p;
    int S = a->S, C = a->C;
    switch (a->kind * 4 + v) {  /* the generated code's names: k_NAME_vN */
#define K_TUNE_SPLIT_CASES(kind, name, args) \
    case kind * 4 + 1: k_##name##_v1 args; break; case kind * 4 + 2: k_##name##_v2 args; break; \
    case kind * 4 + 3: k_##name##_v3 args; break;
    K_TUNE_SPLIT_CASES(K_TUNE_LN_FWD, layernorm_fwd, (a->out, a->mean, a->rstd, a->x, a->w, a->b, S, C))
    K_TUNE_SPLIT_CASES(K_TUNE_LN_BWD, layernorm_bwd, (a->out, a->dw, a->db, a->dy, a->x, a->w, a->mean, a->rstd, S, C, 0))
    K_TUNE_SPLIT_CASES(K_TUNE_RMS_FWD, rmsnorm_fwd, (a->out, a->rstd, a->x, a->w, S, C))
    K_TUNE_SPLIT_CASES(K_TUNE_RMS_BWD, rmsnorm_bwd, (a->out, a->dw, a->dy, a->x, a->w, a->rstd, S, C, 0))
    K_TUNE_SPLIT_CASES(K_TUNE_ACT_FWD, act_fwd, (a->fn, a->out, a->x, K_ROWS(S), C))
    K_TUNE_SPLIT_CASES(K_TUNE_ACT_BWD, act_bwd, (a->fn, a->out, a->x, a->dy, K_ROWS(S), C, 0))
    K_TUNE_SPLIT_CASES(K_TUNE_ADD, add_fwd, (a->out, a->x, a->dy, (long)S))
    K_TUNE_SPLIT_CASES(K_TUNE_ACC, accumulate, (a->out, a->x, (long)S, 1))
#undef K_TUNE_SPLIT_CASES
    }
}

/* Every thread split of an elementwise kernel on one shape (tune.h's: d0, d1, d2 as it writes
 * them), for about `budget` seconds in all; each checked against v1 on its output and, for a
 * norm's backward, its weight gradient (the split changes no sum, so they agree exactly). */
static void k_tune_split(const char *kernel, const char *shape, long d0, long d1, long d2, double budget) {
    k_tune_split_args a = {0};
    a.kind = -1;
    for (int k = 0; k < K_TUNE_SPLIT_KINDS; k++)
        if (!strcmp(kernel, k_tune_split_names[k])) a.kind = k;
    int act = a.kind == K_TUNE_ACT_FWD || a.kind == K_TUNE_ACT_BWD, norm = a.kind >= 0 && a.kind <= K_TUNE_RMS_BWD;
    a.fn = act ? (int)d0 : 0;
    a.S = (int)(act ? d1 : d0), a.C = (int)(act ? d2 : norm ? d1 : 1);
    long n = (long)a.S * a.C, xw = act && a.fn == MOE_ACT_SWIGLU ? 2 : 1;   /* SwiGLU's input is twice as wide */
    float *x = k_tune_rand(n * xw, 7), *dy = k_tune_rand(n, 8), *w = k_tune_rand(a.C, 9), *b = k_tune_rand(a.C, 10);
    float *out = (float *)malloc(sizeof(float) * n * xw), *ref = (float *)malloc(sizeof(float) * n * xw);
    float *dw = (float *)calloc((size_t)a.C, sizeof(float)), *db = (float *)calloc((size_t)a.C, sizeof(float));
    float *dw_ref = (float *)malloc(sizeof(float) * a.C);
    float *mean = (float *)malloc(sizeof(float) * a.S), *rstd = (float *)malloc(sizeof(float) * a.S);
    if (a.kind < 0 || !x || !dy || !w || !b || !out || !ref || !dw || !db || !dw_ref || !mean || !rstd) {
        printf("{\"kernel\": \"%s\", \"error\": \"%s\"}\n", kernel, a.kind < 0 ? "not an elementwise kernel" : "out of memory");
        return;
    }
    a.out = out, a.dw = dw, a.db = db, a.x = x, a.dy = dy, a.w = w, a.b = b, a.mean = mean, a.rstd = rstd;
    if (a.kind == K_TUNE_LN_BWD) k_layernorm_fwd(out, mean, rstd, x, w, b, a.S, a.C);     /* what it reads */
    if (a.kind == K_TUNE_RMS_BWD) k_rmsnorm_fwd(out, rstd, x, w, a.S, a.C);
    long nout = a.kind == K_TUNE_ACT_BWD ? n * xw : n;
    double ms[4] = {0}, err[4] = {0};
    for (int v = 1; v <= 3; v++) {
        memset(dw, 0, sizeof(float) * a.C);
        if (a.kind == K_TUNE_ACC) memcpy(out, dy, sizeof(float) * n);
        k_tune_split_call(&a, v);                                   /* warm-up and check */
        if (v == 1) memcpy(ref, out, sizeof(float) * nout), memcpy(dw_ref, dw, sizeof(float) * a.C);
        double e = k_tune_rel_err(out, ref, nout), ew = norm ? k_tune_rel_err(dw, dw_ref, a.C) : 0;
        err[v] = e > ew ? e : ew;
        ms[v] = k_tune_median_ms(k_tune_split_call, &a, v, budget / 3);
    }
    for (int v = 1; v <= 3; v++)
        printf("{\"kernel\": \"%s\", \"shape\": \"%s\", \"variant\": %d, \"ms\": %.6f, \"rel_err\": %.3g}\n", kernel,
               shape, v, ms[v], err[v]);
    fflush(stdout);
    free(x), free(dy), free(w), free(b), free(out), free(ref), free(dw), free(db), free(dw_ref), free(mean), free(rstd);
}
#endif
