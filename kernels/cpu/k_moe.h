/* k_moe.h - the MoE layer on the CPU: gate, dispatch, expert GEMMs, combine.
 *
 * Numerics: moe-semantics.md sections 2 and 3. Nothing is padded: the dispatch
 * buffer holds only the kept token-choices, expert e's rows are the contiguous block
 * [off[e], off[e] + cnt[e]) in slot order, and every expert GEMM runs on exactly its
 * real rows. The records (route, weights, gate state, counts, statistics) are laid out
 * as ../common/moe_abi.h says; the row count R = off[E] stays in device memory and the
 * kernels read it from the counts record.
 */
#ifndef MOE_K_MOE_H
#define MOE_K_MOE_H
#include "k_common.h"
#include "moe_gate.h"
#include <cblas.h>

typedef struct k_gate_cfg {
    int k, mode, drop_tokens, noise, rts, second_sampling, min_capacity;
    double cf, eval_cf;
    uint64_t stream;            /* RNG stream of this layer and micro-step */
} k_gate_cfg;

/* random token selection: a token's key, sorted ascending (ties by token index) */
typedef struct k_rts_key { double key; int token; } k_rts_key;
static inline int k_rts_cmp(const void *a, const void *b) {
    const k_rts_key *x = (const k_rts_key *)a, *y = (const k_rts_key *)b;
    return x->key < y->key ? -1 : x->key > y->key ? 1 : x->token - y->token;
}

/* Gate forward: routing, capacity, slots, weights, l_aux, z (records: moe_abi.h).
 * stats [4] += {l_aux, z, dropped choices, all choices}; loads [E] += choices per expert;
 * scratch [MOE_GATE_SCRATCH(S, E)] f64. GW is the gate state's row width. */
