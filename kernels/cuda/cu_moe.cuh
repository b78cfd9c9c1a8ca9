/* cu_moe.cuh - the MoE layer on CUDA: gate, dispatch, grouped expert GEMMs, combine.
 *
 * Records as kernels/common/moe_abi.h; numerics as kernels/cpu/k_moe.h, which these follow
 * step for step. Routed rows R stay in device memory (counts[MOE_ROWS(E)]); kernels over
 * routed rows loop to the compiled maximum and skip rows >= R. Nothing is padded to capacity.
 * Gate parts: 0 = a thread per token (jitter, logits, softmax, z, choices); 1 = a block per
 * expert: its load, summed probabilities, and the slots of its tokens in the order
 * DeepSpeed's cumsum defines (choice j of every token before choice j + 1, tokens in order:
 * a block-wide prefix sum over chunks of tokens), and for random token selection the rank of
 * each of its tokens' keys among the expert's; 2 = one block: z, l_aux, capacity, offsets,
 * drops, statistics; 3 = a thread per token: rows and output weights. Serial loops are kept
 * rolled (CU_SERIAL): unrolled, they spill.
 */
#ifndef MOE_CU_MOE_CUH
#define MOE_CU_MOE_CUH
#include "cu_common.cuh"
#include "moe_gate.h"

