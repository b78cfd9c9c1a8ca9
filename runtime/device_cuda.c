/* device_cuda.c - the CUDA device: the driver API, NVRTC and cuBLAS, each loaded with dlopen.
 *
 * Nothing CUDA is linked into the executable, so one binary runs where there is no GPU
 * (with --device cpu or cuda-emu) and fails here with a clear message where one is asked
 * for. The few types and entries used are declared below (as in the toolkit's cuda.h and
 * cublas_api.h); every call is checked, and a failure names the call, its error and the
 * file and line of the call.
 *
 * Buffers are device memory from cuMemAlloc, zeroed; the staging buffer is pinned host
 * memory. Calls are queued on one stream. A download waits for its data (the host reads it
 * next); an upload waits too, so that the host may refill its source at once. Kernels: the
 * program's source is compiled once at start by NVRTC for this GPU's architecture, through
 * the kernel cache (nvrtc.h), loaded as one module, and each kernel is found in it by name.
 * GEMMs are cuBLAS in fp32, loaded at the first one.
 *
 * The GPU is the first one CUDA sees (CUDA_VISIBLE_DEVICES chooses). For tests without a
 * GPU, MOEC_LIBCUDA and MOEC_LIBCUBLAS name other libraries to load.
 */
#define _GNU_SOURCE
#include "device.h"
#include "nvrtc.h"
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CUDA_ALIGN 256              /* cuMemAlloc's alignment is at least this */
#define CUDA_MIN_MAJOR 8            /* the cuda target is compiled for sm_80 and newer */

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
enum { CU_ATTR_CC_MAJOR = 75, CU_ATTR_CC_MINOR = 76 };

/* the driver entries: name (as documented), exported symbol, parameters */
#define CU_API(X)                                                                                          \
    X(cuInit, "cuInit", (unsigned flags))                                                                  \
    X(cuDeviceGet, "cuDeviceGet", (CUdevice *dev, int ordinal))                                            \
    X(cuDeviceGetName, "cuDeviceGetName", (char *name, int len, CUdevice dev))                             \
    X(cuDeviceGetAttribute, "cuDeviceGetAttribute", (int *v, int attr, CUdevice dev))                      \
    X(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", (CUcontext *ctx, CUdevice dev))                \
    X(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", (CUdevice dev))                           \
    X(cuCtxSetCurrent, "cuCtxSetCurrent", (CUcontext ctx))                                                 \
    X(cuStreamCreate, "cuStreamCreate", (CUstream *s, unsigned flags))                                     \
    X(cuStreamDestroy, "cuStreamDestroy_v2", (CUstream s))                                                 \
    X(cuStreamSynchronize, "cuStreamSynchronize", (CUstream s))                                            \
    X(cuMemAlloc, "cuMemAlloc_v2", (CUdeviceptr *p, size_t n))                                             \
    X(cuMemFree, "cuMemFree_v2", (CUdeviceptr p))                                                          \
    X(cuMemHostAlloc, "cuMemHostAlloc", (void **p, size_t n, unsigned flags))                              \
    X(cuMemFreeHost, "cuMemFreeHost", (void *p))                                                           \
    X(cuMemsetD8Async, "cuMemsetD8Async", (CUdeviceptr p, unsigned char v, size_t n, CUstream s))          \
    X(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", (CUdeviceptr dst, const void *src, size_t n, CUstream s)) \
    X(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", (void *dst, CUdeviceptr src, size_t n, CUstream s))       \
    X(cuModuleLoadData, "cuModuleLoadData", (CUmodule *m, const void *image))                              \
    X(cuModuleUnload, "cuModuleUnload", (CUmodule m))                                                      \
    X(cuModuleGetFunction, "cuModuleGetFunction", (CUfunction *f, CUmodule m, const char *name))           \
    X(cuLaunchKernel, "cuLaunchKernel", (CUfunction f, unsigned gx, unsigned gy, unsigned gz,              \
       unsigned bx, unsigned by, unsigned bz, unsigned shared, CUstream s, void **params, void **extra))   \
    X(cuGetErrorName, "cuGetErrorName", (CUresult rc, const char **s))                                     \
    X(cuGetErrorString, "cuGetErrorString", (CUresult rc, const char **s))

