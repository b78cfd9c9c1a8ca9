/* test_moe.c - the MoE kernels (kernels/cpu/k_moe.h) on their own:
 *   1. finite-difference checks of every gradient of a small MoE layer
 *      (gate -> dispatch -> expert -> combine with the PR-MoE mix, plus l_aux and z),
 *      for top-1, top-2 and top-3, with tokens dropped;
 *   2. the random features by their statistics: Gumbel sampling (rsample, second
 *      expert) follows the softmax, random token selection keeps a uniform subset,
 *      jitter multipliers are U(1 - 1e-2, 1 + 1e-2); and all of them off in eval and grad.
 */
#include "k_moe.h"
#include <stdio.h>

static int failures;
#define CHECK(c, ...) do { if (!(c)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

enum { S = 12, D = 6, E = 4, F = 5 };

/* the gate's records (moe_abi.h) for up to GS tokens, GE experts, state rows GWMAX wide */
enum { GS = 64, GE = 4, GWMAX = 2 * GE + 16 };
typedef struct gate_buf {
    int32_t route[GS * 2 * 3], counts[MOE_COUNTS_LEN(GE)];
    float weights[GS * 3], gs[GS * GWMAX];
    double stats[4], loads[GE], scratch[MOE_GATE_SCRATCH(GS, GE)];
} gate_buf;

/* one gate forward; the statistics are cleared first (the kernel adds to them) */
static void gate(gate_buf *b, const float *x, const float *wg, int s, int d, int e, int gw, const k_gate_cfg *g) {
    memset(b->stats, 0, sizeof b->stats);
    memset(b->loads, 0, sizeof b->loads);
    k_moe_gate(b->route, b->weights, b->gs, b->counts, b->stats, b->loads, b->scratch, x, wg, s, d, e, gw, g);
}

typedef struct layer {
    int k;
    float x[S * D], wg[D * E], w1[E * D * F], b1[E * F], w2[E * F * D], b2[E * D];
    float coef_w[D * 2], mlp[S * D], R[S * D];   /* residual mix inputs; R weights the loss */
    float aux_coef, z_coef;
} layer;

typedef struct fwd {
    gate_buf g;
    float xd[S * 3 * D], h[S * 3 * F], yd[S * 3 * D], coef[S * 2], y[S * D];
} fwd;

static k_gate_cfg cfg(int k, int mode) {
    k_gate_cfg g = {k, mode, 1, MOE_NOISE_NONE, 0, 0, 1, 0.6, 0.6, 99};
    return g;
}

static double forward(const layer *L, fwd *o) {
    k_gate_cfg g = cfg(L->k, MOE_MODE_GRAD);
    gate(&o->g, L->x, L->wg, S, D, E, 2 * E, &g);
    k_moe_dispatch_fwd(o->xd, L->x, o->g.route, S, D, L->k);
    k_moe_expert_fwd(o->h, o->xd, L->w1, L->b1, o->g.counts, E, D, F, 1);
    k_moe_expert_fwd(o->yd, o->h, L->w2, L->b2, o->g.counts, E, F, D, 2);
    for (int s = 0; s < S; s++)
        for (int c = 0; c < 2; c++) {
            float a = 0;
            for (int i = 0; i < D; i++) a += L->x[s * D + i] * L->coef_w[i * 2 + c];
            o->coef[s * 2 + c] = a;
        }
    k_moe_combine_fwd(o->y, o->yd, o->g.route, o->g.weights, NULL, o->coef, L->mlp, S, D, L->k);
    double loss = 0;
    for (int i = 0; i < S * D; i++) loss += (double)L->R[i] * o->y[i];
    return loss + L->aux_coef * o->g.stats[MOE_STAT_AUX] + L->z_coef * o->g.stats[MOE_STAT_Z];
}

static int same_routing(const fwd *a, const fwd *b, int k) {
    for (int s = 0; s < S; s++)
        for (int j = 0; j < 2 * k; j++)
            if (a->g.route[s * 2 * k + j] != b->g.route[s * 2 * k + j]) return 0;
    return 1;
}

static uint64_t rng = 12345;
static float frand(void) { rng = moe_mix64(rng); return (float)((double)(rng >> 11) / 9007199254740992.0 * 2 - 1); }

