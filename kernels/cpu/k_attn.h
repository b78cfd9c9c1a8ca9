/* k_attn.h - causal multi-head self-attention on the CPU (forward, backward, KV-cache
 * generation) and rotary position embedding (RoPE).
 *
 * Layout: qkv [B,T,W] holds per token q (C values), then k and v (CK = KV*hd values each):
 * W = C + 2 CK, hd = C/H. Query head h owns q's columns h*hd .. h*hd+hd-1 and reads key/value
 * head h/G (G = H/KV query heads share one; KV = H is plain multi-head attention), which owns
 * the same columns of k and of v. Scores are scaled by 1/sqrt(hd), softmax in fp32.
 *
 * How: the work is GEMMs (cblas_sgemm on strided views of qkv, no copies) on tiles of
 * K_ATTN_QBLOCK query rows by K_ATTN_KBLOCK keys, with an online softmax between them, so
 * training stores no T x T tensor, only each row's log-sum-exp (k_attention_fwd/_bwd below).
 * Tiles above the diagonal are skipped. Independent tasks (heads and query blocks forward,
 * key/value groups backward) are spread over OpenMP threads and each tile's GEMMs run on its
 * thread (the OpenMP build of OpenBLAS, which moec links, stays single-threaded inside a
 * parallel region). The KV-cache path (prefill chunks, decode) is at the end of the file.
 * Not here: the MoE layer (k_moe.h), the projections around attention (k_matmul.h).
 */
#ifndef MOE_K_ATTN_H
#define MOE_K_ATTN_H
#include "k_common.h"
#include "k_act.h" /* k_fast_expf, K_SIMD_MAX */
#include <cblas.h>
#include <omp.h>

#ifndef K_ATTN_BLOCK
#define K_ATTN_BLOCK 128 /* query rows per GEMM block of the KV-cache path */
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

/* Where head bh = b*H + h finds its q, k and v in qkv (k and v those of key/value head h/G),
 * its output columns, and its row-statistics column (lse, delta: [B,T,H]); the matching dqkv
 * columns are at the same offsets. */
typedef struct k_attn_at { long q, k, v, o, r; } k_attn_at;
static inline k_attn_at k_attn_head(long bh, int T, int C, int H, int KV) {
    int hd = C / H, CK = KV * hd, W = C + 2 * CK, h = (int)(bh % H), j = h / (H / KV);
    long row = bh / H * T;
    return (k_attn_at){row * W + (long)h * hd, row * W + C + (long)j * hd, row * W + C + CK + (long)j * hd,
                       row * C + (long)h * hd, row * H + h};
}

/* ---- Training attention without a score matrix (the flash-attention scheme on the CPU).
 * A query block of K_ATTN_QBLOCK rows meets the key blocks of K_ATTN_KBLOCK keys it can see
 * (blocks wholly above the diagonal are skipped; the diagonal block is masked row by row)
 * through a [K_ATTN_QBLOCK, K_ATTN_KBLOCK] tile on the stack: S = scale Q K^T by one sgemm,
 * then an online softmax (each row's running max and sum; the output rows, kept in `out`,
 * rescaled when a tile raises the max), then O += P V by a second sgemm. Only each row's
 * log-sum-exp lse = max + log(sum) is kept for the backward, which recomputes P tile by tile
 * as exp(S - lse). Nothing of size T x T is ever stored. */
#ifndef K_ATTN_QBLOCK
#define K_ATTN_QBLOCK 64 /* query rows per tile */
#endif
#ifndef K_ATTN_KBLOCK
#define K_ATTN_KBLOCK 64 /* keys per tile */
#endif
/* The numbered variants (moec tune measures them; the rule takes v1) differ in their tiles:
 * v1 K_ATTN_QBLOCK x K_ATTN_KBLOCK query rows by keys, v2 twice the rows, v3 half the keys.
 * Measured interleaved on 2 cores (Emerald Rapids, B 8 x T 256 and 1024, d 512, 8 heads), v1
 * is 1.6-1.8x faster than v2 and 1.1-1.3x faster than v3; on one core v1 and v2 are within
 * 10%. The tiles live on the stack, sized for v2, the largest. */
#define K_ATTN_QB(v) ((v) == 2 ? 2 * K_ATTN_QBLOCK : K_ATTN_QBLOCK)
#define K_ATTN_KB(v) ((v) == 3 && K_ATTN_KBLOCK > 1 ? K_ATTN_KBLOCK / 2 : K_ATTN_KBLOCK)
#define K_ATTN_TILE (2 * K_ATTN_QBLOCK * K_ATTN_KBLOCK)

/* keys j0 .. j0+len-1 of the tile's n that query row t (absolute) can see: 0 .. n */
static inline int k_attn_visible(int t, int j0, int n) {
    int len = t - j0 + 1;
    return len < 0 ? 0 : len > n ? n : len;
}

