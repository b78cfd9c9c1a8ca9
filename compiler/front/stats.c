/* stats.c - parameters, FLOPs and memory per rank of a model; formulas in stats.h.
 *
 * Parameters are summed from md_params tensor by tensor and grouped by block, so the
 * totals are exactly the checkpoint's. FLOPs follow the shapes of model.h directly.
 */
#include "stats.h"
#include "arena.h"
#include <stdbool.h>
#include <string.h>

static int64_t ceil_div(int64_t a, int64_t b) { return b > 0 ? (a + b - 1) / b : a; }

static void add_mem(md_mem *to, md_mem x) {
    to->weights += x.weights;
    to->grads += x.grads;
    to->optimizer += x.optimizer;
}

static void add_group(md_stats *s, const md_group_stats *g) {
    s->params += g->params;
    s->expert_params += g->expert_params;
    s->non_expert_params += g->non_expert_params;
    s->active_params += g->active_params;
    s->flops += g->flops;
    add_mem(&s->mem, g->mem);
}

/* Forward FLOPs per token of FFN layer l (1-based), from the shapes. */
static int64_t layer_flops(const md_model *m, int l) {
    int64_t d = m->hidden, T = m->context;
    int64_t f = m->ffn, fw = m->activation == MD_ACT_SWIGLU ? 2 * f : f;
    int64_t fl = 2 * d * md_qkv_width(m) + 2 * d * d      /* c_attn, c_proj */
               + 2 * T * d + 2 * T * d;         /* q k^T over T keys, then a v (all heads) */
    int64_t mlp = 2 * d * fw + 2 * f * d;
    int mi = md_moe_index(m, l);
    if (mi < 0) return fl + mlp;
    int64_t E = m->moe.experts[mi], ef = m->moe.ffn;
    int64_t efw = m->activation == MD_ACT_SWIGLU ? 2 * ef : ef;
    fl += 2 * d * E + (int64_t)m->moe.top_k * (2 * d * efw + 2 * ef * d);
    if (m->moe.residual) fl += mlp + 2 * d * 2;
    return fl;
}

int md_stats_compute(const md_model *m, arena *a, md_stats *out) {
    *out = (md_stats){0};
    md_param *p;
    int n = md_params(m, a, &p);
    if (n < 0) return -1;
    int L = (int)m->layers;
    md_group_stats *g = ARENA_ARRAY(a, md_group_stats, L > 0 ? L : 1);
    if (!g) return -1;
    int64_t wb = m->dtype == MD_DT_FP32 ? 4 : 2;
    int64_t ob = m->dtype == MD_DT_FP32 ? 8 : 12;
    out->embed.layer = 0;
    out->head.layer = -1;
    out->embed.expert_parallel = out->head.expert_parallel = 1;
    for (int i = 0; i < L; i++) {
        g[i].layer = i + 1;
        int mi = md_moe_index(m, i + 1);
        g[i].experts = mi < 0 ? 0 : m->moe.experts[mi];
        g[i].expert_parallel = mi < 0 ? 1 : m->parallel.expert[mi];
        g[i].flops = layer_flops(m, i + 1);
    }
    for (int i = 0; i < n; i++) {
        const md_param *t = &p[i];
        md_group_stats *to = t->block >= 0 && t->block < L ? &g[t->block]
                           : !strcmp(t->name, "wte.weight") || !strcmp(t->name, "wpe.weight")
                           ? &out->embed : &out->head;
        bool expert = t->kind == MD_P_EXPERT_W || t->kind == MD_P_EXPERT_B;
        int64_t on_rank;
        to->params += t->numel;
        if (expert) {
            int64_t E = t->shape[0];
            to->expert_params += t->numel;
            to->active_params += t->numel / E * m->moe.top_k;
            on_rank = ceil_div(t->numel, to->expert_parallel * (t->tp_dim >= 0 ? m->parallel.expert_slicing : 1));
        } else {
            to->non_expert_params += t->numel;
            to->active_params += t->numel;
            on_rank = t->tp_dim >= 0 ? ceil_div(t->numel, m->parallel.tensor) : t->numel;  /* split, or whole */
        }
        to->mem.weights += on_rank * wb;
        to->mem.grads += on_rank * wb;
        to->mem.optimizer += on_rank * ob;
    }
    out->head.flops = 2 * m->hidden * m->vocab;
    add_group(out, &out->embed);
    for (int i = 0; i < L; i++) add_group(out, &g[i]);
    add_group(out, &out->head);
    out->n_layers = L;
    out->layers = g;
    out->n_tensors = n;
    out->act = (md_act){-1, m->train.batch, m->context, NULL};
    return 0;
}