static void fd_check(int k) {
    layer L = {0};
    L.k = k;
    L.aux_coef = 0.1f; L.z_coef = 0.05f;
    float *all[] = {L.x, L.wg, L.w1, L.b1, L.w2, L.b2, L.coef_w, L.mlp, L.R};
    int sizes[] = {S * D, D * E, E * D * F, E * F, E * F * D, E * D, D * 2, S * D, S * D};
    for (int a = 0; a < 9; a++) for (int i = 0; i < sizes[a]; i++) all[a][i] = frand();
    static fwd o;
    forward(&L, &o);
    CHECK(o.g.stats[MOE_STAT_DROPPED] > 0, "top-%d: the FD case should drop tokens", k);
    /* analytic gradients, backward through the same kernels */
    float dy[S * D], dyd[S * 3 * D], dw[S * 3], dcoef[S * 2], dmlp[S * D], dh[S * 3 * F], dxd[S * 3 * D];
    float dx[S * D] = {0}, dwg[D * E] = {0}, dw1[E * D * F] = {0}, db1[E * F] = {0}, dw2[E * F * D] = {0},
          db2[E * D] = {0}, dcw[D * 2] = {0}, dlg[S * E];
    memcpy(dy, L.R, sizeof dy);
    k_moe_combine_bwd(dyd, dw, NULL, dcoef, dmlp, dy, o.yd, o.g.route, o.g.weights, o.coef, L.mlp, S, D, k, 0, 0);
    k_moe_expert_bwd(dh, dw2, db2, dyd, o.h, L.w2, o.g.counts, E, F, D, 0, 1);
    k_moe_expert_bwd(dxd, dw1, db1, dh, o.xd, L.w1, o.g.counts, E, D, F, 0, 2);
    k_moe_dispatch_bwd(dx, dxd, o.g.route, S, D, k, 0);
    k_moe_gate_bwd(dx, dwg, dlg, dw, o.g.route, o.g.weights, o.g.gs, o.g.counts, L.x, L.wg, S, D, E, 2 * E, k,
                   L.aux_coef, L.z_coef, 1.0f, 1);
    for (int s = 0; s < S; s++)
        for (int i = 0; i < D; i++)
            for (int c = 0; c < 2; c++) {
                dcw[i * 2 + c] += L.x[s * D + i] * dcoef[s * 2 + c];
                dx[s * D + i] += dcoef[s * 2 + c] * L.coef_w[i * 2 + c];
            }
    const char *names[] = {"x", "W_gate", "W_fc", "b_fc", "W_proj", "b_proj", "W_coef", "mlp"};
    float *grads[] = {dx, dwg, dw1, db1, dw2, db2, dcw, dmlp};
    for (int a = 0; a < 8; a++) {
        double worst = 0, scale = 1e-3;
        for (int i = 0; i < sizes[a]; i++) {
            float keep = all[a][i], h = 1e-3f;
            static fwd p, m;
            all[a][i] = keep + h; double lp = forward(&L, &p);
            all[a][i] = keep - h; double lm = forward(&L, &m);
            all[a][i] = keep;
            if (!same_routing(&p, &o, k) || !same_routing(&m, &o, k)) continue;  /* a decision flipped */
            double fd = (lp - lm) / (2 * h), an = grads[a][i];
            double err = fabs(fd - an);
            if (err > worst) worst = err;
            if (fabs(an) > scale) scale = fabs(an);
        }
        if (getenv("MOE_TEST_VERBOSE")) printf("top-%d %-7s rel %.2e\n", k, names[a], worst / scale);
        CHECK(worst <= 2e-3 * scale, "top-%d: d loss / d %s: finite differences differ by %.3g (scale %.3g)", k, names[a],
              worst, scale);
    }
}

/* one token's routing under a given mode and stream */
static void route_one(const float *logit_w, int k, int mode, int noise, int sampling, uint64_t stream, int32_t *choice) {
    float x[1] = {1.0f};
    static gate_buf b;
    k_gate_cfg g = {k, mode, 1, noise, 0, sampling, 4, 1.0, 1.0, stream};
    gate(&b, x, logit_w, 1, 1, E, 2 * E, &g);
    for (int j = 0; j < k; j++) choice[j] = b.route[j];
}

