/* autodiff.c - derives the backward graph from the forward graph.
 *
 * Walks the live forward nodes in reverse and applies each op's gradient rule, which
 * appends a backward node reading saved forward tensors and output gradients. A
 * tensor's gradient is created by its first contribution (acc = 0, overwrite) and
 * later contributions add to it (acc = 1), so fan-out needs no separate sums.
 * Parameter gradients always add (the runtime zeroes them once per optimizer step),
 * which also makes gradient accumulation over micro-steps free. A backward node copies
 * its forward node's attributes, block and kd flag. Loss ops (ops.def LOSS) start the flow.
 * The cross-entropy's gradient overwrites the probabilities it reads (the logits' tensor is
 * its own gradient); the KD loss comes before the cross-entropy in the forward, so its
 * gradient is the one that adds to it.
 */
#include "passes.h"
#include "../util/arena.h"

typedef struct ad { ir_graph *g; int *written; } ad;

/* The gradient tensor of forward tensor t (created on demand). */
static int grad_of(ad *s, int t) {
    ir_graph *g = s->g;
    if (t < 0) return -1;
    if (g->t[t].grad >= 0) return g->t[t].grad;
    ir_tensor src = g->t[t];
    const char *name = arena_printf(g->arena, "%s.grad", src.name);
    int id;
    if (src.kind == IR_T_PARAM) {
        id = ir_tensor_new(g, name, IR_T_GRAD, MOE_F32, IR_ROWS_ONE, src.width);
        if (id >= 0) { g->t[id].param = src.param; g->t[id].offset = src.offset; }
    } else {
        id = ir_tensor_new(g, name, IR_T_ACT, MOE_F32, src.rows, src.width);
    }
    if (id >= 0) g->t[t].grad = id;
    return id;
}

/* A backward node of op for forward node f: inputs `in` (-2 terminated, slot order), outputs
 * 0..nfwd-1 the gradients of forward tensors fwd[] (-1 entries stay absent); the acc flag
 * of each is decided here. Returns the node index or -1. */
static int bwd(ad *s, ir_op op, const ir_node *f, const int *in, const int *fwd, int nfwd) {
    ir_graph *g = s->g;
    int n = ir_node_new(g, op, arena_printf(g->arena, "%s.bwd", f->name), IR_PHASE_BWD);
    if (n < 0) return -1;
    ir_io(g, n, in, NULL);
    ir_node *b = &g->n[n];
    b->at = f->at;
    b->kd = f->kd;
    b->block = f->block;
    for (int j = 0; j < nfwd; j++) {
        int gt = fwd[j] >= 0 ? grad_of(s, fwd[j]) : -1;   /* adds tensors only: b stays valid */
        b->out[j] = gt;
        if (gt >= 0) {
            b->acc[j] = g->t[gt].kind == IR_T_GRAD || s->written[fwd[j]];
            s->written[fwd[j]] = 1;
        }
    }
    return n;
}

/* A scratch output (slot `slot`) of backward node n, dead after it; the plan reuses its memory. */
static int scratch(ad *s, int n, int slot, ir_rows rows, int64_t width) {
    ir_graph *g = s->g;
    if (n < 0) return -1;
    int t = ir_tensor_new(g, arena_printf(g->arena, "%s.scratch", g->n[n].name), IR_T_ACT, MOE_F32, rows, width);
    if (t >= 0) g->n[n].out[slot] = t;
    return t;
}

/* the gradient flowing into forward node f: of its output 0, or of the gate's weights */
static int dy(ad *s, const ir_node *f) {
    int o = f->out[f->op == IR_GATE ? ir_slot_index(IR_GATE, 1, "weights") : 0];
    return o >= 0 && s->written[o] ? s->g->t[o].grad : -1;
}

