/* test_attn.c - causal attention, RoPE and KV-cache attention against double references, with
 * as many key/value heads as query heads and with fewer (grouped-query: KV < H).
 * Attention backward: finite differences on small shapes; a double analytic backward (itself
 * checked against finite differences here) for shapes too large for them. Every numbered
 * variant (tile shape) of the training kernels is checked. Built twice: with the default tiles
 * and with 3-row query blocks against 2-key tiles, which meet the diagonal at every offset
 * (see CMakeLists.txt). */
#include "k_attn.h"
#include "kt.h"

/* ---------- references */
/* qkv rows of W = C + 2 KV hd: q, then k and v of the KV key/value heads; head h reads kv head h/(H/KV) */
static void ref_attn(double *out, double *att, double *lse /* [B,T,H] */, const double *qkv, int B, int T, int C,
                     int H, int KV) {
    int hd = C / H, W = C + 2 * KV * hd;
    double scale = 1.0 / sqrt((double)hd), *p = KT_NEW(double, T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t1 = 0; t1 < T; t1++) {
                const double *q = qkv + ((long)b * T + t1) * W + h * hd;
                double mx = -INFINITY, sum = 0;
                for (int t2 = 0; t2 <= t1; t2++) {
                    const double *k = qkv + ((long)b * T + t2) * W + C + h / (H / KV) * hd;
                    double s = 0;
                    for (int d = 0; d < hd; d++) s += q[d] * k[d];
                    p[t2] = s * scale;
                    if (p[t2] > mx) mx = p[t2];
                }
                for (int t2 = 0; t2 <= t1; t2++) sum += (p[t2] = exp(p[t2] - mx));
                if (lse) lse[((long)b * T + t1) * H + h] = mx + log(sum);
                double *o = out + ((long)b * T + t1) * C + h * hd;
                for (int d = 0; d < hd; d++) o[d] = 0;
                for (int t2 = 0; t2 < T; t2++) {
                    double pr = t2 <= t1 ? p[t2] / sum : 0.0;
                    if (att) att[(((long)b * H + h) * T + t1) * T + t2] = pr;
                    const double *v = qkv + ((long)b * T + t2) * W + C + (KV + h / (H / KV)) * hd;
                    for (int d = 0; d < hd; d++) o[d] += pr * v[d];
                }
            }
    free(p);
}

/* the textbook backward, in double: dqkv from dout (R) */
static void ref_attn_bwd(double *dqkv, const double *R, const double *qkv, int B, int T, int C, int H, int KV) {
    int hd = C / H, W = C + 2 * KV * hd;
    double scale = 1.0 / sqrt((double)hd);
    double *att = KT_NEW(double, (long)B * H * T * T), *out = KT_NEW(double, (long)B * T * C), *dp = KT_NEW(double, T);
    ref_attn(out, att, NULL, qkv, B, T, C, H, KV);
    memset(dqkv, 0, sizeof(double) * B * T * W);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t1 = 0; t1 < T; t1++) {
                const double *P = att + (((long)b * H + h) * T + t1) * T, *dO = R + ((long)b * T + t1) * C + h * hd;
                long q1 = ((long)b * T + t1) * W + h * hd, kv = C + h / (H / KV) * hd;
                double dot = 0;
                for (int t2 = 0; t2 <= t1; t2++) {
                    const double *v = qkv + ((long)b * T + t2) * W + kv + KV * hd;
                    dp[t2] = 0;
                    for (int d = 0; d < hd; d++) dp[t2] += dO[d] * v[d];
                    dot += dp[t2] * P[t2];
                }
                for (int t2 = 0; t2 <= t1; t2++) {
                    long k2 = ((long)b * T + t2) * W + kv;
                    double ds = P[t2] * (dp[t2] - dot) * scale;
                    for (int d = 0; d < hd; d++) {
                        dqkv[q1 + d] += ds * qkv[k2 + d];
                        dqkv[k2 + d] += ds * qkv[q1 + d];
                        dqkv[k2 + KV * hd + d] += P[t2] * dO[d];
                    }
                }
            }
    free(att), free(out), free(dp);
}

