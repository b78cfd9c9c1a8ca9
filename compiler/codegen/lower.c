/* lower.c - every live node of a planned graph becomes a step of kernel calls (lower.h).
 *
 * One rule per op, in ops.def order. A rule reads the node's slots by their ops.def names,
 * its attributes and the planned tensors, never the model: the sizes it bakes in are tensor
 * widths and attribute values. The argument order of each call is the kernel's parameter
 * order (kernels/cpu/k_*.h; the CUDA kernels keep the same signatures).
 */
#include "lower.h"
#include "../util/arena.h"
#include <string.h>

#define LW_MAX_ARGS 32

typedef struct lw {
    arena *a;
    const ir_graph *g;
    const ir_node *n;       /* the node being lowered */
    lw_step *st;
    lw_call *c;             /* the call being built */
    int cap;                /* calls the step has room for */
    int oom;
} lw;

/* ---- slots and tensors ---- */
static int in(const lw *L, const char *slot) { return L->n->in[ir_slot_index(L->n->op, 0, slot)]; }
static int out(const lw *L, const char *slot) { return L->n->out[ir_slot_index(L->n->op, 1, slot)]; }
static int acc(const lw *L, const char *slot) { return L->n->acc[ir_slot_index(L->n->op, 1, slot)]; }
static int64_t width(const lw *L, int t) { return L->g->t[t].width; }

/* ---- building calls ---- */
static void call(lw *L, const char *kernel, int variant) {
    L->c = NULL;
    if (L->st->ncalls >= L->cap) { L->oom = 1; return; }
    lw_call *c = &L->st->calls[L->st->ncalls];
    c->args = ARENA_ARRAY(L->a, lw_arg, LW_MAX_ARGS);
    if (!c->args) { L->oom = 1; return; }
    c->kernel = kernel;
    c->variant = variant;
    c->tuned = 0;
    c->nargs = 0;
    L->st->ncalls++;
    L->c = c;
}

static lw_arg *arg(lw *L, const char *name, lw_kind kind) {
    if (!L->c || L->c->nargs >= LW_MAX_ARGS) { L->oom = 1; return NULL; }
    lw_arg *a = &L->c->args[L->c->nargs++];
    memset(a, 0, sizeof *a);
    a->name = name;
    a->kind = kind;
    return a;
}

/* elements [elem, end) of tensor t; NULL for t < 0 */
static lw_ref ref_of(const lw *L, int t, int64_t elem) {
    lw_ref r = {0};
    if (t < 0) { r.null = 1; r.tensor = -1; return r; }
    const ir_tensor *x = &L->g->t[t];
    int64_t es = (int64_t)ir_dtype_size(x->dtype);
    r.tensor = t;
    r.buf = x->buf;
    r.dtype = x->dtype;
    r.offset = x->offset + elem * es;
    r.bytes = ir_tensor_bytes_max(L->g, x) - elem * es;
    return r;
}

static void a_at(lw *L, const char *name, int t, int64_t elem) {
    lw_arg *a = arg(L, name, LW_BUF);
    if (a) a->ref = ref_of(L, t, elem);
}
static void a_buf(lw *L, const char *name, int t) { a_at(L, name, t, 0); }
/* a buffer only the first rank of a tensor group gets (NULL on the others) */
static void a_buf_group_first(lw *L, const char *name, int t) {
    a_buf(L, name, t);
    if (L->c && L->c->nargs) L->c->args[L->c->nargs - 1].ref.group_first = 1;
}
/* a part of a buffer class that is no IR tensor (whole gradient buffer, AdamW moments) */
static void a_ref(lw *L, const char *name, moe_buf b, int64_t offset, int64_t bytes) {
    lw_arg *a = arg(L, name, LW_BUF);
    if (a) a->ref = (lw_ref){0, -1, b, MOE_F32, offset, bytes, 0};
}
static void a_int(lw *L, const char *name, int64_t v) {
    lw_arg *a = arg(L, name, LW_INT);
    if (a) a->i = v;
}
static void a_real(lw *L, const char *name, double v) {
    lw_arg *a = arg(L, name, LW_REAL);
    if (a) a->f = v;
}
static void a_rt(lw *L, const char *name, lw_rt r, int64_t factor) {
    lw_arg *a = arg(L, name, LW_RT);
    if (a) { a->rt = r; a->i = factor; }
}
/* the rows a routed kernel runs over: R from the layer's counts record (device), or S */
static void a_rows(lw *L, const char *name, int counts, int E) {
    lw_arg *a = arg(L, name, LW_ROWS);
    if (!a) return;
    if (counts < 0) { a->rt = LW_RT_S; a->i = 1; return; }
    a->device = 1;
    a->ref = ref_of(L, counts, MOE_ROWS(E));
    a->ref.bytes = 4;
}
/* the accumulate flag of an output, as the kernel's `name` parameter */
static void a_acc_as(lw *L, const char *name, const char *slot) { a_int(L, name, acc(L, slot)); }
static void a_acc(lw *L, const char *slot) { a_acc_as(L, "acc", slot); }
/* the batch dimensions of a token-major kernel */
static void a_BT(lw *L) { a_rt(L, "B", LW_RT_B, 1); a_rt(L, "T", LW_RT_T, 1); }
static void a_S(lw *L) { a_rt(L, "S", LW_RT_S, 1); }
/* the heads of an attention node: H, KV (kv_heads), and C = d from the fused width Q = d + 2 d KV / H */
static void a_heads(lw *L) { a_int(L, "H", L->n->at.attn.heads); a_int(L, "KV", L->n->at.attn.kv_heads); }
static int64_t qkv_C(const lw *L, int64_t Q) {
    const ir_at_attn *at = &L->n->at.attn;
    return Q * at->heads / (at->heads + 2 * at->kv_heads);
}

