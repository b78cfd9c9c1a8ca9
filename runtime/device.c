/* device.c - choosing and opening a device (device.h). */
#include "device.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

moe_device *moe_device_open(const char *name, const char *target, char *err, size_t errlen) {
    if (!name) name = "cpu";    /* the default: a GPU when the program has the CUDA target */
    const moe_device_ops *ops = NULL;
    if (!strcmp(name, "cpu")) {
        ops = moe_device_cpu_ops();
    } else if (!strcmp(name, "cuda") || !strcmp(name, "cuda-emu")) {
        snprintf(err, errlen, "--device %s: this executable was built for the %s target only "
                 "(moec build --target cuda is not available yet)", name, target);
        return NULL;
    } else {
        snprintf(err, errlen, "unknown device '%s' (cpu, cuda, cuda-emu)", name);
        return NULL;
    }
    moe_device *d = calloc(1, sizeof *d);
    if (!d) { snprintf(err, errlen, "out of memory"); return NULL; }
    d->ops = ops;
    if (ops->open(d)) {
        snprintf(err, errlen, "device %s: %s", name, d->err);
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
