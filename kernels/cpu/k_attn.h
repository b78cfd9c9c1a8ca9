/* k_attn.h - causal multi-head self-attention on the CPU (forward, backward, KV-cache
 * generation) and rotary position embedding (RoPE).
 *
 * Layout: qkv [B,T,W] holds per token q (C values), then k and v (CK = KV*hd values each):
 * W = C + 2 CK, hd = C/H. Query head h owns q's columns h*hd .. h*hd+hd-1 and reads key/value
 * head h/G (G = H/KV query heads share one; KV = H is plain multi-head attention), which owns
 * the same columns of k and of v. Scores are scaled by 1/sqrt(hd), softmax in fp32.
 *
 * How: per (batch, head) the work is GEMMs (cblas_sgemm on strided views of qkv, no copies)
 * plus a row softmax. Query rows go in blocks of K_ATTN_BLOCK, and a block only multiplies
 * against the keys it can see, so the masked upper triangle costs (1 + 1/nblocks)/2 of a full
 * T x T product instead of all of it. When there are at least as many heads as threads, heads
 * are spread over OpenMP threads and each head's GEMMs run on its thread (the OpenMP build of
 * OpenBLAS, which moec links, stays single-threaded inside a parallel region): measured 2.2x
 * faster than threading each head's small GEMMs (4 layers, T 256, 64 heads per batch: 320 ms
 * -> 147 ms per step). With fewer heads than threads, the GEMMs of all heads run in turn
 * (OpenBLAS threads each one) and the softmax of all rows is one OpenMP loop.
 * Not here: the MoE layer (k_moe.h), the projections around attention (k_matmul.h).
 */
#ifndef MOE_K_ATTN_H
#define MOE_K_ATTN_H
#include "k_common.h"
#include "k_act.h" /* k_fast_expf, K_SIMD_MAX */
#include <cblas.h>
#include <omp.h>

#ifndef K_ATTN_BLOCK
#define K_ATTN_BLOCK 128 /* query rows per GEMM block */
#endif
#ifndef K_ATTN_CACHED_GEMM_MIN
#define K_ATTN_CACHED_GEMM_MIN 16 /* k_attention_cached: new tokens from which GEMMs pay off */
#endif

/* p[0:len] = softmax(p[0:len]) in place; p[len:width] = 0 (the masked, future keys) */
static inline void k_attn_softmax_row(float *p /* [width] */, int len, int width) {
    float mx = p[0];
K_SIMD_MAX(mx)
    for (int j = 1; j < len; j++) mx = p[j] > mx ? p[j] : mx;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < len; j++) {
        float e = k_fast_expf(p[j] - mx);
        p[j] = e;
        sum += e;
    }
    float inv = 1.0f / sum;
#pragma omp simd
    for (int j = 0; j < len; j++) p[j] *= inv;
    if (width > len) memset(p + len, 0, (size_t)(width - len) * sizeof(float));
}

/* One query block of one head: rows i0 .. i0+m-1 (positions pos0 + i) against the keys they
 * can see, 0 .. pos0+i0+m-1. Pb points at the block's first row (row stride ldp). */
static inline void k_attn_qk_block(float *Pb, int ldp, const float *q /* [., ldq] */, int ldq,
                                   const float *k /* [., ldkv] */, int ldkv, int i0, int m, int pos0, int hd) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, pos0 + i0 + m, hd, 1.0f / sqrtf((float)hd),
                q + (long)i0 * ldq, ldq, k, ldkv, 0.0f, Pb, ldp);
}
static inline void k_attn_pv_block(float *out /* [., ldo] */, int ldo, const float *Pb, int ldp,
                                   const float *v /* [., ldkv] */, int ldkv, int i0, int m, int pos0, int hd) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hd, pos0 + i0 + m, 1.0f, Pb, ldp, v, ldkv, 0.0f,
                out + (long)i0 * ldo, ldo);
}
#define K_ATTN_BLOCKS(i0, m, n)                                                                    \
    for (int i0 = 0, m = (n) < K_ATTN_BLOCK ? (n) : K_ATTN_BLOCK; i0 < (n);                       \
         i0 += K_ATTN_BLOCK, m = (n) - i0 < K_ATTN_BLOCK ? (n) - i0 : K_ATTN_BLOCK)

/* enough heads to give every thread its own? then spread heads over threads */
static inline int k_attn_heads_parallel(int T, int hd, long BH) {
    (void)T; (void)hd;
    return BH > 1 && BH >= omp_get_max_threads();
}

