/* attn.c - the training attention core (kernels/cpu/k_attn.h) against this machine's sgemm.
 *
 *   bench_attn [--reps N] [B,T,C,H[,KV]] ...    default: the perf-like model's 8,256,512,8
 *
 * Per shape: median ms of the forward and of the backward, and their GFLOP/s counting the
 * useful (causal) work: each of the forward's 2 products and the backward's 5 costs
 * 2 hd T(T+1)/2 per head. Then the rate of one cblas_sgemm of [B*T, C] x [C, C], the same
 * tokens through a dense layer: the ceiling the attention core is judged against.
 * Correctness is the tests' business (tests/kernels/test_attn.c), not this harness's.
 */
#include "k_attn.h"
#include "moe_start.h"
#include <stdio.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static float *filled(long n, float lo, float hi, uint64_t seed) {
    float *p = malloc((size_t)n * sizeof(float));
    for (long i = 0; p && i < n; i++) {
        seed = moe_mix64(seed);
        p[i] = lo + (hi - lo) * (float)((double)(seed >> 11) / 9007199254740992.0);
    }
    return p;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* one shape's buffers; run(c, k) runs kernel k: 0 forward, 1 backward, 2 the dense sgemm */
typedef struct ctx { int B, T, C, H, KV; float *qkv, *dout, *y, *lse, *dl, *dqkv, *x, *w, *z; } ctx;
static void run(const ctx *c, int k) {
    int S = c->B * c->T;
    if (k == 0) k_attention_fwd(c->y, c->lse, c->qkv, c->B, c->T, c->C, c->H, c->KV);
    else if (k == 1) k_attention_bwd(c->dqkv, c->dl, c->dout, c->qkv, c->y, c->lse, c->B, c->T, c->C, c->H, c->KV, 0);
    else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, c->C, c->C, 1.0f, c->x, c->C, c->w, c->C, 0.0f, c->z, c->C);
}
/* the median of `reps` timed calls after one warm-up */
static double median_ms(const ctx *c, int k, int reps) {
    double t[64];
    run(c, k);
    for (int r = 0; r < reps; r++) {
        double t0 = now_ms();
        run(c, k);
        t[r] = now_ms() - t0;
    }
    qsort(t, (size_t)reps, sizeof(double), by_value);
    return t[reps / 2];
}

int main(int argc, char **argv) {
    moe_start(argv); /* the OpenBLAS kernels and thread waiting the executables get */
    int reps = 7, nshape = 0;
    const char *shapes[32];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (nshape < 32) shapes[nshape++] = argv[i];
    }
    if (reps < 1 || reps > 64) { fprintf(stderr, "bench_attn: --reps takes 1..64\n"); return 2; }
    if (!nshape) shapes[nshape++] = "8,256,512,8";
    printf("threads %d, tiles %d x %d (v1)\n", omp_get_max_threads(), K_ATTN_QBLOCK, K_ATTN_KBLOCK);
    printf("%-22s %9s %9s %9s %9s %12s %7s\n", "B,T,C,H,KV", "fwd ms", "fwd GF/s", "bwd ms", "bwd GF/s",
           "sgemm GF/s", "share");
    for (int s = 0; s < nshape; s++) {
        int B, T, C, H, KV = 0;
        if (sscanf(shapes[s], "%d,%d,%d,%d,%d", &B, &T, &C, &H, &KV) < 4 || B < 1 || T < 1 || H < 1 || C % H) {
            fprintf(stderr, "bench_attn: bad shape '%s' (B,T,C,H[,KV], C a multiple of H)\n", shapes[s]);
            return 2;
        }
        if (KV <= 0) KV = H;
        int W = C + 2 * KV * (C / H);
        long S = (long)B * T;
        ctx c = {B, T, C, H, KV, filled(S * W, -1, 1, 1), filled(S * C, -1, 1, 2), filled(S * C, 0, 0, 3),
                 filled(S * H, 0, 0, 4), filled(S * H, 0, 0, 5), filled(S * W, 0, 0, 6), filled(S * C, -1, 1, 7),
                 filled((long)C * C, -1, 1, 8), filled(S * C, 0, 0, 9)};
        if (!c.qkv || !c.dout || !c.y || !c.lse || !c.dl || !c.dqkv || !c.x || !c.w || !c.z) {
            fprintf(stderr, "bench_attn: out of memory\n");
            return 1;
        }
        double f = median_ms(&c, 0, reps), b = median_ms(&c, 1, reps), g = median_ms(&c, 2, reps);
        double prod = 2.0 * (C / H) * T * (T + 1) / 2.0 * B * H; /* one causal product, all heads */
        double gf = 2.0 * S * C * C / g / 1e6, ff = 2 * prod / f / 1e6, bf = 5 * prod / b / 1e6;
        printf("%-22s %9.2f %9.1f %9.2f %9.1f %12.1f %6.0f%%\n", shapes[s], f, ff, b, bf, gf,
               100.0 * 7 * prod / (f + b) / 1e6 / gf);
        free(c.qkv), free(c.dout), free(c.y), free(c.lse), free(c.dl), free(c.dqkv), free(c.x), free(c.w), free(c.z);
    }
    return 0;
}
