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
