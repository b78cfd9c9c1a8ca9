/* target.c - the table of targets (see target.h). A new target adds a row. */
#include "target.h"
#include <string.h>

static const cg_target targets[] = {
    {"cpu", {"cpu", 64, 1u << MOE_F32 | 1u << MOE_I32 | 1u << MOE_F64, 1, 1, 1, 1}, cg_cpu_render, NULL, "model.c", NULL,
     cg_cpu_files},
    {"cuda", {"cuda", 256, 1u << MOE_F32 | 1u << MOE_BF16 | 1u << MOE_F16 | 1u << MOE_I32 | 1u << MOE_F64, 0, 0, 0, 0}, cg_cuda_render, cg_cuda_source,
     "model_cuda.c", "kernels.cu", cg_cuda_files},
};

const cg_target *cg_target_find(const char *name) {
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++)
        if (!strcmp(targets[i].name, name)) return &targets[i];
    return NULL;
}

const char *cg_embedded(const char *name) {
    for (int i = 0; moe_embedded_files[i].name; i++)
        if (!strcmp(moe_embedded_files[i].name, name)) return moe_embedded_files[i].text;
    return NULL;
}
