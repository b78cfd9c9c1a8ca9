/* precision.c - mixed precision: the GEMMs read bf16 or f16 copies of their operands.
 *
 * A model with dtype = bf16 or fp16, on a target that computes in it, keeps its parameters,
 * their gradients and the optimizer state in f32 (the master copy), and so the residual
 * stream, the norms, softmaxes, the gate and every reduction; the GEMMs (linear layers and
 * expert GEMMs, forward and backward) read their operands in the half type and accumulate
 * and write in f32 (cuBLAS's compute type 32F). This pass makes those operands: before the
 * first GEMM that reads a tensor, a CAST node writes its half copy (NAME.bf16), and every
 * GEMM that reads the tensor reads the copy instead:
 *   - x of MATMUL and EXPERT_MM, which the backward's dW GEMM reads again: the f32 x then
 *     dies in the forward (unless something else reads it) and the half copy is what is
 *     kept for the backward, half the bytes;
 *   - W: one copy per parameter, made at its first use in the forward and read by the
 *     backward too (a step's weights in the half type: what the memory estimate counts);
 *   - dy of MATMUL_BWD and EXPERT_MM_BWD: a copy the GEMMs read (dyh), while the bias
 *     gradient and a fused residual's gradient read dy itself in f32.
 * A routed tensor is cast over the routed rows R only (the layer's counts). Distillation's
 * nodes get their own casts (flagged kd, as their readers), so nothing outside distillation
 * reads what only it writes. The decode program stays in f32 (casting every weight per
 * token would cost more than the GEMMs save).
 *
 * pass_fuse_casts (after pass_comm, with fusion on): where the f32 tensor exists only to be
 * cast (a dense layer's norm output, the activation, the dispatched rows), its writer writes
 * the half copy instead (the kernels store through cu_st, rounding the same f32 value the
 * cast would have read): one kernel and one f32 tensor fewer. Attention's output is cast
 * apart: its kernels accumulate in the output.
 */
#include "passes.h"
#include "../util/arena.h"

typedef struct pc {
    ir_graph *g;
    int nt;             /* the tensors before the pass: copy[] covers these */
    int *copy[2];       /* [nt] the half copy of a tensor, made for non-kd (0) and kd (1) readers, or -1 */
} pc;

/* the half copy of tensor t for node *at, made just before it when there is none; -1 on out
 * of memory. *at moves with the node when a cast is inserted before it. */
static int half_of(pc *s, int t, int counts, int *at) {
    ir_graph *g = s->g;
    int kd = g->n[*at].kd, experts = counts >= 0 ? g->n[*at].at.moe.experts : 0;
    if (t < 0 || t >= s->nt) return t;
    if (s->copy[kd][t] >= 0) return s->copy[kd][t];
    const ir_tensor *x = &g->t[t];
    int y = ir_tensor_new(g, arena_printf(g->arena, "%s.%s", x->name, ir_dtype_name(g->half)), IR_T_ACT, g->half,
                          x->rows, x->width);
    int phase = g->n[*at].phase, block = g->n[*at].block;
    int c = y < 0 ? -1 : ir_node_insert(g, *at, IR_CAST, arena_printf(g->arena, "%s.cast", g->t[y].name), phase);
    if (c < 0) return -1;
    ir_io(g, c, (int[]){t, counts, -2}, (int[]){y, -2});
    g->n[c].kd = kd;
    g->n[c].at.cast.experts = experts;
    g->n[c].block = block;
    (*at)++;
    return s->copy[kd][t] = y;
}

/* the node's input `slot` read as its half copy (over the routed rows of `counts`, or -1) */
static int use_half(pc *s, int *at, const char *slot, int counts) {
    ir_node *n = &s->g->n[*at];
    int j = ir_slot_index(n->op, 0, slot);
    int h = half_of(s, n->in[j], counts, at);
    if (h < 0 && n->in[j] >= 0) return -1;
    s->g->n[*at].in[j] = h;
    return 0;
}

