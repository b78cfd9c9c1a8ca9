/* mock_cuda.c - a stand-in for libcuda.so.1 and libcublas.so, so that the cuda device
 * (runtime/device_cuda.c) runs in tests on a machine without a GPU.
 *
 * Loaded by a model built with --target cuda through MOEC_LIBCUDA and MOEC_LIBCUBLAS. It
 * plays a GPU of compute capability 9.0 whose memory is host memory: cuModuleLoadData takes
 * the cubin NVRTC produced (it must be a CUDA ELF image, and every kernel asked for must be
 * named in it), and cuLaunchKernel runs the kernel the executable carries for cuda-emu
 * through the emulator, with the argument pointers exactly as the device passes them to
 * the driver. cuBLAS GEMMs are OpenBLAS in column-major order.
 *
 * Faults for tests: MOCK_CUDA_NO_DEVICE=1 fails cuInit as a machine without a GPU does;
 * MOCK_CUDA_CC=7.5 plays an older GPU; MOCK_CUDA_FAIL=cuMemAlloc (any entry's name) makes
 * that entry fail with CUDA_ERROR_OUT_OF_MEMORY; MOCK_CUBLAS_SKEW=1 makes every GEMM's first
 * element 1% wrong. At exit, memory never freed is reported.
 */
#include "device.h"
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
enum {
    OK = 0, ERR_INVALID_VALUE = 1, ERR_OUT_OF_MEMORY = 2, ERR_NO_DEVICE = 100, ERR_INVALID_IMAGE = 200,
    ERR_NOT_FOUND = 500, ERR_LAUNCH_FAILED = 719
};