/* The elementwise kernels' thread split (k_common.h): the rule's variant, threads from
 * K_OMP_MIN_WORK elements; moec tune may choose another. */
#define SPLIT_RULE 1
/* accumulate's variant: the rule's where it adds into slot, none where it copies (memcpy) */
static int split_of_acc(const lw *L, const char *slot) { return acc(L, slot) ? SPLIT_RULE : 0; }

/* Grouped-GEMM variant (k_moe.h): experts across threads when there are many of them and
 * rows to share out; the rule for a shape the tuning database does not cover (codegen/tune.c
 * applies the database after lowering). As `moec tune` measured it on 2 cores: v2 wins the
 * training shapes from 4 experts (1.1-1.2x); the decode program's k rows of one token go to
 * v3's matrix-vector products (v1 was 1.7x faster than v2 there, v3 another 1.3-2.9x). */
static int expert_variant(const lw *L) {
    if (L->g->decode) return 3;
    return L->n->at.moe.experts >= 4 ? 2 : 1;
}

/* a bucket of the gradient buffer: its slot, the group its sum runs over, its range */
static void a_bucket(lw *L, int b) {
    const ir_bucket *k = &L->g->buckets[b];
    int P = L->g->params.degree[k->group];
    a_int(L, "slot", b); a_int(L, "group", P > 1 ? MOE_GROUP_EXPERT_DATA : MOE_GROUP_DATA); a_int(L, "P", P);
    a_ref(L, "grads", MOE_BUF_GRAD, k->offset, k->bytes); a_int(L, "n", k->bytes / 4);
}