CU_D void cu_moe_gate_fwd(int part, i32p route, f32p weights, f32p gs, i32p counts, f64p stats, f64p loads,
                          f64p scratch, cf32p x, cf32p Wg, int S, int d, int E, int GW, int k, int mode,
                          int drop_tokens, int noise, int rts, int second_sampling, int min_capacity, double cf,
                          double eval_cf, uint64_t rng, int layer) {
    const int train = mode == MOE_MODE_TRAIN;
    const uint64_t stream = moe_rng_stream(rng, 0x6A7E, (uint64_t)layer);
    if (mode == MOE_MODE_INFER) drop_tokens = 0;
    rts = rts && train;
    f64p zsq = scratch + 2 * E + 2 * (long long)S;     /* per-token lse^2 until part 1 sums it */
    if (part == 0) {
        const int jitter = noise == MOE_NOISE_JITTER && train, has_jitter_cols = GW > 2 * E;
        CU_FOR(s, S) {
            f32p row = gs + s * GW;
            if (has_jitter_cols)
                for (int i = 0; i < d; i++)
                    row[MOE_GS_JITTER(E) + i] = jitter ? (float)(1.0 - 1e-2 + 2e-2 * moe_uniform(stream ^ 0x6A177E5ull,
                                                                                  (uint64_t)s * d + i)) : 1.0f;
            f32p lg = row + MOE_GS_LOGITS(E);
            f32p p = row + MOE_GS_PROBS(E);
            for (int e = 0; e < E; e++) {
                float acc = 0.0f;
                for (int i = 0; i < d; i++)
                    acc += (jitter ? x[s * d + i] * row[MOE_GS_JITTER(E) + i] : x[s * d + i]) * Wg[(long long)i * E + e];
                lg[e] = acc;
            }
            float mx = lg[0];
            for (int e = 1; e < E; e++) mx = cu_maxf(mx, lg[e]);
            double sum = 0.0;
            for (int e = 0; e < E; e++) sum += exp((double)(lg[e] - mx));
            for (int e = 0; e < E; e++) p[e] = (float)(exp((double)(lg[e] - mx)) / sum);
            double lse = (double)mx + log(sum);
            zsq[s] = lse * lse;
            moe_gate_choose(&route[s * 2 * k], &p[0], &lg[0], E, k, train && noise == MOE_NOISE_RSAMPLE,
                            train && second_sampling, stream, (uint64_t)s);
        }
        return;
    }
    i32p cnt = counts + MOE_CNT(E);
    i32p off = counts + MOE_OFF(E);
    i32p load = counts + MOE_LOAD(E);
    i32p first = counts + MOE_FIRST(E);
    f64p me = scratch;      /* [E]: the summed probabilities of each expert, part 1 to part 2 */
    if (part == 1) {        /* a block per expert */
        __shared__ double sh[CU_NT];
        __shared__ int scan[CU_NT + 1];
        const int t = (int)threadIdx.x;
        const long long chunk = (S + CU_NT - 1) / CU_NT, s0 = t * chunk, s1 = s0 + chunk < S ? s0 + chunk : S;
        const int C = drop_tokens ? moe_gate_capacity(S, E, k, mode, cf, eval_cf, min_capacity) : 0;
        CU_FOR_ROWS(e, E) {
            double m = 0.0;
            for (long long s = s0; s < s1; s++) m += gs[s * GW + MOE_GS_PROBS(E) + e];
            m = cu_block_sum(m, sh);
            int total = 0, kept = 0, top1 = 0;
            /* the uncapped slots: choice j of every token before choice j + 1, tokens in order */
            for (int j = 0; j < k; j++) {
                int n = 0;
                for (long long s = s0; s < s1; s++) n += route[s * 2 * k + j] == e;
                int slot = total + cu_block_scan(n, scan, &n);
                for (long long s = s0; s < s1; s++)
                    if (route[s * 2 * k + j] == e) {
                        route[s * 2 * k + k + j] = drop_tokens && slot >= C ? -1 : slot;
                        slot++;
                    }
                total += n;
                if (j == 0) top1 = n;
            }
            kept = drop_tokens && total > C ? C : total;
            if (k == 1 && rts && drop_tokens && total > C) {
                /* random token selection: an over-full expert keeps the C tokens with the
                 * smallest random keys (ties: token order), in token order */
                for (long long s = s0; s < s1; s++) {
                    if (route[s * 2] != e) continue;
                    double key = moe_uniform(stream ^ 0x7A4D5Eull, (uint64_t)s);
                    int rank = 0;
                    CU_SERIAL for (long long q = 0; q < S; q++) {
                        if (route[q * 2] != e) continue;
                        double kq = moe_uniform(stream ^ 0x7A4D5Eull, (uint64_t)q);
                        rank += kq < key || (kq == key && q < s);
                    }
                    route[s * 2 + 1] = rank < C ? 0 : -1;   /* kept, or dropped */
                }
                __syncthreads();
                int n = 0;
                for (long long s = s0; s < s1; s++) n += route[s * 2] == e && route[s * 2 + 1] >= 0;
                int slot = cu_block_scan(n, scan, &n);
                for (long long s = s0; s < s1; s++)
                    if (route[s * 2] == e && route[s * 2 + 1] >= 0) route[s * 2 + 1] = slot++;
            }
            if (t == 0) {
                me[e] = m;
                load[e] = total;
                first[e] = top1;
                cnt[e] = kept;
            }
            __syncthreads();
        }
        return;
    }
    if (part == 2) {        /* one block: the layer's figures */
        __shared__ double sh[CU_NT];
        double z = 0.0;
        for (long long s = threadIdx.x; s < S; s += CU_NT) z += zsq[s];
        z = cu_block_sum(z, sh);
        if (threadIdx.x != 0) return;
        double laux = 0.0;
        int C = 0, dropped = 0;
        off[0] = 0;
        CU_SERIAL for (int e = 0; e < E; e++) {
            laux += me[e] * (k <= 2 ? (double)first[e] : (double)load[e]);
            C = load[e] > C ? load[e] : C;
            off[e + 1] = off[e] + cnt[e];
            dropped += load[e] - cnt[e];
        }
        /* one division, not one per expert: a double division is a call, and calls spill */
        laux *= (k <= 2 ? (double)E : (double)E / k) / ((double)S * S);
        if (drop_tokens) C = moe_gate_capacity(S, E, k, mode, cf, eval_cf, min_capacity);
        moe_gate_record(&counts[0], &stats[0], &loads[0], E, C, dropped, laux, z / S, S, k);
        return;
    }
    CU_FOR(s, S)            /* part 3, a thread per token: rows and output weights */
        moe_gate_rows(&route[s * 2 * k], &weights[s * k], &gs[s * GW + MOE_GS_PROBS(E)], &off[0], k);
}