/* Where head bh = b*H + h finds its q, k and v in qkv (k and v those of key/value head h/G),
 * and its output columns; the matching dqkv columns are at the same offsets. */
typedef struct k_attn_at { long q, k, v, o; } k_attn_at;
static inline k_attn_at k_attn_head(long bh, int T, int C, int H, int KV) {
    int hd = C / H, CK = KV * hd, W = C + 2 * CK, h = (int)(bh % H), j = h / (H / KV);
    long row = bh / H * T;
    return (k_attn_at){row * W + (long)h * hd, row * W + C + (long)j * hd, row * W + C + CK + (long)j * hd,
                       row * C + (long)h * hd};
}

/* out = softmax(q k^T / sqrt(hd) + causal mask) v per head; att keeps the probabilities
 * (entries t2 > t1 are 0) for the backward. Large heads go in three phases (scores of all
 * heads, one parallel softmax over all rows, P V of all heads), so a call opens one OpenMP
 * region, not one per block: fork/join costs add up and stall on a busy machine. */
static inline void k_attention_fwd(float *out /* [B,T,C] */, float *att /* [B,H,T,T] */, const float *qkv /* [B,T,W] */,
                                   int B, int T, int C, int H, int KV) {
    int hd = C / H, W = C + 2 * KV * hd;
    long BH = (long)B * H;
    if (k_attn_heads_parallel(T, hd, BH)) {
#pragma omp parallel for schedule(static) if (BH * T * T * hd >= K_OMP_MIN_WORK)
        for (long bh = 0; bh < BH; bh++) {
            k_attn_at at = k_attn_head(bh, T, C, H, KV);
            float *P = att + bh * T * T;
            K_ATTN_BLOCKS(i0, m, T) {
                k_attn_qk_block(P + (long)i0 * T, T, qkv + at.q, W, qkv + at.k, W, i0, m, 0, hd);
                for (int i = i0; i < i0 + m; i++) k_attn_softmax_row(P + (long)i * T, i + 1, T);
                k_attn_pv_block(out + at.o, C, P + (long)i0 * T, T, qkv + at.v, W, i0, m, 0, hd);
            }
        }
        return;
    }
    for (long bh = 0; bh < BH; bh++) {
        k_attn_at at = k_attn_head(bh, T, C, H, KV);
        K_ATTN_BLOCKS(i0, m, T) k_attn_qk_block(att + bh * T * T + (long)i0 * T, T, qkv + at.q, W, qkv + at.k, W, i0, m, 0, hd);
    }
#pragma omp parallel for schedule(static) if (BH * T * T >= K_OMP_MIN_WORK / 4)
    for (long r = 0; r < BH * T; r++) k_attn_softmax_row(att + r * T, (int)(r % T) + 1, T);
    for (long bh = 0; bh < BH; bh++) {
        k_attn_at at = k_attn_head(bh, T, C, H, KV);
        K_ATTN_BLOCKS(i0, m, T) k_attn_pv_block(out + at.o, C, att + bh * T * T + (long)i0 * T, T, qkv + at.v, W, i0, m, 0, hd);
    }
}

/* Backward, with S = scores and P = softmax(S):
 *   dP = dO V^T;  dS = scale * P * (dP - rowsum(dP * P));  dQ = dS K;  dK = dS^T Q;  dV = P^T dO.
 * dP then dS live in the head's [T,T] scratch; row t1 is written up to the end of its query
 * block (zeros past t1), which is all the GEMMs read. dQ runs over query blocks; dK and dV over
 * key blocks [j0, j1), whose rows only get contributions from queries t1 >= j0. */
