/* params.c - the parameter list of a model, in checkpoint order and naming.
 *
 * One place decides names, shapes, init and weight-decay of every parameter
 * (moe-language.md section 7, moe-semantics.md section 1): `moec stats` counts
 * from it, the IR builder binds tensors to it, the runtime's checkpoints use its names.
 */
#include "model.h"
#include "../util/arena.h"
#include <math.h>

int64_t md_qkv_width(const md_model *m) { return m->hidden + 2 * m->kv_heads * (m->hidden / m->heads); }

int md_moe_index(const md_model *m, int l) {
    for (int i = 0; i < m->moe.n_moe; i++)
        if (m->moe.layer[i] == l) return i;
    return -1;
}

typedef struct plist { arena *a; md_param *p; int n, cap; int oom; } plist;

static md_param *add(plist *pl, md_pkind kind, int block, const char *name, int ndim,
                     int64_t s0, int64_t s1, int64_t s2) {
    if (pl->n == pl->cap) {
        int cap = pl->cap ? 2 * pl->cap : 64;
        md_param *np = ARENA_ARRAY(pl->a, md_param, cap);
        if (!np) { pl->oom = 1; return NULL; }
        for (int i = 0; i < pl->n; i++) np[i] = pl->p[i];
        pl->p = np; pl->cap = cap;
    }
    md_param *p = &pl->p[pl->n++];
    p->name = name;
    p->ndim = ndim;
    p->shape[0] = s0; p->shape[1] = s1; p->shape[2] = s2;
    p->numel = s0 * (ndim > 1 ? s1 : 1) * (ndim > 2 ? s2 : 1);
    p->kind = kind;
    p->block = block;
    p->experts_all = kind == MD_P_EXPERT_W || kind == MD_P_EXPERT_B ? s0 : 0;
    p->tp_dim = -1;
    p->tp = 1;
    return p;
}

/* p is split along dimension dim, made of the segments seg (0-terminated, at most 3) */
static void split(md_param *p, int dim, const int64_t *seg) {
    if (!p) return;
    p->tp_dim = dim;
    for (int i = 0; i < 3 && seg[i]; i++) p->tp_seg[i] = seg[i];
}

/* A weight: N(0, std), decayed. */
static md_param *weight(plist *pl, int blk, const char *name, int64_t in, int64_t out, double std) {
    md_param *p = add(pl, MD_P_WEIGHT, blk, name, 2, in, out, 0);
    if (p) { p->init_std = std; p->decay = true; }
    return p;
}
/* A bias, zero at init; none at all with `bias = false`. */
static md_param *bias(plist *pl, const md_model *m, int blk, const char *name, int64_t n) {
    return m->bias ? add(pl, MD_P_BIAS, blk, name, 1, n, 0, 0) : NULL;
}
static void norm(plist *pl, const md_model *m, int blk, const char *prefix, int64_t d) {
    md_param *p = add(pl, MD_P_NORM, blk, arena_printf(pl->a, "%s.weight", prefix), 1, d, 0, 0);
    if (p) p->init_one = true;
    if (m->norm == MD_NORM_LAYERNORM && m->bias)
        add(pl, MD_P_NORM, blk, arena_printf(pl->a, "%s.bias", prefix), 1, d, 0, 0);
}
/* A dense MLP under `prefix` (".mlp"): c_fc [d, f or 2f], c_proj [f, d]. Tensor slicing
 * splits c_fc by columns (each half of a SwiGLU's) and c_proj by rows. */
static void mlp(plist *pl, const md_model *m, int blk, const char *prefix, double proj_std) {
    int64_t d = m->hidden, f = m->ffn, swiglu = m->activation == MD_ACT_SWIGLU, fw = swiglu ? 2 * f : f;
    const int64_t seg[3] = {f, swiglu ? f : 0, 0}, rows[3] = {f, 0, 0};
    split(weight(pl, blk, arena_printf(pl->a, "%s.c_fc.weight", prefix), d, fw, m->init_std), 1, seg);
    split(bias(pl, m, blk, arena_printf(pl->a, "%s.c_fc.bias", prefix), fw), 0, seg);
    split(weight(pl, blk, arena_printf(pl->a, "%s.c_proj.weight", prefix), f, d, proj_std), 0, rows);
    bias(pl, m, blk, arena_printf(pl->a, "%s.c_proj.bias", prefix), d);
}

