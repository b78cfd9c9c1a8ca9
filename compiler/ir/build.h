/* build.h - the model builder: a validated md_model becomes a forward graph. */
#ifndef MOE_BUILD_H
#define MOE_BUILD_H
#include "ir.h"

/* The forward graph of a training/eval step for up to B_max x T_max tokens (decode = 0),
 * or of one generated token against the KV cache (decode = 1). NULL on OOM. */
ir_graph *ir_build_forward(struct arena *a, const md_model *m, int64_t B_max, int64_t T_max, int decode);
#endif