/* dyh, a fresh half copy of dy (read by this node only) */
static int dy_half(pc *s, int *at, int counts) {
    ir_node *n = &s->g->n[*at];
    int kd = n->kd, dy = n->in[ir_slot_index(n->op, 0, "dy")];
    int keep = s->copy[kd][dy];
    s->copy[kd][dy] = -1;
    int h = half_of(s, dy, counts, at);
    s->copy[kd][dy] = keep;
    if (h < 0) return -1;
    s->g->n[*at].in[ir_slot_index(s->g->n[*at].op, 0, "dyh")] = h;
    return 0;
}

int pass_precision(ir_graph *g) {
    if (g->half != MOE_BF16 && g->half != MOE_F16) return 0;
    pc s = {g, g->nt, {ARENA_ARRAY(g->arena, int, g->nt), ARENA_ARRAY(g->arena, int, g->nt)}};
    if (!s.copy[0] || !s.copy[1]) return -1;
    for (int i = 0; i < s.nt; i++) s.copy[0][i] = s.copy[1][i] = -1;
    for (int i = 0; i < g->nn; i++) {
        ir_node *n = &g->n[i];
        if (n->dead) continue;
        int counts = -1, rc = 0;
        switch (n->op) {
        case IR_EXPERT_MM:
            if (n->in[ir_slot_index(IR_EXPERT_MM, 0, "Wq")] >= 0) break;   /* int8 weights: decoding only */
            /* fall through */
        case IR_EXPERT_MM_BWD:
            counts = n->in[ir_slot_index(n->op, 0, "counts")];
            /* fall through */
        case IR_MATMUL:
        case IR_MATMUL_BWD:
            rc = use_half(&s, &i, "x", counts) || use_half(&s, &i, "W", -1);
            if (!rc && (g->n[i].op == IR_MATMUL_BWD || g->n[i].op == IR_EXPERT_MM_BWD)) rc = dy_half(&s, &i, counts);
            break;
        default: break;
        }
        if (rc || g->oom) return -1;
    }
    return 0;
}

/* ---- pass_fuse_casts: the producer writes the half copy ---- */

/* an in-place identity all-to-all of t (a one-rank expert group after pass_comm) */
static int identity_a2a(const ir_node *n, int t) { return n->op == IR_ALLTOALL && n->in[0] == t && n->out[0] == t; }

int pass_fuse_casts(ir_graph *g) {
    if (g->half != MOE_BF16 && g->half != MOE_F16) return 0;
    for (int c = 0; c < g->nn; c++) {
        ir_node *cast = &g->n[c];
        int x = cast->in[0];
        if (cast->dead || cast->op != IR_CAST || g->t[x].kind != IR_T_ACT) continue;
        int writer = -1, ok = 1;
        for (int i = 0; i < g->nn && ok; i++) {    /* one writer; the rest only pass it on in place */
            const ir_node *n = &g->n[i];
            if (n->dead || i == c || identity_a2a(n, x)) continue;
            for (int j = 0; j < n->n_in; j++) ok &= n->in[j] != x;
            for (int j = 0; j < n->n_out; j++) {
                if (n->out[j] != x) continue;
                ok &= writer < 0 && j == 0 && !n->acc[0];     /* its first output, overwritten */
                writer = i;
            }
        }
        ir_op op = writer >= 0 ? g->n[writer].op : IR_OP_COUNT;
        if (!ok || (op != IR_LAYERNORM && op != IR_RMSNORM && op != IR_ACT && op != IR_DISPATCH)) continue;
        int h = cast->out[0];
        g->n[writer].out[0] = h;
        for (int i = 0; i < g->nn; i++)
            if (!g->n[i].dead && identity_a2a(&g->n[i], x)) g->n[i].in[0] = g->n[i].out[0] = h;
        cast->dead = 1;
    }
    return 0;
}