/* parts: 0 = d logits per token (into dlg), 1 = dx (acc), 2 = dW += */
CU_D void cu_moe_gate_bwd(int part, f32p dx, f32p dWg, f32p dlg, cf32p dw, ci32p route, cf32p weights, cf32p gs,
                          ci32p counts, cf32p x, cf32p Wg, int S, int d, int E, int GW, int k, float aux_coef,
                          float z_coef, float scale, int acc) {
    const int has_jitter_cols = GW > 2 * E;
    if (part == 0) {
        ci32p ce = counts + (k <= 2 ? MOE_FIRST(E) : MOE_LOAD(E));
        double aux_g = (double)aux_coef * scale * (k <= 2 ? E : (double)E / k) / ((double)S * S);
        CU_FOR(s, S) {
            ci32p ri = route + s * 2 * k;
            cf32p w = weights + s * k;
            cf32p p = gs + s * GW + MOE_GS_PROBS(E);
            cf32p lg = gs + s * GW + MOE_GS_LOGITS(E);
            f32p dl = dlg + s * E;
            for (int e = 0; e < E; e++) dl[e] = (float)(aux_g * (double)ce[e]);
            if (k == 1) {
                if (ri[1] >= 0) dl[ri[0]] += dw[s];
            } else {
                float sum = 0.0f, dot = 0.0f;
                for (int j = 0; j < k; j++) if (ri[k + j] >= 0) sum += p[ri[j]];
                for (int j = 0; j < k; j++) if (ri[k + j] >= 0) dot += dw[s * k + j] * w[j];
                for (int j = 0; j < k; j++)
                    if (ri[k + j] >= 0)
                        dl[ri[j]] += sum > MOE_FLT_EPSILON ? (dw[s * k + j] - dot) / sum : dw[s * k + j] / MOE_FLT_EPSILON;
            }
            double pd = 0.0;
            for (int e = 0; e < E; e++) pd += (double)p[e] * dl[e];
            float mx = lg[0];
            for (int e = 1; e < E; e++) mx = cu_maxf(mx, lg[e]);
            double sum = 0.0;
            for (int e = 0; e < E; e++) sum += exp((double)(lg[e] - mx));
            double zg = (double)z_coef * scale * 2.0 * ((double)mx + log(sum)) / S;
            for (int e = 0; e < E; e++) dl[e] = (float)(p[e] * (dl[e] - pd) + zg * p[e]);
        }
    } else if (part == 1) {
        CU_FOR(i, (long long)S * d) {
            long long s = i / d, c = i % d;
            float v = 0.0f;
            for (int e = 0; e < E; e++) v += dlg[s * E + e] * Wg[c * E + e];
            if (has_jitter_cols) v *= gs[s * GW + MOE_GS_JITTER(E) + c];
            dx[i] = acc ? dx[i] + v : v;
        }
    } else {
        CU_FOR(i, (long long)d * E) {
            long long c = i / E, e = i % E;
            float v = 0.0f;
            for (long long s = 0; s < S; s++) {
                float xi = x[s * d + c] * (has_jitter_cols ? gs[s * GW + MOE_GS_JITTER(E) + c] : 1.0f);
                v += xi * dlg[s * E + e];
            }
            dWg[i] += v;
        }
    }
}

template <class PY>      /* xd: f32, or a half model's expert GEMM operand (its cast fused in) */
CU_D void cu_moe_dispatch_fwd(int part, PY xd, cf32p x, ci32p route, int S, int d, int k) {
    (void)part;
    CU_FOR(i, (long long)S * k * d) {
        long long s = i / ((long long)k * d), j = i / d % k, c = i % d;
        int row = route[s * 2 * k + k + j];
        if (row >= 0) cu_st(xd, (long long)row * d + c, x[s * d + c]);
    }
}

CU_D void cu_moe_dispatch_bwd(int part, f32p dx, cf32p dxd, ci32p route, int S, int d, int k, int acc) {
    (void)part;
    CU_FOR(i, (long long)S * d) {
        long long s = i / d, c = i % d;
        float v = acc ? dx[i] : 0.0f;
        for (int j = 0; j < k; j++) {
            int row = route[s * 2 * k + k + j];
            if (row >= 0) v += dxd[(long long)row * d + c];
        }
        dx[i] = v;
    }
}

