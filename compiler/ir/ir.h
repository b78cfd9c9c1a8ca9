/* ir.h - the tensor graph: typed tensors with symbolic rows, nodes from ops.def.
 *
 * A graph holds one model's whole training program: the forward nodes, the backward
 * nodes derived by autodiff, and the optimizer nodes, in execution order, split into
 * phases. A separate graph holds the decode (KV-cache) program. Every tensor is
 * rows x width elements of one dtype, where rows is symbolic in the run-time token count
 * (S = B*T, at most S_max) so one plan serves every batch shape up to the compiled
 * maximum; every tensor lives in one buffer class (moe_abi.h) at a byte offset the plan
 * pass assigns. Nodes carry their attributes by name (ir_node.at, the member ops.def
 * names); nothing after the builder reads the model description.
 */
#ifndef MOE_IR_H
#define MOE_IR_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "model.h"
#include "moe_abi.h"

struct arena;
struct diag_ctx;

enum { IR_OPF_COMM = 1, IR_OPF_LOSS = 2 };     /* ops.def FLAGS */
enum { IR_AT_NONE, IR_AT_MATMUL, IR_AT_ACT, IR_AT_ATTN, IR_AT_MOE, IR_AT_A2A, IR_AT_TP, IR_AT_BUCKET, IR_AT_OPTIM,
       IR_AT_KD, IR_AT_CAST };
#define IR_MAX_IO 8

typedef enum {
#define OP(name, ins, outs, attr, flags, doc) IR_##name,
#include "ops.def"
#undef OP
    IR_OP_COUNT
} ir_op;

/* One slot of an op's signature, parsed from ops.def. */
typedef struct ir_slot {
    char name[16];
    char type;              /* f i d c p g t s (ops.def) */
    bool optional;          /* '?' */
    bool acc;               /* '+': the node may add to it */
} ir_slot;

typedef struct ir_opinfo {
    const char *name, *doc;
    int attr;               /* IR_AT_* */
    unsigned flags;         /* IR_OPF_* */
    int n_in, n_out;
    ir_slot in[IR_MAX_IO], out[IR_MAX_IO];
} ir_opinfo;

const ir_opinfo *ir_op_info(ir_op op);
const char *ir_op_name(ir_op op);
/* the slot of op named `name` among inputs (out = 0) or outputs, or -1 */
int ir_slot_index(ir_op op, int out, const char *name);

typedef enum {
    IR_T_ACT,       /* activation, activation gradient or kernel scratch: planned in the arena */
    IR_T_PARAM,     /* a parameter: its offset in the parameter buffer (the teacher's: in TPARAM) */
    IR_T_GRAD,      /* a parameter's gradient: the same offset in the gradient buffer */
    IR_T_INPUT,     /* token ids or targets [S], uploaded by the host (IO buffer) */
    IR_T_STATS,     /* the statistics record (IO buffer) */
    IR_T_CACHE,     /* a KV cache, persistent for a whole generation: one decode slot's, in the KV buffer */
} ir_tkind;

typedef enum {
    IR_ROWS_ONE,    /* rows = 1: width is the whole size */
    IR_ROWS_S,      /* rows = S */
    IR_ROWS_ROUTED, /* rows = S * top_k (routed token-choices, only the first R used) */
    IR_ROWS_CTX,    /* rows = context (KV cache) */
    IR_ROWS_RECV,   /* rows = recv_rows: the routed rows an expert-parallel rank may receive */
} ir_rows;

typedef struct ir_tensor {
    const char *name;
    ir_tkind kind;
    moe_dtype dtype;
    ir_rows rows;
    int64_t width;          /* elements per row */
    const char *shape;      /* printable, e.g. "[S, 384]" */
    int param;              /* index into the parameter table, or -1 */
    moe_buf buf;            /* buffer class */
    int64_t offset;         /* bytes from the start of its buffer (after planning) */
    int def, last;          /* first and last live node touching it (liveness) */
    int grad;               /* tensor id of its gradient, or -1 */
} ir_tensor;

/* ---- node attributes, one struct per ATTR column of ops.def ---- */
typedef struct ir_at_matmul { int trans_w; } ir_at_matmul;        /* W stored [N,K] */
typedef struct ir_at_act { int fn, experts; } ir_at_act;          /* MOE_ACT_*; experts > 0: over routed rows */
typedef struct ir_at_attn { int64_t heads, kv_heads; } ir_at_attn;   /* kv_heads divides heads */
typedef struct ir_at_moe {
    int layer;                  /* 0-based MoE layer */
    int experts, top_k;
    int stat, loads;            /* the layer's entries in the statistics record */
    int drop_tokens, noise, rts, second_sampling, min_capacity;   /* noise: MOE_NOISE_* */
    int eval_only;              /* a teacher's gate: evaluation mode whatever the run's mode */
    double cf, eval_cf, aux_coef, z_coef;
} ir_at_moe;
/* an all-to-all of MoE layer `layer` over its expert-parallel group of `degree` ranks, from the
 * tokens' side to the experts' (to_experts) or back; backward: made by autodiff */