static inline void k_moe_gate(int32_t *route /* [S,2k] */, float *weights /* [S,k] */, float *gs /* [S,GW] */,
                              int32_t *counts /* [MOE_COUNTS_LEN(E)] */, double *stats, double *loads,
                              double *scratch, const float *x /* [S,d] */, const float *Wg /* [d,E] */,
                              int S, int d, int E, int GW, const k_gate_cfg *g) {
    const int k = g->k, train = g->mode == MOE_MODE_TRAIN;
    const int jitter = g->noise == MOE_NOISE_JITTER && train;
    const int has_jitter_cols = GW > 2 * E;
    int32_t *cnt = counts + MOE_CNT(E), *off = counts + MOE_OFF(E), *load = counts + MOE_LOAD(E);
    int32_t *first = counts + MOE_FIRST(E);
    /* logits = x32 W_gate, written straight into the gate state rows (ldc = GW) */
    if (jitter) {
        for (int s = 0; s < S; s++) {
            float *nz = gs + (int64_t)s * GW + MOE_GS_JITTER(E);
            for (int i = 0; i < d; i++)
                nz[i] = (float)(1.0 - 1e-2 + 2e-2 * moe_uniform(g->stream ^ 0x6A177E5ull, (uint64_t)s * d + i));
        }
        #pragma omp parallel for schedule(static)
        for (int s = 0; s < S; s++) {
            const float *nz = gs + (int64_t)s * GW + MOE_GS_JITTER(E);
            float *lg = gs + (int64_t)s * GW + MOE_GS_LOGITS(E);
            for (int e = 0; e < E; e++) {
                float acc = 0.0f;
                for (int i = 0; i < d; i++) acc += x[(int64_t)s * d + i] * nz[i] * Wg[(int64_t)i * E + e];
                lg[e] = acc;
            }
        }
    } else {
        if (has_jitter_cols)
            for (int s = 0; s < S; s++)
                for (int i = 0; i < d; i++) gs[(int64_t)s * GW + MOE_GS_JITTER(E) + i] = 1.0f;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, E, d, 1.0f, x, d, Wg, E, 0.0f,
                    gs + MOE_GS_LOGITS(E), GW);
    }
    /* softmax, z, choices */
    double zsum = 0.0;
    #pragma omp parallel for schedule(static) reduction(+ : zsum)
    for (int s = 0; s < S; s++) {
        int32_t *ri = route + (int64_t)s * 2 * k;
        float *p = gs + (int64_t)s * GW + MOE_GS_PROBS(E), *lg = gs + (int64_t)s * GW + MOE_GS_LOGITS(E);
        float mx = lg[0];
        for (int e = 1; e < E; e++) mx = lg[e] > mx ? lg[e] : mx;
        double sum = 0.0;
        for (int e = 0; e < E; e++) sum += exp((double)(lg[e] - mx));
        for (int e = 0; e < E; e++) p[e] = (float)(exp((double)(lg[e] - mx)) / sum);
        double lse = (double)mx + log(sum);
        zsum += lse * lse;
        moe_gate_choose(ri, p, lg, E, k, train && g->noise == MOE_NOISE_RSAMPLE, train && g->second_sampling,
                        g->stream, (uint64_t)s);
    }
    /* loads before dropping; l_aux */
    double *me = scratch, *ce = scratch + E;
    for (int e = 0; e < E; e++) { load[e] = 0; first[e] = 0; me[e] = 0.0; }
    for (int s = 0; s < S; s++) {
        const int32_t *ri = route + (int64_t)s * 2 * k;
        const float *p = gs + (int64_t)s * GW + MOE_GS_PROBS(E);
        for (int e = 0; e < E; e++) me[e] += p[e];
        for (int j = 0; j < k; j++) load[ri[j]]++;
        first[ri[0]]++;
    }
    double laux = 0.0;
    for (int e = 0; e < E; e++) {
        ce[e] = k <= 2 ? (double)first[e] : (double)load[e];
        laux += (me[e] / S) * (ce[e] / S);
    }
    laux *= k <= 2 ? (double)E : (double)E / k;
    /* capacity */
    int C;
    if (g->drop_tokens) {
        C = moe_gate_capacity(S, E, k, g->mode, g->cf, g->eval_cf, g->min_capacity);
    } else {
        C = 0;
        for (int e = 0; e < E; e++) C = load[e] > C ? load[e] : C;
    }
    /* slots: choice rank 1 of every token in token order, then rank 2, ... */
    for (int e = 0; e < E; e++) cnt[e] = 0;
    if (k == 1 && train && g->rts && g->drop_tokens) {
        /* random token selection: an over-full expert keeps a uniformly random subset of
         * C of its tokens (those with the C smallest random keys); slots in token order */
        k_rts_key *keys = (k_rts_key *)(scratch + 2 * E);           /* [S], 2 doubles each */
        int32_t *keep = (int32_t *)(scratch + 2 * E + 2 * (int64_t)S);  /* [S] */
        for (int s = 0; s < S; s++) keep[s] = 1;
        for (int e = 0; e < E; e++) {
            if (load[e] <= C) continue;
            int n = 0;
            for (int s = 0; s < S; s++)
                if (route[(int64_t)s * 2] == e) {
                    keys[n].key = moe_uniform(g->stream ^ 0x7A4D5Eull, (uint64_t)s);
                    keys[n++].token = s;
                }
            qsort(keys, (size_t)n, sizeof *keys, k_rts_cmp);
            for (int i = C; i < n; i++) keep[keys[i].token] = 0;
        }
        for (int s = 0; s < S; s++) {
            int32_t *ri = route + (int64_t)s * 2;
            ri[1] = keep[s] ? cnt[ri[0]]++ : -1;
        }
    } else {
        for (int j = 0; j < k; j++)
            for (int s = 0; s < S; s++) {
                int32_t *ri = route + (int64_t)s * 2 * k;
                int e = ri[j];
                ri[k + j] = cnt[e] < C ? cnt[e]++ : -1;
            }
    }
    off[0] = 0;
    for (int e = 0; e < E; e++) off[e + 1] = off[e] + cnt[e];
    int dropped = 0;
    for (int s = 0; s < S; s++)
        dropped += moe_gate_rows(route + (int64_t)s * 2 * k, weights + (int64_t)s * k,
                                 gs + (int64_t)s * GW + MOE_GS_PROBS(E), off, k);
    moe_gate_record(counts, stats, loads, E, C, dropped, laux, zsum / S, S, k);
}

