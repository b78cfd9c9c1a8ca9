/* build.c - lowers a model description to its forward graph.
 *
 * Pattern per block (moe-semantics.md section 1):
 *   x = x + c_proj(attention(rope?(c_attn(norm1(x)))))   (grouped-query when kv_heads < heads)
 *   x = x + ffn(norm2(x)), ffn = dense MLP, or the MoE layer:
 *       gate -> dispatch -> all-to-all -> expert c_fc -> act -> expert c_proj
 *       -> all-to-all -> combine (weights, optional residual mix with the dense MLP)
 * then ln_f, the LM head (tied: x wte^T) and the cross-entropy.
 * Tensor slicing over T ranks (parallel.tensor, Megatron's split): c_attn and a dense MLP's
 * c_fc hold 1/T of the columns (heads, hidden units) behind a TP_COPY of their input, c_proj
 * 1/T of the rows, and a TP_SUM adds the partial products of the group and the bias; the
 * attention core runs on H/T heads. Expert slicing (parallel.expert_slicing, over the same
 * groups) splits each expert alike: c_fc by columns, c_proj by rows, the group's partial
 * outputs of the routed rows summed before they go back to their tokens. Everything else runs
 * whole on every rank of the group. A student with a distill block
 * has its teacher's forward built first, by the same code (names under "teacher.", parameters
 * in the TPARAM buffer, gates in evaluation mode, every node flagged kd), and the KD loss
 * between the two sets of logits before the cross-entropy. Adds are left
 * separate here; the fusion pass folds them into the producing matmul or combine.
 * This is the last place that reads the model description: every size and setting a
 * later pass or the lowering needs goes into a tensor's shape or a node's attributes.
 */
#include "build.h"
#include "../util/arena.h"
#include "../util/diag.h"
#include "moe_gate.h"
#include <string.h>

/* What the builder builds from: a model (the student, or its teacher), its parameter table,
 * the prefix of its tensor and node names, whether its nodes are distillation's, and where its
 * MoE layers' entries of the statistics record start (the sums of layer i at stat0 + 4 i). */
typedef struct bld {
    ir_graph *g;
    arena *a;
    const md_model *m;
    int errors;
    const ir_ptable *tab;
    const char *pre;        /* NULL, or "teacher." */
    int kd;
    int stat0;
    const int *loads;       /* [n_moe] the first expert-load entry of each MoE layer */
    int T;                  /* the tensor-slicing degree (1: none; a teacher runs whole) */
    int X;                  /* the expert-slicing degree (1: none) */
    int block;              /* the block being built (ir_node.block), or -1 */
} bld;

static const char *pfx(bld *b, const char *name) {
    return b->pre && name ? arena_printf(b->a, "%s%s", b->pre, name) : name;
}

/* the table entry of parameter `name`, or -1 after reporting an internal error */
static int param_index(bld *b, const char *name) {
    for (int i = 0; name && i < b->tab->n; i++)
        if (!strcmp(b->tab->p[i].name, name)) return i;
    diag_error(b->g->diag, (diag_loc){b->m->loc.file, b->m->loc.line, b->m->loc.col},
               "internal error: model '%s' has no parameter '%s'", b->m->name, name ? name : "?");
    b->errors++;
    return -1;
}
static int param(bld *b, const char *name) {
    int i = param_index(b, name);
    return i < 0 ? -1 : b->tab->tensor[i];
}
static int paramf(bld *b, const char *prefix, const char *suffix) {
    return param(b, arena_printf(b->a, "%s.%s", prefix, suffix));
}
static int act(bld *b, const char *name, ir_rows rows, int64_t w) {
    return ir_tensor_new(b->g, pfx(b, name), IR_T_ACT, MOE_F32, rows, w);
}
static int typed(bld *b, const char *name, moe_dtype dt, ir_rows rows, int64_t w) {
    return ir_tensor_new(b->g, pfx(b, name), IR_T_ACT, dt, rows, w);
}
static ir_node *node(bld *b, ir_op op, const char *name, const int *in, const int *out) {
    int n = ir_node_new(b->g, op, pfx(b, name), IR_PHASE_FWD);
    if (n < 0) return NULL;
    ir_io(b->g, n, in, out);
    b->g->n[n].kd = b->kd;
    b->g->n[n].block = b->kd ? -1 : b->block;
    return &b->g->n[n];
}

