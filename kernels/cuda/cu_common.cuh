/* cu_common.cuh - shared by every CUDA kernel template: types, pointer kinds, launch shape,
 * reductions.
 *
 * The templates are `__device__` functions with the CPU kernels' parameters (kernels/cpu,
 * same names, same order) plus a `part`: a kernel whose work needs a grid-wide barrier is
 * split into parts, each its own launch. The cuda renderer (compiler/codegen/cuda.c) writes
 * one `extern "C" __global__` function per distinct (template, part, sizes) that takes the
 * run-time scalars (moe_kargs) and the byte offsets of its buffers (moe_offs, both in
 * kernels/common/moe_abi.h) and passes every size as a literal. Every template loops
 * grid-stride over its work, so any grid is correct; the renderer sizes it from the
 * compiled maxima.
 *
 * Pointers are written as f32p, cf32p (const), i32p, ci32p, f64p: raw pointers for NVRTC and
 * nvcc, bounds-checked handles under the emulator (cu_emu.h defines MOE_CU_EMU
 * and its own forms before including this file). Templates index them (p[i]) and offset
 * them (p + i), nothing else.
 *
 * Half types (a model with dtype bf16 or fp16: the GEMMs' operands, compiler/passes/
 * precision.c): cu_bf16 and cu_f16 hold the bits; cu_f() widens any element to float, and
 * cu_to<T>() rounds a float to T, to nearest even. The GEMM templates take their operand
 * pointers as template parameters (PX, PW, ...), so one template reads f32 or a half type.
 *
 * Determinism: every reduction runs in a fixed order (a tree over a fixed block size, or
 * one thread walking its items in order); there are no floating-point atomics.
 */
#ifndef MOE_CU_COMMON_CUH
#define MOE_CU_COMMON_CUH

#if !defined(__CUDACC_RTC__) && !defined(MOE_CU_EMU)
#include <math.h>
#endif
#include "moe_abi.h"
#include "moe_half.h"
#include "moe_rng.h"

#define CU_NT MOE_BLOCK_THREADS

#ifndef MOE_CU_EMU
#define CU_D __device__ __forceinline__
typedef float *__restrict__ f32p;
typedef const float *__restrict__ cf32p;
typedef int32_t *__restrict__ i32p;
typedef const int32_t *__restrict__ ci32p;
typedef double *__restrict__ f64p;
typedef const double *__restrict__ cf64p;
typedef float *f32a;                    /* may alias another argument (an in-place update) */
typedef const float *cf32a;
/* a tensor of n bytes in buffer class b at byte offset o, as the renderer writes arguments
 * (n is the emulator's bounds check) */
#define F32(b, o, n) ((float *)(ka.buf[MOE_BUF_##b] + (o)))
#define I32(b, o, n) ((int32_t *)(ka.buf[MOE_BUF_##b] + (o)))
#define F64(b, o, n) ((double *)(ka.buf[MOE_BUF_##b] + (o)))
#define BF16(b, o, n) ((cu_bf16 *)(ka.buf[MOE_BUF_##b] + (o)))
#define F16(b, o, n) ((cu_f16 *)(ka.buf[MOE_BUF_##b] + (o)))
#endif
#if defined(__CUDACC_RTC__) && !defined(INFINITY)
#define INFINITY __int_as_float(0x7f800000)
#endif


/* ---- half types: bits, widening and rounding (the same results on the GPU and in the
 * emulator: f16 by the GPU's cvt instructions there, by kernels/common/moe_half.h's
 * arithmetic, which rounds the same way, here; bf16 by moe_half.h on both) ---- */
