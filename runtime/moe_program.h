/* moe_program.h - the interface between generated code and the runtime (the ABI).
 *
 * moec writes this file beside the code it generates; the runtime is compiled against the
 * same text. Generated code defines a moe_program per target: the model's sizes and hyper-
 * parameters, the parameter table (names, shapes, byte offsets, init), the sizes of the
 * buffer classes, the layout of the IO buffer, and two schedules (training/evaluation, and
 * KV-cache decoding). A schedule is a list of steps, each a generated function with every
 * size baked in that calls kernels on buffers at planned offsets through a moe_ctx. The
 * runtime owns the buffers, the device, the data and the command line; it never sees an op
 * and never reads device memory except through its device table.
 */
#ifndef MOE_PROGRAM_H
#define MOE_PROGRAM_H
#include <stdint.h>
#include "moe_abi.h"

#define MOE_ABI_VERSION 15

enum { MOE_PHASE_FWD, MOE_PHASE_BWD, MOE_PHASE_OPT };
/* the learning-rate schedule after warmup (rt.h, moe_lr_at) */
enum { MOE_SCHED_COSINE, MOE_SCHED_CONSTANT, MOE_SCHED_LINEAR };

/* Communication table: in one process every call is the identity. Buffers are device
 * memory of the running device.
 * The layout (moe-semantics: ranks = data x tensor): rank r is rank r % T of its tensor group
 * (T = parallel.tensor consecutive ranks, which split layers between them) and rank d = r / T
 * of the data-parallel group of the ranks with the same r % T. Within a data-parallel group,
 * for an expert-parallel degree P: the expert group of a rank is its block of P consecutive
 * data ranks (it holds every expert once, data rank p of the block the experts p L .. p L +
 * L - 1), its expert-data group the data ranks at the same place in every block (they hold
 * the same experts). With T = 1 the data-parallel group is the world. The groups' names:
 * moe_abi.h's MOE_GROUP_*. */
/* how an expert group exchanges rows: flat (one all-to-all), or hierarchical (within each
 * node of G consecutive ranks, then between the ranks at the same place on every node, as
 * DeepSpeed-MoE: O(G + P/G) messages per rank instead of O(P)); auto: hierarchical where the
 * group spans several nodes */
enum { MOE_A2A_AUTO, MOE_A2A_FLAT, MOE_A2A_HIERARCHICAL };
typedef struct moe_comm {
    void *impl;
    int rank, world;
    int tensor;                     /* T: the ranks of a tensor group (1: no tensor slicing) */
    /* in-place sums over all ranks */
    void (*allreduce_f32)(const struct moe_comm *c, float *buf, int64_t n);
    void (*allreduce_f64)(const struct moe_comm *c, double *buf, int64_t n);
    /* in-place sum over the group (MOE_GROUP_*) of degree P of this rank: n floats, or
     * doubles with f64 */
    void (*group_sum)(const struct moe_comm *c, int group, int P, void *buf, int64_t n, int f64);
    /* The all-to-all of the expert group of degree P, in rows of row_bytes bytes: to the
     * group's rank q go the ns blocks sblk[q ns .. q ns + ns) of send, from it come the nr
     * blocks rblk[q nr ..) of recv; a block is {first row, rows}. */
    void (*exchange)(const struct moe_comm *c, int P, const void *send, const int64_t (*sblk)[2], int ns, void *recv,
                     const int64_t (*rblk)[2], int nr, int64_t row_bytes);
    /* the expert group of degree P gathers n floats of each rank into all[p n ..) of its
     * first rank (all: NULL elsewhere) */
    void (*gather_f32)(const struct moe_comm *c, int P, const float *mine, float *all, int64_t n);
    /* every rank of the group (MOE_GROUP_*, degree P) gets the n floats of each: those of its
     * p-th rank at all[p n ..) */
    void (*allgather_f32)(const struct moe_comm *c, int group, int P, const float *mine, float *all, int64_t n);
    /* what this rank's exchanges have sent other ranks so far: messages and bytes */
    void (*traffic)(const struct moe_comm *c, int64_t *messages, int64_t *bytes);
    /* the in-place sum of n floats over the group (MOE_GROUP_*, degree P) started in the
     * background in slot `slot` (< MOE_MAX_BUCKETS), and its end: finish waits for the sum of
     * the slot, or makes it at once where none was started */
    void (*sum_start)(const struct moe_comm *c, int slot, int group, int P, float *buf, int64_t n);
    void (*sum_finish)(const struct moe_comm *c, int slot, int group, int P, float *buf, int64_t n);
} moe_comm;
/* a rank's place in the layout: its data-parallel rank and group size, its tensor rank */
static inline int moe_comm_data_rank(const moe_comm *c) { return c->rank / c->tensor; }
static inline int moe_comm_data_size(const moe_comm *c) { return c->world / c->tensor; }
static inline int moe_comm_tensor_rank(const moe_comm *c) { return c->rank % c->tensor; }

