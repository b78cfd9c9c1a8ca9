/* fuse.c - folds residual adds into the op that produces the added value.
 *
 * Pattern: y = P(...); z = ADD(x, y) where P is MATMUL, COMBINE or TP_SUM, y has no other
 * consumer and P's residual input `res` is free  =>  z = P(..., res = x). The matmul then
 * starts from x (beta = 1) and the combine writes x + mix(...) in its single pass, so
 * the residual stream is read and written once per sub-layer instead of three times.
 */
#include "passes.h"
#include "../util/arena.h"

int pass_fuse(ir_graph *g) {
    int *uses = ARENA_ARRAY(g->arena, int, g->nt);
    int *producer = ARENA_ARRAY(g->arena, int, g->nt);
    if (!uses || !producer) return -1;
    for (int i = 0; i < g->nt; i++) producer[i] = -1;
    for (int i = 0; i < g->nn; i++) {
        ir_node *n = &g->n[i];
        if (n->dead) continue;
        for (int j = 0; j < n->n_in; j++) if (n->in[j] >= 0) uses[n->in[j]]++;
        for (int j = 0; j < n->n_out; j++) if (n->out[j] >= 0) producer[n->out[j]] = i;
    }
    for (int i = 0; i < g->nn; i++) {
        ir_node *add = &g->n[i];
        if (add->op != IR_ADD || add->dead) continue;
        for (int side = 0; side < 2; side++) {
            int y = add->in[side], x = add->in[1 - side];
            int p = producer[y];
            if (p < 0 || uses[y] != 1) continue;
            ir_node *pn = &g->n[p];
            if (pn->op != IR_MATMUL && pn->op != IR_COMBINE && pn->op != IR_TP_SUM) continue;
            int res = ir_slot_index(pn->op, 0, "res");
            if (pn->in[res] >= 0) continue;
            pn->in[res] = x;
            pn->out[0] = add->out[0];
            producer[add->out[0]] = p;
            add->dead = 1;
            break;
        }
    }
    return 0;
}