/* The gate as generated code calls it: every setting a literal or a run-time scalar. The
 * layer's noise stream derives from the micro-step's stream `rng` and the layer index. */
static inline void k_moe_gate_fwd(int32_t *route, float *weights, float *gs, int32_t *counts, double *stats,
                                  double *loads, double *scratch, const float *x, const float *Wg, int S, int d, int E,
                                  int GW, int k, int mode, int drop_tokens, int noise, int rts, int second_sampling,
                                  int min_capacity, double cf, double eval_cf, uint64_t rng, int layer) {
    k_gate_cfg g = {k, mode, mode == MOE_MODE_INFER ? 0 : drop_tokens, noise, rts && mode == MOE_MODE_TRAIN,
                    second_sampling, min_capacity, cf, eval_cf, moe_rng_stream(rng, 0x6A7E, (uint64_t)layer)};
    k_moe_gate(route, weights, gs, counts, stats, loads, scratch, x, Wg, S, d, E, GW, &g);
}

/* Gate backward. dw [S,k]: gradient of the output weights (from the combine);
 * dlg [S,E] scratch. Adds l_aux (coefficient aux * scale) and z (z_coef * scale) terms.
 * dx (acc) = dlogits W^T (times the jitter multipliers); dWg += x32^T dlogits. */
static inline void k_moe_gate_bwd(float *dx /* [S,d] */, float *dWg /* [d,E] */, float *dlg /* [S,E] */,
                                  const float *dw /* [S,k] */, const int32_t *route, const float *weights,
                                  const float *gs, const int32_t *counts, const float *x, const float *Wg, int S,
                                  int d, int E, int GW, int k, float aux_coef, float z_coef, float scale, int acc) {
    const int has_jitter_cols = GW > 2 * E;
    /* f_e of l_aux: first choices (k <= 2) or all choices (k > 2), counted by the forward */
    const int32_t *ce = counts + (k <= 2 ? MOE_FIRST(E) : MOE_LOAD(E));
    /* d l_aux / d probs[s,e] = E * ce[e]/S / S (/k for k > 2) */
    double aux_g = (double)aux_coef * scale * (k <= 2 ? E : (double)E / k) / ((double)S * S);
    #pragma omp parallel for schedule(static)
    for (int s = 0; s < S; s++) {
        const int32_t *ri = route + (int64_t)s * 2 * k;
        const float *w = weights + (int64_t)s * k;
        const float *p = gs + (int64_t)s * GW + MOE_GS_PROBS(E), *lg = gs + (int64_t)s * GW + MOE_GS_LOGITS(E);
        float *dl = dlg + (int64_t)s * E;
        for (int e = 0; e < E; e++) dl[e] = (float)(aux_g * (double)ce[e]);   /* dprobs first */
        if (k == 1) {
            if (ri[1] >= 0) dl[ri[0]] += dw[s];
        } else {
            float sum = 0.0f, dot = 0.0f;
            for (int j = 0; j < k; j++) if (ri[k + j] >= 0) sum += p[ri[j]];
            for (int j = 0; j < k; j++) if (ri[k + j] >= 0) dot += dw[(int64_t)s * k + j] * w[j];
            if (sum > FLT_EPSILON) {
                for (int j = 0; j < k; j++)
                    if (ri[k + j] >= 0) dl[ri[j]] += (dw[(int64_t)s * k + j] - dot) / sum;
            } else {
                for (int j = 0; j < k; j++)
                    if (ri[k + j] >= 0) dl[ri[j]] += dw[(int64_t)s * k + j] / FLT_EPSILON;
            }
        }
        /* softmax backward, then the z-loss term */
        double pd = 0.0;
        for (int e = 0; e < E; e++) pd += (double)p[e] * dl[e];
        float mx = lg[0];
        for (int e = 1; e < E; e++) mx = lg[e] > mx ? lg[e] : mx;
        double sum = 0.0;
        for (int e = 0; e < E; e++) sum += exp((double)(lg[e] - mx));
        double lse = (double)mx + log(sum);
        double zg = (double)z_coef * scale * 2.0 * lse / S;
        for (int e = 0; e < E; e++) dl[e] = (float)(p[e] * (dl[e] - pd) + zg * p[e]);
    }
    if (!has_jitter_cols) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S, d, E, 1.0f, dlg, E, Wg, E, acc ? 1.0f : 0.0f, dx, d);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, E, S, 1.0f, x, d, dlg, E, 1.0f, dWg, E);
        return;
    }
    #pragma omp parallel for schedule(static)
    for (int s = 0; s < S; s++) {
        const float *nz = gs + (int64_t)s * GW + MOE_GS_JITTER(E);
        for (int i = 0; i < d; i++) {
            float a = 0.0f;
            for (int e = 0; e < E; e++) a += dlg[(int64_t)s * E + e] * Wg[(int64_t)i * E + e];
            float v = a * nz[i];
            dx[(int64_t)s * d + i] = acc ? dx[(int64_t)s * d + i] + v : v;
        }
    }
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < d; i++)
        for (int s = 0; s < S; s++) {
            float xi = x[(int64_t)s * d + i] * gs[(int64_t)s * GW + MOE_GS_JITTER(E) + i];
            for (int e = 0; e < E; e++) dWg[(int64_t)i * E + e] += xi * dlg[(int64_t)s * E + e];
        }
}