static void ref_rope(double *out, const double *x, int B, int T, int C, int H, int KV, int pos0) {
    int hd = C / H, half = hd / 2, W = C + 2 * KV * hd;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            long r = ((long)b * T + t) * W;
            for (int c = 0; c < W; c++) out[r + c] = x[r + c];
            for (int part = 0; part < 2; part++)
                for (int h = 0; h < (part ? KV : H); h++)
                    for (int i = 0; i < half; i++) {
                        double inv_freq = 1.0 / pow(10000.0, (double)(2 * i) / hd), a = (pos0 + t) * inv_freq;
                        long o = r + part * C + h * hd + i;
                        double x1 = x[o], x2 = x[o + half]; /* rotate_half: (-x2, x1) */
                        out[o] = x1 * cos(a) - x2 * sin(a);
                        out[o + half] = x2 * cos(a) + x1 * sin(a);
                    }
        }
}

typedef struct {
    int B, T, C, H, KV, pos0, rope;
    double *qkv, *R, *out;
} at_ctx;
static double at_loss(void *p) {
    at_ctx *c = p;
    long n = (long)c->B * c->T * (c->rope ? c->C + 2 * c->KV * (c->C / c->H) : c->C);
    if (c->rope)
        ref_rope(c->out, c->qkv, c->B, c->T, c->C, c->H, c->KV, c->pos0);
    else
        ref_attn(c->out, NULL, NULL, c->qkv, c->B, c->T, c->C, c->H, c->KV);
    return kt_dot(c->out, c->R, n);
}

/* ---------- attention forward + backward */
static void run_attn(int B, int T, int C, int H, int KV, int fd) {
    KT_CASE("attention B=%d T=%d C=%d H=%d KV=%d tiles=%dx%d", B, T, C, H, KV, K_ATTN_QBLOCK, K_ATTN_KBLOCK);
    long nq = (long)B * T * (C + 2 * KV * (C / H)), no = (long)B * T * C, nl = (long)B * T * H;
    float *qkv = kt_rand(nq, -2, 2), *R = kt_rand(no, -1, 1), *out = kt_fill(no, NAN), *lse = kt_fill(nl, NAN);
    at_ctx c = {B, T, C, H, KV, 0, 0, kt_dbl(qkv, nq), kt_dbl(R, no), KT_NEW(double, no)};
    double *rlse = KT_NEW(double, nl);
    k_attention_fwd(out, lse, qkv, B, T, C, H, KV);
    ref_attn(c.out, NULL, rlse, c.qkv, B, T, C, H, KV);
    kt_close("out", out, c.out, no, 1e-5);
    kt_close("lse", lse, rlse, nl, 1e-6);

    double *g = KT_NEW(double, nq), *ga = KT_NEW(double, nq);
    ref_attn_bwd(ga, c.R, c.qkv, B, T, C, H, KV);
    if (fd) { /* also validates the analytic reference */
        kt_fd(g, c.qkv, nq, at_loss, &c);
        float *gf = KT_NEW(float, nq);
        for (long i = 0; i < nq; i++) gf[i] = (float)ga[i];
        kt_close("reference backward vs finite differences", gf, g, nq, 1e-6);
        free(gf);
    } else
        memcpy(g, ga, sizeof(double) * nq);

    float *dqkv = kt_fill(nq, NAN), *scratch = kt_fill(nl, NAN);
    k_attention_bwd(dqkv, scratch, R, qkv, out, lse, B, T, C, H, KV, 0);
    kt_close("dqkv (acc=0)", dqkv, g, nq, 1e-4);
    float *d1 = kt_rand(nq, -1, 1);
    double *w1 = kt_plus(d1, g, nq);
    k_attention_bwd(d1, scratch, R, qkv, out, lse, B, T, C, H, KV, 1);
    kt_close("dqkv (acc=1)", d1, w1, nq, 1e-4);
    for (int v = 2; v <= K_ATTN_VARIANTS; v++) { /* the other tiles: the same function */
        char what[64];
        k_attention_fwd_tiles(out, lse, qkv, B, T, C, H, KV, K_ATTN_QB(v), K_ATTN_KB(v));
        snprintf(what, sizeof what, "v%d (%dx%d tiles): out", v, K_ATTN_QB(v), K_ATTN_KB(v));
        kt_close(what, out, c.out, no, 1e-5);
        snprintf(what, sizeof what, "v%d: lse", v);
        kt_close(what, lse, rlse, nl, 1e-6);
        k_attention_bwd_tiles(dqkv, scratch, R, qkv, out, lse, B, T, C, H, KV, 0, K_ATTN_QB(v), K_ATTN_KB(v));
        snprintf(what, sizeof what, "v%d: dqkv", v);
        kt_close(what, dqkv, g, nq, 1e-4);
    }
    free(qkv), free(R), free(out), free(lse), free(c.qkv), free(c.R), free(c.out), free(rlse), free(g), free(ga);
    free(dqkv), free(scratch), free(d1), free(w1);
}