/* ---- the rules ---- */
static void lower_node(lw *L) {
    const ir_graph *g = L->g;
    const ir_node *n = L->n;
    const ir_at_moe *m = &n->at.moe;
    switch (n->op) {
    case IR_EMBED:
        call(L, "embed_fwd", 0);
        a_buf(L, "x", out(L, "x")); a_buf(L, "tok", in(L, "tok")); a_buf(L, "wte", in(L, "wte"));
        a_buf(L, "wpe", in(L, "wpe")); a_buf(L, "pos", in(L, "pos")); a_BT(L); a_int(L, "C", width(L, out(L, "x")));
        break;
    case IR_EMBED_BWD:
        call(L, "embed_bwd", 0);
        a_buf(L, "dwte", out(L, "dwte")); a_buf(L, "dwpe", out(L, "dwpe")); a_buf(L, "dx", in(L, "dx"));
        a_buf(L, "tok", in(L, "tok")); a_BT(L); a_int(L, "C", width(L, in(L, "dx")));
        break;
    case IR_LAYERNORM:
        call(L, "layernorm_fwd", SPLIT_RULE);
        a_buf(L, "y", out(L, "y")); a_buf(L, "mean", out(L, "mean")); a_buf(L, "rstd", out(L, "rstd"));
        a_buf(L, "x", in(L, "x")); a_buf(L, "w", in(L, "w")); a_buf(L, "b", in(L, "b"));
        a_S(L); a_int(L, "C", width(L, in(L, "x")));
        break;
    case IR_LAYERNORM_BWD:
        call(L, "layernorm_bwd", SPLIT_RULE);
        a_buf(L, "dx", out(L, "dx")); a_buf(L, "dw", out(L, "dw")); a_buf(L, "db", out(L, "db"));
        a_buf(L, "dy", in(L, "dy")); a_buf(L, "x", in(L, "x")); a_buf(L, "w", in(L, "w"));
        a_buf(L, "mean", in(L, "mean")); a_buf(L, "rstd", in(L, "rstd"));
        a_S(L); a_int(L, "C", width(L, in(L, "x"))); a_acc(L, "dx");
        break;
    case IR_RMSNORM:
        call(L, "rmsnorm_fwd", SPLIT_RULE);
        a_buf(L, "y", out(L, "y")); a_buf(L, "rstd", out(L, "rstd")); a_buf(L, "x", in(L, "x"));
        a_buf(L, "w", in(L, "w")); a_S(L); a_int(L, "C", width(L, in(L, "x")));
        break;
    case IR_RMSNORM_BWD:
        call(L, "rmsnorm_bwd", SPLIT_RULE);
        a_buf(L, "dx", out(L, "dx")); a_buf(L, "dw", out(L, "dw")); a_buf(L, "dy", in(L, "dy"));
        a_buf(L, "x", in(L, "x")); a_buf(L, "w", in(L, "w")); a_buf(L, "rstd", in(L, "rstd"));
        a_S(L); a_int(L, "C", width(L, in(L, "x"))); a_acc(L, "dx");
        break;
    case IR_MATMUL: {
        int64_t K = width(L, in(L, "x")), N = width(L, out(L, "y"));
        if (in(L, "res") >= 0) {
            call(L, "matmul_res_fwd", 0);
            a_buf(L, "y", out(L, "y")); a_buf(L, "x", in(L, "x")); a_buf(L, "W", in(L, "W"));
            a_buf(L, "b", in(L, "b")); a_buf(L, "res", in(L, "res")); a_S(L); a_int(L, "K", K); a_int(L, "N", N);
        } else {
            call(L, "matmul_fwd", 0);
            a_buf(L, "y", out(L, "y")); a_buf(L, "x", in(L, "x")); a_buf(L, "W", in(L, "W"));
            a_buf(L, "b", in(L, "b")); a_S(L); a_int(L, "K", K); a_int(L, "N", N);
            a_int(L, "trans_w", n->at.matmul.trans_w);
        }
        break;
    }
    case IR_MATMUL_BWD: {
        int64_t K = width(L, in(L, "x")), N = width(L, in(L, "dy"));
        call(L, "matmul_bwd", 0);
        a_buf(L, "dx", out(L, "dx")); a_buf(L, "dW", out(L, "dW")); a_buf(L, "db", out(L, "db"));
        a_buf(L, "dy", in(L, "dy")); a_buf(L, "x", in(L, "x")); a_buf(L, "W", in(L, "W"));
        a_S(L); a_int(L, "K", K); a_int(L, "N", N); a_int(L, "trans_w", n->at.matmul.trans_w); a_acc(L, "dx");
        if (in(L, "dyh") >= 0) a_buf(L, "dyh", in(L, "dyh"));  /* a half model's GEMMs read dy's copy */
        if (out(L, "dres") >= 0) {      /* the fused residual's gradient is dy itself */
            call(L, "accumulate", split_of_acc(L, "dres"));
            a_buf(L, "dst", out(L, "dres")); a_buf(L, "src", in(L, "dy")); a_rt(L, "n", LW_RT_S, N);
            a_acc(L, "dres");
        }
        break;
    }
    case IR_ROPE:
        call(L, "rope_fwd", 0);
        a_buf(L, "y", out(L, "y")); a_buf(L, "qkv", in(L, "qkv")); a_buf(L, "pos", in(L, "pos")); a_BT(L);
        a_int(L, "C", qkv_C(L, width(L, in(L, "qkv")))); a_heads(L);
        break;
    case IR_ROPE_BWD:
        call(L, "rope_bwd", 0);
        a_buf(L, "dx", out(L, "dx")); a_buf(L, "dy", in(L, "dy")); a_BT(L);
        a_int(L, "C", qkv_C(L, width(L, in(L, "dy")))); a_heads(L); a_acc(L, "dx");
        break;
    case IR_ATTENTION:
        call(L, "attention_fwd", 1);      /* its tiles: the rule takes v1 (k_attn.h), moec tune may not */
        a_buf(L, "y", out(L, "y")); a_buf(L, "lse", out(L, "lse")); a_buf(L, "qkv", in(L, "qkv")); a_BT(L);
        a_int(L, "C", width(L, out(L, "y"))); a_heads(L);
        break;
    case IR_ATTENTION_BWD:
        call(L, "attention_bwd", 1);
        a_buf(L, "dqkv", out(L, "dqkv")); a_buf(L, "scratch", out(L, "scratch")); a_buf(L, "dy", in(L, "dy"));
        a_buf(L, "qkv", in(L, "qkv")); a_buf(L, "y", in(L, "y")); a_buf(L, "lse", in(L, "lse")); a_BT(L);
        a_int(L, "C", width(L, in(L, "dy"))); a_heads(L); a_acc(L, "dqkv");
        break;
    case IR_ATTN_DECODE:    /* the caches of slot 0; slot s's lie s slots (buf_bytes[KV]) further */
        call(L, "attention_decode", 0);
        a_buf(L, "y", out(L, "y")); a_buf(L, "kc", out(L, "kc")); a_buf(L, "vc", out(L, "vc"));
        a_buf(L, "qkv", in(L, "qkv")); a_buf(L, "pos", in(L, "pos")); a_buf(L, "slot", in(L, "slot")); a_S(L);
        a_int(L, "slot_floats", L->g->buf_bytes[MOE_BUF_KV] / 4); a_int(L, "C", width(L, out(L, "y"))); a_heads(L);
        break;
    case IR_ACT:
        call(L, "act_fwd", SPLIT_RULE);
        a_int(L, "fn", n->at.act.fn); a_buf(L, "y", out(L, "y")); a_buf(L, "x", in(L, "x"));
        a_rows(L, "rows", in(L, "counts"), n->at.act.experts); a_int(L, "width", width(L, out(L, "y")));
        break;
    case IR_ACT_BWD:
        call(L, "act_bwd", SPLIT_RULE);
        a_int(L, "fn", n->at.act.fn); a_buf(L, "dx", out(L, "dx")); a_buf(L, "x", in(L, "x"));
        a_buf(L, "dy", in(L, "dy")); a_rows(L, "rows", in(L, "counts"), n->at.act.experts);
        a_int(L, "width", width(L, in(L, "dy"))); a_acc(L, "dx");
        break;
    case IR_ADD:
        call(L, "add_fwd", SPLIT_RULE);
        a_buf(L, "y", out(L, "y")); a_buf(L, "a", in(L, "a")); a_buf(L, "b", in(L, "b"));
        a_rt(L, "n", LW_RT_S, width(L, out(L, "y")));
        break;
    case IR_ADD_BWD: {
        static const char *const side[] = {"da", "db"};
        for (int j = 0; j < 2; j++) {
            if (out(L, side[j]) < 0) continue;
            call(L, "accumulate", split_of_acc(L, side[j]));
            a_buf(L, "dst", out(L, side[j])); a_buf(L, "src", in(L, "dy"));
            a_rt(L, "n", LW_RT_S, width(L, in(L, "dy"))); a_acc(L, side[j]);
        }
        break;
    }
    case IR_GATE: {
        int st = out(L, "stats"), gs = out(L, "state");
        call(L, "moe_gate_fwd", 0);
        a_buf(L, "route", out(L, "route")); a_buf(L, "weights", out(L, "weights")); a_buf(L, "state", gs);
        a_buf(L, "counts", out(L, "counts")); a_at(L, "stats", st, m->stat); a_at(L, "loads", st, m->loads);
        a_buf(L, "scratch", out(L, "scratch")); a_buf(L, "x", in(L, "x")); a_buf(L, "W", in(L, "W"));
        a_S(L); a_int(L, "d", width(L, in(L, "x"))); a_int(L, "E", m->experts); a_int(L, "GW", width(L, gs));
        a_int(L, "k", m->top_k);
        if (m->eval_only) a_int(L, "mode", MOE_MODE_EVAL);
        else a_rt(L, "mode", LW_RT_MODE, 1);
        a_int(L, "drop_tokens", m->drop_tokens);
        a_int(L, "noise", m->noise); a_int(L, "rts", m->rts); a_int(L, "second_sampling", m->second_sampling);
        a_int(L, "min_capacity", m->min_capacity); a_real(L, "cf", m->cf); a_real(L, "eval_cf", m->eval_cf);
        a_rt(L, "rng", LW_RT_RNG, 1); a_int(L, "layer", m->layer);
        break;
    }
    case IR_GATE_BWD:
        call(L, "moe_gate_bwd", 0);
        a_buf(L, "dx", out(L, "dx")); a_buf(L, "dW", out(L, "dW")); a_buf(L, "dlogits", out(L, "scratch"));
        a_buf(L, "dweights", in(L, "dweights")); a_buf(L, "route", in(L, "route"));
        a_buf(L, "weights", in(L, "weights")); a_buf(L, "state", in(L, "state")); a_buf(L, "counts", in(L, "counts"));
        a_buf(L, "x", in(L, "x")); a_buf(L, "W", in(L, "W")); a_S(L); a_int(L, "d", width(L, in(L, "x")));
        a_int(L, "E", m->experts); a_int(L, "GW", width(L, in(L, "state"))); a_int(L, "k", m->top_k);
        a_real(L, "aux_coef", m->aux_coef); a_real(L, "z_coef", m->z_coef);
        a_rt(L, "loss_scale", LW_RT_LOSS_SCALE, 1); a_acc(L, "dx");
        break;
    case IR_DISPATCH:
        call(L, "moe_dispatch_fwd", 0);
        a_buf(L, "xd", out(L, "xd")); a_buf(L, "x", in(L, "x")); a_buf(L, "route", in(L, "route"));
        a_S(L); a_int(L, "d", width(L, in(L, "x"))); a_int(L, "k", m->top_k);
        break;
    case IR_DISPATCH_BWD:
        call(L, "moe_dispatch_bwd", 0);
        a_buf(L, "dx", out(L, "dx")); a_buf(L, "dxd", in(L, "dxd")); a_buf(L, "route", in(L, "route"));
        a_S(L); a_int(L, "d", width(L, out(L, "dx"))); a_int(L, "k", m->top_k); a_acc(L, "dx");
        break;
    case IR_A2A_COUNTS:
        call(L, "a2a_counts", 0);
        a_rt(L, "comm", LW_RT_COMM, 1); a_buf(L, "xcounts", out(L, "xcounts")); a_buf(L, "counts", in(L, "counts"));
        a_int(L, "P", n->at.a2a.degree); a_int(L, "L", n->at.a2a.experts / n->at.a2a.degree);
        break;
    case IR_ALLTOALL: {
        int x = in(L, "x"), y = out(L, "y");
        if (x == y) {
            L->st->note = "identity: the expert-parallel group has one rank";
            break;
        }
        if (in(L, "xcounts") >= 0) {    /* the rows of every expert to its rank, or back */
            call(L, "a2a_rows", 0);
            a_rt(L, "comm", LW_RT_COMM, 1); a_buf(L, "y", y); a_buf(L, "x", x); a_buf(L, "counts", in(L, "counts"));
            a_buf(L, "xcounts", in(L, "xcounts")); a_int(L, "P", n->at.a2a.degree);
            a_int(L, "L", n->at.a2a.experts / n->at.a2a.degree); a_int(L, "width", width(L, x));
            a_int(L, "to_experts", n->at.a2a.to_experts);
            break;
        }
        /* one process: the exchange is a copy of the R real rows, which the kernel reads from
         * the counts record */
        call(L, "copy_rows", 0);
        a_buf(L, "dst", y); a_buf(L, "src", x);
        a_rows(L, "rows", in(L, "counts"), n->at.a2a.experts); a_int(L, "width", width(L, x));
        break;
    }
    case IR_TP_COPY:        /* the comm pass has made it the identity; a copy otherwise */
        if (in(L, "x") == out(L, "y")) {
            L->st->note = "identity: the forward of a tensor group's input";
            break;
        }
        call(L, "accumulate", 0);     /* a copy: nothing to split */
        a_buf(L, "dst", out(L, "y")); a_buf(L, "src", in(L, "x")); a_rt(L, "n", LW_RT_S, width(L, in(L, "x")));
        a_int(L, "acc", 0);
        break;
    case IR_TP_SUM:
        call(L, "tp_sum", 0);
        a_rt(L, "comm", LW_RT_COMM, 1); a_int(L, "T", n->at.tp.degree); a_buf(L, "y", out(L, "y"));
        a_buf(L, "x", in(L, "x")); a_buf(L, "b", in(L, "b")); a_buf(L, "res", in(L, "res"));
        a_rows(L, "rows", in(L, "counts"), n->at.tp.experts); a_int(L, "width", width(L, in(L, "x"))); a_acc(L, "y");
        break;
    case IR_TP_SUM_BWD: {   /* dx = dy: the comm pass renamed dx to dy wherever nothing else writes dx */
        static const char *const side[] = {"dx", "dres"};
        for (int j = 0; j < 2; j++) {
            int dst = out(L, side[j]);
            if (dst < 0 || dst == in(L, "dy")) continue;
            call(L, "accumulate", split_of_acc(L, side[j]));   /* (routed rows: every row the tensor has) */
            a_buf(L, "dst", dst); a_buf(L, "src", in(L, "dy"));
            if (in(L, "counts") >= 0) a_int(L, "n", ir_tensor_numel_max(g, &g->t[dst]));
            else a_rt(L, "n", LW_RT_S, width(L, in(L, "dy")));
            a_acc(L, side[j]);
        }
        if (out(L, "db") >= 0) {
            call(L, "bias_grad", 0);
            a_buf(L, "db", out(L, "db")); a_buf(L, "dy", in(L, "dy")); a_S(L); a_int(L, "N", width(L, in(L, "dy")));
        }
        break;
    }
    case IR_EXPERT_MM: {   /* decoding with int8 weights: they are NULL until a quantized checkpoint is loaded */
        int q8 = in(L, "Wq") >= 0;
        call(L, q8 ? "moe_expert_q8_fwd" : "moe_expert_fwd", q8 ? 0 : expert_variant(L));
        a_buf(L, "y", out(L, "y")); a_buf(L, "x", in(L, "x")); a_buf(L, "W", in(L, "W"));
        if (q8) { a_buf(L, "Wq", in(L, "Wq")); a_buf(L, "Ws", in(L, "Ws")); }
        const md_param *w = &g->params.p[g->t[in(L, "W")].param];
        if (w->tp > 1 && w->tp_dim == 1) a_buf_group_first(L, "b", in(L, "b"));     /* split by rows */
        else a_buf(L, "b", in(L, "b"));
        a_buf(L, "counts", in(L, "counts")); a_int(L, "E", m->experts); a_int(L, "K", width(L, in(L, "x")));
        a_int(L, "N", width(L, out(L, "y")));
        break;
    }
    case IR_EXPERT_MM_BWD:
        call(L, "moe_expert_bwd", expert_variant(L));
        a_buf(L, "dx", out(L, "dx")); a_buf(L, "dW", out(L, "dW")); a_buf(L, "db", out(L, "db"));
        a_buf(L, "dy", in(L, "dy")); a_buf(L, "x", in(L, "x")); a_buf(L, "W", in(L, "W"));
        a_buf(L, "counts", in(L, "counts")); a_int(L, "E", m->experts); a_int(L, "K", width(L, in(L, "x")));
        a_int(L, "N", width(L, in(L, "dy"))); a_acc(L, "dx");
        if (in(L, "dyh") >= 0) a_buf(L, "dyh", in(L, "dyh"));
        break;
    case IR_CAST:   /* a parameter's copy: one row of all its elements */
        call(L, "cast", 0);
        a_buf(L, "y", out(L, "y")); a_buf(L, "x", in(L, "x"));
        if (g->t[in(L, "x")].rows == IR_ROWS_ONE) a_int(L, "rows", 1);
        else a_rows(L, "rows", in(L, "counts"), n->at.cast.experts);
        a_int(L, "width", width(L, in(L, "x")));
        break;
    case IR_COMBINE:
        call(L, "moe_combine_fwd", 0);
        a_buf(L, "y", out(L, "y")); a_buf(L, "yd", in(L, "yd")); a_buf(L, "route", in(L, "route"));
        a_buf(L, "weights", in(L, "weights")); a_buf(L, "res", in(L, "res")); a_buf(L, "coef", in(L, "coef"));
        a_buf(L, "mlp", in(L, "mlp")); a_S(L); a_int(L, "d", width(L, out(L, "y"))); a_int(L, "k", m->top_k);
        break;
    case IR_COMBINE_BWD:
        call(L, "moe_combine_bwd", 0);
        a_buf(L, "dyd", out(L, "dyd")); a_buf(L, "dweights", out(L, "dweights")); a_buf(L, "dres", out(L, "dres"));
        a_buf(L, "dcoef", out(L, "dcoef")); a_buf(L, "dmlp", out(L, "dmlp")); a_buf(L, "dy", in(L, "dy"));
        a_buf(L, "yd", in(L, "yd")); a_buf(L, "route", in(L, "route")); a_buf(L, "weights", in(L, "weights"));
        a_buf(L, "coef", in(L, "coef")); a_buf(L, "mlp", in(L, "mlp")); a_S(L); a_int(L, "d", width(L, in(L, "dy")));
        a_int(L, "k", m->top_k); a_acc_as(L, "acc_res", "dres"); a_acc_as(L, "acc_mlp", "dmlp");
        break;
    case IR_XENT:
        call(L, "xent_fwd", 0);
        a_buf(L, "probs", in(L, "logits")); a_buf(L, "loss", out(L, "loss"));
        a_at(L, "lm", out(L, "stats"), MOE_STAT_LM); a_buf(L, "targets", in(L, "targets")); a_S(L);
        a_int(L, "V", width(L, in(L, "logits")));
        break;
    case IR_XENT_BWD:
        call(L, "xent_bwd_mean", 0);
        a_buf(L, "dlogits", out(L, "dlogits")); a_buf(L, "probs", in(L, "probs"));
        a_buf(L, "targets", in(L, "targets")); a_rt(L, "loss_scale", LW_RT_LOSS_SCALE, 1); a_S(L);
        a_int(L, "V", width(L, in(L, "probs")));
        break;
    case IR_HEAD_XENT: {    /* the tile's rows: its width over V */
        int64_t V = width(L, in(L, "W")) / width(L, in(L, "x"));
        call(L, "head_xent_fwd", 0);
        a_buf(L, "loss", out(L, "loss")); a_buf(L, "lse", out(L, "lse")); a_at(L, "lm", out(L, "stats"), MOE_STAT_LM);
        a_buf(L, "tile", out(L, "tile")); a_buf(L, "x", in(L, "x")); a_buf(L, "W", in(L, "W"));
        a_buf(L, "targets", in(L, "targets")); a_S(L); a_int(L, "K", width(L, in(L, "x"))); a_int(L, "V", V);
        a_int(L, "rows", width(L, out(L, "tile")) / V); a_int(L, "trans_w", n->at.matmul.trans_w);
        break;
    }
    case IR_HEAD_XENT_BWD: {
        int64_t V = width(L, in(L, "W")) / width(L, in(L, "x"));
        call(L, "head_xent_bwd", 0);
        a_buf(L, "dx", out(L, "dx")); a_buf(L, "dW", out(L, "dW")); a_buf(L, "tile", out(L, "tile"));
        a_buf(L, "x", in(L, "x")); a_buf(L, "W", in(L, "W")); a_buf(L, "targets", in(L, "targets"));
        a_buf(L, "lse", in(L, "lse")); a_rt(L, "loss_scale", LW_RT_LOSS_SCALE, 1); a_S(L);
        a_int(L, "K", width(L, in(L, "x"))); a_int(L, "V", V); a_int(L, "rows", width(L, out(L, "tile")) / V);
        a_int(L, "trans_w", n->at.matmul.trans_w); a_acc(L, "dx");
        break;
    }
    case IR_KD:             /* the teacher's logits become its probabilities in place */
        call(L, "kd_loss_fwd", 0);
        a_buf(L, "ps", out(L, "ps")); a_buf(L, "pt", in(L, "zt")); a_buf(L, "kl", out(L, "kl"));
        a_at(L, "kd", out(L, "stats"), MOE_STAT_KD); a_buf(L, "zs", in(L, "zs")); a_real(L, "tau", n->at.kd.tau);
        a_S(L); a_int(L, "V", width(L, in(L, "zs")));
        break;
    case IR_KD_BWD:
        call(L, "kd_loss_bwd", 0);
        a_buf(L, "dzs", out(L, "dzs")); a_buf(L, "ps", in(L, "ps")); a_buf(L, "pt", in(L, "pt"));
        a_real(L, "weight", n->at.kd.weight); a_real(L, "tau", n->at.kd.tau);
        a_rt(L, "loss_scale", LW_RT_LOSS_SCALE, 1); a_S(L); a_int(L, "V", width(L, in(L, "ps"))); a_acc(L, "dzs");
        break;
    case IR_AR_START:
        call(L, "allreduce_start", 0);
        a_rt(L, "comm", LW_RT_COMM, 1); a_rt(L, "reduce", LW_RT_REDUCE, 1);
        a_bucket(L, n->at.bucket.bucket);
        break;
    case IR_ALLREDUCE:      /* dense gradients: the mean over the data-parallel group; experts: moe_program.h's rule */
        for (int b = 0; b < g->n_buckets; b++) {
            call(L, "allreduce_finish", 0);
            a_rt(L, "comm", LW_RT_COMM, 1);
            a_bucket(L, b);
        }
        break;
    case IR_GRAD_NORM:
        if (g->params.ngroups == 1) {
            call(L, "grad_norm", 0);
            a_at(L, "norm_clip", out(L, "stats"), MOE_STAT_GNORM); a_ref(L, "grads", MOE_BUF_GRAD, 0, g->params.bytes);
            a_int(L, "n", g->params.bytes / 4); a_real(L, "max_norm", n->at.optim.grad_clip);
            a_rt(L, "grad_scale", LW_RT_GRAD_SCALE, 1);
            break;
        }
        for (int i = 0; i < g->params.ngroups; i++) {   /* split tensors' squares summed over their groups */
            int64_t off = g->params.group_off[i], bytes = g->params.group_off[i + 1] - off;
            int sliced = g->params.sliced[i];
            call(L, "grad_sumsq", 0);
            a_at(L, "norm_clip", out(L, "stats"), MOE_STAT_GNORM); a_rt(L, "comm", LW_RT_COMM, 1);
            a_int(L, "group", sliced ? MOE_GROUP_TENSOR : MOE_GROUP_EXPERT);
            a_int(L, "P", sliced ? g->tensor : g->params.degree[i]); a_ref(L, "grads", MOE_BUF_GRAD, off, bytes);
            a_int(L, "n", bytes / 4); a_int(L, "first", i == 0);
        }
        call(L, "grad_clip", 0);
        a_at(L, "norm_clip", out(L, "stats"), MOE_STAT_GNORM); a_real(L, "max_norm", n->at.optim.grad_clip);
        a_rt(L, "grad_scale", LW_RT_GRAD_SCALE, 1);
        break;
    case IR_ADAMW:
        for (int i = 0; i < g->params.n; i++) {
            const md_param *p = &g->params.p[i];
            int64_t off = g->params.offset[i], bytes = p->numel * 4;
            call(L, "adamw_step", 0);
            a_buf(L, "p", g->params.tensor[i]); a_ref(L, "g", MOE_BUF_GRAD, off, bytes);
            a_ref(L, "m", MOE_BUF_OPT, off, bytes); a_ref(L, "v", MOE_BUF_OPT, g->params.bytes + off, bytes);
            a_int(L, "n", p->numel); a_rt(L, "lr", LW_RT_LR, 1); a_real(L, "beta1", n->at.optim.beta1);
            a_real(L, "beta2", n->at.optim.beta2); a_real(L, "eps", n->at.optim.eps);
            a_real(L, "wd", p->decay ? n->at.optim.weight_decay : 0.0);
            a_at(L, "clip", in(L, "stats"), MOE_STAT_CLIP); a_rt(L, "t", LW_RT_OPT_STEP, 1);
        }
        break;
    case IR_OP_COUNT:
        break;
    }
}

