/* cu_attn.cuh - causal multi-head attention on CUDA: forward, backward, one decode step.
 *
 * Layout as kernels/cpu/k_attn.h: qkv [B,T,W] holds per token q (C values), then k and v
 * (CK = KV*hd each), W = C + 2 CK; query head h owns q's columns h*hd .. h*hd+hd-1 and reads
 * key/value head h/(H/KV), which owns the same columns of k and v. att [B,H,T,T] keeps the
 * probabilities (0 above the diagonal). This is the simple form: a thread per query row for the
 * scores and softmax (part 0), a thread per output element for the products (part 1). A fused
 * flash-style kernel is to be a numbered variant of it.
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

CU_D void cu_attention_fwd(int part, f32p y, f32p att, cf32p qkv, int B, int T, int C, int H, int KV) {
    int hd = C / H, G = H / KV, CK = KV * hd, W = C + 2 * CK;
    float scale = 1.0f / sqrtf((float)hd);
    if (part == 0) {            /* row (b, h, t): probabilities over keys 0..t */
        CU_FOR(r, (long long)B * H * T) {
            int t = (int)(r % T), h = (int)(r / T % H), b = (int)(r / T / H);
            f32p p = att + r * T;
            float mx = -INFINITY;
            for (int j = 0; j <= t; j++) {
                p[j] = cu_attn_score(qkv, T, C, W, hd, G, b, h, t, j, scale);
                mx = cu_maxf(mx, p[j]);
            }
            float sum = 0.0f;
            for (int j = 0; j <= t; j++) { p[j] = expf(p[j] - mx); sum += p[j]; }
            float inv = 1.0f / sum;
            for (int j = 0; j < T; j++) p[j] = j <= t ? p[j] * inv : 0.0f;
        }
    } else {                    /* y[b, t, h*hd + d] = sum_j att[b,h,t,j] v[b,j,(h/G)*hd + d] */
        CU_FOR(i, (long long)B * T * C) {
            int c = (int)(i % C), t = (int)(i / C % T), b = (int)(i / C / T), h = c / hd;
            cf32p p = att + (((long long)b * H + h) * T + t) * T;
            long long v = C + CK + (long long)(h / G) * hd + c % hd;
            float acc = 0.0f;
            for (int j = 0; j <= t; j++) acc += p[j] * qkv[CU_QKV_ROW(b, j) + v];
            y[i] = acc;
        }
    }
}

/* dP = dO V^T; dS = scale P (dP - rowsum(dP P)) into scratch; dQ = dS K, dK = dS^T Q, dV = P^T dO,
 * where a key/value head's dK and dV sum over the G query heads that read it */
CU_D void cu_attention_bwd(int part, f32p dqkv, f32p scratch, cf32p dy, cf32p qkv, cf32p att, int B, int T, int C,
                           int H, int KV, int acc) {
    int hd = C / H, G = H / KV, CK = KV * hd, W = C + 2 * CK;
    float scale = 1.0f / sqrtf((float)hd);
    if (part == 0) {
        CU_FOR(r, (long long)B * H * T) {
            int t = (int)(r % T), h = (int)(r / T % H), b = (int)(r / T / H);
            cf32p p = att + r * T;
            f32p ds = scratch + r * T;
            cf32p o = dy + ((long long)b * T + t) * C + (long long)h * hd;
            float dot = 0.0f;
            for (int j = 0; j <= t; j++) {
                cf32p v = qkv + CU_QKV_ROW(b, j) + C + CK + (long long)(h / G) * hd;
                float s = 0.0f;
                for (int d = 0; d < hd; d++) s += o[d] * v[d];
                ds[j] = s;
                dot += s * p[j];
            }
            for (int j = 0; j < T; j++) ds[j] = j <= t ? scale * p[j] * (ds[j] - dot) : 0.0f;
        }
    } else {
        CU_FOR(i, (long long)B * T * W) {
            int col = (int)(i % W), t = (int)(i / W % T), b = (int)(i / W / T);
            float v = 0.0f;
            if (col < C) {              /* dq[t] = sum_{j <= t} dS[t, j] k[j] */
                int h = col / hd;
                cf32p ds = scratch + (((long long)b * H + h) * T + t) * T;
                long long kc = C + (long long)(h / G) * hd + col % hd;
                for (int j = 0; j <= t; j++) v += ds[j] * qkv[CU_QKV_ROW(b, j) + kc];
            } else if (col < C + CK) {  /* dk[t] = sum_{heads h of the group} sum_{i >= t} dS_h[i, t] q_h[i] */
                int j = (col - C) / hd, d = (col - C) % hd;
                for (int h = j * G; h < (j + 1) * G; h++) {
                    cf32p ds = scratch + ((long long)b * H + h) * T * T;
                    for (int q = t; q < T; q++) v += ds[(long long)q * T + t] * qkv[CU_QKV_ROW(b, q) + h * hd + d];
                }
            } else {                    /* dv[t] = sum_{heads h of the group} sum_{i >= t} P_h[i, t] dO_h[i] */
                int j = (col - C - CK) / hd, d = (col - C - CK) % hd;
                for (int h = j * G; h < (j + 1) * G; h++) {
                    cf32p p = att + ((long long)b * H + h) * T * T;
                    for (int q = t; q < T; q++) v += p[(long long)q * T + t] * dy[((long long)b * T + q) * C + h * hd + d];
                }
            }
            dqkv[i] = acc ? dqkv[i] + v : v;
        }
    }
}

/* part 0: append the new token's k, v at row pos of the caches [ctx, CK]; part 1: its query
 * attends to rows 0..pos (a thread per output element, online softmax in one pass over the keys) */
CU_D void cu_attention_decode(int part, f32p y, f32p kc, f32p vc, cf32p qkv, int pos, int C, int H, int KV) {
    int hd = C / H, G = H / KV, CK = KV * hd;
    if (part == 0) {
        CU_FOR(c, CK) {
            kc[(long long)pos * CK + c] = qkv[C + c];
            vc[(long long)pos * CK + c] = qkv[C + CK + c];
        }
        return;
    }
    float scale = 1.0f / sqrtf((float)hd);
    CU_FOR(c, C) {
        long long h0 = (long long)(c / hd) * hd, kv0 = (long long)(c / hd / G) * hd;
        float mx = -INFINITY, l = 0.0f, o = 0.0f;
        for (int j = 0; j <= pos; j++) {
            float s = 0.0f;
            for (int d = 0; d < hd; d++) s += qkv[h0 + d] * kc[(long long)j * CK + kv0 + d];
            s *= scale;
            float m2 = cu_maxf(mx, s), r = expf(mx - m2), e = expf(s - m2);
            l = l * r + e;
            o = o * r + e * vc[(long long)j * CK + kv0 + c % hd];
            mx = m2;
        }
        y[c] = o / l;
    }
}
#undef CU_QKV_ROW
#endif
