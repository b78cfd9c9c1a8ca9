/* expert_mm.c - the grouped expert GEMM's numbered variants (kernels/cpu/k_moe.h):
 * validate every variant against a plain reference, then time them.
 *
 *   bench_expert_mm --validate        small shapes, exit 1 on any mismatch (a ctest)
 *   bench_expert_mm [--reps N]        the MoE-layer shapes of bench/: GFLOP/s per variant,
 *                                     forward and backward, with the routed rows of a
 *                                     realistic (uneven) top-1 routing
 */
#include "k_moe.h"
#include "moe_start.h"
#include <omp.h>
#include <stdio.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float frand(uint64_t *s) { *s = moe_mix64(*s); return (float)((double)(*s >> 11) / 9007199254740992.0 - 0.5); }

typedef struct shape { int E, K, N, rows; } shape;

/* a counts record (moe_abi.h) with cnt[] and off[] from a skewed split of `rows` over E experts */
static void make_counts(int32_t *counts, int E, int rows, uint64_t seed) {
    int left = rows;
    int32_t *cnt = counts + MOE_CNT(E), *off = counts + MOE_OFF(E);
    off[0] = 0;
    for (int e = 0; e < E; e++) {
        int n = e == E - 1 ? left : (int)(rows / E * (0.5 + (double)(moe_mix64(seed + e) % 1000) / 1000.0));
        if (n > left) n = left;
        cnt[e] = n; left -= n;
        off[e + 1] = off[e] + n;
    }
}

static int validate(const shape *sh) {
    int E = sh->E, K = sh->K, N = sh->N, R = sh->rows, bad = 0;
    int32_t counts[MOE_COUNTS_LEN(128)];
    make_counts(counts, E, R, 7);
    const int32_t *off = counts + MOE_OFF(E);
    size_t nx = (size_t)R * K, ny = (size_t)R * N, nw = (size_t)E * K * N;
    float *x = malloc(nx * 4), *W = malloc(nw * 4), *b = malloc((size_t)E * N * 4), *dy = malloc(ny * 4);
    float *y[4], *dx[4], *dW[4], *db[4];
    uint64_t s = 1;
    for (size_t i = 0; i < nx; i++) x[i] = frand(&s);
    for (size_t i = 0; i < nw; i++) W[i] = frand(&s);
    for (int i = 0; i < E * N; i++) b[i] = frand(&s);
    for (size_t i = 0; i < ny; i++) dy[i] = frand(&s);
    for (int v = 0; v < 4; v++) {
        y[v] = calloc(ny, 4); dx[v] = calloc(nx, 4); dW[v] = calloc(nw, 4); db[v] = calloc((size_t)E * N, 4);
    }
    /* v = 0: the reference, plain loops in double */
    for (int e = 0; e < E; e++)
        for (int r = off[e]; r < off[e + 1]; r++) {
            for (int c = 0; c < N; c++) {
                double a = b[e * N + c];
                for (int i = 0; i < K; i++) a += (double)x[(size_t)r * K + i] * W[(size_t)e * K * N + (size_t)i * N + c];
                y[0][(size_t)r * N + c] = (float)a;
                db[0][e * N + c] += dy[(size_t)r * N + c];
            }
            for (int i = 0; i < K; i++) {
                double a = 0;
                for (int c = 0; c < N; c++) a += (double)dy[(size_t)r * N + c] * W[(size_t)e * K * N + (size_t)i * N + c];
                dx[0][(size_t)r * K + i] = (float)a;
                for (int c = 0; c < N; c++)
                    dW[0][(size_t)e * K * N + (size_t)i * N + c] += x[(size_t)r * K + i] * dy[(size_t)r * N + c];
            }
        }
    for (int v = 1; v <= 3; v++) {     /* v3's backward is v1's: checked all the same */
        k_moe_expert_fwd(y[v], x, W, b, counts, E, K, N, v);
        k_moe_expert_bwd(dx[v], dW[v], db[v], dy, x, W, counts, E, K, N, 0, v);
        float *got[] = {y[v], dx[v], dW[v], db[v]}, *ref[] = {y[0], dx[0], dW[0], db[0]};
        size_t n[] = {ny, nx, nw, (size_t)E * N};
        const char *what[] = {"y", "dx", "dW", "db"};
        for (int t = 0; t < 4; t++) {
            double worst = 0, scale = 1e-6;
            for (size_t i = 0; i < n[t]; i++) {
                double d = fabs((double)got[t][i] - ref[t][i]);
                worst = d > worst ? d : worst;
                scale = fabs(ref[t][i]) > scale ? fabs(ref[t][i]) : scale;
            }
            if (worst > 1e-4 * scale) { printf("FAIL variant %d %s: rel %.3g\n", v, what[t], worst / scale); bad++; }
            if (v == 2 && memcmp(got[t], (float *[]){y[1], dx[1], dW[1], db[1]}[t], n[t] * 4)) {
                printf("FAIL variant 2 %s differs bitwise from variant 1\n", what[t]);
                bad++;
            }
        }
    }
    for (int v = 0; v < 4; v++) { free(y[v]); free(dx[v]); free(dW[v]); free(db[v]); }
    free(x); free(W); free(b); free(dy);
    return bad;
}