/* Device kernels (the cuda target): the program's distinct kernels, compiled by the device at
 * start from kernel_source, and its launches, each a kernel with its grid and the byte
 * offsets of its buffers, or a library GEMM. Blocks have MOE_BLOCK_THREADS threads. */
typedef struct moe_kernel_def {
    const char *name;               /* the extern "C" function in kernel_source */
    int block_sync;                 /* its blocks synchronise (__syncthreads) */
} moe_kernel_def;
/* A library GEMM (cuBLAS; OpenBLAS under cuda-emu), row-major: C = alpha op(A) op(B) + beta C
 * with op(A) [m,k], op(B) [k,n]. One of m and k (`rows`) counts the step's tokens: it is
 * B*T times the value given here. */
enum { MOE_GEMM_ROWS_NONE, MOE_GEMM_ROWS_M, MOE_GEMM_ROWS_K };
typedef struct moe_gemm_def {
    int trans_a, trans_b;
    int rows;                       /* MOE_GEMM_ROWS_* */
    int64_t m, n, k;
    float alpha, beta;
    int buf[3];                     /* the buffer classes of A, B and C */
    int64_t off[3];                 /* their byte offsets */
    int64_t ld[3];                  /* their leading dimensions (elements) */
    int dtype;                      /* moe_dtype of A and B: f32, or bf16/f16 (a half model); C is f32,
                                     * and so is the accumulation */
} moe_gemm_def;
/* The expert GEMMs' library variant: the GEMM `gemm` once per expert e of E over its routed
 * rows [off[e], off[e + 1]), the offsets read by the host from the layer's counts record (at
 * MOE_OFF(E) of the record at counts_off in buffer class counts_buf): a wait for the device,
 * the one place where the host reads what a kernel wrote during a step. Operand j starts
 * row[j] elements further per routed row before the expert's first and expert[j] further per
 * expert; the side of `gemm` that `rows` names is the expert's row count (its m or k is 1). */
typedef struct moe_grouped_def {
    int E;
    int counts_buf;
    int64_t counts_off;
    int64_t row[3], expert[3];
} moe_grouped_def;
#define MOE_MAX_GROUPED 4096        /* experts of a layer the library variant takes */
typedef struct moe_launch_def {
    int kernel;                     /* index in moe_program.kernels; -1: the GEMM `gemm`; -2: `gemm` per
                                     * expert (`grouped`) */
    unsigned grid;                  /* blocks */
    int n_offs;
    int64_t offs[MOE_MAX_OFFS];     /* byte offsets of its buffers, in argument order */
    moe_gemm_def gemm;
    moe_grouped_def grouped;
} moe_launch_def;