/* the expert that owns routed row r (off ascending, E small) */
CU_D int cu_expert_of(ci32p off, int E, long long r) {
    int e = 0;
    while (e + 1 < E && off[e + 1] <= r) e++;
    return e;
}

/* y [R,N] = x [R,K] W[e] [K,N] + b[e] (b may be null); a thread per output, rows past R skipped.
 * Grid sized by the renderer for the compiled maximum of R (the y buffer). The operands x, W
 * (and dy's copy dyh, which the backward's GEMM parts read: absent, dy) are f32 or a half
 * type (cu_common.cuh). */
template <class PX, class PW>
CU_D void cu_moe_expert_fwd(int part, f32p y, PX x, PW W, cf32p b, ci32p counts, int E, int K, int N) {
    (void)part;
    ci32p off = counts + MOE_OFF(E);
    long long R = counts[MOE_ROWS(E)];
    CU_FOR(i, R * N) {
        long long r = i / N, n = i % N;
        int e = cu_expert_of(off, E, r);
        PW We = W + (long long)e * K * N;
        float acc = b ? b[(long long)e * N + n] : 0.0f;
        for (long long q = 0; q < K; q++) acc += cu_f(x[r * K + q]) * cu_f(We[q * N + n]);
        y[i] = acc;
    }
}

/* y [R,N] = b[e] over each expert e's routed rows: the expert GEMMs' library variant (v4: a
 * library GEMM per expert, codegen/cuda.c) then adds the products (beta = 1) */
CU_D void cu_moe_expert_bias(int part, f32p y, cf32p b, ci32p counts, int E, int N) {
    (void)part;
    ci32p off = counts + MOE_OFF(E);
    long long R = counts[MOE_ROWS(E)];
    CU_FOR(i, R * N) y[i] = b[(long long)cu_expert_of(off, E, i / N) * N + i % N];
}

/* parts: 0 = dx (acc) = dy W[e]^T, 1 = dW[e] += x^T dy over e's rows, 2 = db[e] += column sums */
template <class PX, class PW, class PD>
CU_D void cu_moe_expert_bwd(int part, f32p dx, f32p dW, f32p db, cf32p dy, PX x, PW W, ci32p counts, int E, int K,
                            int N, int acc, PD dyh) {
    ci32p off = counts + MOE_OFF(E);
    if (part == 0) {
        if (!dx) return;
        long long R = counts[MOE_ROWS(E)];
        CU_FOR(i, R * K) {
            long long r = i / K, q = i % K;
            PW We = W + (long long)cu_expert_of(off, E, r) * K * N;
            float v = 0.0f;
            for (long long n = 0; n < N; n++) v += cu_f(dyh[r * N + n]) * cu_f(We[q * N + n]);
            dx[i] = acc ? dx[i] + v : v;
        }
    } else if (part == 1) {
        CU_FOR(i, (long long)E * K * N) {
            long long e = i / ((long long)K * N), q = i / N % K, n = i % N;
            float v = 0.0f;
            for (long long r = off[e]; r < off[e + 1]; r++) v += cu_f(x[r * K + q]) * cu_f(dyh[r * N + n]);
            dW[i] += v;
        }
    } else if (db) {
        CU_FOR(i, (long long)E * N) {
            long long e = i / N, n = i % N;
            double v = 0.0;
            for (long long r = off[e]; r < off[e + 1]; r++) v += dy[r * N + n];
            db[i] += (float)v;
        }
    }
}