static void statistics(void) {
    const float logits[E] = {0.5f, 1.5f, -0.3f, 1.0f};
    double p[E], sum = 0;
    for (int e = 0; e < E; e++) sum += p[e] = exp(logits[e]);
    for (int e = 0; e < E; e++) p[e] /= sum;
    const int N = 20000;
    /* rsample: argmax of logits + Gumbel noise is a sample of softmax(logits) */
    int hits[E] = {0}, second[E] = {0};
    for (int n = 0; n < N; n++) {
        int32_t c[2];
        route_one(logits, 1, MOE_MODE_TRAIN, MOE_NOISE_RSAMPLE, 0, moe_rng_stream(1, (uint64_t)n, 0), c);
        hits[c[0]]++;
        route_one(logits, 2, MOE_MODE_TRAIN, MOE_NOISE_NONE, 1, moe_rng_stream(2, (uint64_t)n, 0), c);
        CHECK(c[0] == 1, "top-2 first choice must be the argmax");
        second[c[1]]++;
    }
    for (int e = 0; e < E; e++) {
        double f = (double)hits[e] / N, sd = sqrt(p[e] * (1 - p[e]) / N);
        CHECK(fabs(f - p[e]) < 5 * sd, "rsample: expert %d chosen %.4f of the time, softmax says %.4f", e, f, p[e]);
        double q = e == 1 ? 0 : p[e] / (1 - p[1]), f2 = (double)second[e] / N, sd2 = sqrt(q * (1 - q) / N) + 1e-9;
        CHECK(fabs(f2 - q) < 5 * sd2, "second expert %d sampled %.4f of the time, expected %.4f", e, f2, q);
    }
    /* off in eval and grad: always the argmax (and the second-largest) */
    for (int mode = MOE_MODE_EVAL; mode <= MOE_MODE_GRAD; mode++)
        for (int n = 0; n < 50; n++) {
            int32_t c[2];
            route_one(logits, 1, mode, MOE_NOISE_RSAMPLE, 0, (uint64_t)n, c);
            CHECK(c[0] == 1, "rsample must be off in mode %d", mode);
            route_one(logits, 2, mode, MOE_NOISE_NONE, 1, (uint64_t)n, c);
            CHECK(c[0] == 1 && c[1] == 3, "second-expert sampling must be off in mode %d", mode);
        }

    /* random token selection: 40 tokens all choose expert 0 of 2; capacity C = ceil(40/2 * 0.5) = 10 */
    enum { T = 40, E2 = 2 };
    float x[T], wg[E2] = {2.0f, -2.0f};
    for (int s = 0; s < T; s++) x[s] = 1.0f + 0.01f * s;
    int kept[T] = {0};
    const int R = 4000;
    static gate_buf b;
    for (int r = 0; r < R; r++) {
        k_gate_cfg g = {1, MOE_MODE_TRAIN, 1, MOE_NOISE_NONE, 1, 0, 1, 0.5, 0.5, moe_rng_stream(3, (uint64_t)r, 0)};
        gate(&b, x, wg, T, 1, E2, 2 * E2, &g);
        CHECK(b.counts[MOE_CNT(E2)] == 10 && b.counts[MOE_CAP(E2)] == 10, "rts: expert 0 keeps %d of capacity %d",
              b.counts[MOE_CNT(E2)], b.counts[MOE_CAP(E2)]);
        int last = -1;
        for (int s = 0; s < T; s++) {
            int row = b.route[s * 2 + 1];
            if (row >= 0) { kept[s]++; CHECK(row == last + 1, "rts: slots must follow token order"); last = row; }
        }
    }
    for (int s = 0; s < T; s++) {
        double f = (double)kept[s] / R, q = 10.0 / T, sd = sqrt(q * (1 - q) / R);
        CHECK(fabs(f - q) < 5 * sd, "rts: token %d kept %.3f of the time, uniform is %.3f", s, f, q);
    }
    /* without rts (and in eval/grad even with it) the lowest token indices are kept */
    for (int mode = MOE_MODE_TRAIN; mode <= MOE_MODE_GRAD; mode++) {
        k_gate_cfg g = {1, mode, 1, MOE_NOISE_NONE, mode != MOE_MODE_TRAIN, 0, 1, 0.5, 0.5, 77};
        gate(&b, x, wg, T, 1, E2, 2 * E2, &g);
        int C = b.counts[MOE_CAP(E2)];
        for (int s = 0; s < T; s++)
            CHECK((b.route[s * 2 + 1] >= 0) == (s < C), "mode %d: token %d kept wrongly", mode, s);
    }

    /* jitter: multipliers U(1-1e-2, 1+1e-2) in training, exactly 1 (no noise) otherwise */
    enum { SJ = 64, DJ = 16 };
    static float xj[SJ * DJ], wj[DJ * E];
    for (int i = 0; i < SJ * DJ; i++) xj[i] = frand();
    for (int i = 0; i < DJ * E; i++) wj[i] = frand();
    int W = 2 * E + DJ;
    double m1 = 0, m2 = 0, lo = 2, hi = 0;
    k_gate_cfg g = {1, MOE_MODE_TRAIN, 1, MOE_NOISE_JITTER, 0, 0, 4, 1.0, 1.0, 5};
    gate(&b, xj, wj, SJ, DJ, E, W, &g);
    for (int s = 0; s < SJ; s++)
        for (int i = 0; i < DJ; i++) {
            double v = b.gs[s * W + MOE_GS_JITTER(E) + i];
            m1 += v; m2 += v * v; lo = v < lo ? v : lo; hi = v > hi ? v : hi;
        }
    int n = SJ * DJ;
    double mean = m1 / n, var = m2 / n - mean * mean;
    CHECK(lo >= 0.99 && hi <= 1.01, "jitter outside [0.99, 1.01]: %.5f %.5f", lo, hi);
    CHECK(fabs(mean - 1) < 5 * 0.02 / sqrt(12.0 * n), "jitter mean %.6f", mean);
    CHECK(fabs(sqrt(var) - 0.02 / sqrt(12.0)) < 0.1 * 0.02 / sqrt(12.0), "jitter std %.6f", sqrt(var));
    for (int mode = MOE_MODE_EVAL; mode <= MOE_MODE_GRAD; mode++) {
        g.mode = mode;
        gate(&b, xj, wj, SJ, DJ, E, W, &g);
        int ones = 1;
        for (int s = 0; s < SJ; s++)
            for (int i = 0; i < DJ; i++) ones &= b.gs[s * W + MOE_GS_JITTER(E) + i] == 1.0f;
        CHECK(ones, "jitter must be off in mode %d", mode);
    }
}

int main(void) {
    for (int k = 1; k <= 3; k++) fd_check(k);
    statistics();
    printf("%d failed\n", failures);
    return failures != 0;
}