/* norm(x) under prefix ("h.3.ln_1"): layernorm or rmsnorm */
static int norm(bld *b, int x, const char *prefix) {
    int64_t d = b->m->hidden;
    int y = act(b, arena_printf(b->a, "%s.out", prefix), IR_ROWS_S, d);
    int w = paramf(b, prefix, "weight");
    int rstd = act(b, arena_printf(b->a, "%s.rstd", prefix), IR_ROWS_S, 1);
    if (b->m->norm == MD_NORM_LAYERNORM) {
        int bias = b->m->bias ? paramf(b, prefix, "bias") : -1;
        int mean = act(b, arena_printf(b->a, "%s.mean", prefix), IR_ROWS_S, 1);
        node(b, IR_LAYERNORM, prefix, (int[]){x, w, bias, -2}, (int[]){y, mean, rstd, -2});
    } else {
        node(b, IR_RMSNORM, prefix, (int[]){x, w, -2}, (int[]){y, rstd, -2});
    }
    return y;
}

/* a node of the tensor group of `degree` ranks (TP_COPY, TP_SUM) writing y shaped like x; over
 * the routed rows of `experts` experts in `counts`, or S rows (counts -1) */
static int tp_node(bld *b, ir_op op, int x, int bias, int counts, int experts, int degree, const char *name) {
    int y = act(b, arena_printf(b->a, "%s.out", name), b->g->t[x].rows, b->g->t[x].width);
    ir_node *n = node(b, op, name, op == IR_TP_COPY ? (int[]){x, counts, -2} : (int[]){x, bias, -1, counts, -2},
                      (int[]){y, -2});
    if (n) n->at.tp = (ir_at_tp){degree, counts >= 0 ? experts : 0};
    return y;
}

/* How a linear layer is split over a tensor group: not at all, by columns of W (each rank
 * computes 1/T of the outputs from the whole input) or by rows (1/T of the input, and the
 * group sums the partial products). */
enum { WHOLE, COLS, ROWS };

/* y = x W + b under name ("h.0.attn.c_attn"): parameters NAME.weight and NAME.bias (none for
 * the LM head, nor anywhere with `bias = false`); n is the whole layer's width */
static int linear(bld *b, int x, const char *name, int64_t n, int bias, int trans_w, const char *wname, int split) {
    if (b->T <= 1) split = WHOLE;
    if (split == COLS) {
        x = tp_node(b, IR_TP_COPY, x, -1, -1, 0, b->T, arena_printf(b->a, "%s.tp_in", name));
        n /= b->T;
    }
    int y = act(b, arena_printf(b->a, "%s.%s", name, split == ROWS ? "partial" : "out"), IR_ROWS_S, n);
    int w = param(b, wname ? wname : arena_printf(b->a, "%s.weight", name));
    int bi = bias && b->m->bias ? paramf(b, name, "bias") : -1;
    ir_node *nd = node(b, IR_MATMUL, name, (int[]){x, w, split == ROWS ? -1 : bi, -1, -2}, (int[]){y, -2});
    if (nd) nd->at.matmul.trans_w = trans_w;
    return split == ROWS ? tp_node(b, IR_TP_SUM, y, bi, -1, 0, b->T, arena_printf(b->a, "%s.tp_sum", name)) : y;
}

static int act_fn(md_activation a) {
    switch (a) {
    case MD_ACT_GELU: return MOE_ACT_GELU;
    case MD_ACT_GELU_ERF: return MOE_ACT_GELU_ERF;
    case MD_ACT_RELU: return MOE_ACT_RELU;
    case MD_ACT_SWIGLU: return MOE_ACT_SWIGLU;
    }
    return MOE_ACT_GELU;
}