/* xd[row] = x[s] for every kept choice (s, j). */
static inline void k_moe_dispatch_fwd(float *xd /* [R,d] */, const float *x /* [S,d] */, const int32_t *route,
                                      int S, int d, int k) {
    #pragma omp parallel for schedule(static)
    for (int s = 0; s < S; s++)
        for (int j = 0; j < k; j++) {
            int row = route[(int64_t)s * 2 * k + k + j];
            if (row >= 0) memcpy(xd + (int64_t)row * d, x + (int64_t)s * d, sizeof(float) * (size_t)d);
        }
}

/* dx[s] (acc) = sum over kept choices of dxd[row]. */
static inline void k_moe_dispatch_bwd(float *dx /* [S,d] */, const float *dxd /* [R,d] */, const int32_t *route,
                                      int S, int d, int k, int acc) {
    #pragma omp parallel for schedule(static)
    for (int s = 0; s < S; s++) {
        float *o = dx + (int64_t)s * d;
        if (!acc) memset(o, 0, sizeof(float) * (size_t)d);
        for (int j = 0; j < k; j++) {
            int row = route[(int64_t)s * 2 * k + k + j];
            if (row < 0) continue;
            const float *g = dxd + (int64_t)row * d;
            for (int i = 0; i < d; i++) o[i] += g[i];
        }
    }
}

/* Grouped GEMM, numbered variants (bench/kernels/expert_mm.c validates and times them;
 * the compiler picks one per layer):
 *   v1: experts in turn, each GEMM threaded by BLAS   - few, large experts
 *   v2: experts spread over OpenMP threads, each GEMM on one thread (OpenBLAS's OpenMP
 *       build runs single-threaded inside a parallel region) - many small experts
 *   v3 (forward only; its backward is v1's): experts in turn, each row a matrix-vector
 *       product threaded by BLAS - decoding, where an expert has a row or two: sgemm would
 *       pack (copy) the whole weight for one row, sgemv streams it once (2-3x the bandwidth);
 *       an expert with K_EXPERT_GEMV_MAX rows or more (several sequences decoding together)
 *       takes one GEMM, which reads its weight once for all of them
 * Every expert's block is computed by one fixed sequence of operations in v1 and v2, so
 * both give bitwise the same result; v3 sums in another order. */
