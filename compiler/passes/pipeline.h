/* pipeline.h - the one pass pipeline, used by moec and by the tests.
 *
 * model -> settings check -> forward graph -> fuse -> autodiff -> recompute -> precision ->
 * optimizer -> comm -> fuse_casts -> plan,
 * with ir_verify after every step; the decode graph takes the same road without autodiff
 * and the optimizer. Problems are diagnostics with the model's source locations: a setting
 * this compiler accepts but cannot honour on the target is an error (it would change what
 * the model computes: tensor slicing, expert slicing) or a warning (dtype on a target
 * without it, dropout: the model still trains, without them).
 */
#ifndef MOE_PIPELINE_H
#define MOE_PIPELINE_H
#include "ir.h"

struct arena;
struct diag_ctx;

typedef struct pl_options {
    const ir_caps *caps;        /* the target's (codegen/target.c) */
    int opt_level;              /* 0 turns fusion off */
    const char *alike;          /* --target all: the other target, planned alike (caps are both's), or NULL */
    /* tests: called after each pass, before its check (may damage the graph on purpose) */
    void (*after_pass)(ir_graph *g, const char *pass, void *ctx);
    void *ctx;
} pl_options;

typedef struct pl_result { ir_graph *train, *decode; } pl_result;

/* Returns 0, or -1 after reporting to d (out of memory is reported too). Warnings are
 * reported to d as well and do not fail. */
int pl_run(struct arena *a, struct diag_ctx *d, const md_model *m, const pl_options *o, pl_result *out);
#endif