/* counts >= 0: routed rows of `experts` experts, only their real rows are computed */
static int activation(bld *b, int x, int64_t f, const char *name, ir_rows rows, int counts, int experts) {
    int y = act(b, arena_printf(b->a, "%s.out", name), rows, f);
    ir_node *nd = node(b, IR_ACT, name, (int[]){x, counts, -2}, (int[]){y, -2});
    if (nd) nd->at.act = (ir_at_act){act_fn(b->m->activation), experts};
    return y;
}

static int64_t fc_width(const md_model *m, int64_t f) { return m->activation == MD_ACT_SWIGLU ? 2 * f : f; }

/* The dense MLP under prefix ("h.2.mlp", "h.2.moe.mlp"). */
static int mlp(bld *b, int x, const char *prefix) {
    int64_t f = b->m->ffn;
    int h = linear(b, x, arena_printf(b->a, "%s.c_fc", prefix), fc_width(b->m, f), 1, 0, NULL, COLS);
    int a = activation(b, h, f / b->T, arena_printf(b->a, "%s.act", prefix), IR_ROWS_S, -1, 0);
    return linear(b, a, arena_printf(b->a, "%s.c_proj", prefix), b->m->hidden, 1, 0, NULL, ROWS);
}

static int noise_kind(md_noise n) {
    return n == MD_NOISE_JITTER ? MOE_NOISE_JITTER : n == MD_NOISE_RSAMPLE ? MOE_NOISE_RSAMPLE : MOE_NOISE_NONE;
}

/* The settings of MoE layer mi, shared by all of its nodes. */
static ir_at_moe moe_attrs(const bld *b, int mi) {
    const md_model *m = b->m;
    ir_at_moe a = {0};
    a.layer = mi;
    a.experts = m->moe.experts[mi];
    a.top_k = m->moe.top_k;
    a.stat = b->stat0 + 4 * mi;
    a.loads = b->loads[mi];
    a.eval_only = b->kd;
    a.drop_tokens = m->moe.drop_tokens;
    a.noise = noise_kind(m->moe.noisy_gate);
    a.rts = m->moe.random_token_selection;
    a.second_sampling = m->moe.second_expert_sampling;
    a.min_capacity = m->moe.min_capacity;
    a.cf = m->moe.capacity_factor;
    a.eval_cf = m->moe.eval_capacity_factor;
    a.aux_coef = m->moe.aux_loss;
    a.z_coef = m->moe.z_loss;
    return a;
}

static ir_node *moe_node(bld *b, ir_op op, const char *name, const int *in, const int *out, const ir_at_moe *at) {
    ir_node *n = node(b, op, name, in, out);
    if (n) n->at.moe = *at;
    return n;
}

/* the expert-parallel degree of MoE layer mi: a teacher runs whole in every process, whatever
 * its own layout */
static int degree(const bld *b, int mi) { return b->kd ? 1 : b->m->parallel.expert[mi]; }

/* x's routed rows moved to the experts' ranks (to_experts) or back; xcounts: the received
 * layout, -1 for a group of one rank */
static int alltoall(bld *b, int x, int counts, int xcounts, const char *name, int64_t width, int mi, int to_experts) {
    ir_rows rows = xcounts >= 0 && to_experts ? IR_ROWS_RECV : IR_ROWS_ROUTED;
    int y = act(b, arena_printf(b->a, "%s.out", name), rows, width);
    ir_node *n = node(b, IR_ALLTOALL, name, (int[]){x, counts, xcounts, -2}, (int[]){y, -2});
    if (n) n->at.a2a = (ir_at_a2a){mi, b->m->moe.experts[mi], degree(b, mi), 0, to_experts};
    return y;
}

/* Expert parallelism (P ranks): the exchange of counts that gives this rank's E/P experts the
 * layout of the rows they receive (moe_abi.h), and the bound on those rows. */
