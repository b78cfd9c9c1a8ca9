/* build.h - the model builder: a validated md_model becomes a forward graph. */
#ifndef MOE_BUILD_H
#define MOE_BUILD_H
#include "ir.h"

/* What to build: the forward of a training/eval step for up to train.batch x context tokens,
 * or of one generated token against the KV cache, whose expert GEMMs may also read int8
 * expert weights (QPARAM) when a quantized checkpoint is loaded. */
typedef enum { IR_BUILD_TRAIN, IR_BUILD_DECODE, IR_BUILD_DECODE_Q8 } ir_build_kind;

/* The rows of the decode program: sequences decoding together in one pass (each its own
 * position and KV-cache slot); at most the tokens the IO buffer holds (train.batch x context). */
#define IR_DECODE_ROWS 32
static inline int64_t ir_decode_rows(const md_model *m) {
    int64_t io = m->train.batch * m->context;
    return io < IR_DECODE_ROWS ? io : IR_DECODE_ROWS;
}

/* The forward graph of `kind`, with buffers aligned to `align` bytes. NULL on out of memory,
 * or after reporting to d a parameter the model's table lacks (an internal error). */
ir_graph *ir_build_forward(struct arena *a, struct diag_ctx *d, const md_model *m, int64_t align, ir_build_kind kind);
#endif