/* cuBLAS (v2 API): a handle, its stream, the fp32 GEMMs, and GemmEx for bf16/f16 operands
 * with f32 output and accumulation (library_types.h, cublas_api.h values) */
typedef struct cublas_ctx *cublas_handle;
enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14, CUBLAS_COMPUTE_32F = 68, CUBLAS_GEMM_DEFAULT = -1 };
#define CUBLAS_API(X)                                                                                          \
    X(create, "cublasCreate_v2", (cublas_handle * h))                                                          \
    X(destroy, "cublasDestroy_v2", (cublas_handle h))                                                          \
    X(set_stream, "cublasSetStream_v2", (cublas_handle h, CUstream s))                                         \
    X(sgemm, "cublasSgemm_v2", (cublas_handle h, int ta, int tb, int m, int n, int k, const float *alpha,     \
                                const float *a, int lda, const float *b, int ldb, const float *beta, float *c, \
                                int ldc))                                                                      \
    X(sgemm_strided, "cublasSgemmStridedBatched",                                                              \
      (cublas_handle h, int ta, int tb, int m, int n, int k, const float *alpha, const float *a, int lda,      \
       long long sa, const float *b, int ldb, long long sb, const float *beta, float *c, int ldc, long long sc, \
       int batch))                                                                                             \
    X(gemm_ex, "cublasGemmEx",                                                                                 \
      (cublas_handle h, int ta, int tb, int m, int n, int k, const void *alpha, const void *a, int atype,      \
       int lda, const void *b, int btype, int ldb, const void *beta, void *c, int ctype, int ldc, int compute,  \
       int algo))

#define API_FIELD(field, sym, params) int(*field) params;
typedef struct cu_api { CU_API(API_FIELD) } cu_api;
typedef struct cublas_api { CUBLAS_API(API_FIELD) } cublas_api;

struct moe_kernel { CUfunction fn; };

typedef struct cuda {
    void *lib, *blas_lib;
    cu_api cu;
    cublas_api blas;
    cublas_handle blas_h;
    CUdevice dev;
    CUcontext ctx;
    CUstream stream;
    int major, minor;               /* compute capability */
    char name[96];
    CUmodule module;                /* the program's kernels */
    const char *module_source;      /* the source it was compiled from */
} cuda;

/* the file name in messages, without the build's directories */
static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* a driver call: 0, or -1 with "CALL: ERROR_NAME (description) at FILE:LINE" in d->err */
static int cu_check(moe_device *d, CUresult rc, const char *call, const char *file, int line) {
    if (rc == 0) return 0;
    cuda *c = d->impl;
    const char *name = NULL, *desc = NULL;
    if (c->cu.cuGetErrorName) c->cu.cuGetErrorName(rc, &name);
    if (c->cu.cuGetErrorString) c->cu.cuGetErrorString(rc, &desc);
    snprintf(d->err, sizeof d->err, "%s failed: %s (%s) at %s:%d", call, name ? name : "CUDA error",
             desc ? desc : "no description", base_name(file), line);
    return -1;
}
#define CU(d, fn, args) cu_check((d), ((cuda *)(d)->impl)->cu.fn args, #fn, __FILE__, __LINE__)

