/* cuda_probe.h - which GPU this machine has, without opening it for work: the first GPU's
 * name and compute capability, as the cuda device describes it ("NVIDIA H200 (compute
 * capability 9.0)"). `moec build` and `moec tune` key the cuda target's tuning entries with
 * it (compiler/codegen/tune.c). The driver is loaded with dlopen, as the cuda device loads it:
 * $MOEC_LIBCUDA names another library. */
#ifndef MOE_CUDA_PROBE_H
#define MOE_CUDA_PROBE_H
#include <stddef.h>

/* 0 with the description in desc, or -1 with why (no driver, no GPU) in desc. */
int moe_cuda_probe(char *desc, size_t n);
#endif
