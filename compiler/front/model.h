/* model.h - the validated model description: what the front end hands to the compiler.
 *
 * The front end (dsl/ + compiler/front/) parses .moe files, resolves imports and
 * inheritance, checks every rule of moe-language.md section 5 and fills every default,
 * producing one md_model per model. Nothing here knows about IR or backends.
 * All pointers live in the arena of the compilation.
 */
#ifndef MOE_MODEL_H
#define MOE_MODEL_H
#include <stdbool.h>
#include <stdint.h>

typedef enum { MD_ACT_GELU, MD_ACT_GELU_ERF, MD_ACT_RELU, MD_ACT_SWIGLU } md_activation;
typedef enum { MD_NORM_LAYERNORM, MD_NORM_RMSNORM } md_norm;
typedef enum { MD_POS_LEARNED, MD_POS_ROPE } md_position;
typedef enum { MD_DT_FP32, MD_DT_BF16, MD_DT_FP16 } md_dtype;
typedef enum { MD_NOISE_NONE, MD_NOISE_JITTER, MD_NOISE_RSAMPLE } md_noise;
typedef enum { MD_A2A_AUTO, MD_A2A_FLAT, MD_A2A_HIERARCHICAL } md_alltoall;
typedef enum { MD_SCHED_COSINE, MD_SCHED_CONSTANT, MD_SCHED_LINEAR } md_schedule;
typedef enum { MD_OPT_ADAMW } md_optimizer;

typedef struct md_loc { const char *file; int line, col; } md_loc;

typedef struct md_model md_model;
struct md_model {
    const char *name;
    md_loc loc;                 /* where `model NAME` was written */
    /* where the settings a target may refuse were written (file NULL: not written, defaulted) */
    struct {
        md_loc dtype, dropout, tensor, expert_slicing, data, expert, teacher, noisy_gate, rts, second_sampling;
    } where;

    /* 4.1 model */
    int64_t vocab, context, layers, hidden, heads, ffn;   /* ffn defaulted to 4*hidden */
    int64_t kv_heads;           /* key/value heads, divides heads; defaulted to heads */
    bool bias;                  /* linear layers and layernorms carry biases (default true) */
    md_activation activation;
    md_norm norm;
    md_position position;
    bool tie_embeddings;
    double dropout;
    md_dtype dtype;
    double init_std;

    /* 4.2 moe: n_moe == 0 means a dense model */
    struct {
        int n_moe;              /* number of MoE FFN layers */
        int *layer;             /* [n_moe] 1-based FFN layer indices, ascending */
        int *experts;           /* [n_moe] experts of each MoE layer (pyramid) */
        int64_t ffn;            /* expert MLP width, defaulted to model ffn */
        int top_k;
        bool residual;
        double capacity_factor, eval_capacity_factor;
        int min_capacity;
        bool drop_tokens;
        md_noise noisy_gate;
        bool random_token_selection, second_expert_sampling;
        double aux_loss, z_loss;
    } moe;

    /* 4.3 parallel */
    struct {
        int data;               /* 0 = world size / tensor, decided at run time */
        int *expert;            /* [n_moe] expert-parallel degree per MoE layer (default 1) */
        int tensor, expert_slicing;
        md_alltoall alltoall;
        int ranks_per_node;     /* 0 = ranks on this host */
    } parallel;

    /* 4.4 train */
    struct {
        int64_t batch, accumulate, steps, seed;
        md_optimizer optimizer;
        double lr, min_lr;
        int64_t warmup;
        md_schedule schedule;
        double beta1, beta2, eps, weight_decay, grad_clip;
        int64_t eval_every, eval_batches, checkpoint_every;
        bool recompute;         /* keep each block's input only; its backward recomputes the rest */
    } train;

    /* 4.5 distill: teacher == NULL means no distillation */
    struct {
        const md_model *teacher;
        double temperature, weight;
        int64_t stop_step;      /* -1 = none */
    } distill;
};

/* The width of the fused q, k, v projection: hidden + 2 * kv_heads * (hidden / heads). */
int64_t md_qkv_width(const md_model *m);

/* The MoE layer index (0..n_moe-1) of 1-based FFN layer `l`, or -1 for a dense FFN. */
int md_moe_index(const md_model *m, int l);

/* Parameters in checkpoint order, with the names of moe-language.md section 7.
 * Shapes are [in, out] for weights so that y = x W + b. */
typedef enum {
    MD_P_EMBED,     /* wte, wpe, lm_head */
    MD_P_NORM,      /* ln_*.weight / .bias */
    MD_P_WEIGHT,    /* 2-D non-expert weight (weight decay applies) */
    MD_P_BIAS,      /* non-expert bias */
    MD_P_EXPERT_W,  /* [E, in, out] expert weight */
    MD_P_EXPERT_B,  /* [E, out] expert bias */
} md_pkind;

typedef struct md_param {
    const char *name;           /* "h.3.moe.experts.c_fc.weight" */
    int ndim;
    int64_t shape[3];
    int64_t numel;
    md_pkind kind;
    int block;                  /* 0-based block, -1 for wte/wpe/ln_f/lm_head */
    double init_std;            /* 0 with init_one=false: zeros */
    bool init_one;              /* norm weights */
    bool decay;                 /* AdamW weight decay applies (2-D weights, expert weights) */
    int64_t experts_all;        /* expert tensors: the layer's experts (shape[0] counts those one rank holds) */
    /* Tensor slicing (parallel.tensor; expert slicing for the expert tensors): the dimension a
     * tensor group splits (-1: never split),
     * which is made of up to three segments of the whole tensor (c_attn: q, k, v; a SwiGLU
     * c_fc: the gate and the up projection) of the widths in tp_seg (0: none). Each segment is
     * cut in tp equal parts and rank t of the group holds part t of each, in segment order;
     * tp is the degree it is split by (1: held whole; the IR builder sets it, and shape[tp_dim]
     * then counts what one rank holds). */
    int tp_dim, tp;
    int64_t tp_seg[3];
} md_param;

struct arena;
/* Fills *out with an arena array of all parameters; returns their count (or -1 on OOM). */
int md_params(const md_model *m, struct arena *a, md_param **out);
#endif