/* ---- the tiled grouped GEMM (variants 1 and 2 of the expert GEMMs; v3, and --gemm generated,
 * the simple form above) ----
 * C[r, j] (+)= sum_p A[r, p] op(B_e)(p, j) (+ bias_e[j]) for the routed rows r of each expert
 * e, rows grouped by expert (off, on the device), never padded: op(B_e)(p, j) is
 * B_e[p*J + j], or B_e[j*P + p] when trans. A block computes a TM x CU_TN tile of one
 * expert's rows (TM 64, or 32 where experts have few rows each and a 64-row tile is mostly
 * padding), its 256 threads TM/16 x 4 outputs each, staging CU_TP-deep slices of A and B in
 * shared memory. The blocks walk the tiles grid-stride; a tile is found by walking the
 * experts' tile counts, the same in every thread, so the barriers are uniform. Each output
 * sums over p in order, as the simple form does. */
#define CU_TN 64
#define CU_TP 16
template <int TM, class PA, class PB>
CU_D void cu_grouped_mm(f32p C, PA A, PB B, cf32p bias, ci32p off, int E, long long P, long long J, int trans,
                        int acc) {
    constexpr int RA = TM / 16;     /* rows per thread */
    __shared__ float As[CU_TP][TM];
    __shared__ float Bs[CU_TP][CU_TN];
    const int tid = (int)threadIdx.x, ty = tid / 16, tx = tid % 16;
    long long nj = (J + CU_TN - 1) / CU_TN, tiles = 0;
    for (int e = 0; e < E; e++) tiles += (off[e + 1] - off[e] + TM - 1) / TM;
    CU_SERIAL
    for (long long t = blockIdx.x; t < tiles * nj; t += gridDim.x) {
        long long rt = t / nj, j0 = t % nj * CU_TN;
        int e = 0;
        for (;; e++) {      /* the expert of row tile rt */
            long long c = (off[e + 1] - off[e] + TM - 1) / TM;
            if (rt < c) break;
            rt -= c;
        }
        long long r0 = off[e] + rt * TM, r1 = off[e + 1];
        PB Be = B + (long long)e * P * J;
        float v[RA][4];
        for (int a = 0; a < RA; a++)
            for (int b = 0; b < 4; b++) {
                long long j = j0 + tx * 4 + b;
                v[a][b] = bias && j < J ? bias[(long long)e * J + j] : 0.0f;
            }
        CU_SERIAL
        for (long long p0 = 0; p0 < P; p0 += CU_TP) {
            for (int l = tid; l < CU_TP * TM; l += CU_NT) {        /* A[r0 + m, p0 + q] */
                int q = l % CU_TP, m = l / CU_TP;
                long long r = r0 + m, p = p0 + q;
                As[q][m] = r < r1 && p < P ? cu_f(A[r * P + p]) : 0.0f;
            }
            for (int l = tid; l < CU_TP * CU_TN; l += CU_NT) {     /* op(B_e)(p0 + q, j0 + n) */
                int q = trans ? l % CU_TP : l / CU_TN, n = trans ? l / CU_TP : l % CU_TN;
                long long p = p0 + q, j = j0 + n;
                Bs[q][n] = p < P && j < J ? cu_f(trans ? Be[j * P + p] : Be[p * J + j]) : 0.0f;
            }
            __syncthreads();
            int np = (int)(P - p0 < CU_TP ? P - p0 : CU_TP);
            for (int q = 0; q < np; q++)
                for (int a = 0; a < RA; a++)
                    for (int b = 0; b < 4; b++) v[a][b] += As[q][ty * RA + a] * Bs[q][tx * 4 + b];
            __syncthreads();
        }
        for (int a = 0; a < RA; a++)
            for (int b = 0; b < 4; b++) {
                long long r = r0 + ty * RA + a, j = j0 + tx * 4 + b;
                if (r < r1 && j < J) C[r * J + j] = acc ? C[r * J + j] + v[a][b] : v[a][b];
            }
    }
}

/* dW[e] += x_e^T dy_e over each expert's routed rows, [P, J] per expert (P = K, J = N): a
 * block per 64 x 64 tile of one expert's dW, CU_TP-row slices of x and dy staged in shared
 * memory, 4 x 4 outputs per thread; each output sums the rows in order, as the simple form
 * (cu_moe_expert_bwd's part 1) does, then adds to dW. */