static inline void k_attn_dp_block(float *D /* block rows of [T,T] */, int T, const float *dO, int ldo,
                                   const float *v, int ldkv, int i0, int m, int hd) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, i0 + m, hd, 1.0f, dO + (long)i0 * ldo, ldo, v, ldkv, 0.0f,
                D, T);
}
static inline void k_attn_ds_row(float *d /* [T] */, const float *p /* [T] */, int t1, int T, float scale) {
    int len = t1 + 1, end = (t1 / K_ATTN_BLOCK + 1) * K_ATTN_BLOCK; /* end of the query block */
    float dot = 0.0f;
    if (end > T) end = T;
#pragma omp simd reduction(+ : dot)
    for (int j = 0; j < len; j++) dot += p[j] * d[j];
#pragma omp simd
    for (int j = 0; j < len; j++) d[j] = scale * p[j] * (d[j] - dot);
    if (end > len) memset(d + len, 0, (size_t)(end - len) * sizeof(float));
}
static inline void k_attn_dqkv_head(float *dq, float *dk, float *dv, int ldd, const float *dS /* [T,T] */,
                                    const float *dO, int ldo, const float *q, const float *k, int ldkv,
                                    const float *P /* [T,T] */, int T, int hd, float beta, float beta_kv) {
    K_ATTN_BLOCKS(i0, m, T)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hd, i0 + m, 1.0f, dS + (long)i0 * T, T, k, ldkv, beta,
                dq + (long)i0 * ldd, ldd);
    K_ATTN_BLOCKS(j0, m, T) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, hd, T - j0, 1.0f, dS + (long)j0 * T + j0, T,
                    q + (long)j0 * ldkv, ldkv, beta_kv, dk + (long)j0 * ldd, ldd);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, hd, T - j0, 1.0f, P + (long)j0 * T + j0, T,
                    dO + (long)j0 * ldo, ldo, beta_kv, dv + (long)j0 * ldd, ldd);
    }
}

/* dqkv (acc: 0 overwrite, 1 add) from dout, the saved qkv and att. scratch [B,H,T,T] is
 * overwritten (it holds the score gradients). Same phases as the forward. Head bh's dq is its
 * own; its dk and dv add into those of its key/value head, which the group's first head
 * writes (or adds to, with acc): so with heads spread over threads, a thread takes a whole
 * group, in order. */
static inline void k_attention_bwd(float *dqkv /* [B,T,W] */, float *scratch /* [B,H,T,T] */,
                                   const float *dout /* [B,T,C] */, const float *qkv /* [B,T,W] */,
                                   const float *att /* [B,H,T,T] */, int B, int T, int C, int H, int KV, int acc) {
    int hd = C / H, G = H / KV, W = C + 2 * KV * hd;
    long BH = (long)B * H, BK = (long)B * KV;
    float scale = 1.0f / sqrtf((float)hd), beta = acc ? 1.0f : 0.0f;
#define K_ATTN_HEAD_BWD(bh, at)                                                                                  \
    k_attn_dqkv_head(dqkv + at.q, dqkv + at.k, dqkv + at.v, W, scratch + (bh) * T * T, dout + at.o, C, qkv + at.q, \
                     qkv + at.k, W, att + (bh) * T * T, T, hd, beta, (bh) % G ? 1.0f : beta)
    if (k_attn_heads_parallel(T, hd, BK)) {
#pragma omp parallel for schedule(static) if (BH * T * T * hd >= K_OMP_MIN_WORK)
        for (long u = 0; u < BK; u++)
            for (int g = 0; g < G; g++) {
                long bh = u / KV * H + u % KV * G + g;
                k_attn_at at = k_attn_head(bh, T, C, H, KV);
                const float *P = att + bh * T * T;
                float *D = scratch + bh * T * T;
                K_ATTN_BLOCKS(i0, m, T) k_attn_dp_block(D + (long)i0 * T, T, dout + at.o, C, qkv + at.v, W, i0, m, hd);
                for (int t = 0; t < T; t++) k_attn_ds_row(D + (long)t * T, P + (long)t * T, t, T, scale);
                K_ATTN_HEAD_BWD(bh, at);
            }
    } else {
        for (long bh = 0; bh < BH; bh++) {
            k_attn_at at = k_attn_head(bh, T, C, H, KV);
            float *D = scratch + bh * T * T;
            K_ATTN_BLOCKS(i0, m, T) k_attn_dp_block(D + (long)i0 * T, T, dout + at.o, C, qkv + at.v, W, i0, m, hd);
        }
#pragma omp parallel for schedule(static) if (BH * T * T >= K_OMP_MIN_WORK / 4)
        for (long r = 0; r < BH * T; r++) k_attn_ds_row(scratch + r * T, att + r * T, (int)(r % T), T, scale);
        for (long bh = 0; bh < BH; bh++) {
            k_attn_at at = k_attn_head(bh, T, C, H, KV);
            K_ATTN_HEAD_BWD(bh, at);
        }
    }
#undef K_ATTN_HEAD_BWD
}

/* ---- RoPE, "rotate half" (HF Llama / GPT-NeoX): within each head, dims i and i + hd/2
 * (i < hd/2) rotate by angle pos * 10000^(-2i/hd). Angles and their sin/cos are computed in
 * double once per (position, i) and shared by the batch, the heads and q/k. */
