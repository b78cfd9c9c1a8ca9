/* cu_emu.h - the emulation prelude: the CUDA kernel source compiled as C++ for the CPU.
 *
 * `moec build --target cuda` compiles the same kernels.cu that NVRTC compiles a second time,
 * with the host C++ compiler and `-include cu_emu.h`, into the executable; the cuda-emu
 * device (runtime/device_emu.c) finds each kernel by its name and runs its grid on the CPU.
 * What this file supplies:
 *   - threadIdx, blockIdx, blockDim, gridDim: the running emulated thread's (moe_emu_cur);
 *   - __syncthreads: a real barrier: blocks whose kernels synchronise run their threads as
 *     fibers (device_emu.c), and a fiber yields here until every thread of its block arrives;
 *   - __shared__: one instance per kernel function (blocks run one at a time);
 *   - bounds-checked buffers: every pointer a kernel receives is an emu_ptr that knows the
 *     tensor it points into; an access outside it is recorded with the kernel's name and the
 *     index (the launch then fails, in the manner of compute-sanitizer) and goes to a dummy
 *     cell instead of memory.
 *   - warp shuffles (__shfl_sync, _xor, _up, _down; width 32) and votes (__ballot_sync,
 *     __any_sync, __all_sync): the lanes of a warp wait for each other as at a barrier;
 *     kernels that use them are launched as kernels whose blocks synchronise;
 *   - atomics (atomicAdd, atomicMax, atomicMin, atomicExch, atomicCAS): plain updates, as
 *     one emulated thread runs at a time.
 *   - the half types' pointers (BF16, F16); their conversions are cu_common.cuh's, whose f16
 *     here is kernels/common/moe_half.h's arithmetic (not _Float16, which not every host
 *     compiler has), rounding as the GPU's cvt.rn.f16.f32.
 */
#ifndef MOE_CU_EMU_H
#define MOE_CU_EMU_H
#define MOE_CU_EMU 1
#include <math.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
typedef struct moe_emu_dim { unsigned x, y, z; } moe_emu_dim;
typedef struct moe_emu_thread { moe_emu_dim tid, bid, bdim, gdim; } moe_emu_thread;
extern moe_emu_thread *moe_emu_cur;     /* the emulated thread that is running */
void moe_emu_syncthreads(void);
/* records an out-of-bounds access (the first of a launch) and returns a dummy cell */
void *moe_emu_oob(long long index, long long count, size_t elem);
uint64_t moe_emu_warp_exchange(uint64_t v, int src_lane);
unsigned moe_emu_warp_ballot(int pred);
}

#define threadIdx (moe_emu_cur->tid)
#define blockIdx (moe_emu_cur->bid)
#define blockDim (moe_emu_cur->bdim)
#define gridDim (moe_emu_cur->gdim)
#define __syncthreads() moe_emu_syncthreads()
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __constant__

/* ---- warp operations ---- */
template <class T> inline T emu_shfl(T v, int src) {
    static_assert(sizeof(T) <= 8, "a shuffled value is at most 8 bytes");
    uint64_t bits = 0, got;
    __builtin_memcpy(&bits, &v, sizeof v);
    got = moe_emu_warp_exchange(bits, src);
    T r;
    __builtin_memcpy(&r, &got, sizeof r);
    return r;
}
#define EMU_LANE ((int)(threadIdx.x % 32))
template <class T> inline T __shfl_sync(unsigned, T v, int src) { return emu_shfl(v, src); }
template <class T> inline T __shfl_xor_sync(unsigned, T v, int m) { return emu_shfl(v, EMU_LANE ^ m); }
template <class T> inline T __shfl_down_sync(unsigned, T v, unsigned d) {
    return emu_shfl(v, EMU_LANE + (int)d < 32 ? EMU_LANE + (int)d : EMU_LANE);
}
template <class T> inline T __shfl_up_sync(unsigned, T v, unsigned d) {
    return emu_shfl(v, EMU_LANE >= (int)d ? EMU_LANE - (int)d : EMU_LANE);
}
inline unsigned __ballot_sync(unsigned mask, int pred) { return moe_emu_warp_ballot(pred) & mask; }
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, !pred) == 0; }