template <class PX, class PD>
CU_D void cu_grouped_wgrad(f32p dW, PX X, PD DY, ci32p off, int E, long long P, long long J) {
    __shared__ float Xs[CU_TP][CU_TN];
    __shared__ float Ds[CU_TP][CU_TN];
    const int tid = (int)threadIdx.x, ty = tid / 16, tx = tid % 16;
    const long long np = (P + CU_TN - 1) / CU_TN, nj = (J + CU_TN - 1) / CU_TN, per = np * nj;
    CU_SERIAL
    for (long long t = blockIdx.x; t < (long long)E * per; t += gridDim.x) {
        long long e = t / per, p0 = t % per / nj * CU_TN, j0 = t % per % nj * CU_TN, r0 = off[e], r1 = off[e + 1];
        float v[4][4];
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++) v[a][b] = 0.0f;
        CU_SERIAL
        for (long long rs = r0; rs < r1; rs += CU_TP) {
            for (int l = tid; l < CU_TP * CU_TN; l += CU_NT) {     /* row rs + q, column m of the tile */
                int q = l / CU_TN, m = l % CU_TN;
                long long r = rs + q;
                Xs[q][m] = r < r1 && p0 + m < P ? cu_f(X[r * P + p0 + m]) : 0.0f;
                Ds[q][m] = r < r1 && j0 + m < J ? cu_f(DY[r * J + j0 + m]) : 0.0f;
            }
            __syncthreads();
            int nr = (int)(r1 - rs < CU_TP ? r1 - rs : CU_TP);
            for (int q = 0; q < nr; q++)
                for (int a = 0; a < 4; a++)
                    for (int b = 0; b < 4; b++) v[a][b] += Xs[q][ty * 4 + a] * Ds[q][tx * 4 + b];
            __syncthreads();
        }
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++) {
                long long p = p0 + ty * 4 + a, j = j0 + tx * 4 + b;
                if (p < P && j < J) dW[e * P * J + p * J + j] += v[a][b];
            }
    }
}

template <int TM, class PX, class PW>
CU_D void cu_expert_fwd_tiled(f32p y, PX x, PW W, cf32p b, ci32p counts, int E, int K, int N) {
    cu_grouped_mm<TM>(y, x, W, b, counts + MOE_OFF(E), E, K, N, 0, 0);
}
/* part 0 (dx = dy W[e]^T) and part 1 (dW) tiled; part 2 (db) as in the simple form */
template <int TM, class PX, class PW, class PD>
CU_D void cu_expert_bwd_tiled(int part, f32p dx, f32p dW, f32p db, cf32p dy, PX x, PW W, ci32p counts, int E, int K,
                              int N, int acc, PD dyh) {
    if (part == 1) { cu_grouped_wgrad(dW, x, dyh, counts + MOE_OFF(E), E, K, N); return; }
    if (part != 0) { cu_moe_expert_bwd(part, dx, dW, db, dy, x, W, counts, E, K, N, acc, dyh); return; }
    if (dx) cu_grouped_mm<TM>(dx, dyh, W, cf32p(), counts + MOE_OFF(E), E, N, K, 1, acc);
}
/* the variants as the renderer names them: tiles of 64 (v1) and 32 (v2) rows; the backward
 * without dyh (an f32 model) reads dy */
template <class PX, class PW>
CU_D void cu_moe_expert_fwd_tiled(int part, f32p y, PX x, PW W, cf32p b, ci32p counts, int E, int K, int N) {
    (void)part;
    cu_expert_fwd_tiled<64>(y, x, W, b, counts, E, K, N);
}
template <class PX, class PW>
CU_D void cu_moe_expert_fwd_tiled32(int part, f32p y, PX x, PW W, cf32p b, ci32p counts, int E, int K, int N) {
    (void)part;
    cu_expert_fwd_tiled<32>(y, x, W, b, counts, E, K, N);
}
#define CU_EXPERT_BWD(NAME, CALL)                                                                                \
    template <class PX, class PW, class PD>                                                                      \
    CU_D void NAME(int part, f32p dx, f32p dW, f32p db, cf32p dy, PX x, PW W, ci32p counts, int E, int K, int N, \
                   int acc, PD dyh) {                                                                            \
        CALL(part, dx, dW, db, dy, x, W, counts, E, K, N, acc, dyh);                                             \
    }                                                                                                            \
    template <class PX, class PW>                                                                                \
    CU_D void NAME(int part, f32p dx, f32p dW, f32p db, cf32p dy, PX x, PW W, ci32p counts, int E, int K, int N, \
                   int acc) {                                                                                    \
        CALL(part, dx, dW, db, dy, x, W, counts, E, K, N, acc, dy);                                              \
    }
