/* passes.h - graph passes: fusion, autodiff, optimizer, communication, memory plan.
 * Each returns 0 or -1 (out of memory). pipeline.h runs them in order, checked. */
#ifndef MOE_PASSES_H
#define MOE_PASSES_H
#include "ir.h"

/* Folds ADD(x, MATMUL(..)), ADD(x, COMBINE(..)) and ADD(x, TP_SUM(..)) into the producer's residual input. */
int pass_fuse(ir_graph *g);
/* Appends the backward nodes, derived from the forward nodes by per-op gradient rules. */
int pass_autodiff(ir_graph *g);
/* train.recompute: block i's backward reads clones of its forward, made just before it. */
int pass_recompute(ir_graph *g);
/* g->half bf16 or f16: every GEMM (MATMUL, EXPERT_MM and their backward) reads copies of its
 * operands in that type, made by CAST nodes just before their first reader; a no-op for f32. */
int pass_precision(ir_graph *g);
/* After comm: a CAST of a tensor that only it reads (and in-place identity all-to-alls pass
 * on), written by LAYERNORM, RMSNORM, ACT or DISPATCH, is folded into that writer, which then
 * writes the half copy itself. */
int pass_fuse_casts(ir_graph *g);
/* Appends gradient all-reduce, global-norm clipping and the AdamW update. */
int pass_optimizer(ir_graph *g);
/* All-to-alls over one-rank expert groups and the forward TP_COPYs become in-place identities (no copy). */
int pass_comm(ir_graph *g);
/* Liveness over the node order, then byte offsets per buffer class: g->buf_bytes. */
int pass_plan(ir_graph *g);
#endif