static inline void k_expert_fwd_one(int e, float *y, const float *x, const float *W, const float *b,
                                    const int32_t *off, int K, int N) {
    int n = off[e + 1] - off[e];
    if (n == 0) return;
    float *ye = y + (int64_t)off[e] * N;
    if (b)
        for (int r = 0; r < n; r++) memcpy(ye + (int64_t)r * N, b + (int64_t)e * N, sizeof(float) * (size_t)N);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, N, K, 1.0f, x + (int64_t)off[e] * K, K,
                W + (int64_t)e * K * N, N, b ? 1.0f : 0.0f, ye, N);
}
#define K_EXPERT_GEMV_MAX 3
static inline void k_expert_fwd_rows(int e, float *y, const float *x, const float *W, const float *b,
                                     const int32_t *off, int K, int N) {
    if (off[e + 1] - off[e] >= K_EXPERT_GEMV_MAX) { k_expert_fwd_one(e, y, x, W, b, off, K, N); return; }
    for (int r = off[e]; r < off[e + 1]; r++) {
        float *yr = y + (int64_t)r * N;
        if (b) memcpy(yr, b + (int64_t)e * N, sizeof(float) * (size_t)N);
        cblas_sgemv(CblasRowMajor, CblasTrans, K, N, 1.0f, W + (int64_t)e * K * N, N, x + (int64_t)r * K, 1,
                    b ? 1.0f : 0.0f, yr, 1);
    }
}

/* y [R,N] = x [R,K] W[e] [K,N] + b[e] over expert e's rows [off[e], off[e+1]); b may be NULL. */
static inline void k_moe_expert_fwd(float *y, const float *x, const float *W, const float *b, const int32_t *counts,
                                    int E, int K, int N, int variant) {
    const int32_t *off = counts + MOE_OFF(E);
    if (variant == 2) {
        #pragma omp parallel for schedule(dynamic, 1)
        for (int e = 0; e < E; e++) k_expert_fwd_one(e, y, x, W, b, off, K, N);
    } else if (variant == 3) {
        for (int e = 0; e < E; e++) k_expert_fwd_rows(e, y, x, W, b, off, K, N);
    } else {
        for (int e = 0; e < E; e++) k_expert_fwd_one(e, y, x, W, b, off, K, N);
    }
}

/* Decoding with int8 expert weights (`quantize`): y[r] = (x[r] Wq[e]) Ws[e] + b[e] for every row
 * r of expert e, Wq [E,K,N] int8 and Ws [E,N] one scale per output channel: a quarter of the
 * bytes of the f32 weights, read once per K_Q8_ROWS rows. The columns are split over the
 * threads in blocks of K_Q8_NB; a block's sums stay in L1 while four rows of Wq at a time
 * stream past. Without int8 weights (Wq NULL: none loaded) this is variant 3 on the f32 W. */
#define K_Q8_NB 256
#define K_Q8_ROWS 4
/* rows x [m, K] -> y [m, N], columns n0 .. n0 + K_Q8_NB of one expert */
static inline void k_q8_block(float *y, const float *x, int m, const int8_t *Wq, const float *s, const float *b, int K,
                              int N, int n0) {
    int nn = N - n0 < K_Q8_NB ? N - n0 : K_Q8_NB, k = 0;
    float acc[K_Q8_ROWS][K_Q8_NB];
    for (int r = 0; r < m; r++)
        for (int j = 0; j < nn; j++) acc[r][j] = 0.0f;
    for (; k + 4 <= K; k += 4) {
        const int8_t *q0 = Wq + (int64_t)k * N + n0, *q1 = q0 + N, *q2 = q1 + N, *q3 = q2 + N;
        for (int r = 0; r < m; r++) {
            const float *xr = x + (int64_t)r * K + k;
            float x0 = xr[0], x1 = xr[1], x2 = xr[2], x3 = xr[3], *a = acc[r];
            for (int j = 0; j < nn; j++)
                a[j] += x0 * (float)q0[j] + x1 * (float)q1[j] + x2 * (float)q2[j] + x3 * (float)q3[j];
        }
    }
    for (; k < K; k++) {
        const int8_t *q = Wq + (int64_t)k * N + n0;
        for (int r = 0; r < m; r++)
            for (int j = 0; j < nn; j++) acc[r][j] += x[(int64_t)r * K + k] * (float)q[j];
    }
    for (int r = 0; r < m; r++)
        for (int j = 0; j < nn; j++) y[(int64_t)r * N + n0 + j] = acc[r][j] * s[n0 + j] + (b ? b[n0 + j] : 0.0f);
}

