/* keys.h - the key tables of moe-language.md section 4, as data.
 *
 * One row per key: its block, type, whether it is required, and the range every value
 * (or every list element) must fall in. Defaults are not here: they are filled where
 * the md_model is built (sema_model.c), next to the rules that derive them.
 * Enum words are listed in the order of the md_* enum they map to.
 */
#ifndef MOE_KEYS_H
#define MOE_KEYS_H
#include <stdbool.h>

typedef enum { BLK_MODEL, BLK_MOE, BLK_PARALLEL, BLK_TRAIN, BLK_DISTILL, BLK_COUNT } key_block;

typedef enum {
    KT_INT,         /* integer */
    KT_FLOAT,       /* number (an integer is accepted) */
    KT_BOOL,        /* true | false */
    KT_ENUM,        /* one of `words` */
    KT_NAME,        /* a model name */
    KT_INTS,        /* an integer or a list of integers (one per MoE layer) */
    KT_LIST,        /* a list of integers */
} key_type;

typedef enum {
    K_VOCAB, K_CONTEXT, K_LAYERS, K_HIDDEN, K_HEADS, K_KV_HEADS, K_FFN, K_ACTIVATION, K_NORM,
    K_POSITION, K_TIE, K_BIAS, K_DROPOUT, K_DTYPE, K_INIT_STD,
    K_MOE_EVERY, K_MOE_LAYERS, K_MOE_EXPERTS, K_MOE_FFN, K_MOE_TOP_K, K_MOE_RESIDUAL,
    K_MOE_CF, K_MOE_EVAL_CF, K_MOE_MIN_CAP, K_MOE_DROP, K_MOE_NOISY, K_MOE_RTS,
    K_MOE_SES, K_MOE_AUX, K_MOE_Z,
    K_PAR_DATA, K_PAR_EXPERT, K_PAR_TENSOR, K_PAR_SLICING, K_PAR_A2A, K_PAR_RPN,
    K_TR_BATCH, K_TR_ACCUM, K_TR_STEPS, K_TR_SEED, K_TR_OPT, K_TR_LR, K_TR_MIN_LR,
    K_TR_WARMUP, K_TR_SCHED, K_TR_BETA1, K_TR_BETA2, K_TR_EPS, K_TR_WD, K_TR_CLIP,
    K_TR_EVAL_EVERY, K_TR_EVAL_BATCHES, K_TR_CKPT_EVERY, K_TR_RECOMPUTE,
    K_DI_TEACHER, K_DI_TEMP, K_DI_WEIGHT, K_DI_STOP,
    K_COUNT
} key_id;

typedef struct key_info {
    key_block block;
    const char *name;           /* as written in its block */
    const char *qname;          /* for messages: "moe.experts" ("vocab" at top level) */
    key_type type;
    bool required;              /* in its block (a block's keys only when it is present) */
    double lo, hi;              /* range of a value or list element */
    bool lo_open, hi_open;      /* floats: bounds excluded */
    const char *const *words;   /* KT_ENUM: NULL-terminated */
} key_info;

extern const key_info key_table[K_COUNT];

/* Sizes beyond which input is refused; documented in docs/language.md. */
enum {
    KEY_MAX_LIST = 65536,       /* entries of one list after expansion */
    KEY_MAX_LAYERS = 10000,
    KEY_MAX_EXPERTS = 65536,
};

const char *key_block_name(key_block b);           /* "model", "moe", ... */
/* The key `name` of block b, or -1. */
int key_find(key_block b, const char *name);
/* Block names valid at the top of a model (moe, parallel, train, distill): -1 if none. */
int key_find_block(const char *name);
/* Fills words[] with the keys of block b (and, for the model block, the block names);
 * returns their count (at most K_COUNT + BLK_COUNT). */
int key_names(key_block b, const char **words);
/* "gelu, gelu_erf, relu, swiglu" */
const char *key_words_list(const key_info *k, char *buf, int size);
#endif
