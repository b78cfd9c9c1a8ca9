/* keys.c - the key tables of moe-language.md section 4; see keys.h.
 *
 * Ranges are sanity limits chosen so that no count overflows later (parameters,
 * FLOPs and bytes are int64); they are far beyond any real model.
 */
#include "keys.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const w_activation[] = {"gelu", "gelu_erf", "relu", "swiglu", NULL};
static const char *const w_norm[] = {"layernorm", "rmsnorm", NULL};
static const char *const w_position[] = {"learned", "rope", NULL};
static const char *const w_dtype[] = {"fp32", "bf16", "fp16", NULL};
static const char *const w_noise[] = {"none", "jitter", "rsample", NULL};
static const char *const w_alltoall[] = {"auto", "flat", "hierarchical", NULL};
static const char *const w_schedule[] = {"cosine", "constant", "linear", NULL};
static const char *const w_optimizer[] = {"adamw", NULL};

#define BIG 9007199254740992.0      /* 2^53 */
#define INF INFINITY

#define I(blk, nm, qn, lo, hi, req) \
    {blk, nm, qn, KT_INT, req, lo, hi, false, false, NULL}
#define F(blk, nm, qn, lo, hi, lo_open, hi_open) \
    {blk, nm, qn, KT_FLOAT, false, lo, hi, lo_open, hi_open, NULL}
#define B(blk, nm, qn) {blk, nm, qn, KT_BOOL, false, 0, 0, false, false, NULL}
#define E(blk, nm, qn, w) {blk, nm, qn, KT_ENUM, false, 0, 0, false, false, w}

