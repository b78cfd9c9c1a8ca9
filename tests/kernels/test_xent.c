/* test_xent.c - softmax cross-entropy and distillation KL: forward against double references
 * (including extreme logits and ignored targets), backward against finite differences, in-place
 * backward, acc flag; the LM head fused with the cross-entropy (k_head_xent_*: tiles of rows
 * that do not divide S, both weight layouts) against a double reference and finite
 * differences in x. */
#include "k_xent.h"
#include "kt.h"

/* losses[s] = logsumexp(z_s) - z_s[t]; probs = softmax; ignored target -> 0 */
static void ref_xent(double *probs, double *losses, const double *z, const int32_t *tg, int S, int V) {
    for (int s = 0; s < S; s++) {
        const double *r = z + (long)s * V;
        double mx = r[0], sum = 0;
        for (int v = 1; v < V; v++) mx = r[v] > mx ? r[v] : mx;
        for (int v = 0; v < V; v++) sum += exp(r[v] - mx);
        if (probs)
            for (int v = 0; v < V; v++) probs[(long)s * V + v] = exp(r[v] - mx) / sum;
        losses[s] = (tg[s] >= 0 && tg[s] < V) ? log(sum) + mx - r[tg[s]] : 0.0;
    }
}
static void ref_logsoftmax(double *out, const double *z, double tau, int V) {
    double mx = z[0] / tau, sum = 0;
    for (int v = 1; v < V; v++) mx = z[v] / tau > mx ? z[v] / tau : mx;
    for (int v = 0; v < V; v++) sum += exp(z[v] / tau - mx);
    for (int v = 0; v < V; v++) out[v] = z[v] / tau - mx - log(sum);
}
static void ref_kd(double *kl, double *ps, double *pt, const double *zs, const double *zt, double tau, int S, int V) {
    double *ls = KT_NEW(double, V), *lt = KT_NEW(double, V);
    for (int s = 0; s < S; s++) {
        ref_logsoftmax(ls, zs + (long)s * V, tau, V);
        ref_logsoftmax(lt, zt + (long)s * V, tau, V);
        kl[s] = 0;
        for (int v = 0; v < V; v++) {
            kl[s] += exp(lt[v]) * (lt[v] - ls[v]);
            if (ps) ps[(long)s * V + v] = exp(ls[v]);
            if (pt) pt[(long)s * V + v] = exp(lt[v]);
        }
    }
    free(ls), free(lt);
}

typedef struct {
    int S, V, kd;
    const int32_t *tg;
    double *z, *zt, *tmp, scale, tau;
} xe_ctx;
static double xe_loss(void *p) {
    xe_ctx *c = p;
    double L = 0;
    if (c->kd)
        ref_kd(c->tmp, NULL, NULL, c->z, c->zt, c->tau, c->S, c->V);
    else
        ref_xent(NULL, c->tmp, c->z, c->tg, c->S, c->V);
    for (int s = 0; s < c->S; s++) L += c->scale * c->tmp[s];
    return L;
}

static void run_xent(int S, int V, float range, int fd) {
    KT_CASE("xent S=%d V=%d logit range %g", S, V, range);
    long n = (long)S * V;
    float *z = kt_rand(n, -range, range), *u = kt_rand(S, 0, 1);
    int32_t *tg = KT_NEW(int32_t, S);
    for (int s = 0; s < S; s++) tg[s] = (S > 2 && s == 1) ? -1 : (int32_t)(u[s] * V) % V; /* token 1 ignored */
    double *zd = kt_dbl(z, n), *rp = KT_NEW(double, n), *rl = KT_NEW(double, S);
    ref_xent(rp, rl, zd, tg, S, V);
    float *probs = kt_copy(z, n), *loss = kt_fill(S, NAN);
    double lm = 0.5, want_lm = 0.0; /* the statistics entry accumulates: starts at 0.5 here */
    k_xent_fwd(probs, loss, &lm, tg, S, V);
    kt_close("probs", probs, rp, n, 1e-5);
    kt_close("losses", loss, rl, S, 1e-5);
    for (int s = 0; s < S; s++) want_lm += rl[s];
    want_lm = 0.5 + want_lm / S;
    KT_EXPECT(fabs(lm - want_lm) <= 1e-5 * fabs(want_lm), "mean loss %.9g, want %.9g", lm, want_lm);

    float scale = 1.0f / S;
    double *g = KT_NEW(double, n);
    if (fd) {
        xe_ctx c = {S, V, 0, tg, zd, NULL, KT_NEW(double, S), scale, 1};
        kt_fd(g, zd, n, xe_loss, &c);
        free(c.tmp);
    } else
        for (int s = 0; s < S; s++)
            for (int v = 0; v < V; v++)
                g[(long)s * V + v] = (tg[s] < 0) ? 0 : scale * (rp[(long)s * V + v] - (v == tg[s]));
    float *dz = kt_fill(n, NAN);
    k_xent_bwd(dz, probs, tg, scale, S, V);
    kt_close("dlogits", dz, g, n, 1e-4);
    k_xent_bwd(probs, probs, tg, scale, S, V); /* in place */
    kt_bitwise("dlogits in place", probs, dz, sizeof(float) * n);
    free(z), free(u), free(tg), free(zd), free(rp), free(rl), free(probs), free(loss), free(g), free(dz);
}