static int exchange_counts(bld *b, const ir_at_moe *at, int counts, const char *prefix, int P) {
    int E = at->experts, k = at->top_k, L = E / P;
    int xcounts = typed(b, arena_printf(b->a, "%s.xcounts", prefix), MOE_I32, IR_ROWS_ONE, MOE_XCOUNTS_LEN(L, P));
    ir_node *n = node(b, IR_A2A_COUNTS, arena_printf(b->a, "%s.a2a_counts", prefix), (int[]){counts, -2},
                      (int[]){xcounts, -2});
    if (n) n->at.a2a = (ir_at_a2a){at->layer, E, P, 0, 1};
    /* at most every token-choice of the group, and with dropping at most C rows from each
     * rank for each expert: E C */
    int64_t recv = P * b->g->S_max * k;
    if (at->drop_tokens) {
        int S = (int)b->g->S_max;
        int ct = moe_gate_capacity(S, E, k, MOE_MODE_TRAIN, at->cf, at->eval_cf, at->min_capacity);
        int ce = moe_gate_capacity(S, E, k, MOE_MODE_EVAL, at->cf, at->eval_cf, at->min_capacity);
        int64_t C = ct > ce ? ct : ce;
        if ((int64_t)E * C < recv) recv = (int64_t)E * C;
    }
    if (recv > b->g->recv_rows) b->g->recv_rows = recv;
    return xcounts;
}

/* y = x W[e] + b[e] per expert block, W = experts (ex).lin.weight; its int8 form too where
 * the graph reads it (q8) */
static void expert_mm(bld *b, int x, const char *ex, const char *lin, int counts, int y, const char *name,
                      const ir_at_moe *at) {
    int i = param_index(b, arena_printf(b->a, "%s.%s.weight", ex, lin));
    if (i < 0) return;
    const ir_ptable *t = b->tab;
    int bias = b->m->bias ? paramf(b, arena_printf(b->a, "%s.%s", ex, lin), "bias") : -1;
    moe_node(b, IR_EXPERT_MM, name, (int[]){x, t->tensor[i], bias, counts, t->qtensor[i], t->stensor[i], -2},
             (int[]){y, -2}, at);
}