/* ---------- RoPE */
static void run_rope(int B, int T, int C, int H, int KV, int pos0) {
    KT_CASE("rope B=%d T=%d C=%d H=%d KV=%d pos0=%d", B, T, C, H, KV, pos0);
    int W = C + 2 * KV * (C / H);
    long n = (long)B * T * W;
    float *x = kt_rand(n, -2, 2), *R = kt_rand(n, -1, 1), *y = kt_fill(n, NAN);
    at_ctx c = {B, T, C, H, KV, pos0, 1, kt_dbl(x, n), kt_dbl(R, n), KT_NEW(double, n)};
    /* with pos0, every row's position given (generation), each sequence 5 further on */
    int32_t *pos = KT_NEW(int32_t, (long)B * T);
    for (int s = 0; s < B * T; s++) pos[s] = pos0 + s % T + 5 * (s / T);
    k_rope_fwd(y, x, pos0 ? pos : NULL, B, T, C, H, KV);
    for (int s = 0; s < B * T; s++)
        ref_rope(c.out + (long)s * W, c.qkv + (long)s * W, 1, 1, C, H, KV, pos0 ? pos[s] : s % T);
    kt_close("out", y, c.out, n, 2e-6);
    float *y2 = kt_copy(x, n);
    k_rope_fwd(y2, y2, pos0 ? pos : NULL, B, T, C, H, KV);
    kt_bitwise("out in place", y, y2, (size_t)n * sizeof(float));
    free(pos);
    if (pos0) { /* the backward is training's: positions from 0 */
        free(x), free(R), free(y), free(c.qkv), free(c.R), free(c.out), free(y2);
        return;
    }
    double *g = KT_NEW(double, n);
    if (n <= 600) /* linear: finite differences are exact up to rounding */
        kt_fd(g, c.qkv, n, at_loss, &c);
    else { /* rope is orthogonal: the gradient is the inverse rotation of R */
        for (int b = 0; b < B; b++) /* rotate R by -angle: ref_rope with negated positions */
            for (int t = 0; t < T; t++) {
                long r = ((long)b * T + t) * W;
                double *tmp = KT_NEW(double, W);
                ref_rope(tmp, c.R + r, 1, 1, C, H, KV, -(pos0 + t));
                memcpy(g + r, tmp, sizeof(double) * W);
                free(tmp);
            }
    }
    float *dx = kt_fill(n, NAN);
    k_rope_bwd(dx, R, B, T, C, H, KV, 0);
    kt_close("dqkv (acc=0)", dx, g, n, 1e-5);
    float *d1 = kt_rand(n, -1, 1);
    double *w1 = kt_plus(d1, g, n);
    k_rope_bwd(d1, R, B, T, C, H, KV, 1);
    kt_close("dqkv (acc=1)", d1, w1, n, 1e-5);
    free(x), free(R), free(y), free(c.qkv), free(c.R), free(c.out), free(y2), free(g), free(dx), free(d1), free(w1);
}

