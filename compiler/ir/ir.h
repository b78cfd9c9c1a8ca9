/* ir.h - the tensor graph: tensors with symbolic row counts, nodes from ops.def.
 *
 * A graph holds one model's whole training program: the forward nodes, the backward
 * nodes derived by autodiff, and the optimizer nodes, in execution order, split into
 * phases. Separate graphs hold the decode (KV-cache) program. Every tensor's size is
 * rows x width, where rows is symbolic in the runtime token count (S = B*T, at most
 * S_max) so one plan serves every batch shape up to the compiled maximum.
 */
#ifndef MOE_IR_H
#define MOE_IR_H
#include <stdint.h>
#include <stdio.h>
#include "model.h"

struct arena;

typedef enum {
#define OP(name, nin, nout, doc) IR_##name,
#include "ops.def"
#undef OP
    IR_OP_COUNT
} ir_op;

const char *ir_op_name(ir_op op);

typedef enum {
    IR_T_ACT,       /* activation or activation gradient: planned in the arena */
    IR_T_PARAM,     /* a parameter: offset in the parameter buffer */
    IR_T_GRAD,      /* a parameter's gradient: same offset in the gradient buffer */
    IR_T_TOKENS,    /* the input token ids [S] */
    IR_T_TARGETS,   /* the next-token targets [S] */
    IR_T_CACHE,     /* persistent for a whole generation (KV cache) */
} ir_tkind;

typedef enum {
    IR_ROWS_ONE,    /* rows = 1 */
    IR_ROWS_S,      /* rows = S */
    IR_ROWS_ROUTED, /* rows = S * top_k (routed token-choices, only real rows used) */
    IR_ROWS_ATT,    /* rows = S * H * T (attention probabilities [B,H,T,T]) */
    IR_ROWS_CTX,    /* rows = context (KV cache) */
} ir_rows;

typedef struct ir_tensor {
    const char *name;
    ir_tkind kind;
    int is_int;             /* int32 elements (routing tables); same size as fp32 */
    ir_rows rows;
    int64_t width;          /* elements per row */
    const char *shape;      /* printable, e.g. "[S, 384]" */
    int param;              /* index into the md_param table, or -1 */
    int64_t offset;         /* elements from the start of its buffer (after planning) */
    int def, last;          /* first and last node touching it (liveness) */
    int grad;               /* tensor id of its gradient, or -1 */
} ir_tensor;

#define IR_MAX_IO 8
typedef struct ir_node {
    ir_op op;
    const char *name;       /* "h.1.moe.gate", shown in schedules and bench breakdowns */
    int n_in, n_out;
    int in[IR_MAX_IO];      /* tensor ids, -1 = absent */
    int out[IR_MAX_IO];
    int acc[IR_MAX_IO];     /* per output: 0 = overwrite, 1 = add to it */
    int64_t a[8];           /* integer attributes, meaning per op */
    double f[4];            /* float attributes */
    int phase;              /* IR_PHASE_* */
    int dead;               /* removed by a pass */
} ir_node;

enum { IR_PHASE_FWD, IR_PHASE_BWD, IR_PHASE_OPT };

typedef struct ir_graph {
    struct arena *arena;
    const md_model *m;
    const md_param *params;
    int n_params;
    int64_t param_floats;   /* total parameter elements */
    int64_t *param_offset;  /* [n_params] offsets in the parameter buffer */
    int *param_tensor;      /* [n_params] tensor id of each parameter */

    ir_tensor *t; int nt, capt;
    ir_node *n; int nn, capn;

    int64_t B_max, T_max, S_max;    /* compiled maximum batch shape */
    int top_k;                       /* routed rows per token (max over MoE layers) */
    int decode;                      /* a single-token KV-cache graph */
    int tokens, targets;             /* input tensor ids */
    int loss;                        /* per-token LM loss tensor id */
    int logits;                      /* logits/probs tensor id */
    int64_t arena_floats;            /* planned arena size in elements */
    int oom;
} ir_graph;

ir_graph *ir_graph_create(struct arena *a, const md_model *m, const md_param *params, int n_params);
int ir_tensor_new(ir_graph *g, const char *name, ir_tkind kind, ir_rows rows, int64_t width);
int ir_node_new(ir_graph *g, ir_op op, const char *name, int phase);
/* sets inputs/outputs from -2-terminated lists: ir_io(g, node, (int[]){x, w, -2}, (int[]){y, -2}) */
void ir_io(ir_graph *g, int node, const int *in, const int *out);
int64_t ir_rows_max(const ir_graph *g, ir_rows r);
int64_t ir_tensor_numel_max(const ir_graph *g, const ir_tensor *t);

/* Printing (moec build --emit ir / schedule): deterministic. */
void ir_print(const ir_graph *g, FILE *out);
void ir_print_schedule(const ir_graph *g, FILE *out);
#endif
