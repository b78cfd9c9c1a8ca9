/* test_embed.c - token + position embedding: forward against a double reference (with pos0
 * and without wpe), backward against finite differences (repeated tokens), += semantics,
 * determinism across thread counts. */
#include "k_embed.h"
#include "kt.h"

typedef struct {
    int B, T, C, pos0;
    const int32_t *tok;
    double *wte, *wpe, *R, *x; /* wpe may be NULL */
} em_ctx;

static void ref_embed(double *x, const int32_t *tok, const double *wte, const double *wpe, int B, int T, int C, int pos0) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++) {
                long s = (long)b * T + t;
                x[s * C + c] = wte[(long)tok[s] * C + c] + (wpe ? wpe[(long)(pos0 + t) * C + c] : 0.0);
            }
}
static double em_loss(void *p) {
    em_ctx *c = p;
    ref_embed(c->x, c->tok, c->wte, c->wpe, c->B, c->T, c->C, c->pos0);
    return kt_dot(c->x, c->R, (long)c->B * c->T * c->C);
}

static int32_t *rand_tokens(long n, int V) {
    float *u = kt_rand(n, 0, 1);
    int32_t *tok = KT_NEW(int32_t, n);
    for (long i = 0; i < n; i++) tok[i] = (int32_t)(u[i] * V) % V;
    free(u);
    return tok;
}

static void run_case(int B, int T, int C, int V, int use_wpe, int pos0) {
    KT_CASE("embed B=%d T=%d C=%d V=%d wpe=%d pos0=%d", B, T, C, V, use_wpe, pos0);
    long S = (long)B * T, n = S * C, maxT = pos0 + T;
    int32_t *tok = rand_tokens(S, V); /* V small: tokens repeat */
    float *wte = kt_rand((long)V * C, -1, 1), *wpe = use_wpe ? kt_rand(maxT * C, -1, 1) : NULL;
    float *R = kt_rand(n, -1, 1), *x = kt_fill(n, NAN);
    em_ctx c = {B, T, C, pos0, tok, kt_dbl(wte, (long)V * C), use_wpe ? kt_dbl(wpe, maxT * C) : NULL, kt_dbl(R, n),
                KT_NEW(double, n)};
    int32_t *pos = KT_NEW(int32_t, S);    /* generation: every row's position given, pos0 + t */
    for (long s = 0; s < S; s++) pos[s] = pos0 + (int32_t)(s % T);
    k_embed_fwd(x, tok, wte, wpe, pos0 ? pos : NULL, B, T, C);
    ref_embed(c.x, tok, c.wte, c.wpe, B, T, C, pos0);
    kt_close("x", x, c.x, n, 1e-7);
    free(pos);

    if (pos0 == 0) { /* the backward is for training, positions from 0 */
        double *gte = KT_NEW(double, (long)V * C), *gpe = KT_NEW(double, maxT * C);
        kt_fd(gte, c.wte, (long)V * C, em_loss, &c);
        if (use_wpe) kt_fd(gpe, c.wpe, maxT * C, em_loss, &c);
        float *dte0 = kt_rand((long)V * C, -1, 1), *dpe0 = kt_rand(maxT * C, -1, 1);
        float *dte = kt_copy(dte0, (long)V * C), *dpe = kt_copy(dpe0, maxT * C);
        k_embed_bwd(dte, use_wpe ? dpe : NULL, R, tok, B, T, C);
        double *wte_want = kt_plus(dte0, gte, (long)V * C), *wpe_want = kt_plus(dpe0, gpe, maxT * C);
        kt_close("dwte (+=)", dte, wte_want, (long)V * C, 1e-6);
        if (use_wpe)
            kt_close("dwpe (+=)", dpe, wpe_want, maxT * C, 1e-6);
        else
            kt_bitwise("dwpe untouched", dpe, dpe0, sizeof(float) * maxT * C);
        free(gte), free(gpe), free(dte0), free(dpe0), free(dte), free(dpe), free(wte_want), free(wpe_want);
    }
    free(tok), free(wte), free(wpe), free(R), free(x), free(c.wte), free(c.wpe), free(c.R), free(c.x);
}

static void run_threads(void) {
    int B = 8, T = 64, C = 200, V = 50;
    KT_CASE("embed threads B=%d T=%d C=%d V=%d", B, T, C, V);
    long S = (long)B * T;
    int32_t *tok = rand_tokens(S, V);
    float *dx = kt_rand(S * C, -1, 1), *dte[2], *dpe[2];
    int nt = omp_get_max_threads();
    for (int r = 0; r < 2; r++) {
        omp_set_num_threads(r == 0 ? 1 : (nt > 1 ? nt : 2));
        dte[r] = kt_fill((long)V * C, 0), dpe[r] = kt_fill((long)T * C, 0);
        k_embed_bwd(dte[r], dpe[r], dx, tok, B, T, C);
    }
    omp_set_num_threads(nt);
    kt_bitwise("dwte 1 thread vs several", dte[0], dte[1], sizeof(float) * V * C);
    kt_bitwise("dwpe 1 thread vs several", dpe[0], dpe[1], sizeof(float) * T * C);
    double *want = KT_NEW(double, (long)V * C);
    memset(want, 0, sizeof(double) * V * C);
    for (long s = 0; s < S; s++)
        for (int c = 0; c < C; c++) want[(long)tok[s] * C + c] += dx[s * C + c];
    kt_close("dwte", dte[1], want, (long)V * C, 1e-6);
    for (int r = 0; r < 2; r++) free(dte[r]), free(dpe[r]);
    free(tok), free(dx), free(want);
}

int main(void) {
    run_case(1, 1, 1, 1, 1, 0);
    run_case(2, 5, 7, 3, 1, 0);
    run_case(3, 4, 70, 5, 1, 0); /* C > the 64-column chunk */
    run_case(2, 5, 7, 3, 0, 0);
    run_case(2, 3, 9, 11, 1, 6); /* generation: positions from pos0 */
    run_case(1, 1, 9, 11, 0, 4);
    /* decoding: a sequence per row, each at its own position */
    {
        KT_CASE("embed rows at positions 5, 0, 9");
        int32_t tok[3] = {2, 7, 2}, pos[3] = {5, 0, 9};
        float *wte = kt_rand(11 * 9, -1, 1), *wpe = kt_rand(10 * 9, -1, 1), *x = kt_fill(3 * 9, NAN);
        double want[3 * 9];
        for (int s = 0; s < 3; s++)
            for (int c = 0; c < 9; c++) want[s * 9 + c] = (double)wte[tok[s] * 9 + c] + wpe[pos[s] * 9 + c];
        k_embed_fwd(x, tok, wte, wpe, pos, 3, 1, 9);
        kt_close("x", x, want, 3 * 9, 1e-7);
        free(wte), free(wpe), free(x);
    }
    run_threads();
    return kt_report("test_embed");
}