lw_program *lw_lower(const ir_graph *g) {
    arena *a = g->arena;
    lw_program *p = ARENA_NEW(a, lw_program);
    if (!p) return NULL;
    p->g = g;
    int live = 0;
    for (int i = 0; i < g->nn; i++) live += !g->n[i].dead;
    p->steps = ARENA_ARRAY(a, lw_step, live + 1);
    if (!p->steps) return NULL;
    lw L = {.a = a, .g = g};
    for (int i = 0; i < g->nn && !L.oom; i++) {
        const ir_node *n = &g->n[i];
        if (n->dead) continue;
        const ir_opinfo *o = ir_op_info(n->op);
        lw_step *st = &p->steps[p->nsteps++];
        st->name = n->name;
        st->op = n->op;
        st->node = i;
        st->phase = n->phase;
        st->kind = (o->flags & IR_OPF_COMM ? MOE_STEP_COMM : MOE_STEP_COMPUTE) |
                   (o->flags & IR_OPF_LOSS ? MOE_STEP_LOSS : 0) | (n->kd ? MOE_STEP_KD : 0);
        L.cap = n->op == IR_ADAMW ? g->params.n : n->op == IR_ALLREDUCE ? g->n_buckets + 1
              : n->op == IR_GRAD_NORM ? IR_MAX_DEGREES + 1 : 3;
        st->calls = ARENA_ARRAY(a, lw_call, L.cap + 1);
        if (!st->calls) return NULL;
        L.st = st;
        L.n = n;
        lower_node(&L);
    }
    return L.oom ? NULL : p;
}