static int moe_layer(bld *b, int x, int blk, int mi) {
    const md_model *m = b->m;
    ir_graph *g = b->g;
    ir_at_moe at = moe_attrs(b, mi);
    int E = at.experts, k = at.top_k;
    int64_t d = m->hidden, f = m->moe.ffn, fw = fc_width(m, f);
    int64_t dj = m->moe.noisy_gate == MD_NOISE_JITTER ? d : 0;
    const char *p = arena_printf(b->a, "h.%d.moe", blk);
    const char *ex = arena_printf(b->a, "%s.experts", p);
    /* the gate's records (moe_abi.h) */
    int route = typed(b, arena_printf(b->a, "%s.route", p), MOE_I32, IR_ROWS_S, 2 * k);
    int weights = act(b, arena_printf(b->a, "%s.weights", p), IR_ROWS_S, k);
    int state = act(b, arena_printf(b->a, "%s.gate_state", p), IR_ROWS_S, MOE_GSTATE_W(E, dj));
    int counts = typed(b, arena_printf(b->a, "%s.counts", p), MOE_I32, IR_ROWS_ONE, MOE_COUNTS_LEN(E));
    int scratch = typed(b, arena_printf(b->a, "%s.gate.scratch", p), MOE_F64, IR_ROWS_ONE,
                        MOE_GATE_SCRATCH(g->S_max, E));
    ir_node *gn = moe_node(b, IR_GATE, arena_printf(b->a, "%s.gate", p), (int[]){x, paramf(b, p, "gate.weight"), -2},
                           (int[]){route, weights, state, counts, scratch, g->stats, -2}, &at);
    if (gn) gn->acc[ir_slot_index(IR_GATE, 1, "stats")] = 1;

    int xd = act(b, arena_printf(b->a, "%s.dispatch.out", p), IR_ROWS_ROUTED, d);
    moe_node(b, IR_DISPATCH, arena_printf(b->a, "%s.dispatch", p), (int[]){x, route, -2}, (int[]){xd, -2}, &at);
    /* Expert parallelism (P ranks): this rank's L = E/P experts compute the rows the group's
     * ranks send them, in the received layout that the exchange of counts gives */
    int P = degree(b, mi), L = E / P, xcounts = -1;
    ir_at_moe ate = at;
    ate.experts = L;
    ir_rows er = IR_ROWS_ROUTED;
    if (P > 1) {
        xcounts = exchange_counts(b, &at, counts, p, P);
        er = IR_ROWS_RECV;
    }
    int ecounts = P > 1 ? xcounts : counts, X = b->X;
    int xe = alltoall(b, xd, counts, xcounts, arena_printf(b->a, "%s.a2a_in", p), d, mi, 1);
    /* expert slicing: 1/X of each expert's hidden units here, the partial outputs summed */
    if (X > 1) xe = tp_node(b, IR_TP_COPY, xe, -1, ecounts, L, X, arena_printf(b->a, "%s.experts.tp_in", p));
    int h = act(b, arena_printf(b->a, "%s.expert_fc.out", p), er, fw / X);
    expert_mm(b, xe, ex, "c_fc", ecounts, h, arena_printf(b->a, "%s.expert_fc", p), &ate);
    int ha = activation(b, h, f / X, arena_printf(b->a, "%s.expert_act", p), er, ecounts, L);
    int y = act(b, arena_printf(b->a, "%s.expert_proj.%s", p, X > 1 ? "partial" : "out"), er, d);
    expert_mm(b, ha, ex, "c_proj", ecounts, y, arena_printf(b->a, "%s.expert_proj", p), &ate);
    if (X > 1) y = tp_node(b, IR_TP_SUM, y, -1, ecounts, L, X, arena_printf(b->a, "%s.experts.tp_sum", p));
    int ye = alltoall(b, y, counts, xcounts, arena_printf(b->a, "%s.a2a_out", p), d, mi, 0);

    int coef = -1, dense = -1;
    if (m->moe.residual) {
        dense = mlp(b, x, arena_printf(b->a, "%s.mlp", p));
        coef = linear(b, x, arena_printf(b->a, "%s.coefficient", p), 2, 1, 0, NULL, WHOLE);
    }
    int out = act(b, arena_printf(b->a, "%s.combine.out", p), IR_ROWS_S, d);
    moe_node(b, IR_COMBINE, arena_printf(b->a, "%s.combine", p), (int[]){ye, route, weights, -1, coef, dense, -2},
             (int[]){out, -2}, &at);
    return out;
}

static int add(bld *b, int x, int y, const char *name) {
    int o = act(b, arena_printf(b->a, "%s.out", name), IR_ROWS_S, b->m->hidden);
    node(b, IR_ADD, name, (int[]){x, y, -2}, (int[]){o, -2});
    return o;
}

/* qkv [S, d + 2 dkv]: q, then k and v of the kv_heads key/value heads (dkv = kv_heads hd);
 * under tensor slicing 1/T of each, the heads of this rank */