#define K_ROPE_CHUNK 64 /* frequencies per sin/cos table on the stack */

static inline void k_rope_apply(float *out /* [B,T,W] */, const float *in /* [B,T,W] */, int B, int T, int C, int H,
                                int KV, int pos0, int inverse, int acc) {
    int hd = C / H, half = hd / 2, CK = KV * hd, W = C + 2 * CK;
#pragma omp parallel for schedule(static) if ((long)B * T * C >= K_OMP_MIN_WORK / 2)
    for (int t = 0; t < T; t++) {
        float cs[K_ROPE_CHUNK], sn[K_ROPE_CHUNK];
        for (int i0 = 0; i0 < half; i0 += K_ROPE_CHUNK) {
            int n = half - i0 < K_ROPE_CHUNK ? half - i0 : K_ROPE_CHUNK;
            for (int i = 0; i < n; i++) {
                double a = (double)(pos0 + t) * pow(10000.0, -2.0 * (i0 + i) / hd);
                cs[i] = (float)cos(a);
                sn[i] = (float)(inverse ? -sin(a) : sin(a)); /* the backward rotates by -angle */
            }
            for (int b = 0; b < B; b++) {
                long row = ((long)b * T + t) * W;
                for (int h = 0; h < H + KV; h++) { /* q's heads, then k's */
                    long o = row + (long)h * hd + i0;
                    const float *x1 = in + o, *x2 = in + o + half;
                    float *y1 = out + o, *y2 = out + o + half;
                    if (acc) {
#pragma omp simd
                        for (int i = 0; i < n; i++) {
                            float a1 = x1[i], a2 = x2[i];
                            y1[i] += a1 * cs[i] - a2 * sn[i];
                            y2[i] += a2 * cs[i] + a1 * sn[i];
                        }
                    } else {
#pragma omp simd
                        for (int i = 0; i < n; i++) {
                            float a1 = x1[i], a2 = x2[i];
                            y1[i] = a1 * cs[i] - a2 * sn[i];
                            y2[i] = a2 * cs[i] + a1 * sn[i];
                        }
                    }
                }
            }
        }
        for (int b = 0; b < B; b++) { /* v passes through */
            long o = ((long)b * T + t) * W + C + CK;
            if (acc) {
#pragma omp simd
                for (int c = 0; c < CK; c++) out[o + c] += in[o + c];
            } else if (out != in)
                memcpy(out + o, in + o, (size_t)CK * sizeof(float));
        }
    }
}

/* out = rope(qkv): q and k rotated for positions pos0 + t, v copied. hd must be even.
 * In place (out == qkv) is allowed. */
static inline void k_rope_fwd(float *out /* [B,T,W] */, const float *qkv /* [B,T,W] */, int B, int T, int C, int H,
                              int KV, int pos0) {
    k_rope_apply(out, qkv, B, T, C, H, KV, pos0, 0, 0);
}

/* dqkv (acc) = rope^T(dout): the inverse rotation (rotation matrices are orthogonal). */
static inline void k_rope_bwd(float *dqkv /* [B,T,W] */, const float *dout /* [B,T,W] */, int B, int T, int C, int H,
                              int KV, int pos0, int acc) {
    k_rope_apply(dqkv, dout, B, T, C, H, KV, pos0, 1, acc);
}

/* One query against keys/values 0 .. len-1 of one head (row stride ld), no scratch beyond a
 * stack chunk: scores of K_ATTN_KCHUNK keys at a time, then an online softmax across chunks
 * (the running sum and output are rescaled when a chunk raises the maximum). */
#define K_ATTN_KCHUNK 256
static inline void k_attn_decode_row(float *o /* [hd] */, const float *qi /* [hd] */, const float *k, const float *v,
                                     int ld, int len, int hd, float scale) {
    float sc[K_ATTN_KCHUNK], mx = -INFINITY, l = 0.0f;
    memset(o, 0, (size_t)hd * sizeof(float));
    for (int j0 = 0; j0 < len; j0 += K_ATTN_KCHUNK) {
        int m = len - j0 < K_ATTN_KCHUNK ? len - j0 : K_ATTN_KCHUNK;
        float cm = -INFINITY, sum = 0.0f;
        for (int j = 0; j < m; j++) {
            const float *kj = k + (long)(j0 + j) * ld;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int d = 0; d < hd; d++) s += qi[d] * kj[d];
            sc[j] = s * scale;
        }
K_SIMD_MAX(cm)
        for (int j = 0; j < m; j++) cm = sc[j] > cm ? sc[j] : cm;
        if (cm > mx) { /* rescale what earlier chunks summed (nothing on the first) */
            float c = j0 ? k_fast_expf(mx - cm) : 0.0f;
            l *= c;
#pragma omp simd
            for (int d = 0; d < hd; d++) o[d] *= c;
            mx = cm;
        }
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < m; j++) {
            float e = k_fast_expf(sc[j] - mx);
            sc[j] = e;
            sum += e;
        }
        l += sum;
        for (int j = 0; j < m; j++) {
            const float *vj = v + (long)(j0 + j) * ld;
            float p = sc[j];
#pragma omp simd
            for (int d = 0; d < hd; d++) o[d] += p * vj[d];
        }
    }
    float inv = 1.0f / l;
