// emu_kernels.cc - kernels for test_emu, written as the generated ones are (cu_common.cuh,
// compiled with the emulation prelude cu_emu.h): one that writes past its tensor, one that
// reduces over its block with barriers, one that synchronises without being launched so.
#include "cu_emu.h"
#include "cu_common.cuh"

// y: 16 floats; writes y[0..16], so the thread of i = 16 is out of bounds
extern "C" void t_oob_write(const moe_kargs ka, const moe_offs o) {
    f32p y = F32(ACT, o.off[0], 64);
    CU_FOR(i, 17) y[i] = 1.0f;
}

// out[block] = sum over the block's threads of (thread index + 1): needs real barriers
extern "C" void t_block_sum(const moe_kargs ka, const moe_offs o) {
    __shared__ double sh[CU_NT];
    f64p out = F64(ACT, o.off[0], 8 * 4);
    double s = cu_block_sum(threadIdx.x + 1.0, sh);
    if (threadIdx.x == 0) out[blockIdx.x] = s;
}

// warp operations: out[4 * warp + 0..3] = xor-reduced lane sum (496), down-reduced sum at
// lane 0, ballot of odd lanes, any/all of (lane < 32)
extern "C" void t_warp(const moe_kargs ka, const moe_offs o) {
    f64p out = F64(ACT, o.off[0], 8 * 4 * 8);
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    double v = lane;
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
    double d = lane;
    for (unsigned m = 16; m > 0; m >>= 1) d += __shfl_down_sync(0xffffffffu, d, m);
    unsigned odd = __ballot_sync(0xffffffffu, lane & 1);
    int any = __any_sync(0xffffffffu, lane == 7), all = __all_sync(0xffffffffu, lane < 32);
    if (lane == 0) {
        out[4 * warp] = v;
        out[4 * warp + 1] = d;
        out[4 * warp + 2] = odd;
        out[4 * warp + 3] = any * 10 + all;
    }
}

// atomics: every thread of every block adds 1
extern "C" void t_atomic(const moe_kargs ka, const moe_offs o) {
    f64p out = F64(ACT, o.off[0], 8);
    atomicAdd(&out[0], 1.0);
}

// half the block waits at __syncthreads, the other half shuffles and exits: a divergent
// barrier, undefined on a GPU
extern "C" void t_divergent(const moe_kargs ka, const moe_offs o) {
    (void)ka; (void)o;
    if (threadIdx.x < 128) __syncthreads();
    else (void)__shfl_xor_sync(0xffffffffu, 1, 1);
}

// lanes 0-15 of each warp wait at __syncthreads, lanes 16-31 at a shuffle: a hang on a GPU
extern "C" void t_deadlock(const moe_kargs ka, const moe_offs o) {
    (void)ka; (void)o;
    if (threadIdx.x % 32 < 16) __syncthreads();
    else (void)__shfl_xor_sync(0xffffffffu, 1, 1);
}

// warp sums over groups of four lanes, three in a row, 50 times: out[0] += the sums that
// differ from the lanes' values added directly. The last sums of the kernel are read by
// lanes 2 and 3 after lanes 0 and 1, which offered to them, have exited.
static inline float t_sum4(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
extern "C" void t_warp_exit(const moe_kargs ka, const moe_offs o) {
    f64p out = F64(ACT, o.off[0], 8 * 4);
    int t = threadIdx.x, row = t / 4, bad = 0;
    for (int it = 0; it < 50; it++) {
        if (it % 7 == 0) __syncthreads();
        float a = (float)((t * 31 + it * 7) % 13), b = (float)((t * 17 + it * 5) % 11);
        float sa = t_sum4(a), sb = t_sum4(b), sc = t_sum4(a * b), wa = 0, wb = 0, wc = 0;
        for (int l = 0; l < 4; l++) {
            int u = row * 4 + l;
            float x = (float)((u * 31 + it * 7) % 13), y = (float)((u * 17 + it * 5) % 11);
            wa += x, wb += y, wc += x * y;
        }
        bad += sa != wa || sb != wb || sc != wc;
    }
    if (bad) out[0] += bad;
}
