/* device_cpu.c - the CPU device: buffers are host memory, transfers are copies, GEMMs are
 * OpenBLAS, the stream is the calling thread (every call completes before it returns).
 * Kernels are the templates linked into the executable, so nothing is compiled at run time. */
#include "device.h"
#include "moe_half.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CPU_ALIGN 64

static int cpu_open(moe_device *d) {
    snprintf(d->desc, sizeof d->desc, "the host CPU (OpenBLAS GEMMs)");
    return 0;
}
static void cpu_close(moe_device *d) { (void)d; }

/* zeroed host memory at the device's alignment (the cuda-emu device shares it) */
static void *cpu_alloc(moe_device *d, size_t bytes) {
    size_t al = d->ops->alignment, n = (bytes + al - 1) / al * al;
    void *p = aligned_alloc(al, n ? n : al);
    if (p) memset(p, 0, n ? n : al);
    return p;
}
static void cpu_free(moe_device *d, void *p) { (void)d; free(p); }
static int cpu_memset(moe_device *d, void *dst, int value, size_t bytes) {
    (void)d;
    if (bytes) memset(dst, value, bytes);
    return 0;
}
static int cpu_copy(moe_device *d, void *dst, const void *src, size_t bytes) {
    (void)d;
    if (bytes && dst != src) memmove(dst, src, bytes);
    return 0;
}
static int cpu_sync(moe_device *d) { (void)d; return 0; }

static int cpu_compile(moe_device *d, const char *name, const char *source, moe_kernel **out) {
    (void)source;
    *out = NULL;
    snprintf(d->err, sizeof d->err, "kernel '%s': the cpu device runs the kernels linked into the executable "
             "and compiles none at run time", name);
    return -1;
}
static void cpu_release(moe_device *d, moe_kernel *k) { (void)d; (void)k; }
static int cpu_launch(moe_device *d, const moe_kernel *k, const moe_launch *cfg, void **args) {
    (void)k; (void)cfg; (void)args;
    snprintf(d->err, sizeof d->err, "the cpu device has no run-time compiled kernels to launch");
    return -1;
}

static int gemm_ok(moe_device *d, const moe_gemm *g) {
    if (g->m < 0 || g->n < 0 || g->k < 0 || !g->a || !g->b || !g->c) {
        snprintf(d->err, sizeof d->err, "gemm: bad shape %dx%dx%d or NULL operand", g->m, g->n, g->k);
        return 0;
    }
    if (g->dtype != MOE_F32 && g->dtype != MOE_BF16 && g->dtype != MOE_F16) {
        snprintf(d->err, sizeof d->err, "gemm: operands of dtype %d", g->dtype);
        return 0;
    }
    return 1;
}

/* a bf16 or f16 value, exactly, as a float */
static float half_to_f32(uint16_t h, int dtype) {
    uint32_t u = dtype == MOE_BF16 ? moe_bf16_to_f32(h) : moe_f16_to_f32(h);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* rows x ld half values at p as floats (malloc'd; NULL on out of memory) */
static float *widen(const void *p, int rows, int ld, int dtype) {
    size_t n = (size_t)rows * (size_t)ld;
    float *w = malloc(n ? n * sizeof(float) : 1);
    if (w)
        for (size_t i = 0; i < n; i++) w[i] = half_to_f32(((const uint16_t *)p)[i], dtype);
    return w;
}
static void one_gemm(const moe_gemm *g, const float *a, const float *b, float *c) {
    cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans, g->trans_b ? CblasTrans : CblasNoTrans, g->m,
                g->n, g->k, g->alpha, a, g->lda, b, g->ldb, g->beta, c, g->ldc);
}
/* half operands (a half model's GEMMs under cuda-emu) are widened to f32, exactly, so the
 * product is the f32 GEMM of the rounded values, as cuBLAS's 32F compute type makes it */
static int cpu_gemm(moe_device *d, const moe_gemm *g) {
    if (!gemm_ok(d, g)) return -1;
    if (g->dtype == MOE_F32) {
        one_gemm(g, g->a, g->b, g->c);
        return 0;
    }
    float *a = widen(g->a, g->trans_a ? g->k : g->m, g->lda, g->dtype);
    float *b = a ? widen(g->b, g->trans_b ? g->n : g->k, g->ldb, g->dtype) : NULL;
    if (b) one_gemm(g, a, b, g->c);
    else snprintf(d->err, sizeof d->err, "gemm: out of memory widening %s operands", g->dtype == MOE_BF16 ? "bf16" : "f16");
    free(a);
    free(b);
    return b ? 0 : -1;
}
static int cpu_gemm_batched(moe_device *d, const moe_gemm *g) {
    if (!gemm_ok(d, g) || g->batch < 0) return -1;
    if (g->dtype != MOE_F32) {
        snprintf(d->err, sizeof d->err, "gemm: batched products take f32 operands");
        return -1;
    }
    for (int i = 0; i < g->batch; i++)
        one_gemm(g, g->a + i * g->stride_a, g->b + i * g->stride_b, g->c + i * g->stride_c);
    return 0;
}

const moe_device_ops *moe_device_cpu_ops(void) {
    static const moe_device_ops ops = {
        "cpu", CPU_ALIGN, cpu_open, cpu_close, cpu_alloc, cpu_free, cpu_alloc, cpu_free, cpu_memset, cpu_copy,
        cpu_copy, cpu_sync, cpu_compile, cpu_release, cpu_launch, cpu_gemm, cpu_gemm_batched, 1,
    };
    return &ops;
}
