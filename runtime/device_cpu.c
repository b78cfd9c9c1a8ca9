/* device_cpu.c - the CPU device (plain memory) and the one-process communicator. */
#include "rt.h"
#include <stdlib.h>
#include <string.h>

static void *cpu_alloc(size_t bytes) {
    size_t n = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, n ? n : 64);
    if (p) memset(p, 0, n ? n : 64);
    return p;
}
static void cpu_free(void *p) { free(p); }
static void cpu_copy(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
static void cpu_sync(void) {}

const moe_device *moe_device_cpu(void) {
    static const moe_device dev = {"cpu", cpu_alloc, cpu_free, cpu_copy, cpu_copy, cpu_sync};
    return &dev;
}

/* one process: sums over one rank are the identity */
static void local_f32(const moe_comm *c, float *buf, int64_t n) { (void)c; (void)buf; (void)n; }
static void local_f64(const moe_comm *c, double *buf, int64_t n) { (void)c; (void)buf; (void)n; }

const moe_comm *moe_comm_local(void) {
    static const moe_comm comm = {NULL, 0, 1, local_f32, local_f64};
    return &comm;
}