/* ---------- KV cache: prefill p tokens (scratch GEMM path), then one token at a time through
 * k_attention_decode (which appends its k, v to the caches), then p..T in one chunk; every row
 * must match the full forward's */
static void run_cached(int T, int C, int H, int KV, int p) {
    KT_CASE("cached T=%d C=%d H=%d KV=%d prefill=%d", T, C, H, KV, p);
    int CK = KV * (C / H), W = C + 2 * CK;
    long nq = (long)T * W;
    float *qkv = kt_rand(nq, -2, 2), *full = KT_NEW(float, (long)T * C), *lse = KT_NEW(float, (long)T * H);
    float *kc = kt_fill((long)T * CK, NAN), *vc = kt_fill((long)T * CK, NAN), *out = kt_fill((long)T * C, NAN);
    float *scratch = kt_fill(K_ATTN_CACHED_SCRATCH(T, 0, H), NAN);
    for (int t = 0; t < p; t++) {
        memcpy(kc + (long)t * CK, qkv + (long)t * W + C, sizeof(float) * CK);
        memcpy(vc + (long)t * CK, qkv + (long)t * W + C + CK, sizeof(float) * CK);
    }
    k_attention_fwd(full, lse, qkv, 1, T, C, H, KV);
    double *want = kt_dbl(full, (long)T * C);
    k_attention_cached(out, qkv, W, kc, vc, p, 0, C, H, KV, scratch);
    kt_close("prefill rows", out, want, (long)p * C, 1e-5);
    for (int32_t t = p, slot0 = 0; t < T; t++)
        k_attention_decode(out + (long)t * C, kc, vc, qkv + (long)t * W, &t, &slot0, 1, 0, C, H, KV);
    kt_close("decoded rows", out + (long)p * C, want + (long)p * C, (long)(T - p) * C, 1e-5);
    float *out2 = kt_fill((long)T * C, NAN);
    k_attention_cached(out2, qkv + (long)p * W, W, kc, vc, T - p, p, C, H, KV, scratch);
    kt_close("chunk after prefill", out2, want + (long)p * C, (long)(T - p) * C, 1e-5);
    free(qkv), free(full), free(lse), free(kc), free(vc), free(out), free(want), free(out2), free(scratch);
}

/* ---------- decoding three sequences of lengths T, T-1, T-2 together, a row each, in cache
 * slots 2, 0, 1: every row against its own sequence's full forward */
static void run_decode_rows(int T, int C, int H, int KV) {
    KT_CASE("decode rows T=%d C=%d H=%d KV=%d", T, C, H, KV);
    int CK = KV * (C / H), W = C + 2 * CK, slot_of[3] = {2, 0, 1};
    long slot_floats = (long)T * CK + 8;     /* the stride need not be the cache's extent */
    float *qkv[3], *want[3], *got[3], *lse = KT_NEW(float, (long)T * H);
    float *kc = kt_fill(3 * slot_floats, NAN), *vc = kt_fill(3 * slot_floats, NAN);
    for (int j = 0; j < 3; j++) {
        qkv[j] = kt_rand((long)T * W, -2, 2);
        want[j] = KT_NEW(float, (long)T * C);
        got[j] = kt_fill((long)T * C, NAN);
        k_attention_fwd(want[j], lse, qkv[j], 1, T - j, C, H, KV);
    }
    float *rows = KT_NEW(float, 3L * W), *out = KT_NEW(float, 3L * C);
    for (int t = 0; t < T; t++) {
        int32_t pos[3], slot[3], seq[3], S = 0;
        for (int j = 0; j < 3; j++) {
            if (t >= T - j) continue;
            memcpy(rows + (long)S * W, qkv[j] + (long)t * W, sizeof(float) * W);
            pos[S] = t, slot[S] = slot_of[j], seq[S++] = j;
        }
        k_attention_decode(out, kc, vc, rows, pos, slot, S, slot_floats, C, H, KV);
        for (int r = 0; r < S; r++) memcpy(got[seq[r]] + (long)t * C, out + (long)r * C, sizeof(float) * C);
    }
    for (int j = 0; j < 3; j++) {
        double *w = kt_dbl(want[j], (long)(T - j) * C);
        kt_close("rows", got[j], w, (long)(T - j) * C, 1e-5);
        free(w), free(qkv[j]), free(want[j]), free(got[j]);
    }
    free(lse), free(kc), free(vc), free(rows), free(out);
}

