/* recompute.c - activation recomputation (train.recompute): each block keeps its input only.
 *
 * After autodiff, the backward of block i reads tensors that block i's forward wrote: the
 * norms' outputs, q/k/v, the attention output, the FFN's hidden layers, the routed rows. The
 * plan keeps all of them live from the forward to the backward, which is most of the
 * activation arena. This pass gives block i's backward its own copies instead: just before
 * the first backward node of block i it inserts clones of the forward nodes of block i that
 * those reads need (transitively, in forward order, phase BWD, named NAME.recompute), writing
 * fresh tensors, and points block i's backward nodes at them. The originals then die inside
 * the forward, and what stays live across the whole step per block is its input (the
 * previous block's output, the checkpoint) and what the clones read but do not make.
 *
 * Not cloned, their outputs kept: the gate (small; it adds to the statistics record and
 * draws noise, which must happen once) and the exchange of expert counts. Everything else
 * recomputes bit for bit: the same kernels on the same inputs. The price is a second
 * forward of every block, about a third more arithmetic per step. All-to-alls and tensor
 * sums among the clones communicate again; every rank runs the same program, so the
 * collectives still match.
 */
#include "passes.h"
#include "../util/arena.h"

/* the gate (statistics, noise) and the count exchange run once; their outputs stay */
static int kept(const ir_node *n) { return n->op == IR_GATE || n->op == IR_A2A_COUNTS; }

typedef struct rc {
    ir_graph *g;
    int nt;         /* the tensors before the pass: the tables below cover these */
    int *owner;     /* [nt] the block whose cloneable forward node writes the tensor, else -1 */
    int *clone;     /* [nt] its clone in the block being done, else -1 */
    char *need;     /* [nt] the block's backward (or a needed clone) reads it */
} rc;

static int ours(const rc *s, int t, int blk) { return t >= 0 && t < s->nt && s->owner[t] == blk; }
static int mapped(const rc *s, int t) { return t >= 0 && t < s->nt && s->clone[t] >= 0 ? s->clone[t] : t; }

/* clones of block blk's needed forward nodes before its first backward node; its backward
 * nodes then read them */
static int do_block(rc *s, int blk) {
    ir_graph *g = s->g;
    int first = -1;
    for (int i = 0; i < g->nn; i++) {
        const ir_node *n = &g->n[i];
        if (n->dead || n->block != blk || n->phase != IR_PHASE_BWD) continue;
        if (first < 0) first = i;
        for (int j = 0; j < n->n_in; j++)
            if (ours(s, n->in[j], blk)) s->need[n->in[j]] = 1;
    }
    if (first < 0) return 0;                    /* nothing flows back through this block */
    int *nodes = ARENA_ARRAY(g->arena, int, first), nn = 0;
    if (!nodes) return -1;
    for (int i = first - 1; i >= 0; i--) {      /* backwards: a needed node needs its inputs */
        const ir_node *n = &g->n[i];
        if (n->dead || n->block != blk || n->phase != IR_PHASE_FWD || kept(n)) continue;
        int needed = 0;
        for (int j = 0; j < n->n_out; j++) needed |= ours(s, n->out[j], blk) && s->need[n->out[j]];
        if (!needed) continue;
        nodes[nn++] = i;
        for (int j = 0; j < n->n_in; j++)
            if (ours(s, n->in[j], blk)) s->need[n->in[j]] = 1;
    }
    int at = first;
    for (int k = nn - 1; k >= 0; k--) {         /* forward order */
        ir_node f = g->n[nodes[k]];             /* copy: inserting moves the array */
        for (int j = 0; j < f.n_out; j++) {
            int t = f.out[j];
            if (t < 0) continue;
            ir_tensor src = g->t[t];
            int c = ir_tensor_new(g, arena_printf(g->arena, "%s.recompute", src.name), src.kind, src.dtype,
                                  src.rows, src.width);
            if (c < 0) return -1;
            s->clone[t] = c;
        }
        int n = ir_node_insert(g, at++, f.op, arena_printf(g->arena, "%s.recompute", f.name), IR_PHASE_BWD);
        if (n < 0) return -1;
        ir_node *c = &g->n[n];
        c->at = f.at;
        c->kd = f.kd;
        c->block = blk;
        for (int j = 0; j < f.n_in; j++) c->in[j] = mapped(s, f.in[j]);
        for (int j = 0; j < f.n_out; j++) { c->out[j] = mapped(s, f.out[j]); c->acc[j] = f.acc[j]; }
    }
    for (int i = at; i < g->nn; i++) {
        ir_node *n = &g->n[i];
        if (n->dead || n->block != blk || n->phase != IR_PHASE_BWD) continue;
        for (int j = 0; j < n->n_in; j++) n->in[j] = mapped(s, n->in[j]);
    }
    return 0;
}

int pass_recompute(ir_graph *g) {
    if (!g->recompute) return 0;
    int nt = g->nt, blocks = 0;
    rc s = {g, nt, ARENA_ARRAY(g->arena, int, nt), ARENA_ARRAY(g->arena, int, nt), NULL};
    if (!s.owner || !s.clone) return -1;
    for (int t = 0; t < nt; t++) s.owner[t] = -1;
    for (int i = 0; i < g->nn; i++) {
        const ir_node *n = &g->n[i];
        if (n->dead || n->block < 0 || n->phase != IR_PHASE_FWD || kept(n)) continue;
        for (int j = 0; j < n->n_out; j++)
            if (n->out[j] >= 0 && g->t[n->out[j]].kind == IR_T_ACT) s.owner[n->out[j]] = n->block;
        if (n->block + 1 > blocks) blocks = n->block + 1;
    }
    for (int b = 0; b < blocks; b++) {
        s.need = ARENA_ARRAY(g->arena, char, nt);   /* zeroed */
        if (!s.need) return -1;
        for (int t = 0; t < nt; t++) s.clone[t] = -1;
        if (do_block(&s, b)) return -1;
    }
    return g->oom ? -1 : 0;
}