static int attention(bld *b, int qkv, int blk, int decode) {
    int64_t T = b->T, d = b->m->hidden / T, dkv = b->m->kv_heads * (b->m->hidden / b->m->heads) / T;
    const char *p = arena_printf(b->a, "h.%d.attn", blk);
    ir_at_attn at = {b->m->heads / T, b->m->kv_heads / T};
    if (b->m->position == MD_POS_ROPE) {
        int r = act(b, arena_printf(b->a, "%s.rope.out", p), IR_ROWS_S, md_qkv_width(b->m) / T);
        ir_node *n = node(b, IR_ROPE, arena_printf(b->a, "%s.rope", p), (int[]){qkv, b->g->pos, -2}, (int[]){r, -2});
        if (n) n->at.attn = at;
        qkv = r;
    }
    int y = act(b, arena_printf(b->a, "%s.core.out", p), IR_ROWS_S, d);
    ir_node *n;
    if (decode) {
        int kc = ir_tensor_new(b->g, arena_printf(b->a, "%s.kcache", p), IR_T_CACHE, MOE_F32, IR_ROWS_CTX, dkv);
        int vc = ir_tensor_new(b->g, arena_printf(b->a, "%s.vcache", p), IR_T_CACHE, MOE_F32, IR_ROWS_CTX, dkv);
        n = node(b, IR_ATTN_DECODE, arena_printf(b->a, "%s.core", p), (int[]){qkv, b->g->pos, b->g->slot, -2},
                 (int[]){y, kc, vc, -2});
        if (n) n->acc[1] = n->acc[2] = 1;   /* appended to */
    } else {
        int lse = act(b, arena_printf(b->a, "%s.lse", p), IR_ROWS_S, at.heads);
        n = node(b, IR_ATTENTION, arena_printf(b->a, "%s.core", p), (int[]){qkv, -2}, (int[]){y, lse, -2});
    }
    if (n) n->at.attn = at;
    return y;
}

/* Model m's entries of the statistics record from entry `first` (moe_abi.h): four sums per
 * MoE layer, then the expert loads layer after layer. Returns the loads table; *end is the
 * entry after them. */
static int *layer_stats(ir_graph *g, const md_model *m, int first, int *end) {
    int n_moe = m->moe.n_moe, at = first + 4 * n_moe;
    int *loads = ARENA_ARRAY(g->arena, int, n_moe + 1);
    if (!loads) { g->oom = 1; return NULL; }
    for (int i = 0; i < n_moe; i++) {
        loads[i] = at;
        at += m->moe.experts[i];
    }
    *end = at;
    return loads;
}

/* a parameter tensor of table entry i at `offset` of buffer class `buf` */
static int param_tensor(bld *b, const char *name, int i, moe_dtype dt, int64_t numel, moe_buf buf, int64_t offset) {
    int id = ir_tensor_new(b->g, pfx(b, name), IR_T_PARAM, dt, IR_ROWS_ONE, numel);
    if (id < 0) return -1;
    b->g->t[id].param = i;
    b->g->t[id].offset = offset;
    b->g->t[id].buf = buf;
    return id;
}

/* a tensor per parameter of table t, in buffer class `buf`; q8: the int8 forms of the expert
 * weights and their scales too, in QPARAM */
static int add_params(bld *b, ir_ptable *t, moe_buf buf, int q8) {
    for (int i = 0; i < t->n; i++) {
        const md_param *p = &t->p[i];
        if ((t->tensor[i] = param_tensor(b, p->name, i, MOE_F32, p->numel, buf, t->offset[i])) < 0) return -1;
        if (!q8 || t->qoffset[i] < 0) continue;
        t->qtensor[i] = param_tensor(b, arena_printf(b->a, "%s.int8", p->name), i, MOE_I8, p->numel, MOE_BUF_QPARAM,
                                     t->qoffset[i]);
        t->stensor[i] = param_tensor(b, arena_printf(b->a, "%s.scale", p->name), i, MOE_F32, p->shape[0] * p->shape[2],
                                     MOE_BUF_QPARAM, t->qscale[i]);
        if (t->qtensor[i] < 0 || t->stensor[i] < 0) return -1;
    }
    return 0;
}