CU_EXPERT_BWD(cu_moe_expert_bwd_tiled, cu_expert_bwd_tiled<64>)
CU_EXPERT_BWD(cu_moe_expert_bwd_tiled32, cu_expert_bwd_tiled<32>)
template <class PX, class PW>
CU_D void cu_moe_expert_bwd(int part, f32p dx, f32p dW, f32p db, cf32p dy, PX x, PW W, ci32p counts, int E, int K,
                            int N, int acc) {
    cu_moe_expert_bwd(part, dx, dW, db, dy, x, W, counts, E, K, N, acc, dy);
}

CU_D void cu_moe_mix(cf32p coef, long long s, float &a0, float &a1) {
    float c0 = coef[2 * s], c1 = coef[2 * s + 1], mx = cu_maxf(c0, c1);
    float e0 = expf(c0 - mx), e1 = expf(c1 - mx);
    a0 = e0 / (e0 + e1);
    a1 = e1 / (e0 + e1);
}

CU_D void cu_moe_combine_fwd(int part, f32p y, cf32p yd, ci32p route, cf32p weights, cf32p res, cf32p coef,
                             cf32p mlp, int S, int d, int k) {
    (void)part;
    CU_FOR(i, (long long)S * d) {
        long long s = i / d, c = i % d;
        float a0 = 1.0f, a1 = 0.0f;
        if (coef) cu_moe_mix(coef, s, a0, a1);
        float v = 0.0f;
        for (int j = 0; j < k; j++) {
            int row = route[s * 2 * k + k + j];
            if (row >= 0) v += weights[s * k + j] * a0 * yd[(long long)row * d + c];
        }
        if (coef) v += a1 * mlp[i];
        if (res) v += res[i];
        y[i] = v;
    }
}

/* a thread per token: dyd rows (each written by its one token), dw, dres, dmlp, dcoef */
CU_D void cu_moe_combine_bwd(int part, f32p dyd, f32p dw, f32p dres, f32p dcoef, f32p dmlp, cf32p dy, cf32p yd,
                             ci32p route, cf32p weights, cf32p coef, cf32p mlp, int S, int d, int k, int acc_res,
                             int acc_mlp) {
    (void)part;
    CU_FOR(s, S) {
        cf32p g = dy + s * d;
        float a0 = 1.0f, a1 = 0.0f;
        if (coef) cu_moe_mix(coef, s, a0, a1);
        double dm = 0.0;
        for (int j = 0; j < k; j++) {
            int row = route[s * 2 * k + k + j];
            if (row < 0) { dw[s * k + j] = 0.0f; continue; }
            cf32p v = yd + (long long)row * d;
            f32p o = dyd + (long long)row * d;
            float w = weights[s * k + j];
            double dot = 0.0;
            for (int i = 0; i < d; i++) { dot += (double)g[i] * v[i]; o[i] = w * a0 * g[i]; }
            dw[s * k + j] = (float)(a0 * dot);
            dm += w * dot;
        }
        if (dres)
            for (int i = 0; i < d; i++) dres[s * d + i] = acc_res ? dres[s * d + i] + g[i] : g[i];
        if (coef) {
            double dr = 0.0;
            for (int i = 0; i < d; i++) {
                dr += (double)g[i] * mlp[s * d + i];
                dmlp[s * d + i] = acc_mlp ? dmlp[s * d + i] + a1 * g[i] : a1 * g[i];
            }
            double mean = a0 * dm + a1 * dr;
            dcoef[2 * s] = (float)(a0 * (dm - mean));
            dcoef[2 * s + 1] = (float)(a1 * (dr - mean));
        }
    }
}
#endif