const char *lw_rt_name(lw_rt r) {
    static const char *const nm[LW_RT_COUNT] = {"B", "T", "S", "mode", "rng", "loss_scale", "lr", "opt_step",
                                                "comm", "reduce", "grad_scale"};
    return (unsigned)r < LW_RT_COUNT ? nm[r] : "?";
}

/* ---- --emit kernels ---- */

static void print_ref(const lw_ref *r, FILE *out) {
    if (r->null) { fputs("NULL", out); return; }
    if (r->group_first) fputs("first-of-group:", out);
    fprintf(out, "%s:%s@%lld+%lld", ir_buf_name(r->buf), ir_dtype_name(r->dtype), (long long)r->offset,
            (long long)r->bytes);
}

static void print_arg(const lw_arg *a, FILE *out) {
    fprintf(out, "%s=", a->name);
    switch (a->kind) {
    case LW_BUF: print_ref(&a->ref, out); break;
    case LW_INT: fprintf(out, "%lld", (long long)a->i); break;
    case LW_REAL: fprintf(out, "%.9g", a->f); break;
    case LW_RT:
    case LW_ROWS:
        if (a->kind == LW_ROWS && a->device) { fputs("*", out); print_ref(&a->ref, out); break; }
        fputs(lw_rt_name(a->rt), out);
        if (a->i != 1) fprintf(out, "*%lld", (long long)a->i);
        break;
    }
}

