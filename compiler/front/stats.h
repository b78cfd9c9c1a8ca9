/* stats.h - what `moec stats` reports: parameters, FLOPs and memory per rank.
 *
 * Parameter counts come from md_params (so they equal the checkpoint's tensors).
 * FLOPs are forward FLOPs per token: 2 per multiply-add of every matmul a token goes
 * through (QKV and output projections, attention scores and the weighted sum over
 * the full context, the MLP or the gate + top_k experts (+ residual MLP and its
 * coefficient), and the LM head); norms, activations, softmax and the embedding
 * lookup are not counted. Memory per rank: each parameter on a rank (expert
 * parameters divided by their layer's expert-parallel degree, all others by the
 * tensor degree) costs weights and gradients in the compute dtype, and AdamW state
 * m + v in fp32, plus an fp32 master copy when the compute dtype is not fp32.
 * Activations come from the memory planner, which the caller runs (md_act).
 */
#ifndef MOE_STATS_H
#define MOE_STATS_H
#include <stdint.h>
#include <stdio.h>
#include "model.h"

struct arena;

typedef struct md_mem { int64_t weights, grads, optimizer; } md_mem;     /* bytes */

typedef struct md_group_stats {
    int layer;                  /* 1-based FFN layer; 0 = embeddings, -1 = final norm + head */
    int experts;                /* 0: dense */
    int expert_parallel;        /* 1 for dense layers */
    int64_t params, expert_params, non_expert_params, active_params;
    int64_t flops;              /* forward, per token */
    md_mem mem;                 /* per rank */
} md_group_stats;

/* The activation arena of one training step of train.batch x context on one rank, as the
 * memory planner lays it out. The front end does not plan memory: md_stats_compute leaves
 * bytes = -1 and a caller that runs the planner (moec's driver) fills it in, or says in
 * why_not why it did not; printed only when one of the two is set. */
typedef struct md_act {
    int64_t bytes;              /* -1: not planned */
    int64_t batch, context;     /* the step's shape: train.batch, context */
    const char *why_not;        /* bytes < 0: the reason, or NULL (nobody asked) */
} md_act;

typedef struct md_stats {
    int64_t params, expert_params, non_expert_params, active_params;
    int64_t flops;
    md_mem mem;
    md_act act;
    md_group_stats embed;       /* wte, wpe */
    md_group_stats head;        /* ln_f, lm_head (and the LM head matmul, tied or not) */
    int n_layers;
    md_group_stats *layers;     /* [n_layers] the transformer blocks */
    int n_tensors;
} md_stats;

/* 0 on success, -1 when the arena is exhausted. */
int md_stats_compute(const md_model *m, struct arena *a, md_stats *out);

/* Human-readable table. */
void md_stats_print(FILE *out, const md_model *m, const md_stats *s);
/* One JSON object (moe-language.md section 6); -1 on failure (nothing written). */
int md_stats_print_json(FILE *out, const md_model *m, const md_stats *s);
#endif
