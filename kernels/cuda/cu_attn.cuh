/* cu_attn.cuh - causal multi-head attention on CUDA: forward, backward, one decode step.
 *
 * Layout as kernels/cpu/k_attn.h: qkv [B,T,W] holds per token q (C values), then k and v
 * (CK = KV*hd each), W = C + 2 CK; query head h owns q's columns h*hd .. h*hd+hd-1 and reads
 * key/value head h/(H/KV), which owns the same columns of k and v. As on the CPU, no score
 * matrix is stored: the forward keeps each query row's log-sum-exp lse [B,T,H], and the
 * backward recomputes the probabilities from it. The simple form is a thread per query row
 * (or key row) looping over the keys (or queries) it meets; forward and backward have a
 * tiled, shared-memory form as variant 2 (moec tune measures the two).
 */
#ifndef MOE_CU_ATTN_CUH
#define MOE_CU_ATTN_CUH
#include "cu_common.cuh"

/* element (b, t) of the qkv row: its first q, k (of kv head j) and v column */
#define CU_QKV_ROW(b, t) (((long long)(b) * T + (t)) * W)

CU_D float cu_attn_score(cf32p qkv, int T, int C, int W, int hd, int G, int b, int h, int t, int t2, float scale) {
    cf32p q = qkv + CU_QKV_ROW(b, t) + (long long)h * hd;
    cf32p k = qkv + CU_QKV_ROW(b, t2) + C + (long long)(h / G) * hd;
    float s = 0.0f;
    for (int d = 0; d < hd; d++) s += q[d] * k[d];
    return s * scale;
}

/* Forward: a thread per query row (b, t, h) = lse's index, one pass over keys 0..t with an
 * online softmax (running max and sum; the row's hd outputs in y are the running sum,
 * rescaled when a key raises the max); lse [B,T,H] keeps max + log(sum) for the backward. */
CU_D void cu_attention_fwd(int part, f32p y, f32p lse, cf32p qkv, int B, int T, int C, int H, int KV) {
    int hd = C / H, G = H / KV, CK = KV * hd, W = C + 2 * CK;
    float scale = 1.0f / sqrtf((float)hd);
    (void)part;
    CU_FOR(r, (long long)B * T * H) {
        int h = (int)(r % H), t = (int)(r / H % T), b = (int)(r / H / T);
        f32p o = y + ((long long)b * T + t) * C + (long long)h * hd;
        float mx = -INFINITY, l = 0.0f;
        for (int d = 0; d < hd; d++) o[d] = 0.0f;
        for (int j = 0; j <= t; j++) {
            float s = cu_attn_score(qkv, T, C, W, hd, G, b, h, t, j, scale);
            if (s > mx) {
                float c = expf(mx - s);     /* 0 at the first key */
                l *= c;
                for (int d = 0; d < hd; d++) o[d] *= c;
                mx = s;
            }
            float p = expf(s - mx);
            cf32p v = qkv + CU_QKV_ROW(b, j) + C + CK + (long long)(h / G) * hd;
            l += p;
            for (int d = 0; d < hd; d++) o[d] += p * v[d];
        }
        for (int d = 0; d < hd; d++) o[d] /= l;
        lse[r] = mx + logf(l);
    }
}

/* Forward, tiled (variant 2): a block per (b, h, tile of CU_AQ query rows), its 256 threads
 * four lanes per row, each lane holding a quarter of the row's query and output columns
 * (lane, lane + 4, ...) in registers. Tiles of CU_AK keys and values are staged in shared
 * memory by the whole block; a score is the lanes' partial dot products summed with two
 * xor shuffles (every lane gets the same bits), then the online softmax of the simple form.
 * Head widths above CU_AMAXD or not a multiple of 4 take the simple form. */
#define CU_AQ 64
#define CU_AK 32
#define CU_AMAXD 128
/* Keys k0 .. k0 + CU_AK - 1 (those below kend; zeros past it) of kv head j of sequence b, and
 * their values, into the shared tiles Ks and Vs, by the whole block, between barriers (the
 * previous tile read, this one written). */
