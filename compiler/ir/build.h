/* build.h - the model builder: a validated md_model becomes a forward graph. */
#ifndef MOE_BUILD_H
#define MOE_BUILD_H
#include "ir.h"

/* The forward graph of a training/eval step for up to train.batch x context tokens
 * (decode = 0), or of one generated token against the KV cache (decode = 1), with buffers
 * aligned to `align` bytes. NULL on out of memory, or after reporting to d a parameter the
 * model's table lacks (an internal error). */
ir_graph *ir_build_forward(struct arena *a, struct diag_ctx *d, const md_model *m, int64_t align, int decode);
#endif
