/* device.h - the device table: where buffers live, how bytes move, how kernels run.
 *
 * In the manner of ggml's backend interface: an instance (moe_device) is passed to every
 * call; each implementation is one file behind a table of functions (device_cpu.c;
 * device_cuda.c: the driver, NVRTC and cuBLAS loaded with dlopen; device_emu.c: the cuda
 * target's kernels run on the CPU), so the executor includes no CUDA, BLAS or MPI header. Calls are ordered on the device's stream and may return before the work is done;
 * `sync` waits. Every call that can fail returns 0 or -1 with a one-line reason in d->err.
 * Device memory is never dereferenced by the host: it is reached through upload, download
 * and memset, and by kernels.
 */
#ifndef MOE_DEVICE_H
#define MOE_DEVICE_H
#include <stddef.h>
#include <stdint.h>
#include "moe_abi.h"

typedef struct moe_device moe_device;
typedef struct moe_kernel moe_kernel;      /* a kernel compiled at run time (device-specific) */

/* the launch geometry of a compiled kernel; block_sync: its blocks synchronise (a GPU
 * ignores it; the emulator runs such blocks' threads as fibers) */
typedef struct moe_launch { unsigned grid[3], block[3]; size_t shared_bytes; int block_sync; } moe_launch;

/* C = alpha op(A) op(B) + beta C on device buffers, row-major, op(A) [m,k], op(B) [k,n];
 * batched: `batch` products, matrices `stride_*` elements apart. A and B hold elements of
 * `dtype` (f32; bf16 or f16 for a half model's GEMMs, single products only, through the
 * pointers cast), C is f32, and so is the accumulation. */
typedef struct moe_gemm {
    int trans_a, trans_b;
    int m, n, k;
    float alpha, beta;
    const float *a, *b;
    float *c;
    int lda, ldb, ldc;
    int batch;
    int64_t stride_a, stride_b, stride_c;
    int dtype;                  /* moe_dtype of A and B */
} moe_gemm;

typedef struct moe_device_ops {
    const char *name;
    size_t alignment;                                       /* of every alloc */
    int (*open)(moe_device *d);
    void (*close)(moe_device *d);
    void *(*alloc)(moe_device *d, size_t bytes);            /* zeroed; NULL on failure */
    void (*free)(moe_device *d, void *p);
    void *(*host_alloc)(moe_device *d, size_t bytes);       /* host memory fast to transfer (pinned) */
    void (*host_free)(moe_device *d, void *p);
    int (*memset)(moe_device *d, void *dst, int value, size_t bytes);
    int (*upload)(moe_device *d, void *dst, const void *src, size_t bytes);     /* host -> device */
    int (*download)(moe_device *d, void *dst, const void *src, size_t bytes);   /* device -> host */
    int (*sync)(moe_device *d);
    /* run-time compiled kernels (NVRTC on CUDA) */
    int (*compile)(moe_device *d, const char *name, const char *source, moe_kernel **out);
    void (*release)(moe_device *d, moe_kernel *k);
    int (*launch)(moe_device *d, const moe_kernel *k, const moe_launch *cfg, void **args);
    /* library GEMMs (cuBLAS on CUDA) */
    int (*gemm)(moe_device *d, const moe_gemm *g);
    int (*gemm_batched)(moe_device *d, const moe_gemm *g);
    int host_memory;            /* its buffers are the host's memory (cpu, cuda-emu) */
} moe_device_ops;

struct moe_device {
    const moe_device_ops *ops;
    void *impl;                 /* the implementation's state */
    void *stream;               /* the queue calls are ordered on (NULL: synchronous) */
    char err[256];              /* why the last call failed */
    char desc[192];             /* what it is, for `info` (set by open) */
};

/* whether NAME is a device this runtime knows (cpu, cuda, cuda-emu) */
int moe_device_known(const char *name);
/* Opens device `name` (cpu, cuda, cuda-emu; NULL = the default for the program's target)
 * for a program built for `target`. NULL with a message when it cannot. */
moe_device *moe_device_open(const char *name, const char *target, char *err, size_t errlen);
void moe_device_close(moe_device *d);
/* the implementations */
const moe_device_ops *moe_device_cpu_ops(void);
const moe_device_ops *moe_device_emu_ops(void);    /* cuda-emu: device_emu.c */
const moe_device_ops *moe_device_cuda_ops(void);   /* cuda: device_cuda.c */
int moe_device_cuda_present(void);      /* a CUDA driver loads and sees a GPU */
#endif