/* query rows i0 .. i0+m-1 (m <= 2 K_ATTN_QBLOCK) of one head against key tiles of kb (<=
 * K_ATTN_KBLOCK): out rows (stride ldo) and lse (stride lds) */
static inline void k_flash_fwd_block(float *out, int ldo, float *lse, int lds, const float *q, const float *k,
                                     const float *v, int ld, int i0, int m, int kb, int hd, float scale) {
    float S[K_ATTN_TILE], mx[2 * K_ATTN_QBLOCK], l[2 * K_ATTN_QBLOCK];
    for (int j0 = 0; j0 < i0 + m; j0 += kb) {
        int n = i0 + m - j0 < kb ? i0 + m - j0 : kb;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, hd, scale, q + (long)i0 * ld, ld,
                    k + (long)j0 * ld, ld, 0.0f, S, n);
        for (int i = 0; i < m; i++) {
            float *s = S + (long)i * n, *o = out + (long)(i0 + i) * ldo;
            int len = k_attn_visible(i0 + i, j0, n);
            if (len < n) memset(s + len, 0, (size_t)(n - len) * sizeof(float));
            if (!len) continue; /* the whole tile is in this row's future */
            float bm = s[0], sum = 0.0f;
K_SIMD_MAX(bm)
            for (int j = 1; j < len; j++) bm = s[j] > bm ? s[j] : bm;
            float mnew = j0 && mx[i] > bm ? mx[i] : bm;
#pragma omp simd reduction(+ : sum)
            for (int j = 0; j < len; j++) {
                float e = k_fast_expf(s[j] - mnew);
                s[j] = e;
                sum += e;
            }
            if (j0 && mnew > mx[i]) { /* rescale what the earlier tiles summed */
                float c = k_fast_expf(mx[i] - mnew);
                l[i] *= c;
#pragma omp simd
                for (int d = 0; d < hd; d++) o[d] *= c;
            }
            l[i] = j0 ? l[i] + sum : sum;
            mx[i] = mnew;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hd, n, 1.0f, S, n, v + (long)j0 * ld, ld,
                    j0 ? 1.0f : 0.0f, out + (long)i0 * ldo, ldo);
    }
    for (int i = 0; i < m; i++) {
        float inv = 1.0f / l[i], *o = out + (long)(i0 + i) * ldo;
#pragma omp simd
        for (int d = 0; d < hd; d++) o[d] *= inv;
        lse[(long)(i0 + i) * lds] = mx[i] + logf(l[i]);
    }
}

/* out = softmax(q k^T / sqrt(hd) + causal mask) v per head; lse [B,T,H] each row's
 * log-sum-exp. The (head, query block) tasks are independent: they are spread over OpenMP
 * threads, largest (last) blocks first (each sgemm then runs on its thread, as the OpenMP
 * build of OpenBLAS stays single-threaded inside a parallel region). */
static inline void k_attention_fwd_tiles(float *out /* [B,T,C] */, float *lse /* [B,T,H] */,
                                         const float *qkv /* [B,T,W] */, int B, int T, int C, int H, int KV, int qb,
                                         int kb) {
    int hd = C / H, W = C + 2 * KV * hd, nqb = (T + qb - 1) / qb;
    long tasks = (long)B * H * nqb;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for schedule(dynamic) if (tasks > 1 && (long)B * H * T * T * hd >= K_OMP_MIN_WORK)
    for (long x = 0; x < tasks; x++) {
        long bh = x % ((long)B * H);
        int i0 = (nqb - 1 - (int)(x / ((long)B * H))) * qb, m = T - i0 < qb ? T - i0 : qb;
        k_attn_at at = k_attn_head(bh, T, C, H, KV);
        k_flash_fwd_block(out + at.o, C, lse + at.r, H, qkv + at.q, qkv + at.k, qkv + at.v, W, i0, m, kb, hd, scale);
    }
}

/* Backward, with P = exp(S - lse) recomputed per tile and delta = rowsum(dO * O):
 *   dV += P^T dO;  dP = dO V^T;  dS = scale P (dP - delta);  dK += dS^T Q;  dQ += dS K.
 * One key/value group (b, kv head) at a time: key blocks outer, then the G query heads that
 * read them and the query blocks that see them, so a key block's dK and dV and a query
 * block's dQ accumulate in dqkv itself (the first contribution overwrites unless acc). */
