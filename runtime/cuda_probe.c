/* cuda_probe.c - the first GPU's name and compute capability (cuda_probe.h). */
#include "cuda_probe.h"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

enum { ATTR_CC_MAJOR = 75, ATTR_CC_MINOR = 76 };    /* CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_* */

int moe_cuda_probe(char *desc, size_t n) {
    const char *env = getenv("MOEC_LIBCUDA"), *path = env && *env ? env : "libcuda.so.1";
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);    /* stays loaded: the driver's exit handlers live in it */
    if (!lib) { snprintf(desc, n, "no CUDA driver (%s)", path); return -1; }
    int (*init)(unsigned) = (int (*)(unsigned))dlsym(lib, "cuInit");
    int (*get)(int *, int) = (int (*)(int *, int))dlsym(lib, "cuDeviceGet");
    int (*name)(char *, int, int) = (int (*)(char *, int, int))dlsym(lib, "cuDeviceGetName");
    int (*attr)(int *, int, int) = (int (*)(int *, int, int))dlsym(lib, "cuDeviceGetAttribute");
    char gpu[128] = "";
    int dev = 0, major = 0, minor = 0;
    if (!init || !get || !name || !attr || init(0) || get(&dev, 0) || name(gpu, (int)sizeof gpu - 1, dev) ||
        attr(&major, ATTR_CC_MAJOR, dev) || attr(&minor, ATTR_CC_MINOR, dev)) {
        snprintf(desc, n, "no GPU (the CUDA driver %s sees none)", path);
        return -1;
    }
    snprintf(desc, n, "%s (compute capability %d.%d)", gpu, major, minor);
    return 0;
}
