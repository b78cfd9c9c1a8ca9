/* build.c - lowers a model description to its forward graph.
 *
 * Pattern per block (moe-semantics.md section 1):
 *   x = x + c_proj(attention(rope?(c_attn(norm1(x)))))
 *   x = x + ffn(norm2(x)), ffn = dense MLP, or the MoE layer:
 *       gate -> dispatch -> all-to-all -> expert c_fc -> act -> expert c_proj
 *       -> all-to-all -> combine (weights, optional residual mix with the dense MLP)
 * then ln_f, the LM head (tied: x wte^T) and the cross-entropy. Adds are left
 * separate here; the fusion pass folds them into the producing matmul or combine.
 */
#include "build.h"
#include "../util/arena.h"
#include <string.h>

typedef struct bld { ir_graph *g; arena *a; const md_model *m; } bld;

static int param(bld *b, const char *name) {
    for (int i = 0; i < b->g->n_params; i++)
        if (!strcmp(b->g->params[i].name, name)) return b->g->param_tensor[i];
    return -1;
}
static int paramf(bld *b, const char *fmt, int blk, const char *suffix) {
    return param(b, arena_printf(b->a, fmt, blk, suffix));
}
static int act(bld *b, const char *name, ir_rows rows, int64_t w) {
    return ir_tensor_new(b->g, name, IR_T_ACT, rows, w);
}
static int node(bld *b, ir_op op, const char *name, const int *in, const int *out) {
    int n = ir_node_new(b->g, op, name, IR_PHASE_FWD);
    ir_io(b->g, n, in, out);
    return n;
}

/* norm(x) under prefix ("h.3.ln_1"): layernorm or rmsnorm */
static int norm(bld *b, int x, const char *prefix) {
    int64_t d = b->m->hidden;
    int y = act(b, arena_printf(b->a, "%s.out", prefix), IR_ROWS_S, d);
    int w = param(b, arena_printf(b->a, "%s.weight", prefix));
    int rstd = act(b, arena_printf(b->a, "%s.rstd", prefix), IR_ROWS_S, 1);
    if (b->m->norm == MD_NORM_LAYERNORM) {
        int bias = param(b, arena_printf(b->a, "%s.bias", prefix));
        int mean = act(b, arena_printf(b->a, "%s.mean", prefix), IR_ROWS_S, 1);
        node(b, IR_LAYERNORM, prefix, (int[]){x, w, bias, -2}, (int[]){y, mean, rstd, -2});
    } else {
        node(b, IR_RMSNORM, prefix, (int[]){x, w, -2}, (int[]){y, rstd, -2});
    }
    return y;
}

static int matmul(bld *b, int x, int w, int bias, ir_rows rows, int64_t n, const char *name, int transw) {
    int y = act(b, arena_printf(b->a, "%s.out", name), rows, n);
    int nd = node(b, IR_MATMUL, name, (int[]){x, w, bias, -1, -2}, (int[]){y, -2});
    if (nd >= 0) b->g->n[nd].a[0] = transw;
    return y;
}

/* counts >= 0: routed rows, only the real rows of the experts are computed */
static int activation(bld *b, int x, int64_t f, const char *name, ir_rows rows, int counts) {
    int y = act(b, arena_printf(b->a, "%s.out", name), rows, f);
    int nd = node(b, IR_ACT, name, (int[]){x, counts, -2}, (int[]){y, -2});
    if (nd >= 0) { b->g->n[nd].a[0] = b->m->activation; b->g->n[nd].a[1] = f; }
    return y;
}

static int64_t fc_width(const md_model *m, int64_t f) { return m->activation == MD_ACT_SWIGLU ? 2 * f : f; }

/* The dense MLP under prefix ("h.2.mlp", "h.2.moe.mlp"). */
static int mlp(bld *b, int x, const char *prefix) {
    int64_t f = b->m->ffn;
    int h = matmul(b, x, param(b, arena_printf(b->a, "%s.c_fc.weight", prefix)),
                   param(b, arena_printf(b->a, "%s.c_fc.bias", prefix)), IR_ROWS_S, fc_width(b->m, f),
                   arena_printf(b->a, "%s.c_fc", prefix), 0);
    int a = activation(b, h, f, arena_printf(b->a, "%s.act", prefix), IR_ROWS_S, -1);
    return matmul(b, a, param(b, arena_printf(b->a, "%s.c_proj.weight", prefix)),
                  param(b, arena_printf(b->a, "%s.c_proj.bias", prefix)), IR_ROWS_S, b->m->hidden,
                  arena_printf(b->a, "%s.c_proj", prefix), 0);
}

/* Width of the gate's per-token routing record: expert[k], row[k], weight[k], probs[E],
 * logits[E], and the jittered input [d] when the gate has jitter noise. */
static int64_t route_width(const md_model *m, int E) {
    return 3 * m->moe.top_k + 2 * E + (m->moe.noisy_gate == MD_NOISE_JITTER ? m->hidden : 0);
}

