/* cu_attn.cuh - causal multi-head attention on CUDA: forward, backward, one decode step.
 *
 * Layout as kernels/cpu/k_attn.h: qkv [B,T,3C] (q, k, v per token), head h owns columns
 * h*hd .. h*hd+hd-1 of each part; att [B,H,T,T] keeps the probabilities (0 above the
 * diagonal). This is the simple form: a thread per query row for the scores and softmax
 * (part 0), a thread per output element for the products (part 1). A fused flash-style
 * kernel is to be a numbered variant of it.
 */
#ifndef MOE_CU_ATTN_CUH
#define MOE_CU_ATTN_CUH
#include "cu_common.cuh"

CU_D float cu_attn_score(cf32p qkv, int T, int C, int hd, int b, int h, int t, int t2, float scale) {
    long long q = ((long long)b * T + t) * 3 * C + (long long)h * hd;
    long long k = ((long long)b * T + t2) * 3 * C + C + (long long)h * hd;
    float s = 0.0f;
    for (int d = 0; d < hd; d++) s += qkv[q + d] * qkv[k + d];
    return s * scale;
}

CU_D void cu_attention_fwd(int part, f32p y, f32p att, cf32p qkv, int B, int T, int C, int H) {
    int hd = C / H;
    float scale = 1.0f / sqrtf((float)hd);
    if (part == 0) {            /* row (b, h, t): probabilities over keys 0..t */
        CU_FOR(r, (long long)B * H * T) {
            int t = (int)(r % T), h = (int)(r / T % H), b = (int)(r / T / H);
            f32p p = att + r * T;
            float mx = -INFINITY;
            for (int j = 0; j <= t; j++) { p[j] = cu_attn_score(qkv, T, C, hd, b, h, t, j, scale); mx = cu_maxf(mx, p[j]); }
            float sum = 0.0f;
            for (int j = 0; j <= t; j++) { p[j] = expf(p[j] - mx); sum += p[j]; }
            float inv = 1.0f / sum;
            for (int j = 0; j < T; j++) p[j] = j <= t ? p[j] * inv : 0.0f;
        }
    } else {                    /* y[b, t, h*hd + d] = sum_j att[b,h,t,j] v[b,j,h*hd + d] */
        CU_FOR(i, (long long)B * T * C) {
            int c = (int)(i % C), t = (int)(i / C % T), b = (int)(i / C / T), h = c / hd;
            cf32p p = att + (((long long)b * H + h) * T + t) * T;
            float acc = 0.0f;
            for (int j = 0; j <= t; j++) acc += p[j] * qkv[((long long)b * T + j) * 3 * C + 2 * C + c];
            y[i] = acc;
        }
    }
}

/* dP = dO V^T; dS = scale P (dP - rowsum(dP P)) into scratch; dQ = dS K, dK = dS^T Q, dV = P^T dO */
CU_D void cu_attention_bwd(int part, f32p dqkv, f32p scratch, cf32p dy, cf32p qkv, cf32p att, int B, int T, int C,
                           int H, int acc) {
    int hd = C / H;
    float scale = 1.0f / sqrtf((float)hd);
    if (part == 0) {
        CU_FOR(r, (long long)B * H * T) {
            int t = (int)(r % T), h = (int)(r / T % H), b = (int)(r / T / H);
            cf32p p = att + r * T;
            f32p ds = scratch + r * T;
            cf32p o = dy + ((long long)b * T + t) * C + (long long)h * hd;
            float dot = 0.0f;
            for (int j = 0; j <= t; j++) {
                cf32p v = qkv + ((long long)b * T + j) * 3 * C + 2 * C + (long long)h * hd;
                float s = 0.0f;
                for (int d = 0; d < hd; d++) s += o[d] * v[d];
                ds[j] = s;
                dot += s * p[j];
            }
            for (int j = 0; j < T; j++) ds[j] = j <= t ? scale * p[j] * (ds[j] - dot) : 0.0f;
        }
    } else {
        CU_FOR(i, (long long)B * T * 3 * C) {
            int col = (int)(i % (3 * C)), t = (int)(i / (3 * C) % T), b = (int)(i / (3 * C) / T);
            int which = col / C, c = col % C, h = c / hd;
            long long bh = (long long)b * H + h;
            float v = 0.0f;
            if (which == 0) {           /* dq[t] = sum_{j <= t} dS[t, j] k[j] */
                cf32p ds = scratch + (bh * T + t) * T;
                for (int j = 0; j <= t; j++) v += ds[j] * qkv[((long long)b * T + j) * 3 * C + C + c];
            } else if (which == 1) {    /* dk[t] = sum_{i >= t} dS[i, t] q[i] */
                for (int q = t; q < T; q++) v += scratch[(bh * T + q) * T + t] * qkv[((long long)b * T + q) * 3 * C + c];
            } else {                    /* dv[t] = sum_{i >= t} P[i, t] dO[i] */
                for (int q = t; q < T; q++) v += att[(bh * T + q) * T + t] * dy[((long long)b * T + q) * C + c];
            }
            dqkv[i] = acc ? dqkv[i] + v : v;
        }
    }
}

/* part 0: append the new token's k, v at row pos; part 1: its query attends to rows 0..pos
 * (a thread per output element, online softmax in one pass over the keys) */
CU_D void cu_attention_decode(int part, f32p y, f32p kc, f32p vc, cf32p qkv, int pos, int C, int H) {
    int hd = C / H;
    if (part == 0) {
        CU_FOR(c, C) {
            kc[(long long)pos * C + c] = qkv[C + c];
            vc[(long long)pos * C + c] = qkv[2 * C + c];
        }
        return;
    }
    float scale = 1.0f / sqrtf((float)hd);
    CU_FOR(c, C) {
        long long h0 = (long long)(c / hd) * hd;
        float mx = -INFINITY, l = 0.0f, o = 0.0f;
        for (int j = 0; j <= pos; j++) {
            float s = 0.0f;
            for (int d = 0; d < hd; d++) s += qkv[h0 + d] * kc[(long long)j * C + h0 + d];
            s *= scale;
            float m2 = cu_maxf(mx, s), r = expf(mx - m2), e = expf(s - m2);
            l = l * r + e;
            o = o * r + e * vc[(long long)j * C + c];
            mx = m2;
        }
        y[c] = o / l;
    }
}
#endif
