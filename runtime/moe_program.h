/* moe_program.h - the interface between generated code and the runtime (the ABI).
 *
 * moec writes this file beside the code it generates; the runtime is compiled
 * against the same text. Generated code defines `moe_program_def`: the model's
 * sizes and hyper-parameters, the parameter table (names, shapes, offsets, init) and
 * the schedule, a list of steps, each a generated function with every size baked in
 * that reads and writes buffers at planned offsets through a moe_ctx. The runtime
 * owns the buffers, the data, the command line; it never sees an op.
 */
#ifndef MOE_PROGRAM_H
#define MOE_PROGRAM_H
#include <stdint.h>

#define MOE_ABI_VERSION 1

enum { MOE_MODE_TRAIN, MOE_MODE_EVAL, MOE_MODE_GRAD, MOE_MODE_INFER };
enum { MOE_PHASE_FWD, MOE_PHASE_BWD, MOE_PHASE_OPT };

/* Communication table: in one process every call is the identity. */
typedef struct moe_comm {
    void *impl;
    int rank, world;
    /* in-place sums over all ranks */
    void (*allreduce_f32)(const struct moe_comm *c, float *buf, int64_t n);
    void (*allreduce_f64)(const struct moe_comm *c, double *buf, int64_t n);
} moe_comm;

typedef struct moe_ctx {
    float *act;                 /* the planned arena */
    float *params, *grads;      /* parameter buffer and its gradient (same layout) */
    float *adam_m, *adam_v;     /* optimizer state (same layout) */
    const int32_t *tokens;      /* [B*T] */
    const int32_t *targets;     /* [B*T] */
    int B, T;                   /* this step's batch shape: B*T <= S_max, T <= T_max */
    int pos;                    /* decode: position of the token being generated */
    int mode;                   /* MOE_MODE_* */
    uint64_t seed;              /* run seed (noise, random token selection) */
    int64_t step;               /* 0-based optimizer step */
    int micro;                  /* micro-step within the step */
    float loss_scale;           /* d(total loss)/d(this micro-step's loss): 1/accumulate */
    /* written by the gates, one entry per MoE layer */
    double *aux, *z;            /* l_aux and z of this micro-step */
    double *dropped;            /* dropped token-choices */
    double *choices;            /* all token-choices */
    float *loads;               /* [sum of experts] token-choices per expert, before dropping */
    /* written by the optimizer steps */
    double grad_norm, clip, lr;
    int64_t opt_step;           /* 1-based AdamW step */
    const moe_comm *comm;
} moe_ctx;

typedef void (*moe_step_fn)(moe_ctx *c);
typedef struct moe_step {
    const char *name;           /* "h.1.moe.gate", "h.1.moe.gate.bwd" */
    moe_step_fn fn;
    int phase;                  /* MOE_PHASE_* */
    int comm;                   /* 1 = a communication step */
} moe_step;

typedef struct moe_param_info {
    const char *name;
    int ndim;
    int64_t shape[3];
    int64_t offset, numel;      /* in floats, in the parameter buffer */
    float init_std;
    int init_one, decay, expert; /* expert: dimension 0 indexes experts */
} moe_param_info;

typedef struct moe_program {
    int abi;
    const char *model, *target, *source;
    int64_t vocab, context, layers, hidden, heads, ffn;
    int n_moe, top_k;
    const int *experts;         /* [n_moe] */
    const int *moe_block;       /* [n_moe] 0-based block of each MoE layer */
    /* train block of the .moe */
    int64_t batch, accumulate, train_steps, seed, warmup, eval_every, checkpoint_every;
    double lr, min_lr, beta1, beta2, eps, weight_decay, grad_clip, aux_loss, z_loss;
    /* parameters */
    int n_params;
    const moe_param_info *params;
    int64_t param_floats;
    /* training / eval program */
    int64_t B_max, T_max, arena_floats;
    int64_t logits_off, loss_off;   /* arena offsets read by the runtime */
    int n_steps;
    const moe_step *steps;
    /* decode (KV cache) program */
    int64_t dec_arena_floats, dec_logits_off;
    int n_dec_steps;
    const moe_step *dec_steps;
    const char *summary;        /* `info`: schedule summary and memory plan */
} moe_program;

extern const moe_program moe_program_def;
#endif