int main(void) {
    run_decode_rows(6, 8, 2, 2);
    run_decode_rows(9, 12, 6, 2);
    /* B, T, C, H, KV: T = 1, H = 1, odd head dims, several blocks of 3 rows in the blocked build;
     * KV < H: grouped-query (KV = 1: multi-query) */
    static const int small[][5] = {{1, 1, 4, 1, 1},  {2, 5, 8, 2, 2},  {1, 7, 6, 3, 3}, {2, 3, 12, 1, 1},
                                   {1, 10, 8, 2, 2}, {3, 4, 10, 5, 5}, {1, 12, 8, 1, 1}, /* B*H = 1: in turn, BLAS threads */
                                   {2, 5, 8, 2, 1},  {1, 7, 12, 6, 2}, {3, 4, 12, 4, 2}};
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++)
        run_attn(small[i][0], small[i][1], small[i][2], small[i][3], small[i][4], 1);
    run_attn(4, 40, 32, 4, 4, 0);  /* heads spread over threads */
    run_attn(4, 40, 32, 4, 2, 0);  /* key/value groups spread over threads */
    run_attn(1, 150, 128, 2, 2, 0); /* several query tiles of the default size, threaded GEMMs */
    run_attn(1, 150, 128, 4, 1, 0);
    run_attn(2, 131, 24, 3, 3, 0);
    run_attn(2, 200, 32, 2, 1, 0);  /* four key tiles of the default size, the last one short */

    static const int rope[][6] = {{1, 1, 4, 1, 1, 0},   {2, 5, 8, 2, 2, 0},   {1, 3, 12, 3, 3, 7}, {2, 4, 128, 1, 1, 1000},
                                  {1, 2, 260, 1, 1, 3}, {3, 50, 64, 4, 4, 11}, {2, 5, 16, 4, 2, 3}, {3, 50, 64, 4, 1, 11}};
    for (size_t i = 0; i < sizeof rope / sizeof rope[0]; i++)
        run_rope(rope[i][0], rope[i][1], rope[i][2], rope[i][3], rope[i][4], rope[i][5]);

    static const int cached[][5] = {{1, 4, 1, 1, 1},    {20, 8, 2, 2, 1},  {20, 8, 2, 2, 5},   {20, 8, 2, 2, 17},
                                    {40, 12, 3, 3, 16}, {150, 16, 2, 2, 130}, {9, 6, 3, 3, 9},
                                    {600, 8, 2, 2, 590}, /* decode over several key chunks */
                                    {20, 16, 4, 2, 5},  {40, 12, 3, 1, 17}, {150, 16, 4, 2, 130}};
    for (size_t i = 0; i < sizeof cached / sizeof cached[0]; i++)
        run_cached(cached[i][0], cached[i][1], cached[i][2], cached[i][3], cached[i][4]);
    char name[64];
    snprintf(name, sizeof name, "test_attn (tiles %dx%d)", K_ATTN_QBLOCK, K_ATTN_KBLOCK);
    return kt_report(name);
}
