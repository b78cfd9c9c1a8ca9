/* test_device.c - the CPU device through its table (device.h): allocation is aligned and
 * zeroed, bytes go up and down unchanged, memset, the GEMM entries against plain loops, and
 * the entries the CPU does not have (run-time compilation) and devices this build lacks fail
 * with a message instead of crashing. */
#include "device.h"
#include "t_common.h"
#include <math.h>
#include <stdint.h>

static void test_memory(moe_device *d) {
    const moe_device_ops *o = d->ops;
    CHECK(o->alignment == 64);
    uint8_t *p = o->alloc(d, 1000), host[1000];
    CHECK(p && (uintptr_t)p % o->alignment == 0);
    memset(host, 0x55, sizeof host);
    CHECK(o->download(d, host, p, sizeof host) == 0);
    int zero = 1;
    for (int i = 0; i < 1000; i++) zero &= host[i] == 0;
    CHECK(zero);
    for (int i = 0; i < 1000; i++) host[i] = (uint8_t)(i * 7);
    CHECK(o->upload(d, p, host, sizeof host) == 0);
    CHECK(o->memset(d, p + 100, 0xAB, 50) == 0);
    uint8_t back[1000];
    CHECK(o->download(d, back, p, sizeof back) == 0);
    int same = 1;
    for (int i = 0; i < 1000; i++) same &= back[i] == (i >= 100 && i < 150 ? 0xAB : (uint8_t)(i * 7));
    CHECK(same);
    CHECK(o->sync(d) == 0);
    o->free(d, p);
    uint8_t *h = o->host_alloc(d, 64);
    CHECK(h != NULL);
    o->host_free(d, h);
}

/* C[m,n] = alpha op(A) op(B) + beta C in double, row-major */
static void ref_gemm(const moe_gemm *g, const float *a, const float *b, const float *c0, double *c) {
    for (int i = 0; i < g->m; i++)
        for (int j = 0; j < g->n; j++) {
            double s = 0;
            for (int k = 0; k < g->k; k++) {
                double x = g->trans_a ? a[k * g->lda + i] : a[i * g->lda + k];
                double y = g->trans_b ? b[j * g->ldb + k] : b[k * g->ldb + j];
                s += x * y;
            }
            c[i * g->ldc + j] = g->alpha * s + g->beta * c0[i * g->ldc + j];
        }
}

static void test_gemm(moe_device *d) {
    enum { M = 5, N = 7, K = 3, BATCH = 2 };
    float a[BATCH * M * K], b[BATCH * K * N], c[BATCH * M * N], c0[BATCH * M * N];
    for (int i = 0; i < BATCH * M * K; i++) a[i] = (float)sin(i + 1.0);
    for (int i = 0; i < BATCH * K * N; i++) b[i] = (float)cos(i * 0.7);
    for (int i = 0; i < BATCH * M * N; i++) c0[i] = (float)(i % 5) - 2.0f;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            moe_gemm g = {ta, tb, M, N, K, 0.5f, 2.0f, a, b, c, ta ? M : K, tb ? K : N, N, BATCH, M * K, K * N, M * N,
                          MOE_F32};
            memcpy(c, c0, sizeof c);
            CHECK(d->ops->gemm_batched(d, &g) == 0);
            double want[M * N];
            double worst = 0;
            for (int bi = 0; bi < BATCH; bi++) {
                ref_gemm(&g, a + bi * M * K, b + bi * K * N, c0 + bi * M * N, want);
                for (int i = 0; i < M * N; i++) worst = fmax(worst, fabs(want[i] - c[bi * M * N + i]));
            }
            CHECK(worst < 1e-5);
            memcpy(c, c0, sizeof c);
            g.batch = 1;
            CHECK(d->ops->gemm(d, &g) == 0);
            ref_gemm(&g, a, b, c0, want);
            worst = 0;
            for (int i = 0; i < M * N; i++) worst = fmax(worst, fabs(want[i] - c[i]));
            for (int i = M * N; i < BATCH * M * N; i++) worst = fmax(worst, fabs(c0[i] - c[i]));  /* untouched */
            CHECK(worst < 1e-5);
        }
    moe_gemm bad = {0, 0, -1, N, K, 1, 0, a, b, c, K, N, N, 1, 0, 0, 0, MOE_F32};
    CHECK(d->ops->gemm(d, &bad) == -1 && strstr(d->err, "gemm: bad shape"));
}

/* half operands (bits written out by hand) are widened exactly: f16's smallest subnormal
 * 2^-24 (0x0001) times its largest value 65504 (0x7bff), plus 1 x 2; bf16's 1 x 3 + (-3) x 0.5 */
static void test_gemm_half(moe_device *d) {
    const uint16_t fa[2] = {0x0001, 0x3c00}, fb[2] = {0x7bff, 0x4000};
    const uint16_t ba[2] = {0x3f80, 0xc040}, bb[2] = {0x4040, 0x3f00};
    float c = 1.0f;
    moe_gemm g = {0, 0, 1, 1, 2, 1.0f, 1.0f, (const float *)fa, (const float *)fb, &c, 2, 1, 1, 1, 0, 0, 0, MOE_F16};
    CHECK(d->ops->gemm(d, &g) == 0);
    CHECK(c == (float)(1.0 + 65504.0 / 16777216.0 + 2.0));
    g = (moe_gemm){0, 0, 1, 1, 2, 2.0f, 0.0f, (const float *)ba, (const float *)bb, &c, 2, 1, 1, 1, 0, 0, 0, MOE_BF16};
    CHECK(d->ops->gemm(d, &g) == 0 && c == 3.0f);
    CHECK(d->ops->gemm_batched(d, &g) == -1 && strstr(d->err, "batched products take f32 operands"));
    g.dtype = MOE_I32;
    CHECK(d->ops->gemm(d, &g) == -1 && strstr(d->err, "gemm: operands of dtype"));
}

static void test_refusals(moe_device *d) {
    moe_kernel *k = (moe_kernel *)1;
    CHECK(d->ops->compile(d, "k_x", "__global__ void k_x() {}", &k) == -1 && k == NULL);
    CHECK_STR(d->err, "kernel 'k_x': the cpu device runs the kernels linked into the executable and compiles none "
                      "at run time");
    moe_launch cfg = {{1, 1, 1}, {32, 1, 1}, 0, 0};
    CHECK(d->ops->launch(d, NULL, &cfg, NULL) == -1);
    char err[256];
    CHECK(moe_device_open("cuda", "cpu", err, sizeof err) == NULL);
    CHECK_STR(err, "--device cuda: this executable was built for the cpu target only (build it with moec build "
                   "--target cuda)");
    CHECK(moe_device_open("tpu", "cpu", err, sizeof err) == NULL);
    CHECK_STR(err, "unknown device 'tpu' (cpu, cuda, cuda-emu)");
}

int main(void) {
    char err[256];
    moe_device *d = moe_device_open(NULL, "cpu", err, sizeof err);   /* the default */
    CHECK(d && !strcmp(d->ops->name, "cpu"));
    if (!d) return 1;
    test_memory(d);
    test_gemm(d);
    test_gemm_half(d);
    test_refusals(d);
    moe_device_close(d);
    return t_done("test_device");
}