/* the model's forward from the token ids to its logits (the id of the logits tensor) */
static int forward(bld *b, int decode) {
    const md_model *m = b->m;
    arena *a = b->a;
    int64_t dm = m->hidden;
    b->block = -1;
    int x = act(b, "embed.out", IR_ROWS_S, dm);
    int wpe = m->position == MD_POS_LEARNED ? param(b, "wpe.weight") : -1;
    node(b, IR_EMBED, "embed", (int[]){b->g->tokens, param(b, "wte.weight"), wpe, b->g->pos, -2}, (int[]){x, -2});
    for (int i = 0; i < m->layers; i++) {
        b->block = i;
        int h = norm(b, x, arena_printf(a, "h.%d.ln_1", i));
        int qkv = linear(b, h, arena_printf(a, "h.%d.attn.c_attn", i), md_qkv_width(m), 1, 0, NULL, COLS);
        int y = attention(b, qkv, i, decode);
        int p = linear(b, y, arena_printf(a, "h.%d.attn.c_proj", i), dm, 1, 0, NULL, ROWS);
        x = add(b, x, p, arena_printf(a, "h.%d.attn.residual", i));
        int h2 = norm(b, x, arena_printf(a, "h.%d.ln_2", i));
        int mi = md_moe_index(m, i + 1);
        int f = mi < 0 ? mlp(b, h2, arena_printf(a, "h.%d.mlp", i)) : moe_layer(b, h2, i, mi);
        x = add(b, x, f, arena_printf(a, "h.%d.ffn.residual", i));
    }
    b->block = -1;
    int hf = norm(b, x, "ln_f");
    int tied = m->tie_embeddings;
    return linear(b, hf, "lm_head", m->vocab, 0, tied, tied ? "wte.weight" : NULL, WHOLE);
}

/* The student's teacher (distill block): its parameters in TPARAM, its forward in evaluation
 * mode, its statistics entries from first_stat (loads: their table). Returns the teacher's
 * logits tensor, or -1. */
static int teacher_forward(bld *sb, int first_stat, const int *loads) {
    const md_model *m = sb->m, *tm = m->distill.teacher;
    ir_graph *g = sb->g;
    ir_teacher *t = ARENA_NEW(sb->a, ir_teacher);
    md_param *params;
    int np = t ? md_params(tm, sb->a, &params) : -1;
    if (np < 0 || ir_ptable_layout(sb->a, &t->params, params, np, g->align)) return -1;
    t->name = tm->name;
    t->tau = m->distill.temperature;
    t->weight = m->distill.weight;
    t->stop_step = m->distill.stop_step;
    g->teacher = t;
    bld tb = {g, sb->a, tm, 0, &t->params, "teacher.", 1, first_stat, loads, 1, 1, -1};
    if (add_params(&tb, &t->params, MOE_BUF_TPARAM, 0)) return -1;
    if (tm->moe.n_moe && tm->moe.top_k > g->top_k) g->top_k = tm->moe.top_k;
    int zt = forward(&tb, 0);
    sb->errors += tb.errors;
    return zt;
}

/* Under expert parallelism a rank holds E/P experts of each MoE layer: its parameter table's
 * expert tensors have that many. Returns the largest degree. */
static int local_experts(const md_model *m, md_param *params, int np) {
    int ep = 1;
    for (int i = 0; i < np; i++) {
        md_param *q = &params[i];
        int mi = q->experts_all ? md_moe_index(m, q->block + 1) : -1;
        int P = mi >= 0 ? m->parallel.expert[mi] : 1;
        if (P <= 1) continue;
        q->shape[0] /= P;
        q->numel /= P;
        ep = P > ep ? P : ep;
    }
    return ep;
}

/* Under tensor slicing each rank of a group of T holds 1/T of the split tensors (md_param's
 * tp_dim), under expert slicing of X 1/X of the expert tensors */
static void local_slices(const md_model *m, md_param *params, int np) {
    for (int i = 0; i < np; i++) {
        md_param *q = &params[i];
        int T = q->experts_all ? m->parallel.expert_slicing : m->parallel.tensor;
        if (q->tp_dim < 0 || T <= 1) continue;
        q->tp = T;
        q->shape[q->tp_dim] /= T;
        q->numel /= T;
    }
}