static inline void k_flash_bwd_group(float *dqkv, float *delta /* [B,T,H] */, const float *dout, const float *qkv,
                                     const float *y, const float *lse, long u, int T, int C, int H, int KV, int acc,
                                     int qb, int kb) {
    int hd = C / H, G = H / KV, W = C + 2 * KV * hd;
    float scale = 1.0f / sqrtf((float)hd), beta = acc ? 1.0f : 0.0f;
    float P[K_ATTN_TILE], D[K_ATTN_TILE];
    long bh0 = u / KV * H + u % KV * G;
    for (int g = 0; g < G; g++) {
        k_attn_at at = k_attn_head(bh0 + g, T, C, H, KV);
        for (int t = 0; t < T; t++) {
            const float *o = y + at.o + (long)t * C, *dO = dout + at.o + (long)t * C;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int d = 0; d < hd; d++) s += o[d] * dO[d];
            delta[at.r + (long)t * H] = s;
        }
    }
    for (int j0 = 0; j0 < T; j0 += kb) {
        int n = T - j0 < kb ? T - j0 : kb, first = 1;
        for (int g = 0; g < G; g++) {
            k_attn_at at = k_attn_head(bh0 + g, T, C, H, KV);
            const float *q = qkv + at.q, *k = qkv + at.k + (long)j0 * W, *v = qkv + at.v + (long)j0 * W;
            const float *dO = dout + at.o, *ls = lse + at.r, *dl = delta + at.r;
            float *dq = dqkv + at.q, *dk = dqkv + at.k + (long)j0 * W, *dv = dqkv + at.v + (long)j0 * W;
            for (int i0 = j0 / qb * qb; i0 < T; i0 += qb, first = 0) {
                int m = T - i0 < qb ? T - i0 : qb;
                float bkv = first ? beta : 1.0f;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, hd, scale, q + (long)i0 * W, W, k, W, 0.0f,
                            P, n);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, hd, 1.0f, dO + (long)i0 * C, C, v, W, 0.0f,
                            D, n);
                for (int i = 0; i < m; i++) {
                    float *p = P + (long)i * n, *dp = D + (long)i * n;
                    float li = ls[(long)(i0 + i) * H], di = dl[(long)(i0 + i) * H];
                    int len = k_attn_visible(i0 + i, j0, n);
#pragma omp simd
                    for (int j = 0; j < len; j++) {
                        float e = k_fast_expf(p[j] - li);
                        p[j] = e;
                        dp[j] = scale * e * (dp[j] - di);
                    }
                    for (int j = len; j < n; j++) p[j] = dp[j] = 0.0f;
                }
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, hd, m, 1.0f, P, n, dO + (long)i0 * C, C, bkv,
                            dv, W);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, hd, m, 1.0f, D, n, q + (long)i0 * W, W, bkv,
                            dk, W);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hd, n, 1.0f, D, n, k, W, j0 ? 1.0f : beta,
                            dq + (long)i0 * W, W);
            }
        }
    }
}

/* dqkv (acc: 0 overwrite, 1 add) from dout and the forward's qkv, y and lse; delta [B,T,H]
 * is scratch. Groups are spread over OpenMP threads when there are at least as many as
 * threads; otherwise they run in turn and OpenBLAS threads each sgemm. */
static inline void k_attention_bwd_tiles(float *dqkv /* [B,T,W] */, float *delta /* [B,T,H] */,
                                         const float *dout /* [B,T,C] */, const float *qkv /* [B,T,W] */,
                                         const float *y /* [B,T,C] */, const float *lse /* [B,T,H] */, int B, int T,
                                         int C, int H, int KV, int acc, int qb, int kb) {
    long BK = (long)B * KV;
#pragma omp parallel for schedule(dynamic) if (BK > 1 && BK >= omp_get_max_threads() && \
                                              (long)B * H * T * T * (C / H) >= K_OMP_MIN_WORK)
    for (long u = 0; u < BK; u++) k_flash_bwd_group(dqkv, delta, dout, qkv, y, lse, u, T, C, H, KV, acc, qb, kb);
}

/* the numbered variants the generated code calls, and the unnumbered names for v1 */
#define K_ATTN_VARIANT(v)                                                                                          \
    static inline void k_attention_fwd_v##v(float *out, float *lse, const float *qkv, int B, int T, int C, int H,  \
                                            int KV) {                                                              \
        k_attention_fwd_tiles(out, lse, qkv, B, T, C, H, KV, K_ATTN_QB(v), K_ATTN_KB(v));                          \
    }                                                                                                              \
    static inline void k_attention_bwd_v##v(float *dqkv, float *delta, const float *dout, const float *qkv,        \
                                            const float *y, const float *lse, int B, int T, int C, int H, int KV,  \
                                            int acc) {                                                             \
        k_attention_bwd_tiles(dqkv, delta, dout, qkv, y, lse, B, T, C, H, KV, acc, K_ATTN_QB(v), K_ATTN_KB(v));    \
    }
K_ATTN_VARIANT(1)
K_ATTN_VARIANT(2)
K_ATTN_VARIANT(3)
#undef K_ATTN_VARIANT
#define K_ATTN_VARIANTS 3
#define k_attention_fwd k_attention_fwd_v1
#define k_attention_bwd k_attention_bwd_v1