struct cu_bf16 { unsigned short u; };
struct cu_f16 { unsigned short u; };
#ifdef MOE_CU_EMU
CU_D unsigned cu_bits(float f) { unsigned u; __builtin_memcpy(&u, &f, 4); return u; }
CU_D float cu_float(unsigned u) { float f; __builtin_memcpy(&f, &u, 4); return f; }
CU_D float cu_f(cu_f16 h) { return cu_float(moe_f16_to_f32(h.u)); }
CU_D cu_f16 cu_f16_rn(float f) { cu_f16 h; h.u = moe_f16_from_f32(cu_bits(f)); return h; }
#else
CU_D unsigned cu_bits(float f) { return __float_as_uint(f); }
CU_D float cu_float(unsigned u) { return __uint_as_float(u); }
CU_D float cu_f(cu_f16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.u));
    return f;
}
CU_D cu_f16 cu_f16_rn(float f) {
    cu_f16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.u) : "f"(f));
    return h;
}
#endif
CU_D float cu_f(float v) { return v; }
CU_D float cu_f(cu_bf16 h) { return cu_float(moe_bf16_to_f32(h.u)); }
CU_D cu_bf16 cu_bf16_rn(float f) {     /* (kernels/common/moe_half.h: nearest even, NaN kept) */
    cu_bf16 h;
    h.u = moe_bf16_from_f32(cu_bits(f));
    return h;
}
/* the element type of a pointer (raw, or the emulator's emu_ptr) */
template <class P> struct cu_elem { typedef typename P::elem type; };
template <class T> struct cu_elem<T *> { typedef T type; };
template <class T> CU_D T cu_to(float f);
template <> CU_D float cu_to<float>(float f) { return f; }
template <> CU_D cu_bf16 cu_to<cu_bf16>(float f) { return cu_bf16_rn(f); }
template <> CU_D cu_f16 cu_to<cu_f16>(float f) { return cu_f16_rn(f); }
/* p[i] = v in p's element type: the kernels that may write a GEMM's half operand directly
 * (a cast fused into its producer, compiler/passes/precision.c) */
template <class P> CU_D void cu_st(P p, long long i, float v) { p[i] = cu_to<typename cu_elem<P>::type>(v); }

/* A row count known on the host (n) or read by the kernel from the counts record (dev). */
typedef struct cu_rows { long long n; ci32p dev; } cu_rows;
#define K_ROWS(n) cu_rows{(long long)(n), ci32p()}
#define K_ROWS_DEV(p) cu_rows{0, (p)}
CU_D long long cu_rows_get(const cu_rows &r) { return r.dev ? (long long)r.dev[0] : r.n; }
CU_D long long cu_rows_get(long long n) { return n; }

/* grid-stride loops: over items (one thread each), and over rows (one block each) */
#define CU_FOR(i, n) for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (long long)(n); \
                          i += (long long)gridDim.x * blockDim.x)
#define CU_FOR_ROWS(r, n) for (long long r = blockIdx.x; r < (long long)(n); r += gridDim.x)

/* The sum of v over the block (CU_NT threads), in a fixed tree order; every thread gets it.
 * sh: CU_NT doubles of shared memory. */
CU_D double cu_block_sum(double v, double *sh) {
    int t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (int w = CU_NT / 2; w > 0; w >>= 1) {
        if (t < w) sh[t] += sh[t + w];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();
    return r;
}

CU_D float cu_maxf(float a, float b) { return a > b ? a : b; }

/* The largest v over the block; every thread gets it. sh: CU_NT floats of shared memory. */
CU_D float cu_block_max(float v, float *sh) {
    int t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (int w = CU_NT / 2; w > 0; w >>= 1) {
        if (t < w) sh[t] = cu_maxf(sh[t], sh[t + w]);
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}

/* a loop of one thread's serial work: kept rolled (unrolled, such loops spill registers) */
#ifdef MOE_CU_EMU
#define CU_SERIAL
#else
#define CU_SERIAL _Pragma("unroll 1")
#endif

/* The exclusive prefix sum of v over the block's threads in thread order, and in *total the
 * block's sum; every thread calls it. sh: CU_NT + 1 ints of shared memory. */
CU_D int cu_block_scan(int v, int *sh, int *total) {
    int t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    if (t == 0) {
        int run = 0;
        CU_SERIAL for (int i = 0; i < CU_NT; i++) { int x = sh[i]; sh[i] = run; run += x; }
        sh[CU_NT] = run;
    }
    __syncthreads();
    int r = sh[t];
    *total = sh[CU_NT];
    __syncthreads();
    return r;
}
#endif