/* What a step sees: the device address of every buffer class, and host scalars. */
struct moe_ctx;
typedef struct moe_ctx {
    uint8_t *buf[MOE_BUF_COUNT];    /* base of each buffer class (ACT: the running schedule's) */
    int64_t size[MOE_BUF_COUNT];    /* their sizes in bytes */
    /* runs one launch (a device kernel or a GEMM; the cuda target); a failure is kept by the executor */
    void (*launch)(struct moe_ctx *c, const moe_launch_def *l);
    void *exec;                     /* the executor's */
    const moe_comm *comm;
    int B, T;                       /* this step's batch shape: B*T <= S_max, T <= T_max */
    int mode;                       /* MOE_MODE_* */
    uint64_t rng;                   /* random stream of this micro-step (noise, token selection) */
    float loss_scale;               /* d(total loss)/d(this micro-step's loss): 1/accumulate, times
                                     * grad_scale */
    float grad_scale;               /* the scale the gradients carry: an fp16 model's dynamic loss scale
                                     * (moe_program.half), else 1; the norm and AdamW divide it out */
    float lr;                       /* learning rate of this optimizer step */
    int opt_step;                   /* 1-based AdamW step */
    int reduce;                     /* this micro-step's backward starts the gradient sums as it completes
                                     * their buckets (the last micro-step of a training step; 0: the
                                     * optimizer makes them) */
} moe_ctx;

typedef void (*moe_step_fn)(moe_ctx *c);
/* a tensor a step writes, at the compiled maximum batch (for `verify`) */
typedef struct moe_region {
    const char *name;               /* the op's output slot ("y", "dW", ...) */
    int buf;                        /* MOE_BUF_* */
    int dtype;                      /* MOE_F32, ... */
    int64_t offset, bytes;
} moe_region;
typedef struct moe_step {
    const char *name;               /* "h.1.moe.gate", "h.1.moe.gate.bwd" */
    moe_step_fn fn;
    int phase;                      /* MOE_PHASE_* */
    unsigned kind;                  /* MOE_STEP_* flags */
    int n_outs;
    const moe_region *outs;         /* what it writes (the optimizer: the whole param and opt buffers) */
} moe_step;

typedef struct moe_param_info {
    const char *name;
    int ndim;
    int64_t shape[3];
    int64_t offset, numel;          /* offset in bytes in the parameter buffer; elements (f32) */
    float init_std;
    int init_one, decay, expert;    /* expert: dimension 0 indexes experts */
    uint64_t name_hash;             /* keys the init stream (with the seed and the expert index) */
    int64_t experts_all;            /* expert: the layer's experts, of which this rank holds shape[0]
                                     * (fewer under expert parallelism: degree experts_all / shape[0]) */
    int64_t qoffset, qscale;        /* an expert weight [E, K, N]: its int8 form (`quantize`) at qoffset of
                                     * the QPARAM buffer, its scales [E, N] (f32) at qscale; else -1 */
    /* tensor slicing: split in tp parts along dimension tp_dim (tp = 1: held whole), which in the
     * whole tensor is made of the segments of widths tp_seg (0: none); tensor rank t holds part
     * t of each segment, in order (shape[tp_dim] counts what it holds) */
    int tp, tp_dim;
    int64_t tp_seg[3];
} moe_param_info;

/* The distillation teacher of a student (Mixture-of-Students): its parameter table, laid out
 * in the TPARAM buffer (buf_bytes[MOE_BUF_TPARAM]), and the student's KD settings. The train
 * schedule runs the teacher's forward and the KD loss (steps of kind MOE_STEP_KD) only while
 * the runtime distils; a teacher checkpoint is the teacher model's ordinary checkpoint. */
typedef struct moe_teacher {
    const char *model;
    int n_params;
    const moe_param_info *params;
    double temperature, weight;
    int64_t stop_step;              /* the last step with the KD term (1-based); -1: every step */
} moe_teacher;

typedef struct moe_schedule {
    int n_steps;
    const moe_step *steps;
    int64_t act_bytes;              /* its activation arena */
    int64_t B_max, T_max;           /* the largest batch shape it was planned for */
    int64_t logits_off;             /* bytes in its arena: logits [S, vocab] after the forward; -1 when the
                                     * head is fused with the loss (HEAD_XENT): then head_x_off */
    int64_t head_x_off;             /* -1, or bytes in its arena of the head's input [S, hidden] after the
                                     * forward, which moe_rt_read_logits multiplies by the head's weight */
} moe_schedule;