#pragma omp simd
    for (int d = 0; d < hd; d++) o[d] *= inv;
}

/* ---- Generation with a KV cache. n new queries (row i at q + i*qs, position pos0 + i) attend
 * to cached keys/values kc, vc [pos0+n, CK] (CK = KV*hd, row stride CK; query head h reads
 * key/value head h/(H/KV)). out [n, C]. Same function as the matching rows of
 * k_attention_fwd, to rounding. Prefill-sized n with a scratch of
 * K_ATTN_CACHED_SCRATCH(n, pos0, H) floats uses the blocked GEMM path; otherwise (decode above
 * all, which is bound by reading the cache) k_attn_decode_row runs per (query, head) over
 * OpenMP threads and needs no scratch. */
#define K_ATTN_CACHED_SCRATCH(n, pos0, H) \
    ((long)(H) * ((n) < K_ATTN_BLOCK ? (n) : K_ATTN_BLOCK) * ((long)(pos0) + (n)))
static inline void k_attention_cached(float *out /* [n, C] */, const float *q /* [n, qs] */, int qs,
                                      const float *kc /* [pos0+n, CK] */, const float *vc /* [pos0+n, CK] */, int n,
                                      int pos0, int C, int H, int KV, float *scratch /* K_ATTN_CACHED_SCRATCH or NULL */) {
    int hd = C / H, L = pos0 + n, G = H / KV, CK = KV * hd;
    if (n <= 0) return;
    if (n >= K_ATTN_CACHED_GEMM_MIN && scratch) {
        int blk = n < K_ATTN_BLOCK ? n : K_ATTN_BLOCK;
        float *sc = scratch; /* [H, blk, L] */
        K_ATTN_BLOCKS(i0, m, n) {
            for (int h = 0; h < H; h++)
                k_attn_qk_block(sc + (long)h * blk * L, L, q + (long)h * hd, qs, kc + (long)(h / G) * hd, CK, i0, m,
                                pos0, hd);
#pragma omp parallel for schedule(static) if ((long)H * m * L >= K_OMP_MIN_WORK / 4)
            for (int r = 0; r < H * m; r++)
                k_attn_softmax_row(sc + ((long)(r / m) * blk + r % m) * L, pos0 + i0 + r % m + 1, pos0 + i0 + m);
            for (int h = 0; h < H; h++)
                k_attn_pv_block(out + (long)h * hd, C, sc + (long)h * blk * L, L, vc + (long)(h / G) * hd, CK, i0, m,
                                pos0, hd);
        }
        return;
    }
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for collapse(2) schedule(static) if ((long)n * H * L * hd >= K_OMP_MIN_WORK)
    for (int i = 0; i < n; i++)
        for (int h = 0; h < H; h++)
            k_attn_decode_row(out + (long)i * C + (long)h * hd, q + (long)i * qs + (long)h * hd,
                              kc + (long)(h / G) * hd, vc + (long)(h / G) * hd, CK, pos0 + i + 1, hd, scale);
}

/* One decode step: the new token's k and v (its qkv row's CK columns from C, then from C + CK)
 * are appended to the caches at row pos, then its query attends to rows 0..pos. */
static inline void k_attention_decode(float *out /* [1, C] */, float *kc /* [ctx, CK] */, float *vc /* [ctx, CK] */,
                                      const float *qkv /* [1, W] */, int pos, int C, int H, int KV) {
    int CK = KV * (C / H);
    memcpy(kc + (long)pos * CK, qkv + C, (size_t)CK * sizeof(float));
    memcpy(vc + (long)pos * CK, qkv + C + CK, (size_t)CK * sizeof(float));
    k_attention_cached(out, qkv, C + 2 * CK, kc, vc, 1, pos, C, H, KV, NULL);
}
#endif