const key_info key_table[K_COUNT] = {
    [K_VOCAB]      = I(BLK_MODEL, "vocab", "vocab", 1, 2147483647, true),
    [K_CONTEXT]    = I(BLK_MODEL, "context", "context", 1, 16777216, true),
    [K_LAYERS]     = I(BLK_MODEL, "layers", "layers", 1, KEY_MAX_LAYERS, true),
    [K_HIDDEN]     = I(BLK_MODEL, "hidden", "hidden", 1, 1048576, true),
    [K_HEADS]      = I(BLK_MODEL, "heads", "heads", 1, 1048576, true),
    [K_KV_HEADS]   = I(BLK_MODEL, "kv_heads", "kv_heads", 1, 1048576, false),
    [K_FFN]        = I(BLK_MODEL, "ffn", "ffn", 1, 16777216, false),
    [K_ACTIVATION] = E(BLK_MODEL, "activation", "activation", w_activation),
    [K_NORM]       = E(BLK_MODEL, "norm", "norm", w_norm),
    [K_POSITION]   = E(BLK_MODEL, "position", "position", w_position),
    [K_TIE]        = B(BLK_MODEL, "tie_embeddings", "tie_embeddings"),
    [K_BIAS]       = B(BLK_MODEL, "bias", "bias"),
    [K_DROPOUT]    = F(BLK_MODEL, "dropout", "dropout", 0, 1, false, true),
    [K_DTYPE]      = E(BLK_MODEL, "dtype", "dtype", w_dtype),
    [K_INIT_STD]   = F(BLK_MODEL, "init_std", "init_std", 0, INF, true, false),

    [K_MOE_EVERY]  = I(BLK_MOE, "every", "moe.every", 1, KEY_MAX_LAYERS, false),
    [K_MOE_LAYERS] = {BLK_MOE, "layers", "moe.layers", KT_LIST, false, 1, KEY_MAX_LAYERS,
                      false, false, NULL},
    [K_MOE_EXPERTS] = {BLK_MOE, "experts", "moe.experts", KT_INTS, true, 1, KEY_MAX_EXPERTS,
                       false, false, NULL},
    [K_MOE_FFN]    = I(BLK_MOE, "ffn", "moe.ffn", 1, 16777216, false),
    [K_MOE_TOP_K]  = I(BLK_MOE, "top_k", "moe.top_k", 1, KEY_MAX_EXPERTS, false),
    [K_MOE_RESIDUAL] = B(BLK_MOE, "residual", "moe.residual"),
    [K_MOE_CF]     = F(BLK_MOE, "capacity_factor", "moe.capacity_factor", 0, INF, true, false),
    [K_MOE_EVAL_CF] = F(BLK_MOE, "eval_capacity_factor", "moe.eval_capacity_factor", 0, INF,
                        true, false),
    [K_MOE_MIN_CAP] = I(BLK_MOE, "min_capacity", "moe.min_capacity", 0, 1073741824, false),
    [K_MOE_DROP]   = B(BLK_MOE, "drop_tokens", "moe.drop_tokens"),
    [K_MOE_NOISY]  = E(BLK_MOE, "noisy_gate", "moe.noisy_gate", w_noise),
    [K_MOE_RTS]    = B(BLK_MOE, "random_token_selection", "moe.random_token_selection"),
    [K_MOE_SES]    = B(BLK_MOE, "second_expert_sampling", "moe.second_expert_sampling"),
    [K_MOE_AUX]    = F(BLK_MOE, "aux_loss", "moe.aux_loss", 0, INF, false, false),
    [K_MOE_Z]      = F(BLK_MOE, "z_loss", "moe.z_loss", 0, INF, false, false),

    [K_PAR_DATA]   = I(BLK_PARALLEL, "data", "parallel.data", 1, 16777216, false),
    [K_PAR_EXPERT] = {BLK_PARALLEL, "expert", "parallel.expert", KT_INTS, false, 1,
                      KEY_MAX_EXPERTS, false, false, NULL},
    [K_PAR_TENSOR] = I(BLK_PARALLEL, "tensor", "parallel.tensor", 1, 65536, false),
    [K_PAR_SLICING] = I(BLK_PARALLEL, "expert_slicing", "parallel.expert_slicing", 1, 65536,
                        false),
    [K_PAR_A2A]    = E(BLK_PARALLEL, "alltoall", "parallel.alltoall", w_alltoall),
    [K_PAR_RPN]    = I(BLK_PARALLEL, "ranks_per_node", "parallel.ranks_per_node", 1, 65536,
                       false),

    [K_TR_BATCH]   = I(BLK_TRAIN, "batch", "train.batch", 1, 16777216, false),
    [K_TR_ACCUM]   = I(BLK_TRAIN, "accumulate", "train.accumulate", 1, 16777216, false),
    [K_TR_STEPS]   = I(BLK_TRAIN, "steps", "train.steps", 0, BIG, false),
    [K_TR_SEED]    = I(BLK_TRAIN, "seed", "train.seed", 0, BIG, false),
    [K_TR_OPT]     = E(BLK_TRAIN, "optimizer", "train.optimizer", w_optimizer),
    [K_TR_LR]      = F(BLK_TRAIN, "lr", "train.lr", 0, INF, true, false),
    [K_TR_MIN_LR]  = F(BLK_TRAIN, "min_lr", "train.min_lr", 0, INF, false, false),
    [K_TR_WARMUP]  = I(BLK_TRAIN, "warmup", "train.warmup", 0, BIG, false),
    [K_TR_SCHED]   = E(BLK_TRAIN, "schedule", "train.schedule", w_schedule),
    [K_TR_BETA1]   = F(BLK_TRAIN, "beta1", "train.beta1", 0, 1, false, true),
    [K_TR_BETA2]   = F(BLK_TRAIN, "beta2", "train.beta2", 0, 1, false, true),
    [K_TR_EPS]     = F(BLK_TRAIN, "eps", "train.eps", 0, INF, true, false),
    [K_TR_WD]      = F(BLK_TRAIN, "weight_decay", "train.weight_decay", 0, INF, false, false),
    [K_TR_CLIP]    = F(BLK_TRAIN, "grad_clip", "train.grad_clip", 0, INF, false, false),
    [K_TR_EVAL_EVERY] = I(BLK_TRAIN, "eval_every", "train.eval_every", 0, BIG, false),
    [K_TR_EVAL_BATCHES] = I(BLK_TRAIN, "eval_batches", "train.eval_batches", 1, BIG, false),
    [K_TR_CKPT_EVERY] = I(BLK_TRAIN, "checkpoint_every", "train.checkpoint_every", 0, BIG,
                          false),
    [K_TR_RECOMPUTE] = B(BLK_TRAIN, "recompute", "train.recompute"),

    [K_DI_TEACHER] = {BLK_DISTILL, "teacher", "distill.teacher", KT_NAME, true, 0, 0, false,
                      false, NULL},
    [K_DI_TEMP]    = F(BLK_DISTILL, "temperature", "distill.temperature", 0, INF, true, false),
    [K_DI_WEIGHT]  = F(BLK_DISTILL, "weight", "distill.weight", 0, INF, false, false),
    [K_DI_STOP]    = I(BLK_DISTILL, "stop_step", "distill.stop_step", 0, BIG, false),
};

static const char *const block_names[BLK_COUNT] = {"model", "moe", "parallel", "train", "distill"};

const char *key_block_name(key_block b) { return b < BLK_COUNT ? block_names[b] : "?"; }

int key_find(key_block b, const char *name) {
    for (int k = 0; k < K_COUNT; k++)
        if (key_table[k].block == b && key_table[k].name[0] == name[0] &&
            !strcmp(key_table[k].name, name))
            return k;
    return -1;
}

int key_find_block(const char *name) {
    for (int b = BLK_MOE; b < BLK_COUNT; b++)
        if (!strcmp(block_names[b], name)) return b;
    return -1;
}

int key_names(key_block b, const char **words) {
    int n = 0;
    for (int k = 0; k < K_COUNT; k++)
        if (key_table[k].block == b) words[n++] = key_table[k].name;
    if (b == BLK_MODEL)
        for (int i = BLK_MOE; i < BLK_COUNT; i++) words[n++] = block_names[i];
    return n;
}

const char *key_words_list(const key_info *k, char *buf, int size) {
    int used = 0;
    buf[0] = 0;
    for (int i = 0; k->words && k->words[i] && used < size; i++)
        used += snprintf(buf + used, (size_t)(size - used), "%s%s", i ? ", " : "", k->words[i]);
    return buf;
}
