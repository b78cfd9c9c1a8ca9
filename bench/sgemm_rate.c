/* sgemm_rate: how fast OpenBLAS's cblas_sgemm is on given shapes, with a given thread count.
 *
 * This is the ceiling the expert GEMMs of an MoE layer are judged against: an expert receives
 * about m = tokens * top_k / experts rows, so its forward is [m, d] x [d, f] then [m, f] x [f, d],
 * and its backward adds the transposed products. bench.py asks for exactly those shapes.
 *
 * usage: sgemm_rate [--threads N] [--min-ms MS] M,N,K[,TA,TB] ...
 *   C[M, N] = op(A) op(B) in row-major storage; op(A) is [M, K], op(B) is [K, N];
 *   TA, TB are n (as stored) or t (transposed), default n.
 * Prints one JSON object per line: first {"blas": ..., "threads": ...}, then per shape
 *   {"m", "n", "k", "ta", "tb", "calls", "ms", "gflops"} where ms is the median time of one call
 *   and gflops = 2 M N K / ms.
 * It does not check the product: OpenBLAS is the reference here, not the thing under test.
 */
#define _POSIX_C_SOURCE 199309L
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_CALLS = 200, MIN_CALLS = 3 };

typedef struct {
    int m, n, k;
    char ta, tb; /* 'n' or 't' */
} shape;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* "M,N,K" or "M,N,K,TA,TB" -> shape; returns 0 on success. */
static int parse_shape(const char *arg, shape *s) {
    char ta = 'n', tb = 'n';
    int got = sscanf(arg, "%d,%d,%d,%c,%c", &s->m, &s->n, &s->k, &ta, &tb);
    if ((got != 3 && got != 5) || s->m <= 0 || s->n <= 0 || s->k <= 0)
        return -1;
    if ((ta != 'n' && ta != 't') || (tb != 'n' && tb != 't'))
        return -1;
    s->ta = ta;
    s->tb = tb;
    return 0;
}

static float *random_matrix(size_t count, unsigned *seed) {
    float *p = malloc(count * sizeof *p);
    if (!p)
        return NULL;
    for (size_t i = 0; i < count; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        p[i] = (float)((*seed >> 8) & 0xffff) / 65536.0f - 0.5f; /* no zeros, no denormals */
    }
    return p;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median ms of one sgemm call: one untimed call, then calls until min_ms has passed. */
static int time_shape(const shape *s, double min_ms, double *median_ms, int *calls) {
    unsigned seed = 42;
    float *a = random_matrix((size_t)s->m * s->k, &seed);
    float *b = random_matrix((size_t)s->k * s->n, &seed);
    float *c = calloc((size_t)s->m * s->n, sizeof *c);
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return -1;
    }
    enum CBLAS_TRANSPOSE ta = s->ta == 't' ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE tb = s->tb == 't' ? CblasTrans : CblasNoTrans;
    int lda = s->ta == 't' ? s->m : s->k; /* stored A is [K, M] when transposed */
    int ldb = s->tb == 't' ? s->k : s->n;
    double times[MAX_CALLS];
    int n = 0;
    double start = now_ms();
    for (int i = -1; i < MAX_CALLS; i++) {
        double t0 = now_ms();
        cblas_sgemm(CblasRowMajor, ta, tb, s->m, s->n, s->k, 1.0f, a, lda, b, ldb, 0.0f, c, s->n);
        if (i < 0)
            continue; /* warm-up: thread pool start, page faults */
        times[n++] = now_ms() - t0;
        if (n >= MIN_CALLS && now_ms() - start >= min_ms)
            break;
    }
    qsort(times, n, sizeof times[0], cmp_double);
    *median_ms = times[n / 2];
    *calls = n;
    free(a), free(b), free(c);
    return 0;
}

static int usage(void) {
    fprintf(stderr, "usage: sgemm_rate [--threads N] [--min-ms MS] M,N,K[,TA,TB] ...\n");
    return 2;
}

int main(int argc, char **argv) {
    int threads = 0;
    double min_ms = 300.0;
    int first = 1;
    for (; first < argc && strncmp(argv[first], "--", 2) == 0; first += 2) {
        if (first + 1 >= argc)
            return usage();
        if (strcmp(argv[first], "--threads") == 0)
            threads = atoi(argv[first + 1]);
        else if (strcmp(argv[first], "--min-ms") == 0)
            min_ms = atof(argv[first + 1]);
        else
            return usage();
    }
    if (first >= argc)
        return usage();
    if (threads > 0)
        openblas_set_num_threads(threads);
    printf("{\"blas\": \"%s\", \"threads\": %d}\n", openblas_get_config(),
           openblas_get_num_threads());
    for (int i = first; i < argc; i++) {
        shape s;
        double ms;
        int calls;
        if (parse_shape(argv[i], &s) != 0) {
            fprintf(stderr, "sgemm_rate: bad shape '%s'\n", argv[i]);
            return usage();
        }
        if (time_shape(&s, min_ms, &ms, &calls) != 0) {
            fprintf(stderr, "sgemm_rate: out of memory for shape '%s'\n", argv[i]);
            return 1;
        }
        double gflops = 2.0 * s.m * s.n * s.k / (ms * 1e6);
        printf("{\"m\": %d, \"n\": %d, \"k\": %d, \"ta\": \"%c\", \"tb\": \"%c\", "
               "\"calls\": %d, \"ms\": %.6f, \"gflops\": %.3f}\n",
               s.m, s.n, s.k, s.ta, s.tb, calls, ms, gflops);
        fflush(stdout);
    }
    return 0;
}