static const struct { int code; const char *name, *desc; } errors[] = {
    {ERR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {ERR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {ERR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {ERR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {ERR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {ERR_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
};

/* the injected failure, if MOCK_CUDA_FAIL names this entry */
static int fail(const char *entry) {
    const char *f = getenv("MOCK_CUDA_FAIL");
    return f && !strcmp(f, entry);
}
#define ENTRY(name) do { if (fail(#name)) return ERR_OUT_OF_MEMORY; } while (0)

/* the emulator that runs the kernels: the executable's (exported with -rdynamic). Weak, so
 * that moec, which only asks which GPU this is (runtime/cuda_probe.c), loads the stand-in
 * too: there cuInit succeeds without an emulator, and no kernel can be loaded. */
#pragma weak moe_device_emu_ops
static moe_device emu;
static long live_allocs, live_host;

__attribute__((destructor)) static void report(void) {
    if (live_allocs || live_host)
        fprintf(stderr, "mock cuda: %ld device and %ld host allocations never freed\n", live_allocs, live_host);
    if (emu.ops) emu.ops->close(&emu);
}

CUresult cuInit(unsigned flags) {
    ENTRY(cuInit);
    if (flags) return ERR_INVALID_VALUE;
    if (getenv("MOCK_CUDA_NO_DEVICE")) return ERR_NO_DEVICE;
    if (!emu.ops && moe_device_emu_ops) {
        emu.ops = moe_device_emu_ops();
        if (emu.ops->open(&emu)) return ERR_OUT_OF_MEMORY;
    }
    return OK;
}
CUresult cuDeviceGet(int *dev, int ordinal) { ENTRY(cuDeviceGet); *dev = ordinal; return ordinal ? ERR_INVALID_VALUE : OK; }
CUresult cuDeviceGetName(char *name, int len, int dev) {
    ENTRY(cuDeviceGetName);
    snprintf(name, (size_t)len, "mock GPU %d, the cuda-emu emulator", dev);
    return OK;
}
CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
    ENTRY(cuDeviceGetAttribute);
    (void)dev;
    const char *cc = getenv("MOCK_CUDA_CC");
    int major = 9, minor = 0;
    if (cc && sscanf(cc, "%d.%d", &major, &minor) != 2) return ERR_INVALID_VALUE;
    if (attr == 75) *v = major;
    else if (attr == 76) *v = minor;
    else return ERR_INVALID_VALUE;
    return OK;
}
static int ctx_token;
CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) { ENTRY(cuDevicePrimaryCtxRetain); (void)dev; *ctx = &ctx_token; return OK; }
CUresult cuDevicePrimaryCtxRelease_v2(int dev) { (void)dev; return OK; }
CUresult cuCtxSetCurrent(void *ctx) { ENTRY(cuCtxSetCurrent); return ctx == &ctx_token ? OK : ERR_INVALID_VALUE; }
static int stream_token;
CUresult cuStreamCreate(void **s, unsigned flags) { ENTRY(cuStreamCreate); (void)flags; *s = &stream_token; return OK; }
CUresult cuStreamDestroy_v2(void *s) { return s == &stream_token ? OK : ERR_INVALID_VALUE; }
CUresult cuStreamSynchronize(void *s) { ENTRY(cuStreamSynchronize); return s == &stream_token ? OK : ERR_INVALID_VALUE; }

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
    ENTRY(cuMemAlloc);
    void *m = aligned_alloc(256, (n + 255) / 256 * 256);
    if (!m) return ERR_OUT_OF_MEMORY;
    memset(m, 0xA5, n);         /* like a GPU, memory comes back dirty: the device must zero it */
    live_allocs++;
    *p = (CUdeviceptr)(uintptr_t)m;
    return OK;
}
CUresult cuMemFree_v2(CUdeviceptr p) { live_allocs--; free((void *)(uintptr_t)p); return OK; }
CUresult cuMemHostAlloc(void **p, size_t n, unsigned flags) {
    ENTRY(cuMemHostAlloc);
    (void)flags;
    *p = malloc(n);
    if (!*p) return ERR_OUT_OF_MEMORY;
    memset(*p, 0xA5, n);
    live_host++;
    return OK;
}
CUresult cuMemFreeHost(void *p) { live_host--; free(p); return OK; }
CUresult cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n, void *s) {
    ENTRY(cuMemsetD8Async);
    (void)s;
    memset((void *)(uintptr_t)p, v, n);
    return OK;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, void *s) {
    ENTRY(cuMemcpyHtoDAsync);
    (void)s;
    memcpy((void *)(uintptr_t)dst, src, n);
    return OK;
}
CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, void *s) {
    ENTRY(cuMemcpyDtoHAsync);
    (void)s;
    memcpy(dst, (const void *)(uintptr_t)src, n);
    return OK;
}

/* a module is a copy of its image, so that kernel names can be checked against it, and
 * owns the functions taken from it (freed with it, as the driver does) */
typedef struct { unsigned char *image; size_t size; moe_kernel **fns; size_t n_fns; } module;
CUresult cuModuleLoadData(module **m, const void *image) {
    ENTRY(cuModuleLoadData);
    const unsigned char *e = image;
    /* ELF, 64-bit, e_machine EM_CUDA (190) */
    if (memcmp(e, "\177ELF", 4) || e[4] != 2 || (e[18] | e[19] << 8) != 190) return ERR_INVALID_IMAGE;
    /* the image ends where the last of its headers and sections ends */
    uint64_t phoff, shoff, size = 64;
    uint16_t phent, phnum, shent, shnum;
    memcpy(&phoff, e + 32, 8);
    memcpy(&shoff, e + 40, 8);
    memcpy(&phent, e + 54, 2);
    memcpy(&phnum, e + 56, 2);
    memcpy(&shent, e + 58, 2);
    memcpy(&shnum, e + 60, 2);
    if (phoff + (uint64_t)phent * phnum > size) size = phoff + (uint64_t)phent * phnum;
    if (shoff + (uint64_t)shent * shnum > size) size = shoff + (uint64_t)shent * shnum;
    for (unsigned i = 0; i < shnum; i++) {
        const unsigned char *sh = e + shoff + (uint64_t)i * shent;
        uint32_t type;
        uint64_t off, len;
        memcpy(&type, sh + 4, 4);
        memcpy(&off, sh + 24, 8);
        memcpy(&len, sh + 32, 8);
        if (type != 8 && off + len > size) size = off + len;     /* 8: SHT_NOBITS, no bytes in the file */
    }
    *m = calloc(1, sizeof **m);
    if (!*m || !((*m)->image = malloc(size))) { free(*m); return ERR_OUT_OF_MEMORY; }
    memcpy((*m)->image, image, size);
    (*m)->size = size;
    return OK;
}
CUresult cuModuleUnload(module *m) {
    for (size_t i = 0; i < m->n_fns; i++) emu.ops->release(&emu, m->fns[i]);
    free(m->fns);
    free(m->image);
    free(m);
    return OK;
}
CUresult cuModuleGetFunction(moe_kernel **f, module *m, const char *name) {
    ENTRY(cuModuleGetFunction);
    size_t n = strlen(name) + 1;    /* the name with its terminator, as in the string table */
    int found = 0;
    for (size_t i = 0; i + n <= m->size && !found; i++) found = !memcmp(m->image + i, name, n);
    if (!found || !emu.ops) return ERR_NOT_FOUND;
    moe_kernel **fns = realloc(m->fns, (m->n_fns + 1) * sizeof *fns);
    if (!fns) return ERR_OUT_OF_MEMORY;
    m->fns = fns;
    if (emu.ops->compile(&emu, name, NULL, f)) return ERR_NOT_FOUND;
    m->fns[m->n_fns++] = *f;
    return OK;
}
CUresult cuLaunchKernel(moe_kernel *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, void *s, void **params, void **extra) {
    ENTRY(cuLaunchKernel);
    if (s != &stream_token || extra) return ERR_INVALID_VALUE;
    /* every block runs as fibers: the driver is not told which kernels synchronise */
    moe_launch cfg = {{gx, gy, gz}, {bx, by, bz}, shared, 1};
    if (emu.ops->launch(&emu, f, &cfg, params)) {
        fprintf(stderr, "mock cuda: %s\n", emu.err);
        return ERR_LAUNCH_FAILED;
    }
    return OK;
}
CUresult cuGetErrorName(CUresult rc, const char **s) {
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (errors[i].code == rc) { *s = errors[i].name; return OK; }
    return ERR_INVALID_VALUE;
}
CUresult cuGetErrorString(CUresult rc, const char **s) {
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (errors[i].code == rc) { *s = errors[i].desc; return OK; }
    return ERR_INVALID_VALUE;
}

/* ---- cuBLAS ---- */
static int blas_token;
int cublasCreate_v2(void **h) { *h = &blas_token; return fail("cublasCreate") ? 1 : 0; }
int cublasDestroy_v2(void *h) { return h == &blas_token ? 0 : 7; }
int cublasSetStream_v2(void *h, void *s) { return h == &blas_token && s == &stream_token ? 0 : 7; }
static enum CBLAS_TRANSPOSE op(int t) { return t ? CblasTrans : CblasNoTrans; }
int cublasSgemmStridedBatched(void *h, int ta, int tb, int m, int n, int k, const float *alpha, const float *a, int lda,
                              long long sa, const float *b, int ldb, long long sb, const float *beta, float *c, int ldc,
                              long long sc, int batch) {
    if (h != &blas_token || fail("cublasSgemm")) return 7;
    for (int i = 0; i < batch; i++) {
        cblas_sgemm(CblasColMajor, op(ta), op(tb), m, n, k, *alpha, a + i * sa, lda, b + i * sb, ldb, *beta,
                    c + i * sc, ldc);
        if (getenv("MOCK_CUBLAS_SKEW") && m > 0 && n > 0) c[i * sc] = c[i * sc] * 1.01f + 0.01f;
    }
    return 0;
}
int cublasSgemm_v2(void *h, int ta, int tb, int m, int n, int k, const float *alpha, const float *a, int lda,
                   const float *b, int ldb, const float *beta, float *c, int ldc) {
    return cublasSgemmStridedBatched(h, ta, tb, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1);
}
/* bf16/f16 operands, f32 output and accumulation: the column-major product as the row-major one
 * the emulator's GEMM makes (operands swapped back, as device_cuda.c swapped them) */
int cublasGemmEx(void *h, int ta, int tb, int m, int n, int k, const void *alpha, const void *a, int atype, int lda,
                 const void *b, int btype, int ldb, const void *beta, void *c, int ctype, int ldc, int compute, int algo) {
    (void)algo;
    int dt = atype == 14 ? MOE_BF16 : atype == 2 ? MOE_F16 : -1;
    if (h != &blas_token || fail("cublasSgemm")) return 7;
    if (dt < 0 || btype != atype || ctype != 0 || compute != 68 || !emu.ops) return 15;     /* NOT_SUPPORTED */
    moe_gemm g = {tb, ta, n, m, k, *(const float *)alpha, *(const float *)beta, b, a, c, ldb, lda, ldc, 1, 0, 0, 0, dt};
    if (emu.ops->gemm(&emu, &g)) return 13;     /* EXECUTION_FAILED */
    if (getenv("MOCK_CUBLAS_SKEW") && m > 0 && n > 0) ((float *)c)[0] = ((float *)c)[0] * 1.01f + 0.01f;
    return 0;
}