CU_D void cu_attn_stage_kv(float (*Ks)[CU_AMAXD], float (*Vs)[CU_AMAXD], cf32p qkv, int T, int C, int W, int CK,
                           int hd, int b, int j, int k0, int kend) {
    __syncthreads();
    for (int i = (int)threadIdx.x; i < CU_AK * hd; i += CU_NT) {
        int kk = i / hd, d = i % hd, t = k0 + kk;
        long long at = CU_QKV_ROW(b, t < kend ? t : 0) + C + (long long)j * hd + d;
        Ks[kk][d] = t < kend ? qkv[at] : 0.0f;
        Vs[kk][d] = t < kend ? qkv[at + CK] : 0.0f;
    }
    __syncthreads();
}

CU_D void cu_attention_fwd_tiled(int part, f32p y, f32p lse, cf32p qkv, int B, int T, int C, int H, int KV) {
    int hd = C / H, G = H / KV, CK = KV * hd, W = C + 2 * CK;
    if (hd > CU_AMAXD || hd % 4) { cu_attention_fwd(part, y, lse, qkv, B, T, C, H, KV); return; }
    __shared__ float Ks[CU_AK][CU_AMAXD];
    __shared__ float Vs[CU_AK][CU_AMAXD];
    const float scale = 1.0f / sqrtf((float)hd);
    const int lane = (int)threadIdx.x % 4, nd = hd / 4;
    const long long qtiles = (T + CU_AQ - 1) / CU_AQ;
    CU_FOR_ROWS(tile, (long long)B * H * qtiles) {
        int qt = (int)(tile % qtiles), h = (int)(tile / qtiles % H), b = (int)(tile / qtiles / H);
        int t = qt * CU_AQ + (int)threadIdx.x / 4, live = t < T;
        int kend = qt * CU_AQ + CU_AQ < T ? qt * CU_AQ + CU_AQ : T;      /* the tile's rows see keys < kend */
        float q[CU_AMAXD / 4], o[CU_AMAXD / 4], mx = -INFINITY, l = 0.0f;
        cf32p qr = qkv + CU_QKV_ROW(b, live ? t : 0) + (long long)h * hd;
        for (int i = 0; i < nd; i++) {
            q[i] = qr[lane + 4 * i];
            o[i] = 0.0f;
        }
        for (int k0 = 0; k0 < kend; k0 += CU_AK) {
            cu_attn_stage_kv(Ks, Vs, qkv, T, C, W, CK, hd, b, h / G, k0, kend);
            int kn = kend - k0 < CU_AK ? kend - k0 : CU_AK;
            for (int kk = 0; kk < kn; kk++) {
                float s = 0.0f;
                for (int i = 0; i < nd; i++) s += q[i] * Ks[kk][lane + 4 * i];
                s += __shfl_xor_sync(0xffffffffu, s, 1);
                s += __shfl_xor_sync(0xffffffffu, s, 2);
                if (!live || k0 + kk > t) continue;     /* causal: the same for a row's four lanes */
                s *= scale;
                if (s > mx) {
                    float c = expf(mx - s);     /* 0 at the first key */
                    l *= c;
                    for (int i = 0; i < nd; i++) o[i] *= c;
                    mx = s;
                }
                float p = expf(s - mx);
                l += p;
                for (int i = 0; i < nd; i++) o[i] += p * Vs[kk][lane + 4 * i];
            }
        }
        if (live) {
            f32p out = y + ((long long)b * T + t) * C + (long long)h * hd;
            for (int i = 0; i < nd; i++) out[lane + 4 * i] = o[i] / l;
            if (lane == 0) lse[((long long)b * T + t) * H + h] = mx + logf(l);
        }
    }
}

/* Backward with P = exp(S - lse) recomputed and delta = rowsum(dO O) (scratch [B,T,H]):
 * dS = scale P (dO V^T - delta). Part 0, a thread per query row: delta, then
 * dQ = dS K. Part 1, a thread per key row (b, t, kv head j): dK = dS^T Q and dV = P^T dO,
 * summed over the G query heads that read head j and the queries i >= t. */