static int moe_layer(bld *b, int x, int blk, int mi) {
    const md_model *m = b->m;
    int E = m->moe.experts[mi], k = m->moe.top_k;
    int64_t d = m->hidden, f = m->moe.ffn;
    const char *p = arena_printf(b->a, "h.%d.moe", blk);
    int route = act(b, arena_printf(b->a, "%s.route", p), IR_ROWS_S, route_width(m, E));
    b->g->t[route].is_int = 1;
    /* counts: cnt[E], off[E+1], load[E], then C and dropped */
    int counts = act(b, arena_printf(b->a, "%s.counts", p), IR_ROWS_ONE, 3 * E + 3);
    b->g->t[counts].is_int = 1;
    int n = node(b, IR_GATE, arena_printf(b->a, "%s.gate", p),
                 (int[]){x, param(b, arena_printf(b->a, "%s.gate.weight", p)), -2}, (int[]){route, counts, -2});
    if (n >= 0) { b->g->n[n].a[0] = mi; b->g->n[n].a[1] = E; b->g->n[n].a[2] = k; b->g->n[n].a[3] = blk; }

    int xd = act(b, arena_printf(b->a, "%s.dispatch.out", p), IR_ROWS_ROUTED, d);
    n = node(b, IR_DISPATCH, arena_printf(b->a, "%s.dispatch", p), (int[]){x, route, counts, -2}, (int[]){xd, -2});
    if (n >= 0) { b->g->n[n].a[0] = mi; b->g->n[n].a[1] = E; b->g->n[n].a[2] = k; }
    int xe = act(b, arena_printf(b->a, "%s.a2a_in.out", p), IR_ROWS_ROUTED, d);
    n = node(b, IR_ALLTOALL, arena_printf(b->a, "%s.a2a_in", p), (int[]){xd, counts, -2}, (int[]){xe, -2});
    if (n >= 0) { b->g->n[n].a[0] = mi; b->g->n[n].a[1] = m->parallel.expert[mi]; }

    int64_t fw = fc_width(m, f);
    int h = act(b, arena_printf(b->a, "%s.expert_fc.out", p), IR_ROWS_ROUTED, fw);
    n = node(b, IR_EXPERT_MM, arena_printf(b->a, "%s.expert_fc", p),
             (int[]){xe, paramf(b, "h.%d.moe.experts.c_fc.%s", blk, "weight"),
                     paramf(b, "h.%d.moe.experts.c_fc.%s", blk, "bias"), counts, -2}, (int[]){h, -2});
    if (n >= 0) { b->g->n[n].a[0] = mi; b->g->n[n].a[1] = E; }
    int ha = activation(b, h, f, arena_printf(b->a, "%s.expert_act", p), IR_ROWS_ROUTED, counts);
    int y = act(b, arena_printf(b->a, "%s.expert_proj.out", p), IR_ROWS_ROUTED, d);
    n = node(b, IR_EXPERT_MM, arena_printf(b->a, "%s.expert_proj", p),
             (int[]){ha, paramf(b, "h.%d.moe.experts.c_proj.%s", blk, "weight"),
                     paramf(b, "h.%d.moe.experts.c_proj.%s", blk, "bias"), counts, -2}, (int[]){y, -2});
    if (n >= 0) { b->g->n[n].a[0] = mi; b->g->n[n].a[1] = E; }
    int ye = act(b, arena_printf(b->a, "%s.a2a_out.out", p), IR_ROWS_ROUTED, d);
    n = node(b, IR_ALLTOALL, arena_printf(b->a, "%s.a2a_out", p), (int[]){y, counts, -2}, (int[]){ye, -2});
    if (n >= 0) { b->g->n[n].a[0] = mi; b->g->n[n].a[1] = m->parallel.expert[mi]; }

    int coef = -1, dense = -1;
    if (m->moe.residual) {
        dense = mlp(b, x, arena_printf(b->a, "%s.mlp", p));
        coef = matmul(b, x, param(b, arena_printf(b->a, "%s.coefficient.weight", p)),
                      param(b, arena_printf(b->a, "%s.coefficient.bias", p)), IR_ROWS_S, 2,
                      arena_printf(b->a, "%s.coefficient", p), 0);
    }
    int out = act(b, arena_printf(b->a, "%s.combine.out", p), IR_ROWS_S, d);
    n = node(b, IR_COMBINE, arena_printf(b->a, "%s.combine", p),
             (int[]){ye, route, counts, -1, coef, dense, -2}, (int[]){out, -2});
    if (n >= 0) { b->g->n[n].a[0] = mi; b->g->n[n].a[1] = E; b->g->n[n].a[2] = k; }
    return out;
}

static int add(bld *b, int x, int y, const char *name) {
    int o = act(b, arena_printf(b->a, "%s.out", name), IR_ROWS_S, b->m->hidden);
    node(b, IR_ADD, name, (int[]){x, y, -2}, (int[]){o, -2});
    return o;
}