static void timing(const shape *sh, int reps) {
    int E = sh->E, K = sh->K, N = sh->N, R = sh->rows;
    int32_t counts[MOE_COUNTS_LEN(128)];
    make_counts(counts, E, R, 7);
    float *x = calloc((size_t)R * K, 4), *W = calloc((size_t)E * K * N, 4), *b = calloc((size_t)E * N, 4);
    float *y = calloc((size_t)R * N, 4), *dx = calloc((size_t)R * K, 4), *dW = calloc((size_t)E * K * N, 4);
    float *db = calloc((size_t)E * N, 4);
    double flop = 2.0 * R * K * N;
    printf("E %2d  rows %5d  [%4d x %4d]:", E, R, K, N);
    for (int v = 1; v <= 3; v++) {
        k_moe_expert_fwd(y, x, W, b, counts, E, K, N, v);
        double t0 = now_s();
        for (int r = 0; r < reps; r++) k_moe_expert_fwd(y, x, W, b, counts, E, K, N, v);
        double tf = (now_s() - t0) / reps;
        t0 = now_s();
        for (int r = 0; r < reps; r++) k_moe_expert_bwd(dx, dW, db, y, x, W, counts, E, K, N, 0, v);
        double tb = (now_s() - t0) / reps;
        printf("  v%d fwd %6.1f GFLOP/s bwd %6.1f GFLOP/s", v, flop / tf / 1e9, 2 * flop / tb / 1e9);
    }
    printf("\n");
    free(x); free(W); free(b); free(y); free(dx); free(dW); free(db);
}

int main(int argc, char **argv) {
    moe_start(argv); /* the OpenBLAS kernels and thread waiting the executables get */
    int reps = 5, only_validate = argc > 1 && !strcmp(argv[1], "--validate");
    if (argc > 2 && !strcmp(argv[1], "--reps")) reps = atoi(argv[2]);
    const shape small[] = {{1, 3, 5, 7}, {4, 16, 24, 50}, {9, 8, 12, 100}, {4, 5, 7, 0}};
    int bad = 0;
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) bad += validate(&small[i]);
    printf("validation: %s\n", bad ? "FAILED" : "all variants match the reference");
    if (only_validate || bad) return bad != 0;
    printf("threads %d\n", omp_get_max_threads());
    /* bench/ MoE-layer shapes: (d, f, E, tokens) top-1, c_fc [d x f] then c_proj [f x d] */
    const shape big[] = {{8, 512, 2048, 2048}, {8, 2048, 512, 2048}, {32, 512, 2048, 2048}, {32, 2048, 512, 2048},
                         {16, 1024, 4096, 4096}, {16, 4096, 1024, 4096},
                         /* many small experts: about 16 rows each */
                         {128, 512, 2048, 2048}, {128, 2048, 512, 2048}, {64, 512, 256, 2048}, {64, 256, 512, 2048}};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) timing(&big[i], reps);
    return 0;
}