static inline void k_moe_expert_q8_fwd(float *y, const float *x, const float *W, const int8_t *Wq, const float *Ws,
                                       const float *b, const int32_t *counts, int E, int K, int N) {
    if (!Wq || !Ws) { k_moe_expert_fwd(y, x, W, b, counts, E, K, N, 3); return; }
    const int32_t *off = counts + MOE_OFF(E);
    int nblk = (N + K_Q8_NB - 1) / K_Q8_NB;
    for (int e = 0; e < E; e++)
        for (int r = off[e]; r < off[e + 1]; r += K_Q8_ROWS) {
            int m = off[e + 1] - r < K_Q8_ROWS ? off[e + 1] - r : K_Q8_ROWS;
            /* threads only for blocks worth waking them: a small expert runs on the caller */
            #pragma omp parallel for schedule(static) if ((long)K * N * m >= 4 * K_OMP_MIN_WORK)
            for (int i = 0; i < nblk; i++)
                k_q8_block(y + (int64_t)r * N, x + (int64_t)r * K, m, Wq + (int64_t)e * K * N, Ws + (int64_t)e * N,
                           b ? b + (int64_t)e * N : NULL, K, N, i * K_Q8_NB);
        }
}

static inline void k_expert_bwd_one(int e, float *dx, float *dW, float *db, const float *dy, const float *x,
                                    const float *W, const int32_t *off, int K, int N, int acc) {
    int n = off[e + 1] - off[e];
    if (n == 0) return;
    const float *dye = dy + (int64_t)off[e] * N, *xe = x + (int64_t)off[e] * K;
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, K, N, 1.0f, dye, N, W + (int64_t)e * K * N, N,
                    acc ? 1.0f : 0.0f, dx + (int64_t)off[e] * K, K);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, N, n, 1.0f, xe, K, dye, N, 1.0f, dW + (int64_t)e * K * N, N);
    if (!db) return;
    float *dbe = db + (int64_t)e * N;
    for (int r = 0; r < n; r++)
        for (int c = 0; c < N; c++) dbe[c] += dye[(int64_t)r * N + c];
}

/* dx (acc) = dy W[e]^T; dW[e] += x^T dy; db[e] += column sums of dy, per expert block (db may be NULL). */
static inline void k_moe_expert_bwd(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W,
                                    const int32_t *counts, int E, int K, int N, int acc, int variant) {
    const int32_t *off = counts + MOE_OFF(E);
    if (variant == 2) {
        #pragma omp parallel for schedule(dynamic, 1)
        for (int e = 0; e < E; e++) k_expert_bwd_one(e, dx, dW, db, dy, x, W, off, K, N, acc);
    } else {
        for (int e = 0; e < E; e++) k_expert_bwd_one(e, dx, dW, db, dy, x, W, off, K, N, acc);
    }
}

/* the numbered variants as the generated code names them */
#define K_EXPERT_VARIANT(v)                                                                                   \
    static inline void k_moe_expert_fwd_v##v(float *y, const float *x, const float *W, const float *b,        \
                                             const int32_t *counts, int E, int K, int N) {                    \
        k_moe_expert_fwd(y, x, W, b, counts, E, K, N, v);                                                     \
    }                                                                                                         \
    static inline void k_moe_expert_bwd_v##v(float *dx, float *dW, float *db, const float *dy, const float *x, \
                                             const float *W, const int32_t *counts, int E, int K, int N,      \
                                             int acc) {                                                       \
        k_moe_expert_bwd(dx, dW, db, dy, x, W, counts, E, K, N, acc, v);                                      \
    }
K_EXPERT_VARIANT(1)
K_EXPERT_VARIANT(2)
K_EXPERT_VARIANT(3)
#undef K_EXPERT_VARIANT