CU_D void cu_attention_bwd(int part, f32p dqkv, f32p delta, cf32p dy, cf32p qkv, cf32p y, cf32p lse, int B, int T,
                           int C, int H, int KV, int acc) {
    int hd = C / H, G = H / KV, CK = KV * hd, W = C + 2 * CK;
    float scale = 1.0f / sqrtf((float)hd);
    if (part == 0) {
        CU_FOR(r, (long long)B * T * H) {
            int h = (int)(r % H), t = (int)(r / H % T), b = (int)(r / H / T);
            long long ro = ((long long)b * T + t) * C + (long long)h * hd;
            f32p dq = dqkv + CU_QKV_ROW(b, t) + (long long)h * hd;
            float dl = 0.0f;
            for (int d = 0; d < hd; d++) dl += dy[ro + d] * y[ro + d];
            delta[r] = dl;
            if (!acc)
                for (int d = 0; d < hd; d++) dq[d] = 0.0f;
            for (int j = 0; j <= t; j++) {
                long long kj = CU_QKV_ROW(b, j) + C + (long long)(h / G) * hd;
                float p = expf(cu_attn_score(qkv, T, C, W, hd, G, b, h, t, j, scale) - lse[r]), dp = 0.0f;
                for (int d = 0; d < hd; d++) dp += dy[ro + d] * qkv[kj + CK + d];
                float ds = scale * p * (dp - dl);
                for (int d = 0; d < hd; d++) dq[d] += ds * qkv[kj + d];
            }
        }
        return;
    }
    CU_FOR(r, (long long)B * T * KV) {
        int j = (int)(r % KV), t = (int)(r / KV % T), b = (int)(r / KV / T);
        long long kt = CU_QKV_ROW(b, t) + C + (long long)j * hd;
        f32p dk = dqkv + kt, dv = dqkv + kt + CK;
        if (!acc)
            for (int d = 0; d < hd; d++) dk[d] = dv[d] = 0.0f;
        for (int h = j * G; h < (j + 1) * G; h++)
            for (int i = t; i < T; i++) {
                long long ri = ((long long)b * T + i) * H + h, ro = ((long long)b * T + i) * C + (long long)h * hd;
                cf32p q = qkv + CU_QKV_ROW(b, i) + (long long)h * hd;
                float p = expf(cu_attn_score(qkv, T, C, W, hd, G, b, h, i, t, scale) - lse[ri]), dp = 0.0f;
                for (int d = 0; d < hd; d++) dp += dy[ro + d] * qkv[kt + CK + d];
                float ds = scale * p * (dp - delta[ri]);
                for (int d = 0; d < hd; d++) {
                    dk[d] += ds * q[d];
                    dv[d] += p * dy[ro + d];
                }
            }
    }
}

/* Backward, tiled (variant 2), with the tiled forward's tiles. Part 0: a block per (b, h,
 * CU_AQ query rows), four lanes per row holding a quarter of its q, dO and dQ columns:
 * delta = rowsum(dO O), then over CU_AK-key tiles staged in shared memory p = exp(scale q.k
 * - lse) and dp = dO.v (each summed from the lanes with xor shuffles), dQ += scale p (dp -
 * delta) k. Part 1: a block per (b, kv head j, CU_AQ key rows), four lanes per key row
 * holding a quarter of its k, v, dK and dV columns: for each query head of the group in
 * order, CU_AK-query tiles (q, dO, lse, delta) staged in shared memory, the queries i >= t in
 * order, dK += ds q and dV += p dO. Head widths above CU_AMAXD or not a multiple of 4 take
 * the simple form. */