int md_params(const md_model *m, arena *a, md_param **out) {
    plist pl = {.a = a};
    int64_t d = m->hidden, V = m->vocab;
    double std = m->init_std, proj_std = m->init_std / sqrt(2.0 * (double)m->layers);

    md_param *p = add(&pl, MD_P_EMBED, -1, "wte.weight", 2, V, d, 0);
    if (p) { p->init_std = std; p->decay = true; }
    if (m->position == MD_POS_LEARNED) {
        p = add(&pl, MD_P_EMBED, -1, "wpe.weight", 2, m->context, d, 0);
        if (p) { p->init_std = std; p->decay = true; }
    }
    for (int i = 0; i < m->layers; i++) {
        norm(&pl, m, i, arena_printf(a, "h.%d.ln_1", i), d);
        /* tensor slicing: c_attn by heads (the columns of q, k and v), c_proj by rows */
        int64_t dkv = m->kv_heads * (d / m->heads);
        const int64_t qkv[3] = {d, dkv, dkv}, drows[3] = {d, 0, 0};
        split(weight(&pl, i, arena_printf(a, "h.%d.attn.c_attn.weight", i), d, md_qkv_width(m), std), 1, qkv);
        split(bias(&pl, m, i, arena_printf(a, "h.%d.attn.c_attn.bias", i), md_qkv_width(m)), 0, qkv);
        split(weight(&pl, i, arena_printf(a, "h.%d.attn.c_proj.weight", i), d, d, proj_std), 0, drows);
        bias(&pl, m, i, arena_printf(a, "h.%d.attn.c_proj.bias", i), d);
        norm(&pl, m, i, arena_printf(a, "h.%d.ln_2", i), d);
        int mi = md_moe_index(m, i + 1);
        if (mi < 0) { mlp(&pl, m, i, arena_printf(a, "h.%d.mlp", i), proj_std); continue; }
        /* expert slicing splits each expert as tensor slicing splits an MLP */
        int64_t E = m->moe.experts[mi], f = m->moe.ffn, swiglu = m->activation == MD_ACT_SWIGLU;
        int64_t fw = swiglu ? 2 * f : f;
        const int64_t seg[3] = {f, swiglu ? f : 0, 0}, frows[3] = {f, 0, 0};
        weight(&pl, i, arena_printf(a, "h.%d.moe.gate.weight", i), d, E, std);
        p = add(&pl, MD_P_EXPERT_W, i, arena_printf(a, "h.%d.moe.experts.c_fc.weight", i), 3, E, d, fw);
        if (p) { p->init_std = std; p->decay = true; }
        split(p, 2, seg);
        if (m->bias) split(add(&pl, MD_P_EXPERT_B, i, arena_printf(a, "h.%d.moe.experts.c_fc.bias", i), 2, E, fw, 0), 1, seg);
        p = add(&pl, MD_P_EXPERT_W, i, arena_printf(a, "h.%d.moe.experts.c_proj.weight", i), 3, E, f, d);
        if (p) { p->init_std = proj_std; p->decay = true; }
        split(p, 1, frows);
        if (m->bias) add(&pl, MD_P_EXPERT_B, i, arena_printf(a, "h.%d.moe.experts.c_proj.bias", i), 2, E, d, 0);
        if (m->moe.residual) {
            mlp(&pl, m, i, arena_printf(a, "h.%d.moe.mlp", i), proj_std);
            weight(&pl, i, arena_printf(a, "h.%d.moe.coefficient.weight", i), d, 2, std);
            bias(&pl, m, i, arena_printf(a, "h.%d.moe.coefficient.bias", i), 2);
        }
    }
    norm(&pl, m, -1, "ln_f", d);
    if (!m->tie_embeddings) {
        p = add(&pl, MD_P_EMBED, -1, "lm_head.weight", 2, d, V, 0);
        if (p) { p->init_std = std; p->decay = true; }
    }
    if (pl.oom || arena_failed(a)) return -1;
    *out = pl.p;
    return pl.n;
}