/* a = softmax(coef[s]) over the 2 values of PR-MoE's mix */
static inline void k_moe_mix(const float *coef, int64_t s, float *a0, float *a1) {
    float c0 = coef[2 * s], c1 = coef[2 * s + 1], mx = c0 > c1 ? c0 : c1;
    float e0 = expf(c0 - mx), e1 = expf(c1 - mx);
    *a0 = e0 / (e0 + e1);
    *a1 = e1 / (e0 + e1);
}

/* y[s] = (res ? res[s] : 0) + mix(sum_j w_j yd[row_j]); with coef (PR-MoE residual):
 * a = softmax(coef[s]) over 2, mix(m) = a0 m + a1 mlp[s]. */
static inline void k_moe_combine_fwd(float *y /* [S,d] */, const float *yd /* [R,d] */, const int32_t *route,
                                     const float *weights, const float *res, const float *coef, const float *mlp,
                                     int S, int d, int k) {
    #pragma omp parallel for schedule(static)
    for (int s = 0; s < S; s++) {
        const int32_t *ri = route + (int64_t)s * 2 * k;
        float *o = y + (int64_t)s * d;
        float a0 = 1.0f, a1 = 0.0f;
        if (coef) k_moe_mix(coef, s, &a0, &a1);
        for (int i = 0; i < d; i++) o[i] = 0.0f;
        for (int j = 0; j < k; j++) {
            int row = ri[k + j];
            if (row < 0) continue;
            float w = weights[(int64_t)s * k + j] * a0;
            const float *v = yd + (int64_t)row * d;
            for (int i = 0; i < d; i++) o[i] += w * v[i];
        }
        if (coef) for (int i = 0; i < d; i++) o[i] += a1 * mlp[(int64_t)s * d + i];
        if (res) for (int i = 0; i < d; i++) o[i] += res[(int64_t)s * d + i];
    }
}

/* Combine backward: dyd[row] = a0 w dy (each kept row written once), dw [S,k],
 * dres (acc_res) = dy, dcoef [S,2] (overwrite) and dmlp (acc_mlp) for PR-MoE. */
static inline void k_moe_combine_bwd(float *dyd, float *dw, float *dres, float *dcoef, float *dmlp,
                                     const float *dy, const float *yd, const int32_t *route, const float *weights,
                                     const float *coef, const float *mlp, int S, int d, int k, int acc_res,
                                     int acc_mlp) {
    #pragma omp parallel for schedule(static)
    for (int s = 0; s < S; s++) {
        const int32_t *ri = route + (int64_t)s * 2 * k;
        const float *g = dy + (int64_t)s * d;
        float a0 = 1.0f, a1 = 0.0f;
        if (coef) k_moe_mix(coef, s, &a0, &a1);
        double dm = 0.0;        /* d loss / d a0 = dy . moe(x) */
        for (int j = 0; j < k; j++) {
            int row = ri[k + j];
            if (row < 0) { dw[(int64_t)s * k + j] = 0.0f; continue; }
            const float *v = yd + (int64_t)row * d;
            float w = weights[(int64_t)s * k + j], *o = dyd + (int64_t)row * d;
            double dot = 0.0;
            for (int i = 0; i < d; i++) { dot += (double)g[i] * v[i]; o[i] = w * a0 * g[i]; }
            dw[(int64_t)s * k + j] = (float)(a0 * dot);
            dm += w * dot;
        }
        if (dres) {
            float *o = dres + (int64_t)s * d;
            for (int i = 0; i < d; i++) o[i] = acc_res ? o[i] + g[i] : g[i];
        }
        if (coef) {
            const float *ml = mlp + (int64_t)s * d;
            float *o = dmlp + (int64_t)s * d;
            double dr = 0.0;
            for (int i = 0; i < d; i++) { dr += (double)g[i] * ml[i]; o[i] = acc_mlp ? o[i] + a1 * g[i] : a1 * g[i]; }
            double mean = a0 * dm + a1 * dr;
            dcoef[2 * s] = (float)(a0 * (dm - mean));
            dcoef[2 * s + 1] = (float)(a1 * (dr - mean));
        }
    }
}
#endif