static void run_kd(int S, int V, float tau, float range, int fd) {
    KT_CASE("kd S=%d V=%d tau=%g range %g", S, V, tau, range);
    long n = (long)S * V;
    float *zs = kt_rand(n, -range, range), *zt = kt_rand(n, -range, range);
    double *zsd = kt_dbl(zs, n), *ztd = kt_dbl(zt, n), *rps = KT_NEW(double, n), *rpt = KT_NEW(double, n);
    double *rkl = KT_NEW(double, S);
    ref_kd(rkl, rps, rpt, zsd, ztd, tau, S, V);
    float *kl = kt_fill(S, NAN), *ps = kt_fill(n, NAN), *pt = kt_fill(n, NAN);
    k_kd_fwd(kl, ps, pt, zs, zt, tau, S, V);
    kt_close("kl", kl, rkl, S, 1e-4);
    kt_close("ps", ps, rps, n, 1e-5);
    kt_close("pt", pt, rpt, n, 1e-5);
    /* the lowered form: pt over the teacher's logits in place, tau^2 x the mean kl into the record */
    float *ip = kt_copy(zt, n), *ips = kt_fill(n, NAN), *ikl = kt_fill(S, NAN);
    double kd = 0.25, want = 0.0;
    k_kd_loss_fwd(ips, ip, ikl, &kd, zs, tau, S, V);
    kt_bitwise("pt in place", ip, pt, sizeof(float) * n);
    kt_bitwise("ps (in-place form)", ips, ps, sizeof(float) * n);
    for (int s = 0; s < S; s++) want += rkl[s];
    want = 0.25 + (double)tau * tau * want / S;
    float kdf = (float)kd;
    kt_close("kd record", &kdf, &want, 1, 1e-5);
    free(ip), free(ips), free(ikl);

    float scale = 0.7f;
    double *g = KT_NEW(double, n);
    if (fd) {
        xe_ctx c = {S, V, 1, NULL, zsd, ztd, KT_NEW(double, S), scale, tau};
        kt_fd(g, zsd, n, xe_loss, &c);
        free(c.tmp);
    } else
        for (long i = 0; i < n; i++) g[i] = scale / tau * (rps[i] - rpt[i]);
    float *dz = kt_fill(n, NAN);
    k_kd_bwd(dz, ps, pt, scale, tau, S, V, 0);
    kt_close("dzs (acc=0)", dz, g, n, 1e-4);
    float *d1 = kt_rand(n, -1, 1);
    double *w1 = kt_plus(d1, g, n);
    k_kd_bwd(d1, ps, pt, scale, tau, S, V, 1);
    kt_close("dzs (acc=1)", d1, w1, n, 1e-4);
    k_kd_loss_bwd(d1, ps, pt, 2.0f, tau, scale * S / (2.0f * tau * tau), S, V, 0);   /* the same scale */
    kt_close("dzs (loss form)", d1, g, n, 1e-4);
    free(zs), free(zt), free(zsd), free(ztd), free(rps), free(rpt), free(rkl), free(kl), free(ps), free(pt), free(g);
    free(dz), free(d1), free(w1);
}

/* the head's logits z = x W in double (W [K,V], or [V,K] with transW) */
static void ref_head(double *z, const double *x, const double *W, int S, int K, int V, int transW) {
    for (int s = 0; s < S; s++)
        for (int v = 0; v < V; v++) {
            double a = 0;
            for (int k = 0; k < K; k++) a += x[(long)s * K + k] * (transW ? W[(long)v * K + k] : W[(long)k * V + v]);
            z[(long)s * V + v] = a;
        }
}
typedef struct {
    int S, K, V, transW;
    const int32_t *tg;
    const double *W;
    double *x, *z, *tmp, scale;
} hd_ctx;
static double hd_loss(void *p) {
    hd_ctx *c = p;
    ref_head(c->z, c->x, c->W, c->S, c->K, c->V, c->transW);
    ref_xent(NULL, c->tmp, c->z, c->tg, c->S, c->V);
    double L = 0;
    for (int s = 0; s < c->S; s++) L += c->scale * c->tmp[s];
    return L;
}

