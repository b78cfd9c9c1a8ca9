/* test_emu.c - the cuda-emu device: barriers are real, warp shuffles, votes and atomics
 * give the GPU's results, a deadlock and out-of-bounds accesses are caught with the
 * kernel's name (and index), launch limits are checked, kernels are found by name. */
#include "device.h"
#include "moe_abi.h"
#include <stdio.h>
#include <string.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); failures++; } } while (0)
#define CHECK_STR(a, b) do { if (strcmp((a), (b))) { fprintf(stderr, "%s:%d: got  '%s'\n%*swant '%s'\n", __FILE__, __LINE__, (a), (int)strlen(__FILE__) + 6, "", (b)); failures++; } } while (0)

static int launch(moe_device *d, const char *name, unsigned grid, unsigned block, int sync, uint8_t *act) {
    moe_kernel *k = NULL;
    if (d->ops->compile(d, name, NULL, &k)) return -2;
    moe_kargs ka;
    memset(&ka, 0, sizeof ka);
    ka.buf[MOE_BUF_ACT] = act;
    ka.size[MOE_BUF_ACT] = 4096;
    moe_offs o;
    memset(&o, 0, sizeof o);
    o.off[0] = 256;
    moe_launch cfg = {{grid, 1, 1}, {block, 1, 1}, 0, sync};
    void *args[2] = {&ka, &o};
    int rc = d->ops->launch(d, k, &cfg, args);
    d->ops->release(d, k);
    return rc;
}

int main(void) {
    char err[256];
    moe_device *d = moe_device_open("cuda-emu", "cuda", err, sizeof err);
    CHECK(d != NULL);
    if (!d) { fprintf(stderr, "%s\n", err); return 1; }
    CHECK(d->ops->alignment == 256);
    uint8_t *act = d->ops->alloc(d, 4096);
    CHECK(act && (uintptr_t)act % 256 == 0);

    /* barriers: 4 blocks of 256 fibers, each sums 1..256 = 32896 */
    CHECK(launch(d, "t_block_sum", 4, MOE_BLOCK_THREADS, 1, act) == 0);
    double sums[4];
    d->ops->download(d, sums, act + 256, sizeof sums);
    for (int b = 0; b < 4; b++) CHECK(sums[b] == 32896.0);

    /* warp operations: 8 warps of 32 lanes */
    CHECK(launch(d, "t_warp", 1, MOE_BLOCK_THREADS, 1, act) == 0);
    double w[32];
    d->ops->download(d, w, act + 256, sizeof w);
    for (int i = 0; i < 8; i++) {
        CHECK(w[4 * i] == 496.0 && w[4 * i + 1] == 496.0);
        CHECK(w[4 * i + 2] == (double)0xAAAAAAAAu && w[4 * i + 3] == 11.0);
    }
    /* a lane reads what its partner offered even when the partner exited right after */
    d->ops->memset(d, act + 256, 0, 8);
    CHECK(launch(d, "t_warp_exit", 1, MOE_BLOCK_THREADS, 1, act) == 0);
    d->ops->download(d, w, act + 256, 8);
    CHECK(w[0] == 0.0);
    /* atomics */
    d->ops->memset(d, act + 256, 0, 8);
    CHECK(launch(d, "t_atomic", 3, 64, 0, act) == 0);
    d->ops->download(d, w, act + 256, 8);
    CHECK(w[0] == 192.0);
    /* a barrier that half the block never reaches */
    CHECK(launch(d, "t_divergent", 1, MOE_BLOCK_THREADS, 1, act) == -1);
    CHECK_STR(d->err, "kernel t_divergent: __syncthreads is not reached by every thread of the block (a divergent "
                      "barrier)");

    /* lanes of one warp waiting at different barriers */
    CHECK(launch(d, "t_deadlock", 1, MOE_BLOCK_THREADS, 1, act) == -1);
    CHECK_STR(d->err, "kernel t_deadlock: deadlock (threads of a block wait at different barriers)");

    /* the deliberate out-of-bounds write */
    CHECK(launch(d, "t_oob_write", 1, 32, 0, act) == -1);
    CHECK_STR(d->err, "kernel t_oob_write: out-of-bounds access to element 16 of a tensor of 16 (4-byte elements), "
                      "thread 16 of block 0");
    float y[17];
    d->ops->download(d, y, act + 256, sizeof y);
    CHECK(y[15] == 1.0f && y[16] == 0.0f);     /* the write went to a dummy cell */

    /* a kernel that synchronises, launched as one that does not */
    CHECK(launch(d, "t_block_sum", 1, MOE_BLOCK_THREADS, 0, act) == -1);
    CHECK_STR(d->err, "kernel t_block_sum uses __syncthreads but was launched as a kernel whose blocks do not "
                      "synchronise");
    /* limits and names */
    CHECK(launch(d, "t_oob_write", 1, 1024, 0, act) == -1);
    CHECK_STR(d->err, "kernel t_oob_write: launch of 1 x 1 x 1 blocks of 1024 x 1 x 1 threads is outside the "
                      "emulator's limits (1-D, at most 256 threads a block)");
    CHECK(launch(d, "t_missing", 1, 32, 0, act) == -2);
    CHECK_STR(d->err, "kernel 't_missing' is not in this executable (built without the emulated kernels of the cuda "
                      "target?)");
    d->ops->free(d, act);
    moe_device_close(d);
    if (failures) { fprintf(stderr, "test_emu: %d failure(s)\n", failures); return 1; }
    printf("test_emu: ok\n");
    return 0;
}
