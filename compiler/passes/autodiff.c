/* autodiff.c - derives the backward graph from the forward graph.
 *
 * Walks the live forward nodes in reverse and applies each op's gradient rule, which
 * appends backward nodes reading saved forward tensors and output gradients. A
 * tensor's gradient is created by its first contribution (acc = 0, overwrite) and
 * later contributions add to it (acc = 1), so fan-out needs no separate sums.
 * Parameter gradients always add (the runtime zeroes them once per optimizer step),
 * which also makes gradient accumulation over micro-steps free.
 */
#include "passes.h"
#include "../util/arena.h"

typedef struct ad { ir_graph *g; int *written; } ad;

/* The gradient tensor of forward tensor t (created on demand); width overrides the row
 * width (the gate's route record has a gradient of k weights per token). */
static int grad_of(ad *s, int t, int64_t width) {
    ir_graph *g = s->g;
    if (t < 0) return -1;
    if (g->t[t].grad >= 0) return g->t[t].grad;
    ir_tensor src = g->t[t];
    int id;
    if (src.kind == IR_T_PARAM) {
        id = ir_tensor_new(g, arena_printf(g->arena, "%s.grad", src.name), IR_T_GRAD, IR_ROWS_ONE, src.width);
        if (id >= 0) { g->t[id].param = src.param; g->t[id].offset = src.offset; }
    } else {
        id = ir_tensor_new(g, arena_printf(g->arena, "%s.grad", src.name), IR_T_ACT, src.rows,
                           width ? width : src.width);
    }
    if (id >= 0) g->t[t].grad = id;
    return id;
}

/* Node producing gradients: out[j] is the gradient of forward tensor fwd[j]; its acc
 * flag is decided here. -1 entries are skipped. */
static int bwd(ad *s, ir_op op, const ir_node *f, const int *in, const int *fwd, int nfwd) {
    ir_graph *g = s->g;
    int n = ir_node_new(g, op, arena_printf(g->arena, "%s.bwd", f->name), IR_PHASE_BWD);
    if (n < 0) return -1;
    ir_node *b = &g->n[n];
    for (int j = 0; j < IR_MAX_IO && in[j] != -2; j++) b->in[b->n_in++] = in[j];
    for (int j = 0; j < 8; j++) b->a[j] = f->a[j];
    for (int j = 0; j < nfwd; j++) {
        int gt = fwd[j] >= 0 ? grad_of(s, fwd[j], 0) : -1;
        b->out[b->n_out] = gt;
        if (gt >= 0) {
            b->acc[b->n_out] = g->t[gt].kind == IR_T_GRAD || s->written[fwd[j]];
            s->written[fwd[j]] = 1;
        }
        b->n_out++;
    }
    return n;
}

/* A scratch output of backward node n, dead after it; the plan reuses its memory. */
static int scratch(ad *s, int n, ir_rows rows, int64_t width) {
    ir_graph *g = s->g;
    int t = ir_tensor_new(g, arena_printf(g->arena, "%s.scratch", g->n[n].name), IR_T_ACT, rows, width);
    if (t >= 0) g->n[n].out[g->n[n].n_out++] = t;
    return t;
}

static int dy(ad *s, const ir_node *f) {
    int o = f->out[0];
    return s->written[o] ? s->g->t[o].grad : -1;
}

static int rule(ad *s, const ir_node *f) {
    ir_graph *g = s->g;
    const int *i = f->in;
    int d = dy(s, f);
    if (d < 0 && f->op != IR_XENT) return 0;  /* nothing flows back through this node */
    switch (f->op) {
    case IR_XENT:
        return bwd(s, IR_XENT_BWD, f, (int[]){i[0], i[1], -2}, (int[]){i[0]}, 1) < 0;
    case IR_MATMUL:
        return bwd(s, IR_MATMUL_BWD, f, (int[]){d, i[0], i[1], -2}, (int[]){i[0], i[1], i[2], i[3]}, 4) < 0;
    case IR_LAYERNORM:
        return bwd(s, IR_LAYERNORM_BWD, f, (int[]){d, i[0], i[1], f->out[1], f->out[2], -2},
                   (int[]){i[0], i[1], i[2]}, 3) < 0;
    case IR_RMSNORM:
        return bwd(s, IR_RMSNORM_BWD, f, (int[]){d, i[0], i[1], f->out[1], -2}, (int[]){i[0], i[1]}, 2) < 0;
    case IR_EMBED:
        return bwd(s, IR_EMBED_BWD, f, (int[]){d, i[0], -2}, (int[]){i[1], i[2]}, 2) < 0;
    case IR_ROPE:
        return bwd(s, IR_ROPE_BWD, f, (int[]){d, -2}, (int[]){i[0]}, 1) < 0;
    case IR_ATTENTION: {
        int n = bwd(s, IR_ATTENTION_BWD, f, (int[]){d, i[0], f->out[1], -2}, (int[]){i[0]}, 1);
        return n < 0 || scratch(s, n, IR_ROWS_ATT, 1) < 0;   /* d probabilities [B,H,T,T] */
    }
    case IR_ACT:
        return bwd(s, IR_ACT_BWD, f, (int[]){d, i[0], i[1], -2}, (int[]){i[0]}, 1) < 0;
    case IR_ADD:
        return bwd(s, IR_ADD_BWD, f, (int[]){d, -2}, (int[]){i[0], i[1]}, 2) < 0;
    case IR_ALLTOALL: {
        int n = bwd(s, IR_ALLTOALL, f, (int[]){d, i[1], -2}, (int[]){i[0]}, 1);
        if (n >= 0) g->n[n].a[2] = 1;   /* backward direction: experts -> tokens */
        return n < 0;
    }
    case IR_EXPERT_MM:
        return bwd(s, IR_EXPERT_MM_BWD, f, (int[]){d, i[0], i[1], i[3], -2}, (int[]){i[0], i[1], i[2]}, 3) < 0;
    case IR_DISPATCH:
        return bwd(s, IR_DISPATCH_BWD, f, (int[]){d, i[1], i[2], -2}, (int[]){i[0]}, 1) < 0;
    case IR_COMBINE: {
        /* gradient of the route record = the k output weights per token */
        if (grad_of(s, i[1], f->a[2]) < 0) return -1;
        return bwd(s, IR_COMBINE_BWD, f, (int[]){d, i[0], i[1], i[2], i[4], i[5], -2},
                   (int[]){i[0], i[1], i[3], i[4], i[5]}, 5) < 0;
    }
    case IR_GATE: {  /* d = gradient of the output weights, from the combine */
        int n = bwd(s, IR_GATE_BWD, f, (int[]){d, f->out[0], f->out[1], i[0], i[1], -2}, (int[]){i[0], i[1]}, 2);
        return n < 0 || scratch(s, n, IR_ROWS_S, f->a[1]) < 0;   /* d logits [S, E] */
    }
    default:
        return 0;   /* ops without a gradient rule are not differentiated (decode-only) */
    }
}

int pass_autodiff(ir_graph *g) {
    ad s = {g, ARENA_ARRAY(g->arena, int, g->nt)};   /* indexed by forward tensors only */
    if (!s.written) return -1;
    int n_fwd = g->nn;
    for (int i = n_fwd - 1; i >= 0; i--) {
        if (g->n[i].dead || g->n[i].phase != IR_PHASE_FWD) continue;
        ir_node f = g->n[i];        /* copy: appending nodes may move the array */
        if (rule(&s, &f)) return -1;
    }
    return g->oom ? -1 : 0;
}