static int attention(bld *b, int qkv, int blk, int decode) {
    int64_t d = b->m->hidden;
    const char *p = arena_printf(b->a, "h.%d.attn", blk);
    if (b->m->position == MD_POS_ROPE) {
        int r = act(b, arena_printf(b->a, "%s.rope.out", p), IR_ROWS_S, 3 * d);
        node(b, IR_ROPE, arena_printf(b->a, "%s.rope", p), (int[]){qkv, -2}, (int[]){r, -2});
        qkv = r;
    }
    int y = act(b, arena_printf(b->a, "%s.core.out", p), IR_ROWS_S, d);
    if (decode) {
        int kc = ir_tensor_new(b->g, arena_printf(b->a, "%s.kcache", p), IR_T_CACHE, IR_ROWS_CTX, d);
        int vc = ir_tensor_new(b->g, arena_printf(b->a, "%s.vcache", p), IR_T_CACHE, IR_ROWS_CTX, d);
        node(b, IR_ATTN_DECODE, arena_printf(b->a, "%s.core", p), (int[]){qkv, kc, vc, -2}, (int[]){y, -2});
    } else {
        int att = act(b, arena_printf(b->a, "%s.probs", p), IR_ROWS_ATT, 1);
        node(b, IR_ATTENTION, arena_printf(b->a, "%s.core", p), (int[]){qkv, -2}, (int[]){y, att, -2});
    }
    return y;
}

ir_graph *ir_build_forward(arena *a, const md_model *m, int64_t B_max, int64_t T_max, int decode) {
    md_param *params;
    int np = md_params(m, a, &params);
    if (np < 0) return NULL;
    ir_graph *g = ir_graph_create(a, m, params, np);
    if (!g) return NULL;
    bld b = {g, a, m};
    g->decode = decode;
    g->B_max = decode ? 1 : B_max;
    g->T_max = decode ? 1 : T_max;
    g->S_max = g->B_max * g->T_max;
    g->top_k = m->moe.n_moe ? m->moe.top_k : 1;
    for (int i = 0; i < np; i++) {
        const md_param *p = &params[i];
        int id = ir_tensor_new(g, p->name, IR_T_PARAM, IR_ROWS_ONE, p->numel);
        if (id < 0) return NULL;
        g->t[id].param = i;
        g->t[id].offset = g->param_offset[i];
        g->param_tensor[i] = id;
    }
    int64_t d = m->hidden;
    g->tokens = ir_tensor_new(g, "tokens", IR_T_TOKENS, IR_ROWS_S, 1);
    int x = act(&b, "embed.out", IR_ROWS_S, d);
    int n = node(&b, IR_EMBED, "embed", (int[]){g->tokens, param(&b, "wte.weight"), param(&b, "wpe.weight"), -2},
                 (int[]){x, -2});
    if (n < 0) return NULL;
    for (int i = 0; i < m->layers; i++) {
        int h = norm(&b, x, arena_printf(a, "h.%d.ln_1", i));
        int qkv = matmul(&b, h, paramf(&b, "h.%d.attn.c_attn.%s", i, "weight"),
                         paramf(&b, "h.%d.attn.c_attn.%s", i, "bias"), IR_ROWS_S, 3 * d,
                         arena_printf(a, "h.%d.attn.c_attn", i), 0);
        int y = attention(&b, qkv, i, decode);
        int p = matmul(&b, y, paramf(&b, "h.%d.attn.c_proj.%s", i, "weight"),
                       paramf(&b, "h.%d.attn.c_proj.%s", i, "bias"), IR_ROWS_S, d,
                       arena_printf(a, "h.%d.attn.c_proj", i), 0);
        x = add(&b, x, p, arena_printf(a, "h.%d.attn.residual", i));
        int h2 = norm(&b, x, arena_printf(a, "h.%d.ln_2", i));
        int mi = md_moe_index(m, i + 1);
        int f = mi < 0 ? mlp(&b, h2, arena_printf(a, "h.%d.mlp", i)) : moe_layer(&b, h2, i, mi);
        x = add(&b, x, f, arena_printf(a, "h.%d.ffn.residual", i));
    }
    int hf = norm(&b, x, "ln_f");
    int tied = m->tie_embeddings;
    g->logits = matmul(&b, hf, param(&b, tied ? "wte.weight" : "lm_head.weight"), -1, IR_ROWS_S, m->vocab,
                       "lm_head", tied);
    if (!decode) {
        g->targets = ir_tensor_new(g, "targets", IR_T_TARGETS, IR_ROWS_S, 1);
        g->loss = act(&b, "xent.loss", IR_ROWS_S, 1);
        node(&b, IR_XENT, "xent", (int[]){g->logits, g->targets, -2}, (int[]){g->loss, -2});
    }
    return g->oom || arena_failed(a) ? NULL : g;
}