typedef struct ir_at_a2a { int layer, experts, degree, backward, to_experts; } ir_at_a2a;
/* a sum or copy over the tensor group of `degree` ranks (parallel.tensor, expert_slicing); over
 * the routed rows of `experts` experts when the node has counts */
typedef struct ir_at_tp { int degree, experts; } ir_at_tp;
/* a bucket of the gradient buffer (ir_graph.buckets) */
typedef struct ir_at_bucket { int bucket; } ir_at_bucket;
typedef struct ir_at_optim { double beta1, beta2, eps, weight_decay, grad_clip; } ir_at_optim;
typedef struct ir_at_kd { double tau, weight; } ir_at_kd;         /* distill block */
typedef struct ir_at_cast { int experts; } ir_at_cast;            /* > 0: over the routed rows of a layer of E */

typedef struct ir_node {
    ir_op op;
    const char *name;       /* "h.1.moe.gate", shown in schedules and bench breakdowns */
    int n_in, n_out;        /* the op's slot counts (ops.def) */
    int in[IR_MAX_IO];      /* tensor ids, -1 = absent */
    int out[IR_MAX_IO];
    int acc[IR_MAX_IO];     /* per output: 0 = overwrite, 1 = add to it */
    union {
        ir_at_matmul matmul;
        ir_at_act act;
        ir_at_attn attn;
        ir_at_moe moe;
        ir_at_a2a a2a;
        ir_at_tp tp;
        ir_at_bucket bucket;
        ir_at_optim optim;
        ir_at_kd kd;
        ir_at_cast cast;
    } at;
    int phase;              /* IR_PHASE_* */
    int block;              /* the transformer block (0-based layer) of a student's node and of its
                             * gradient's, else -1 (embedding, head, losses, teacher, optimizer) */
    int dead;               /* removed by a pass */
    int kd;                 /* part of distillation (the teacher's forward, the KD loss): the
                             * runtime skips it when no teacher runs, so nothing else may read
                             * what it alone writes */
} ir_node;

enum { IR_PHASE_FWD, IR_PHASE_BWD, IR_PHASE_OPT };

/* What a target can run, as far as the passes need to know (codegen/target.c has one per
 * target): the buffer alignment and the element types it computes in. */
typedef struct ir_caps {
    const char *target;
    int64_t align;          /* bytes; every planned offset is a multiple */
    unsigned dtypes;        /* 1 << moe_dtype of each compute type it supports */
    int expert_parallel;    /* it spreads experts over ranks (else every rank holds them all) */
    int int8_decode;        /* its decode program reads int8 expert weights when they are loaded */
    int tensor_parallel;    /* it splits layers over tensor groups (parallel.tensor) */
    int fused_head;         /* it runs HEAD_XENT: the LM head and the loss in blocks of rows */
} ir_caps;

/* A parameter table laid out in one buffer: each tensor at an aligned byte offset, grouped
 * by how their gradients are reduced over the ranks and how their norm adds up: the dense
 * tensors held whole (and the experts of layers without expert parallelism) first, then the
 * tensors split over tensor groups, then the expert tensors of each degree P in ascending
 * order, each group one range of the buffer. */
#define IR_MAX_DEGREES 8
typedef struct ir_ptable {
    const md_param *p;
    int n;
    int64_t bytes;          /* the buffer (each tensor aligned) */
    int ngroups;            /* >= 1 */
    int degree[IR_MAX_DEGREES];             /* each group's expert-parallel degree (1: dense) */
    int sliced[IR_MAX_DEGREES];             /* the group's tensors are split over tensor groups */
    int64_t group_off[IR_MAX_DEGREES + 1];  /* its range of bytes: [group_off[i], group_off[i + 1]) */
    int64_t *offset;        /* [n] byte offsets */
    int *tensor;            /* [n] tensor id of each parameter */
    /* the int8 form of the expert weights (`quantize`; ir_param_quantized) in the QPARAM buffer:
     * [E, K, N] int8 at qoffset, then the per-output-channel scales [E, N] f32 at qscale; -1 for
     * the parameters kept in f32 */
    int64_t *qoffset, *qscale;
    int64_t qbytes;
    int *qtensor, *stensor; /* [n] their tensor ids in a graph that reads them (q8), else -1 */
} ir_ptable;

/* A bucket of the gradient buffer: a range of one reduction group of the parameter table
 * (ir_ptable) holding the parameters of one block, which the backward completes together and
 * whose sum over the ranks can start then (pass_optimizer makes them). */
typedef struct ir_bucket {
    int group;              /* its group in the parameter table */
    int64_t offset, bytes;  /* its range of the buffer */
} ir_bucket;

/* The distillation teacher of a training graph (moe-semantics.md section 5): its parameters
 * (in the TPARAM buffer), the KD settings of the student's distill block. */
typedef struct ir_teacher {
    const char *name;       /* the teacher model's */
    ir_ptable params;
    double tau, weight;
    int64_t stop_step;      /* the last step with the KD term; -1: every step */
} ir_teacher;