static void run_head(int S, int K, int V, int rows, int transW, int acc, int fd) {
    KT_CASE("head_xent S=%d K=%d V=%d rows=%d transW=%d acc=%d", S, K, V, rows, transW, acc);
    long nx = (long)S * K, nw = (long)K * V, nz = (long)S * V;
    float *x = kt_rand(nx, -1, 1), *W = kt_rand(nw, -1, 1), *u = kt_rand(S, 0, 1);
    int32_t *tg = KT_NEW(int32_t, S);
    for (int s = 0; s < S; s++) tg[s] = (S > 2 && s == 1) ? -1 : (int32_t)(u[s] * V) % V; /* token 1 ignored */
    double *xd = kt_dbl(x, nx), *Wd = kt_dbl(W, nw), *z = KT_NEW(double, nz), *rp = KT_NEW(double, nz);
    double *rl = KT_NEW(double, S), *rlse = KT_NEW(double, S);
    ref_head(z, xd, Wd, S, K, V, transW);
    ref_xent(rp, rl, z, tg, S, V);
    for (int s = 0; s < S; s++) rlse[s] = rl[s] + (tg[s] >= 0 ? z[(long)s * V + tg[s]] : 0);
    float *loss = kt_fill(S, NAN), *lse = kt_fill(S, NAN), *tile = kt_fill((long)rows * V, NAN);
    double lm = 0.5, want_lm = 0;
    k_head_xent_fwd(loss, lse, &lm, tile, x, W, tg, S, K, V, rows, transW);
    kt_close("losses", loss, rl, S, 1e-5);
    for (int s = 0; s < S; s++)
        if (tg[s] >= 0) KT_EXPECT(fabs(lse[s] - rlse[s]) <= 1e-5 * (1 + fabs(rlse[s])), "lse[%d] %g, want %g", s, lse[s], rlse[s]);
    for (int s = 0; s < S; s++) want_lm += rl[s];
    want_lm = 0.5 + want_lm / S;
    KT_EXPECT(fabs(lm - want_lm) <= 1e-5 * fabs(want_lm), "mean loss %.9g, want %.9g", lm, want_lm);

    /* backward: dx (acc: onto 0.25) and dW (onto 0.5) against g = scale (softmax - onehot) */
    float scale = 0.75f / S;
    double *g = KT_NEW(double, nz), *rdx = KT_NEW(double, nx), *rdW = KT_NEW(double, nw);
    for (int s = 0; s < S; s++)
        for (int v = 0; v < V; v++)
            g[(long)s * V + v] = tg[s] < 0 ? 0 : scale * (rp[(long)s * V + v] - (v == tg[s]));
    for (int s = 0; s < S; s++)
        for (int k = 0; k < K; k++) {
            double a = acc ? 0.25 : 0;
            for (int v = 0; v < V; v++) a += g[(long)s * V + v] * (transW ? Wd[(long)v * K + k] : Wd[(long)k * V + v]);
            rdx[(long)s * K + k] = a;
        }
    for (int k = 0; k < K; k++)
        for (int v = 0; v < V; v++) {
            double a = 0.5;
            for (int s = 0; s < S; s++) a += xd[(long)s * K + k] * g[(long)s * V + v];
            rdW[transW ? (long)v * K + k : (long)k * V + v] = a;
        }
    float *dx = kt_fill(nx, acc ? 0.25f : NAN), *dW = kt_fill(nw, 0.5f);
    k_head_xent_bwd(dx, dW, tile, x, W, tg, lse, 0.75f, S, K, V, rows, transW, acc);
    kt_close("dx", dx, rdx, nx, 1e-4);
    kt_close("dW", dW, rdW, nw, 1e-4);
    if (fd) {   /* dx against finite differences of the loss in x (acc = 0) */
        double *gx = KT_NEW(double, nx);
        hd_ctx c = {S, K, V, transW, tg, Wd, xd, z, KT_NEW(double, S), scale};
        kt_fd(gx, xd, nx, hd_loss, &c);
        if (acc)
            for (long i = 0; i < nx; i++) gx[i] += 0.25;
        kt_close("dx (finite differences)", dx, gx, nx, 1e-4);
        free(gx), free(c.tmp);
    }
    free(x), free(W), free(u), free(tg), free(xd), free(Wd), free(z), free(rp), free(rl), free(rlse);
    free(loss), free(lse), free(tile), free(g), free(rdx), free(rdW), free(dx), free(dW);
}

int main(void) {
    run_xent(1, 1, 3, 1);
    run_xent(3, 5, 3, 1);
    run_xent(4, 37, 5, 1);
    run_xent(2, 1100, 8, 1); /* crosses the 512-wide summation blocks */
    run_xent(5, 50, 150, 0); /* probabilities underflow, losses stay finite */
    run_xent(64, 2000, 10, 0); /* threaded */
    run_kd(1, 1, 1, 3, 1);
    run_kd(3, 7, 2.0f, 3, 1);
    run_kd(2, 600, 0.5f, 4, 1);
    run_kd(4, 40, 1.0f, 100, 0);
    run_kd(64, 1000, 3.0f, 6, 0);
    run_head(7, 5, 11, 3, 0, 0, 1);   /* 3 tiles, the last of 1 row */
    run_head(7, 5, 11, 3, 1, 1, 1);   /* the tied head's layout, dx added to */
    run_head(5, 4, 9, 8, 1, 0, 1);    /* one tile larger than S */
    run_head(300, 32, 700, 128, 0, 1, 0);   /* threaded, 3 tiles (the last of 44 rows) */
    return kt_report("test_xent");
}