ir_graph *ir_build_forward(arena *a, struct diag_ctx *d, const md_model *m, int64_t align, ir_build_kind kind) {
    int decode = kind != IR_BUILD_TRAIN;
    md_param *params;
    int np = md_params(m, a, &params);
    if (np < 0) return NULL;
    int ep = local_experts(m, params, np);
    local_slices(m, params, np);
    ir_graph *g = ir_graph_create(a, m->name, params, np, align);
    if (!g) return NULL;
    bld b = {g, a, m, 0, &g->params, NULL, 0, MOE_STAT_LAYER(0), NULL, m->parallel.tensor > 1 ? m->parallel.tensor : 1,
             m->parallel.expert_slicing > 1 ? m->parallel.expert_slicing : 1, -1};
    g->diag = d;
    g->loc = m->loc;
    g->decode = decode;
    g->recompute = !decode && m->train.recompute;
    g->q8 = kind == IR_BUILD_DECODE_Q8 && m->moe.n_moe > 0 && b.X == 1;    /* sliced experts: no int8 file reads */
    g->S_io = m->train.batch * m->context;
    g->decode_rows = ir_decode_rows(m);
    g->B_max = decode ? ir_decode_rows(m) : m->train.batch;   /* decoding: a sequence per row */
    g->T_max = decode ? 1 : m->context;
    g->S_max = g->B_max * g->T_max;
    g->context = m->context;
    g->top_k = m->moe.n_moe ? m->moe.top_k : 1;
    g->ep = ep;
    g->tensor = b.T > b.X ? b.T : b.X;     /* the group of both (the pipeline checks they agree) */
    g->optim = (ir_at_optim){m->train.beta1, m->train.beta2, m->train.eps, m->train.weight_decay, m->train.grad_clip};
    b.loads = g->stat_loads = layer_stats(g, m, MOE_STAT_LAYER(0), &g->n_stats);
    g->n_moe = m->moe.n_moe;
    if (!b.loads || add_params(&b, &g->params, MOE_BUF_PARAM, g->q8)) return NULL;
    /* the teacher's entries of the record, in the decode program's too: both share the IO layout */
    const md_model *tm = m->distill.teacher;
    int tfirst = g->n_stats, *tloads = tm ? layer_stats(g, tm, tfirst, &g->n_stats) : NULL;
    if (tm && !tloads) return NULL;
    g->tokens = ir_tensor_new(g, "tokens", IR_T_INPUT, MOE_I32, IR_ROWS_S, 1);
    if (decode) {
        g->pos = ir_tensor_new(g, "pos", IR_T_INPUT, MOE_I32, IR_ROWS_S, 1);
        g->slot = ir_tensor_new(g, "slot", IR_T_INPUT, MOE_I32, IR_ROWS_S, 1);
    }
    g->stats = ir_tensor_new(g, "stats", IR_T_STATS, MOE_F64, IR_ROWS_ONE, g->n_stats);
    int zt = tm && !decode ? teacher_forward(&b, tfirst, tloads) : -1;
    if (tm && !decode && zt < 0) return NULL;
    g->logits = forward(&b, decode);
    if (!decode) {
        if (zt >= 0) {     /* before the cross-entropy, which turns the logits into probabilities */
            int ps = act(&b, "kd.ps", IR_ROWS_S, m->vocab), kl = act(&b, "kd.kl", IR_ROWS_S, 1);
            ir_node *n = node(&b, IR_KD, "kd", (int[]){g->logits, zt, -2}, (int[]){ps, kl, g->stats, -2});
            if (n) {
                n->kd = 1;
                n->acc[2] = 1;
                n->at.kd = (ir_at_kd){m->distill.temperature, m->distill.weight};
            }
        }
        g->targets = ir_tensor_new(g, "targets", IR_T_INPUT, MOE_I32, IR_ROWS_S, 1);
        g->loss = act(&b, "xent.loss", IR_ROWS_S, 1);
        ir_node *n = node(&b, IR_XENT, "xent", (int[]){g->logits, g->targets, -2}, (int[]){g->loss, g->stats, -2});
        if (n) n->acc[1] = 1;
    }
    return g->oom || b.errors || arena_failed(a) ? NULL : g;
}