typedef struct ir_graph {
    struct arena *arena;
    struct diag_ctx *diag;  /* where passes report (may be NULL) */
    md_loc loc;             /* the model's definition: where internal errors point */
    const char *name;       /* the model's */
    ir_ptable params;       /* the model's, laid out in the parameter buffer */
    int64_t align;          /* the target's buffer alignment */

    ir_tensor *t; int nt, capt;
    ir_node *n; int nn, capn;

    int64_t B_max, T_max, S_max;    /* compiled maximum batch shape of this program */
    int64_t S_io;                    /* tokens the IO buffer holds (the training program's S_max) */
    int64_t decode_rows;             /* rows of the decode program (its B_max): their positions and
                                      * slots in the IO buffer at pos_off and slot_off */
    int64_t pos_off, slot_off;
    int64_t context;                 /* for the CTX row count */
    int top_k;                       /* routed rows per token (max over MoE layers) */
    int ep;                          /* the largest expert-parallel degree (1: none) */
    int tensor;                      /* the tensor-slicing degree (1: none) */
    int64_t recv_rows;               /* the most rows an expert-parallel rank receives in a layer */
    int decode;                      /* a single-token KV-cache graph */
    int recompute;                   /* train.recompute: pass_recompute keeps only the blocks' inputs */
    int fuse_head;                   /* the target runs HEAD_XENT (ir_caps.fused_head): pass_fuse may make it */
    moe_dtype half;                  /* training: the type of GEMM operands (pass_precision): bf16 or f16 when
                                      * the model's dtype asks and the target computes in it, else f32 */
    int q8;                          /* decode: its expert GEMMs read the int8 weights (QPARAM) when loaded */
    int n_moe;
    int n_stats;                     /* entries of the statistics record */
    int *stat_loads;                 /* [n_moe] where each MoE layer's expert loads start in it */
    ir_at_optim optim;               /* the train block's optimizer settings (pass_optimizer) */
    const ir_teacher *teacher;       /* the distillation teacher (training graph), or NULL */
    int n_buckets;                   /* the gradient buffer's buckets (training graph: pass_optimizer) */
    ir_bucket *buckets;
    int tokens, targets, stats;      /* IO tensor ids (targets -1 in decode) */
    int pos, slot;                   /* decode: each row's position and KV-cache slot (IO; -1 in training) */
    int loss;                        /* per-token LM loss tensor id (-1 in decode) */
    int logits;                      /* logits/probs tensor id; -1 once fused into HEAD_XENT */
    int head_x;                      /* HEAD_XENT's input (ln_f's output): the runtime makes logits from it */
    int64_t buf_bytes[MOE_BUF_COUNT];   /* sizes of the buffers (after planning) */
    int oom;
} ir_graph;

ir_graph *ir_graph_create(struct arena *a, const char *name, const md_param *params, int n_params, int64_t align);
/* t's offsets and size for its n parameters p at `align` bytes; -1 on out of memory */
int ir_ptable_layout(struct arena *a, ir_ptable *t, const md_param *p, int n, int64_t align);
int ir_param_degree(const md_param *p);     /* the expert-parallel degree of an expert tensor, else 1 */
int ir_param_quantized(const md_param *p);  /* an expert weight [E, K, N]: decoding may read it as int8 */
int ir_tensor_new(ir_graph *g, const char *name, ir_tkind kind, moe_dtype dt, ir_rows rows, int64_t width);
/* A node of op with its slot counts from ops.def and every slot absent (-1). */
int ir_node_new(ir_graph *g, ir_op op, const char *name, int phase);
/* the same, inserted before node `at` (the nodes from there move up by one); its index */
int ir_node_insert(ir_graph *g, int at, ir_op op, const char *name, int phase);
/* sets inputs/outputs in slot order from -2-terminated lists (shorter lists leave the rest -1):
 * ir_io(g, node, (int[]){x, w, -2}, (int[]){y, -2}) */
void ir_io(ir_graph *g, int node, const int *in, const int *out);
int64_t ir_rows_max(const ir_graph *g, ir_rows r);
int64_t ir_tensor_numel_max(const ir_graph *g, const ir_tensor *t);
int64_t ir_tensor_bytes_max(const ir_graph *g, const ir_tensor *t);
/* what one process allocates for a planned graph: parameters, activations and IO; to train,
 * also gradients, optimizer state and a distillation teacher's parameters */
int64_t ir_plan_bytes(const ir_graph *g, int train);
size_t ir_dtype_size(moe_dtype dt);
const char *ir_dtype_name(moe_dtype dt);    /* "f32", ... */
const char *ir_buf_name(moe_buf b);         /* "act", "param", ... */

/* Checks every live node against ops.def: slot counts, required slots, tensor types and
 * buffer classes, accumulate flags, shapes of the ops whose shapes relate, and that every
 * activation is written before it is read. Reports to g->diag at the model's location
 * ("internal error: after PASS: ...") and returns the number of problems. */
int ir_verify(const ir_graph *g, const char *after);

/* Printing (moec build --emit ir / schedule): deterministic. */
void ir_print(const ir_graph *g, FILE *out);
void ir_print_schedule(const ir_graph *g, FILE *out);
#endif