/* ---- atomics: one emulated thread runs at a time ---- */
template <class T> inline T atomicAdd(T *a, T v) { T o = *a; *a = o + v; return o; }
template <class T> inline T atomicMax(T *a, T v) { T o = *a; *a = o > v ? o : v; return o; }
template <class T> inline T atomicMin(T *a, T v) { T o = *a; *a = o < v ? o : v; return o; }
template <class T> inline T atomicExch(T *a, T v) { T o = *a; *a = v; return o; }
template <class T> inline T atomicCAS(T *a, T cmp, T v) { T o = *a; if (o == cmp) *a = v; return o; }

/* a pointer into one tensor: [p - (p - lo), hi) is what it may touch */
template <class T> struct emu_ptr {
    typedef T elem;
    T *p;
    const unsigned char *lo, *hi;
    emu_ptr() : p(nullptr), lo(nullptr), hi(nullptr) {}
    emu_ptr(decltype(nullptr)) : p(nullptr), lo(nullptr), hi(nullptr) {}
    emu_ptr(T *q, const unsigned char *l, const unsigned char *h) : p(q), lo(l), hi(h) {}
    template <class U> emu_ptr(const emu_ptr<U> &o) : p(o.p), lo(o.lo), hi(o.hi) {}
    T &operator[](long long i) const {
        const unsigned char *a = (const unsigned char *)(p + i);
        if (!p || a < lo || a + sizeof(T) > hi)
            return *(T *)moe_emu_oob(i, p ? (long long)((hi - (const unsigned char *)p) / (long long)sizeof(T)) : 0,
                                     sizeof(T));
        return p[i];
    }
    T &operator*() const { return (*this)[0]; }
    emu_ptr operator+(long long i) const { return emu_ptr(p + i, lo, hi); }
    explicit operator bool() const { return p != nullptr; }
};

#define CU_D inline
typedef emu_ptr<float> f32p;
typedef emu_ptr<const float> cf32p;
typedef emu_ptr<int32_t> i32p;
typedef emu_ptr<const int32_t> ci32p;
typedef emu_ptr<double> f64p;
typedef emu_ptr<const double> cf64p;
typedef emu_ptr<float> f32a;
typedef emu_ptr<const float> cf32a;
/* buffer class b at byte offset o, a tensor of n bytes. A KV-cache tensor is one sequence
 * slot's, and the decode kernels reach the other slots' copies by stride
 * (cu_attention_decode): its view is the whole cache, every slot. */
#define MOE_EMU_LO(b, o) (MOE_BUF_##b == MOE_BUF_KV ? ka.buf[MOE_BUF_##b] : ka.buf[MOE_BUF_##b] + (o))
#define MOE_EMU_HI(b, o, n) \
    (MOE_BUF_##b == MOE_BUF_KV ? ka.buf[MOE_BUF_##b] + ka.size[MOE_BUF_##b] : ka.buf[MOE_BUF_##b] + (o) + (n))
#define MOE_EMU_VIEW(T, b, o, n) emu_ptr<T>((T *)(ka.buf[MOE_BUF_##b] + (o)), MOE_EMU_LO(b, o), MOE_EMU_HI(b, o, n))
#define F32(b, o, n) MOE_EMU_VIEW(float, b, o, n)
#define I32(b, o, n) MOE_EMU_VIEW(int32_t, b, o, n)
#define F64(b, o, n) MOE_EMU_VIEW(double, b, o, n)
#define BF16(b, o, n) MOE_EMU_VIEW(cu_bf16, b, o, n)
#define F16(b, o, n) MOE_EMU_VIEW(cu_f16, b, o, n)
#endif