static int rule(ad *s, const ir_node *f) {
    const int *i = f->in, *o = f->out;
    int d = dy(s, f);
    if (d < 0 && !(ir_op_info(f->op)->flags & IR_OPF_LOSS)) return 0;  /* nothing flows back through it */
    int n = 0;
    switch (f->op) {
    case IR_XENT:           /* the logits' gradient overwrites the probabilities: [S,V] once, not twice */
        if (i[0] >= 0 && s->g->t[i[0]].grad < 0) s->g->t[i[0]].grad = i[0];
        n = bwd(s, IR_XENT_BWD, f, (int[]){i[0], i[1], -2}, (int[]){i[0]}, 1);
        break;
    case IR_HEAD_XENT:      /* scratch: its own tile of logits, as large as the forward's */
        n = bwd(s, IR_HEAD_XENT_BWD, f, (int[]){i[0], i[1], i[2], o[1], -2}, (int[]){i[0], i[1]}, 2);
        if (scratch(s, n, 2, IR_ROWS_ONE, s->g->t[o[3]].width) < 0) return -1;
        break;
    case IR_KD:             /* into the student's logits only: the teacher gets no gradient */
        n = bwd(s, IR_KD_BWD, f, (int[]){o[0], i[1], -2}, (int[]){i[0]}, 1);
        break;
    case IR_MATMUL:
        n = bwd(s, IR_MATMUL_BWD, f, (int[]){d, i[0], i[1], -2}, (int[]){i[0], i[1], i[2], i[3]}, 4);
        break;
    case IR_LAYERNORM:
        n = bwd(s, IR_LAYERNORM_BWD, f, (int[]){d, i[0], i[1], o[1], o[2], -2}, (int[]){i[0], i[1], i[2]}, 3);
        break;
    case IR_RMSNORM:
        n = bwd(s, IR_RMSNORM_BWD, f, (int[]){d, i[0], i[1], o[1], -2}, (int[]){i[0], i[1]}, 2);
        break;
    case IR_EMBED:
        n = bwd(s, IR_EMBED_BWD, f, (int[]){d, i[0], -2}, (int[]){i[1], i[2]}, 2);
        break;
    case IR_ROPE:
        n = bwd(s, IR_ROPE_BWD, f, (int[]){d, -2}, (int[]){i[0]}, 1);
        break;
    case IR_ATTENTION:      /* scratch: rowsum(dy y) [S,H] */
        n = bwd(s, IR_ATTENTION_BWD, f, (int[]){d, i[0], o[0], o[1], -2}, (int[]){i[0]}, 1);
        if (scratch(s, n, 1, IR_ROWS_S, f->at.attn.heads) < 0) return -1;
        break;
    case IR_ACT:
        n = bwd(s, IR_ACT_BWD, f, (int[]){d, i[0], i[1], -2}, (int[]){i[0]}, 1);
        break;
    case IR_ADD:
        n = bwd(s, IR_ADD_BWD, f, (int[]){d, -2}, (int[]){i[0], i[1]}, 2);
        break;
    case IR_ALLTOALL:       /* the same exchange of the gradient, the other way */
        n = bwd(s, IR_ALLTOALL, f, (int[]){d, i[1], i[2], -2}, (int[]){i[0]}, 1);
        if (n >= 0) {
            s->g->n[n].at.a2a.backward = 1;
            s->g->n[n].at.a2a.to_experts = !f->at.a2a.to_experts;
        }
        break;
    case IR_TP_COPY:        /* the gradients of the group's ranks summed */
        n = bwd(s, IR_TP_SUM, f, (int[]){d, -1, -1, i[1], -2}, (int[]){i[0]}, 1);
        break;
    case IR_TP_SUM:
        n = bwd(s, IR_TP_SUM_BWD, f, (int[]){d, i[3], -2}, (int[]){i[0], i[1], i[2]}, 3);
        break;
    case IR_EXPERT_MM:
        n = bwd(s, IR_EXPERT_MM_BWD, f, (int[]){d, i[0], i[1], i[3], -2}, (int[]){i[0], i[1], i[2]}, 3);
        break;
    case IR_DISPATCH:
        n = bwd(s, IR_DISPATCH_BWD, f, (int[]){d, i[1], -2}, (int[]){i[0]}, 1);
        break;
    case IR_COMBINE:        /* gradients of yd, the weights, res, coef and mlp */
        n = bwd(s, IR_COMBINE_BWD, f, (int[]){d, i[0], i[1], i[2], i[4], i[5], -2},
                (int[]){i[0], i[2], i[3], i[4], i[5]}, 5);
        break;
    case IR_GATE: {         /* d = the weights' gradient, from the combine; scratch: d logits [S,E] */
        int E = f->at.moe.experts;
        n = bwd(s, IR_GATE_BWD, f, (int[]){d, o[0], o[1], o[2], o[3], i[0], i[1], -2}, (int[]){i[0], i[1]}, 2);
        if (scratch(s, n, 2, IR_ROWS_S, E) < 0) return -1;
        break;
    }
    default:
        return 0;   /* ops without a gradient rule are not differentiated (decode-only) */
    }
    return n < 0 ? -1 : 0;
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