const lw_arg *lw_arg_named(const lw_call *k, const char *name) {
    for (int j = 0; j < k->nargs; j++)
        if (!strcmp(k->args[j].name, name)) return &k->args[j];
    return NULL;
}

int64_t lw_arg_max(const ir_graph *g, const lw_call *k, const char *name, size_t len) {
    for (int j = 0; j < k->nargs; j++) {
        const lw_arg *x = &k->args[j];
        if (strlen(x->name) != len || strncmp(x->name, name, len)) continue;
        switch (x->kind) {
        case LW_INT: return x->i;
        case LW_REAL: return 1;
        case LW_BUF: return x->ref.null ? 0 : x->ref.bytes / (int64_t)ir_dtype_size(x->ref.dtype);
        case LW_RT:
        case LW_ROWS: {
            int64_t v = x->rt == LW_RT_B ? g->B_max : x->rt == LW_RT_T ? g->T_max : x->rt == LW_RT_S ? g->S_max : 1;
            return v * x->i;
        }
        }
    }
    return -1;
}

void lw_print(const lw_program *p, const char *target, FILE *out) {
    const ir_graph *g = p->g;
    fprintf(out, "kernels %s%s: target %s, %d steps\n", g->name, g->decode ? " (decode)" : "", target, p->nsteps);
    for (int i = 0; i < p->nsteps; i++) {
        const lw_step *s = &p->steps[i];
        fprintf(out, "step %d %s %s [%s%s%s%s]%s%s\n", i, ir_op_name(s->op), s->name,
                s->kind & MOE_STEP_COMPUTE ? "compute" : "", s->kind & MOE_STEP_COMM ? "comm" : "",
                s->kind & MOE_STEP_LOSS ? ",loss" : "", s->kind & MOE_STEP_KD ? ",kd" : "", s->note ? " " : "",
                s->note ? s->note : "");
        for (int c = 0; c < s->ncalls; c++) {
            const lw_call *k = &s->calls[c];
            fprintf(out, "  %s", k->kernel);
            if (k->variant) fprintf(out, ".v%d", k->variant);
            fputc('(', out);
            for (int j = 0; j < k->nargs; j++) {
                if (j) fputs(", ", out);
                print_arg(&k->args[j], out);
            }
            fputs(")", out);
            if (k->variant) fputs(k->tuned ? " [variant from the tuning database]" : " [variant by rule]", out);
            fputc('\n', out);
        }
    }
}
