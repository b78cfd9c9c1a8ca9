/* lower.h - the backend-neutral kernel list: one step per live node, each a list of kernel
 * calls with everything a renderer needs and nothing it must look up.
 *
 * A call names a kernel and its variant and lists its arguments in the kernel's parameter
 * order: buffer references (buffer class, byte offset, dtype, extent), size literals, and
 * run-time values. Run-time values come in two kinds: host scalars the executor sets per step
 * (B, T, S, the mode, the micro-step's random stream, the loss scale,
 * the learning rate, the AdamW step, the communicator, the gradients' scale), and device scalars a kernel wrote
 * (the routed rows R of a MoE layer), which only a kernel may read. There is no argument
 * kind that reads device memory on the host, so no renderer can express it.
 *
 * Renderers (codegen/target.c: cpu now) print the same list as their language; `moec build
 * --emit kernels` prints it as it is (lw_print).
 */
#ifndef MOE_LOWER_H
#define MOE_LOWER_H
#include "ir.h"

typedef enum {
    LW_BUF,     /* a buffer reference */
    LW_INT,     /* an integer literal */
    LW_REAL,    /* a real literal */
    LW_RT,      /* a host run-time scalar, times an integer factor */
    LW_ROWS,    /* a row count: a host run-time scalar, or a device scalar (i32) */
} lw_kind;

typedef enum {
    LW_RT_B, LW_RT_T, LW_RT_S,      /* the step's batch shape, S = B*T */
    LW_RT_MODE,                     /* MOE_MODE_* */
    LW_RT_RNG,                      /* the micro-step's random stream */
    LW_RT_LOSS_SCALE,               /* d(total loss) / d(this micro-step's loss) */
    LW_RT_LR,                       /* the optimizer step's learning rate */
    LW_RT_OPT_STEP,                 /* the 1-based AdamW step */
    LW_RT_COMM,                     /* the communicator */
    LW_RT_REDUCE,                   /* this micro-step's backward starts the gradient sums (overlap) */
    LW_RT_GRAD_SCALE,               /* the scale the gradients carry: an fp16 model's loss scale, else 1 */
    LW_RT_COUNT
} lw_rt;

typedef struct lw_ref {
    int null;                       /* no buffer: the kernel gets NULL */
    int tensor;                     /* the IR tensor, or -1 (a whole buffer, an optimizer moment) */
    moe_buf buf;
    moe_dtype dtype;
    int64_t offset;                 /* bytes from the start of the buffer */
    int64_t bytes;                  /* extent at the compiled maximum */
    int group_first;                /* only the first rank of a tensor group gets it; NULL elsewhere (the
                                     * bias of an expert split by rows, which the group's sum adds once) */
} lw_ref;

typedef struct lw_arg {
    const char *name;               /* the kernel parameter's name */
    lw_kind kind;
    lw_ref ref;                     /* LW_BUF; LW_ROWS with device = 1 */
    int device;                     /* LW_ROWS: read from ref by the kernel */
    lw_rt rt;                       /* LW_RT; LW_ROWS with device = 0 */
    int64_t i;                      /* LW_INT; the factor of LW_RT and host LW_ROWS */
    double f;                       /* LW_REAL */
} lw_arg;

typedef struct lw_call {
    const char *kernel;             /* "layernorm_fwd", "moe_expert_fwd" */
    int variant;                    /* 0: the kernel's only form; n > 0: its numbered variant n */
    int tuned;                      /* the variant came from the tuning database (codegen/tune.h), not the rule */
    int nargs;
    lw_arg *args;
} lw_call;

typedef struct lw_step {
    const char *name;               /* the node's: "h.1.moe.gate" */
    ir_op op;
    int node;                       /* index in the graph */
    int phase;                      /* IR_PHASE_* */
    unsigned kind;                  /* MOE_STEP_* flags */
    const char *note;               /* why a step has no calls, or NULL */
    int ncalls;
    lw_call *calls;
} lw_step;

typedef struct lw_program {
    const ir_graph *g;
    int nsteps;
    lw_step *steps;
} lw_program;

/* The kernel list of a planned graph (memory from the graph's arena); NULL on out of memory. */
lw_program *lw_lower(const ir_graph *g);
const char *lw_rt_name(lw_rt r);    /* "B", "S", "pos", "lr", ... */
/* The argument of call k for the kernel parameter `name`, or NULL. */
const lw_arg *lw_arg_named(const lw_call *k, const char *name);
/* The largest value of argument `name` (its first len characters) of call k: an int as it is,
 * a run-time size at the graph's compiled maximum (B, T, S times its factor), a buffer's
 * elements, 1 for a real; -1 when k has no such argument. */
int64_t lw_arg_max(const ir_graph *g, const lw_call *k, const char *name, size_t len);
/* moec build --emit kernels: deterministic text. */
void lw_print(const lw_program *p, const char *target, FILE *out);
#endif