typedef struct moe_program {
    int abi;
    const char *model, *target, *source;
    int64_t vocab, context, layers, hidden, heads, ffn;
    int64_t kv_heads;                           /* key/value heads (grouped-query attention; = heads: MHA) */
    int bias;                                   /* linear layers and layernorms have biases */
    const char *activation, *norm, *position;   /* the .moe's words: gelu|gelu_erf|relu|swiglu, ... */
    int tied;                                   /* lm_head is wte */
    int half;                       /* moe_dtype of the training program's GEMM operands: MOE_F32, or
                                     * MOE_BF16 / MOE_F16 (dtype; fp16 trains with a dynamic loss scale) */
    int n_moe, top_k;
    const int *experts;             /* [n_moe] */
    const int *moe_block;           /* [n_moe] 0-based block of each MoE layer */
    /* train block of the .moe */
    int64_t batch, accumulate, train_steps, seed, warmup, eval_every, eval_batches, checkpoint_every;
    double lr, min_lr, beta1, beta2, eps, weight_decay, grad_clip, aux_loss, z_loss;
    int schedule;                   /* MOE_SCHED_*: warmup, then this decay to min_lr */
    double capacity_factor, eval_capacity_factor;  /* of the moe block (0 when dense) */
    int drop_tokens;                /* the moe block's drop_tokens (0 when dense) */
    int recompute;                  /* train.recompute: the backward recomputes each block's forward */
    /* the parallel block: data (0: the world size / the tensor groups' size), the largest expert
     * degree, tensor; the all-to-all (MOE_A2A_*) and ranks_per_node (0: the ranks on each host);
     * expert_slicing (its groups are the tensor groups: moe_program_tensor_group) */
    int par_data, par_expert, par_tensor, par_alltoall, par_ranks_per_node, par_expert_slicing;
    /* parameters and buffers */
    int n_params;
    const moe_param_info *params;
    int64_t align;                  /* every offset and buffer size is a multiple */
    int64_t buf_bytes[MOE_BUF_COUNT];   /* shared classes; ACT is per schedule (0 here); KV: one decode slot */
    /* the IO buffer (host staging mirrors it) */
    int64_t tokens_off, targets_off, stats_off;
    int64_t pos_off, slot_off;      /* decode: each row's position and KV-cache slot (int32, decode.B_max) */
    int n_stats;                    /* f64 entries of the statistics record (moe_abi.h) */
    const int *stat_loads;          /* [n_moe] first expert-load entry of each MoE layer */
    moe_schedule train, decode;
    const moe_teacher *teacher;     /* NULL: the model has no distill block */
    const char *summary;            /* `info`: schedule summary and memory plan */
    const char *variants;           /* `bench --json`: a JSON array of the numbered kernel variants run,
                                     * [{"program", "step", "kernel", "variant", "from"}] */
    /* device kernels: the cuda target's, none on the cpu target */
    const char *kernel_source;      /* CUDA C, NVRTC compiles it */
    int n_kernels;
    const moe_kernel_def *kernels;
} moe_program;

/* the ranks of a tensor group: those that split attention and MLPs (parallel.tensor) or the
 * experts (parallel.expert_slicing) between them; 1 without either */
static inline int moe_program_tensor_group(const moe_program *p) {
    return p->par_tensor > p->par_expert_slicing ? p->par_tensor : p->par_expert_slicing;
}

/* The executable's programs, one per target it was built for (moec build --target cpu, cuda,
 * or all: both), NULL-terminated. Each is moe_program_<target> of its generated source. */
extern const moe_program *const moe_programs[];
/* the processor the host code was compiled for (moec build --arch: the -march), and the
 * instruction-set extensions that allowed the compiler, NULL-terminated (names as
 * __builtin_cpu_supports takes them); the executable checks them at start */
extern const char moe_build_arch[];
extern const char *const moe_build_isa[];
/* the .moe text the executable was built from: every file read, each after "# file: PATH" */
extern const char moe_model_text[];
#endif