CU_D float cu_lanes4_sum(float v) {     /* the sum over a row's four lanes, the same bits in each */
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
CU_D void cu_attention_bwd_tiled(int part, f32p dqkv, f32p delta, cf32p dy, cf32p qkv, cf32p y, cf32p lse, int B,
                                 int T, int C, int H, int KV, int acc) {
    int hd = C / H, G = H / KV, CK = KV * hd, W = C + 2 * CK;
    if (hd > CU_AMAXD || hd % 4) { cu_attention_bwd(part, dqkv, delta, dy, qkv, y, lse, B, T, C, H, KV, acc); return; }
    __shared__ float As[CU_AK][CU_AMAXD];      /* part 0: keys; part 1: queries */
    __shared__ float Bs[CU_AK][CU_AMAXD];      /* part 0: values; part 1: dO */
    __shared__ float Ls[CU_AK];                /* part 1: the queries' lse */
    __shared__ float Ds[CU_AK];                /* part 1: the queries' delta */
    const float scale = 1.0f / sqrtf((float)hd);
    const int lane = (int)threadIdx.x % 4, nd = hd / 4;
    const long long tiles = (T + CU_AQ - 1) / CU_AQ;
    float a[CU_AMAXD / 4], b[CU_AMAXD / 4], da[CU_AMAXD / 4], db[CU_AMAXD / 4];
    if (part == 0) {
        CU_FOR_ROWS(tile, (long long)B * H * tiles) {
            int qt = (int)(tile % tiles), h = (int)(tile / tiles % H), bb = (int)(tile / tiles / H);
            int t = qt * CU_AQ + (int)threadIdx.x / 4, live = t < T;
            int kend = qt * CU_AQ + CU_AQ < T ? qt * CU_AQ + CU_AQ : T;
            long long row = (long long)bb * T + (live ? t : 0), ro = row * C + (long long)h * hd;
            cf32p q = qkv + row * W + (long long)h * hd;
            float dl = 0.0f;
            for (int i = 0; i < nd; i++) {
                a[i] = q[lane + 4 * i];                 /* q */
                b[i] = dy[ro + lane + 4 * i];           /* dO */
                da[i] = 0.0f;                           /* dQ */
                dl += b[i] * y[ro + lane + 4 * i];
            }
            dl = cu_lanes4_sum(dl);
            float L = live ? lse[row * H + h] : 0.0f;
            for (int k0 = 0; k0 < kend; k0 += CU_AK) {
                cu_attn_stage_kv(As, Bs, qkv, T, C, W, CK, hd, bb, h / G, k0, kend);
                int kn = kend - k0 < CU_AK ? kend - k0 : CU_AK;
                for (int kk = 0; kk < kn; kk++) {
                    float s = 0.0f, dp = 0.0f;
                    for (int i = 0; i < nd; i++) {
                        s += a[i] * As[kk][lane + 4 * i];
                        dp += b[i] * Bs[kk][lane + 4 * i];
                    }
                    s = cu_lanes4_sum(s);
                    dp = cu_lanes4_sum(dp);
                    if (!live || k0 + kk > t) continue;
                    float p = expf(s * scale - L), ds = scale * p * (dp - dl);
                    for (int i = 0; i < nd; i++) da[i] += ds * As[kk][lane + 4 * i];
                }
            }
            if (live) {
                f32p dq = dqkv + row * W + (long long)h * hd;
                for (int i = 0; i < nd; i++) dq[lane + 4 * i] = acc ? dq[lane + 4 * i] + da[i] : da[i];
                if (lane == 0) delta[row * H + h] = dl;
            }
        }
        return;
    }
    CU_FOR_ROWS(tile, (long long)B * KV * tiles) {
        int kt = (int)(tile % tiles), j = (int)(tile / tiles % KV), bb = (int)(tile / tiles / KV);
        int t = kt * CU_AQ + (int)threadIdx.x / 4, live = t < T;
        long long krow = CU_QKV_ROW(bb, live ? t : 0) + C + (long long)j * hd;
        for (int i = 0; i < nd; i++) {
            a[i] = qkv[krow + lane + 4 * i];            /* k */
            b[i] = qkv[krow + CK + lane + 4 * i];       /* v */
            da[i] = db[i] = 0.0f;                       /* dK, dV */
        }
        for (int h = j * G; h < (j + 1) * G; h++)
            for (int i0 = kt * CU_AQ; i0 < T; i0 += CU_AK) {     /* the queries that see this tile's keys */
                __syncthreads();
                for (int i = (int)threadIdx.x; i < CU_AK * hd; i += CU_NT) {
                    int qq = i / hd, d = i % hd, r = i0 + qq;
                    long long row = (long long)bb * T + (r < T ? r : 0);
                    As[qq][d] = r < T ? qkv[row * W + (long long)h * hd + d] : 0.0f;
                    Bs[qq][d] = r < T ? dy[row * C + (long long)h * hd + d] : 0.0f;
                    if (d == 0) {
                        Ls[qq] = r < T ? lse[row * H + h] : 0.0f;
                        Ds[qq] = r < T ? delta[row * H + h] : 0.0f;
                    }
                }
                __syncthreads();
                int qn = T - i0 < CU_AK ? T - i0 : CU_AK;
                for (int qq = 0; qq < qn; qq++) {
                    float s = 0.0f, dp = 0.0f;
                    for (int i = 0; i < nd; i++) {
                        s += As[qq][lane + 4 * i] * a[i];
                        dp += Bs[qq][lane + 4 * i] * b[i];
                    }
                    s = cu_lanes4_sum(s);
                    dp = cu_lanes4_sum(dp);
                    if (!live || i0 + qq < t) continue;         /* causal: query i sees keys t <= i */
                    float p = expf(s * scale - Ls[qq]), ds = scale * p * (dp - Ds[qq]);
                    for (int i = 0; i < nd; i++) {
                        da[i] += ds * As[qq][lane + 4 * i];
                        db[i] += p * Bs[qq][lane + 4 * i];
                    }
                }
            }
        if (live) {
            f32p dk = dqkv + krow, dv = dqkv + krow + CK;
            for (int i = 0; i < nd; i++) {
                dk[lane + 4 * i] = acc ? dk[lane + 4 * i] + da[i] : da[i];
                dv[lane + 4 * i] = acc ? dv[lane + 4 * i] + db[i] : db[i];
            }
        }
    }
}

/* Decoding S sequences, a row each. part 0: row s's new k, v at position pos[s] of its cache
 * slot slot[s] (kc, vc + slot[s] x slot_floats, [ctx, CK] each); part 1: its query attends to
 * positions 0..pos[s] of that slot: a block per (sequence, head), the keys in chunks of
 * CU_NT, a thread per key for the scores (each computed once), then a thread per output
 * column, with the chunk's max and sum carried as an online softmax. Head widths above
 * CU_NT keep the earlier form, a thread per output element. */
CU_D void cu_attention_decode(int part, f32p y, f32p kc, f32p vc, cf32p qkv, ci32p pos, ci32p slot, int S,
                              long long slot_floats, int C, int H, int KV) {
    int hd = C / H, G = H / KV, CK = KV * hd, W = C + 2 * CK;
    if (part == 0) {
        CU_FOR(i, (long long)S * CK) {
            long long s = i / CK, c = i % CK, at = slot[s] * slot_floats + (long long)pos[s] * CK + c;
            kc[at] = qkv[s * W + C + c];
            vc[at] = qkv[s * W + C + CK + c];
        }
        return;
    }
    float scale = 1.0f / sqrtf((float)hd);
    if (hd <= CU_NT) {
        __shared__ float sc[CU_NT];
        __shared__ double sh[CU_NT];
        __shared__ float shm[CU_NT];
        const int t = (int)threadIdx.x;
        CU_FOR_ROWS(r, (long long)S * H) {
            long long s = r / H, h = r % H, q0 = s * W + h * hd, kv0 = slot[s] * slot_floats + (h / G) * hd;
            int n = pos[s] + 1;
            float mx = -INFINITY, l = 0.0f, o = 0.0f;
            for (int k0 = 0; k0 < n; k0 += CU_NT) {
                int j = k0 + t, m = n - k0 < CU_NT ? n - k0 : CU_NT;
                float x = -INFINITY;
                if (j < n) {
                    x = 0.0f;
                    for (int d = 0; d < hd; d++) x += qkv[q0 + d] * kc[kv0 + (long long)j * CK + d];
                    x *= scale;
                }
                float m2 = cu_maxf(mx, cu_block_max(x, shm));
                float e = j < n ? expf(x - m2) : 0.0f, r2 = expf(mx - m2);
                sc[t] = e;
                float chunk = (float)cu_block_sum(e, sh);      /* (also the barrier before sc is read) */
                l = l * r2 + chunk;
                if (t < hd) {
                    float acc = 0.0f;
                    for (int q = 0; q < m; q++) acc += sc[q] * vc[kv0 + (long long)(k0 + q) * CK + t];
                    o = o * r2 + acc;
                }
                mx = m2;
                __syncthreads();        /* sc is read before the next chunk writes it */
            }
            if (t < hd) y[s * C + h * hd + t] = o / l;
        }
        return;
    }
    CU_FOR(i, (long long)S * C) {
        long long s = i / C, c = i % C, q0 = s * W + (c / hd) * hd;
        long long kv0 = slot[s] * slot_floats + (long long)(c / hd / G) * hd;
        float mx = -INFINITY, l = 0.0f, o = 0.0f;
        for (int j = 0; j <= pos[s]; j++) {
            float sc = 0.0f;
            for (int d = 0; d < hd; d++) sc += qkv[q0 + d] * kc[kv0 + (long long)j * CK + d];
            sc *= scale;
            float m2 = cu_maxf(mx, sc), r = expf(mx - m2), e = expf(sc - m2);
            l = l * r + e;
            o = o * r + e * vc[kv0 + (long long)j * CK + c % hd];
            mx = m2;
        }
        y[i] = o / l;
    }
}
#undef CU_QKV_ROW
#endif