/* dlopen `env` or the first of `names` that loads, and every entry of syms; 0 or -1 with why */
typedef struct { const char *sym; void **dst; } api_sym;
static int load_lib(moe_device *d, void **lib, const char *env, const char *const *names, const api_sym *syms,
                    size_t n, const char *what) {
    const char *over = getenv(env);
    const char *const one[] = {over, NULL}, *const *cand = over && *over ? one : names;
    char why[160] = "";
    for (int i = 0; cand[i] && !*lib; i++) {
        if ((*lib = dlopen(cand[i], RTLD_NOW | RTLD_LOCAL)) || why[0]) continue;
        const char *e = dlerror();      /* the first candidate's reason */
        snprintf(why, sizeof why, "%s", e ? e : "not found");
    }
    if (!*lib) {
        snprintf(d->err, sizeof d->err, "no %s: cannot load %s (%s)", what, cand[0], why);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (!(*syms[i].dst = dlsym(*lib, syms[i].sym))) {
            snprintf(d->err, sizeof d->err, "%s: the library loaded lacks %s (too old?)", what, syms[i].sym);
            return -1;
        }
    return 0;
}

static void cuda_close(moe_device *d) {
    cuda *c = d->impl;
    if (!c) return;
    if (c->blas_h) c->blas.destroy(c->blas_h);
    if (c->module) c->cu.cuModuleUnload(c->module);
    if (c->stream) c->cu.cuStreamDestroy(c->stream);
    if (c->ctx) c->cu.cuDevicePrimaryCtxRelease(c->dev);
    free(c);        /* the libraries stay loaded: the driver's exit handlers live in them */
    d->impl = NULL;
}

/* the driver's library and entries, initialised, and its first GPU; 0 or -1 with why */
static int load_driver(moe_device *d, cuda *c) {
#define API_SYM(field, sym, params) {sym, (void **)&c->cu.field},
    const api_sym syms[] = {CU_API(API_SYM)};
#undef API_SYM
    static const char *const names[] = {"libcuda.so.1", "libcuda.so", NULL};
    return load_lib(d, &c->lib, "MOEC_LIBCUDA", names, syms, sizeof syms / sizeof syms[0], "CUDA driver") ||
                   CU(d, cuInit, (0)) || CU(d, cuDeviceGet, (&c->dev, 0))
               ? -1 : 0;
}

int moe_device_cuda_present(void) {
    cuda c = {0};
    moe_device d = {.impl = &c};
    return load_driver(&d, &c) == 0;
}

static int cuda_open(moe_device *d) {
    cuda *c = calloc(1, sizeof *c);
    if (!c) { snprintf(d->err, sizeof d->err, "out of memory"); return -1; }
    d->impl = c;
    int rc = load_driver(d, c) ||
             CU(d, cuDeviceGetAttribute, (&c->major, CU_ATTR_CC_MAJOR, c->dev)) ||
             CU(d, cuDeviceGetAttribute, (&c->minor, CU_ATTR_CC_MINOR, c->dev)) ||
             CU(d, cuDeviceGetName, (c->name, (int)sizeof c->name - 1, c->dev)) ||
             CU(d, cuDevicePrimaryCtxRetain, (&c->ctx, c->dev)) || CU(d, cuCtxSetCurrent, (c->ctx)) ||
             CU(d, cuStreamCreate, (&c->stream, 0));
    if (!rc && c->major < CUDA_MIN_MAJOR) {
        snprintf(d->err, sizeof d->err, "%s has compute capability %d.%d; the cuda target needs %d.0 or newer",
                 c->name, c->major, c->minor, CUDA_MIN_MAJOR);
        rc = -1;
    }
    if (rc) { cuda_close(d); return -1; }
    d->stream = c->stream;
    snprintf(d->desc, sizeof d->desc, "%s (compute capability %d.%d)", c->name, c->major, c->minor);
    return 0;
}

static void *cuda_alloc(moe_device *d, size_t bytes) {
    cuda *c = d->impl;
    CUdeviceptr p = 0;
    size_t n = bytes ? bytes : 1;
    if (CU(d, cuMemAlloc, (&p, n))) return NULL;
    if (CU(d, cuMemsetD8Async, (p, 0, n, c->stream)) || CU(d, cuStreamSynchronize, (c->stream))) {
        c->cu.cuMemFree(p);
        return NULL;
    }
    return (void *)(uintptr_t)p;
}
static void cuda_free(moe_device *d, void *p) {
    if (p) CU(d, cuMemFree, ((CUdeviceptr)(uintptr_t)p));
}
static void *cuda_host_alloc(moe_device *d, size_t bytes) {
    void *p = NULL;
    if (CU(d, cuMemHostAlloc, (&p, bytes ? bytes : 1, 0))) return NULL;
    memset(p, 0, bytes);
    return p;
}
static void cuda_host_free(moe_device *d, void *p) {
    if (p) CU(d, cuMemFreeHost, (p));
}
static int cuda_memset(moe_device *d, void *dst, int value, size_t bytes) {
    cuda *c = d->impl;
    return bytes ? CU(d, cuMemsetD8Async, ((CUdeviceptr)(uintptr_t)dst, (unsigned char)value, bytes, c->stream)) : 0;
}
static int cuda_upload(moe_device *d, void *dst, const void *src, size_t bytes) {
    cuda *c = d->impl;
    if (!bytes) return 0;
    int rc = CU(d, cuMemcpyHtoDAsync, ((CUdeviceptr)(uintptr_t)dst, src, bytes, c->stream));
    return rc ? rc : CU(d, cuStreamSynchronize, (c->stream));
}
static int cuda_download(moe_device *d, void *dst, const void *src, size_t bytes) {
    cuda *c = d->impl;
    if (!bytes) return 0;
    int rc = CU(d, cuMemcpyDtoHAsync, (dst, (CUdeviceptr)(uintptr_t)src, bytes, c->stream));
    return rc ? rc : CU(d, cuStreamSynchronize, (c->stream));
}
static int cuda_sync(moe_device *d) { return CU(d, cuStreamSynchronize, (((cuda *)d->impl)->stream)); }

/* the program's module: its source compiled for this GPU (or found in the kernel cache) */
static int load_module(moe_device *d, const char *source) {
    cuda *c = d->impl;
    if (c->module && c->module_source == source) return 0;
    if (c->module) { c->cu.cuModuleUnload(c->module); c->module = NULL; }
    char arch[16];
    snprintf(arch, sizeof arch, "sm_%d%d", c->major, c->minor);
    const char *archs[] = {arch};
    moe_nvrtc_result r;
    moe_cubin bin = {0};
    char *log = NULL;
    int rc = moe_nvrtc_compile(source, "kernels.cu", archs, 1, &r, &log, &bin);
    if (!r.available) {
        snprintf(d->err, sizeof d->err, "NVRTC (libnvrtc.so) was not found: the cuda device compiles the model's "
                 "kernels for %s (%s) at start", arch, c->name);
        return -1;
    }
    if (rc || !bin.data) {
        /* the log quotes source lines and is longer than a one-line reason */
        fprintf(stderr, "%s", log ? log : "");
        snprintf(d->err, sizeof d->err, "the kernels do not compile with NVRTC %d.%d for %s (its log is above)",
                 r.major, r.minor, arch);
        free(log);
        free(bin.data);
        return -1;
    }
    rc = CU(d, cuModuleLoadData, (&c->module, bin.data));
    free(bin.data);
    if (rc) return -1;
    c->module_source = source;
    return 0;
}

static int cuda_compile(moe_device *d, const char *name, const char *source, moe_kernel **out) {
    cuda *c = d->impl;
    *out = NULL;
    if (load_module(d, source)) return -1;
    moe_kernel *k = calloc(1, sizeof *k);
    if (!k) { snprintf(d->err, sizeof d->err, "out of memory"); return -1; }
    if (CU(d, cuModuleGetFunction, (&k->fn, c->module, name))) {
        free(k);
        return -1;
    }
    *out = k;
    return 0;
}
static void cuda_release(moe_device *d, moe_kernel *k) { (void)d; free(k); }

static int cuda_launch(moe_device *d, const moe_kernel *k, const moe_launch *cfg, void **args) {
    cuda *c = d->impl;
    return CU(d, cuLaunchKernel, (k->fn, cfg->grid[0], cfg->grid[1], cfg->grid[2], cfg->block[0], cfg->block[1],
                          cfg->block[2], (unsigned)cfg->shared_bytes, c->stream, args, NULL));
}

/* ---- cuBLAS: loaded at the first GEMM ---- */
static int blas_ready(moe_device *d) {
    cuda *c = d->impl;
    if (c->blas_h) return 0;
#define API_SYM(field, sym, params) {sym, (void **)&c->blas.field},
    const api_sym syms[] = {CUBLAS_API(API_SYM)};
#undef API_SYM
    static const char *const names[] = {"libcublas.so", "libcublas.so.13", "libcublas.so.12", NULL};
    if (!c->blas_lib && load_lib(d, &c->blas_lib, "MOEC_LIBCUBLAS", names, syms, sizeof syms / sizeof syms[0],
                                 "cuBLAS"))
        return -1;
    int rc = c->blas.create(&c->blas_h);
    if (rc == 0) rc = c->blas.set_stream(c->blas_h, c->stream);
    if (rc) {
        snprintf(d->err, sizeof d->err, "cublasCreate/cublasSetStream failed: cuBLAS status %d", rc);
        if (c->blas_h) c->blas.destroy(c->blas_h);
        c->blas_h = NULL;
        return -1;
    }
    return 0;
}

/* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: cuBLAS gets the operands
 * swapped, with n and m exchanged. */
static int cuda_gemm_any(moe_device *d, const moe_gemm *g, int batched) {
    cuda *c = d->impl;
    if (g->m < 0 || g->n < 0 || g->k < 0 || !g->a || !g->b || !g->c || (batched && g->batch < 0)) {
        snprintf(d->err, sizeof d->err, "gemm: bad shape %dx%dx%d or NULL operand", g->m, g->n, g->k);
        return -1;
    }
    if (blas_ready(d)) return -1;
    int ta = g->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = g->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (g->dtype != MOE_F32) {      /* a half model's GEMM: bf16/f16 operands, f32 output and accumulation */
        int t = g->dtype == MOE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
        int rc = batched ? -1 : c->blas.gemm_ex(c->blas_h, tb, ta, g->n, g->m, g->k, &g->alpha, g->b, t, g->ldb, g->a, t,
                                                g->lda, &g->beta, g->c, CUDA_R_32F, g->ldc, CUBLAS_COMPUTE_32F,
                                                CUBLAS_GEMM_DEFAULT);
        if (rc)
            snprintf(d->err, sizeof d->err, "cublasGemmEx failed: cuBLAS status %d (%dx%dx%d, %s operands) at %s:%d", rc,
                     g->m, g->n, g->k, g->dtype == MOE_BF16 ? "bf16" : "f16", base_name(__FILE__), __LINE__);
        return rc ? -1 : 0;
    }
    int rc = batched ? c->blas.sgemm_strided(c->blas_h, tb, ta, g->n, g->m, g->k, &g->alpha, g->b, g->ldb,
                                             g->stride_b, g->a, g->lda, g->stride_a, &g->beta, g->c, g->ldc,
                                             g->stride_c, g->batch)
                     : c->blas.sgemm(c->blas_h, tb, ta, g->n, g->m, g->k, &g->alpha, g->b, g->ldb, g->a, g->lda,
                                     &g->beta, g->c, g->ldc);
    if (rc) {
        snprintf(d->err, sizeof d->err, "%s failed: cuBLAS status %d (%dx%dx%d) at %s:%d",
                 batched ? "cublasSgemmStridedBatched" : "cublasSgemm", rc, g->m, g->n, g->k, base_name(__FILE__),
                 __LINE__);
        return -1;
    }
    return 0;
}
static int cuda_gemm(moe_device *d, const moe_gemm *g) { return cuda_gemm_any(d, g, 0); }
static int cuda_gemm_batched(moe_device *d, const moe_gemm *g) { return cuda_gemm_any(d, g, 1); }

const moe_device_ops *moe_device_cuda_ops(void) {
    static const moe_device_ops ops = {
        "cuda", CUDA_ALIGN, cuda_open, cuda_close, cuda_alloc, cuda_free, cuda_host_alloc, cuda_host_free,
        cuda_memset, cuda_upload, cuda_download, cuda_sync, cuda_compile, cuda_release, cuda_launch, cuda_gemm,
        cuda_gemm_batched, 0,
    };
    return &ops;
}
