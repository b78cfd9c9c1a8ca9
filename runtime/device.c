/* device.c - choosing and opening a device (device.h). */
#include "device.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int moe_device_known(const char *name) {
    return name && (!strcmp(name, "cpu") || !strcmp(name, "cuda") || !strcmp(name, "cuda-emu"));
}

moe_device *moe_device_open(const char *name, const char *target, char *err, size_t errlen) {
    int cuda_target = !strcmp(target, "cuda");
    if (!name) name = cuda_target ? "cuda" : "cpu";    /* the device the program was built for */
    const moe_device_ops *ops = NULL;
    if (!moe_device_known(name)) {
        snprintf(err, errlen, "unknown device '%s' (cpu, cuda, cuda-emu)", name);
        return NULL;
    }
    if ((strcmp(name, "cpu") == 0) == cuda_target) {
        snprintf(err, errlen, cuda_target ? "--device cpu: this executable was built for the cuda target: run it "
                                            "with --device cuda, or --device cuda-emu to emulate the GPU on the CPU"
                                          : "--device %s: this executable was built for the cpu target only "
                                            "(build it with moec build --target cuda)", name);
        return NULL;
    }
    if (!strcmp(name, "cpu")) {
        ops = moe_device_cpu_ops();
    } else if (!strcmp(name, "cuda-emu")) {
        ops = moe_device_emu_ops();
    } else {
        ops = moe_device_cuda_ops();
    }
    moe_device *d = calloc(1, sizeof *d);
    if (!d) { snprintf(err, errlen, "out of memory"); return NULL; }
    d->ops = ops;
    if (ops->open(d)) {
        snprintf(err, errlen, "device %s: %s%s", name, d->err,
                 ops == moe_device_cuda_ops() ? "; without a GPU, --device cuda-emu runs the same kernels on the CPU" : "");
        free(d);
        return NULL;
    }
    return d;
}

void moe_device_close(moe_device *d) {
    if (!d) return;
    d->ops->close(d);
    free(d);
}