/* ---- RoPE, "rotate half" (HF Llama / GPT-NeoX): within each head, dims i and i + hd/2
 * (i < hd/2) rotate by angle pos * 10000^(-2i/hd). Angles and their sin/cos are computed in
 * double once per (position, i) and shared by the rows at that position (without pos, every
 * sequence's position t), the heads and q/k. */
#define K_ROPE_CHUNK 64 /* frequencies per sin/cos table on the stack */

/* rows s = b*T+t at position pos[s] (decoding: a sequence per row), or t without pos */
static inline void k_rope_apply(float *out /* [B,T,W] */, const float *in /* [B,T,W] */, const int32_t *pos, int B,
                                int T, int C, int H, int KV, int inverse, int acc) {
    int hd = C / H, half = hd / 2, CK = KV * hd, W = C + 2 * CK;
    int groups = pos ? B * T : T, per = pos ? 1 : B;    /* rows sharing a position */
#pragma omp parallel for schedule(static) if ((long)B * T * C >= K_OMP_MIN_WORK / 2)
    for (int g = 0; g < groups; g++) {
        float cs[K_ROPE_CHUNK], sn[K_ROPE_CHUNK];
        int p = pos ? pos[g] : g;
        for (int i0 = 0; i0 < half; i0 += K_ROPE_CHUNK) {
            int n = half - i0 < K_ROPE_CHUNK ? half - i0 : K_ROPE_CHUNK;
            for (int i = 0; i < n; i++) {
                double a = (double)p * pow(10000.0, -2.0 * (i0 + i) / hd);
                cs[i] = (float)cos(a);
                sn[i] = (float)(inverse ? -sin(a) : sin(a)); /* the backward rotates by -angle */
            }
            for (int b = 0; b < per; b++) {
                long row = (pos ? (long)g : (long)b * T + g) * W;
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
        for (int b = 0; b < per; b++) { /* v passes through */
            long o = (pos ? (long)g : (long)b * T + g) * W + C + CK;
            if (acc) {
#pragma omp simd
                for (int c = 0; c < CK; c++) out[o + c] += in[o + c];
            } else if (out != in)
                memcpy(out + o, in + o, (size_t)CK * sizeof(float));
        }
    }
}

/* out = rope(qkv): q and k rotated for their positions, v copied. hd must be even.
 * In place (out == qkv) is allowed. */
static inline void k_rope_fwd(float *out /* [B,T,W] */, const float *qkv /* [B,T,W] */,
                              const int32_t *pos /* [B*T] or NULL: t */, int B, int T, int C, int H, int KV) {
    k_rope_apply(out, qkv, pos, B, T, C, H, KV, 0, 0);
}

/* dqkv (acc) = rope^T(dout): the inverse rotation (rotation matrices are orthogonal); training
 * positions t. */
static inline void k_rope_bwd(float *dqkv /* [B,T,W] */, const float *dout /* [B,T,W] */, int B, int T, int C, int H,
                              int KV, int acc) {
    k_rope_apply(dqkv, dout, NULL, B, T, C, H, KV, 1, acc);
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

/* Decoding S sequences, a row each: row s's new k and v (its qkv row's CK columns from C, then
 * from C + CK) go to position pos[s] of cache slot slot[s] (kc, vc + slot[s] x slot_floats),
 * then its query attends to positions 0..pos[s] of that slot (k_attn_decode_row per row and
 * head, over the threads). */
static inline void k_attention_decode(float *out /* [S, C] */, float *kc /* slot 0's [ctx, CK] */, float *vc,
                                      const float *qkv /* [S, W] */, const int32_t *pos /* [S] */,
                                      const int32_t *slot /* [S] */, int S, long slot_floats, int C, int H, int KV) {
    int hd = C / H, G = H / KV, CK = KV * hd, W = C + 2 * CK;
    long work = 0;
    for (int s = 0; s < S; s++) {
        long at = (long)slot[s] * slot_floats + (long)pos[s] * CK;
        memcpy(kc + at, qkv + (long)s * W + C, (size_t)CK * sizeof(float));
        memcpy(vc + at, qkv + (long)s * W + C + CK, (size_t)CK * sizeof(float));
        work += (long)H * (pos[s] + 1) * hd;
    }
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for collapse(2) schedule(static) if (work >= K_OMP_MIN_WORK)
    for (int s = 0; s < S; s++)
        for (int h = 0; h < H; h++) {
            long base = (long)slot[s] * slot_floats + (long)(h / G) * hd;
            k_attn_decode_row(out + (long)s * C + (long)h * hd, qkv + (long)s * W + (long)h * hd, kc + base, vc + base,
                              CK, pos[s] + 1, hd, scale);
        }
}
#endif
