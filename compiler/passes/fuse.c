/* fuse.c - folds residual adds into the op that produces the added value, and the LM head
 * into its cross-entropy.
 *
 * Pattern: y = P(...); z = ADD(x, y) where P is MATMUL, COMBINE or TP_SUM, y has no other
 * consumer and P's residual input `res` is free  =>  z = P(..., res = x). The matmul then
 * starts from x (beta = 1) and the combine writes x + mix(...) in its single pass, so
 * the residual stream is read and written once per sub-layer instead of three times.
 *
 * Head, with train.recompute (the user trades arithmetic for memory): logits = MATMUL(x, W);
 * loss = XENT(logits) with no other reader of the logits (no distillation), on a target that
 * runs it  =>  loss = HEAD_XENT(x, W). The [S, V] logits then never exist whole (a tile of
 * whole rows at a time, MOE_HEAD_TILE logits or MOE_HEAD_ROWS rows, whichever is more: each
 * tile's GEMM packs all of W again, so tiles are made large); the backward computes each
 * tile's logits again, a third more arithmetic in the head (measured: +20% on a step whose
 * head is most of its work, d 512, V 50257). g->logits becomes -1 and g->head_x names x,
 * from which the runtime makes logits when asked (moe_rt_read_logits).
 */
#include "passes.h"
#include "../util/arena.h"
#include <string.h>

static void fuse_head(ir_graph *g, const int *uses, const int *producer) {
    int z = g->logits, p = z >= 0 ? producer[z] : -1;
    if (!g->fuse_head || !g->recompute || p < 0 || uses[z] != 1 || g->n[p].op != IR_MATMUL || g->n[p].in[2] >= 0 ||
        g->n[p].in[3] >= 0)
        return;
    for (int i = p + 1; i < g->nn; i++) {
        ir_node *n = &g->n[i];
        if (n->dead || n->op != IR_XENT || n->in[0] != z) continue;
        int64_t V = g->t[z].width, rows = MOE_HEAD_TILE / V > MOE_HEAD_ROWS ? MOE_HEAD_TILE / V : MOE_HEAD_ROWS;
        if (rows > g->S_max) rows = g->S_max;
        int lse = ir_tensor_new(g, "lm_head.lse", IR_T_ACT, MOE_F32, IR_ROWS_S, 1);
        int tile = ir_tensor_new(g, "lm_head.tile", IR_T_ACT, MOE_F32, IR_ROWS_ONE, rows * V);
        n = &g->n[i];                                   /* (no node was added: n stays valid) */
        ir_node *mm = &g->n[p];
        int loss = n->out[0], stats = n->out[1];
        n->op = IR_HEAD_XENT;
        n->name = "lm_head.xent";
        n->at.matmul = mm->at.matmul;
        n->n_in = ir_op_info(IR_HEAD_XENT)->n_in;
        n->n_out = ir_op_info(IR_HEAD_XENT)->n_out;
        ir_io(g, i, (int[]){mm->in[0], mm->in[1], g->targets, -2}, (int[]){loss, lse, stats, tile, -2});
        memset(n->acc, 0, sizeof n->acc);
        n->acc[2] = 1;                                  /* the statistics record */
        mm->dead = 1;
        g->head_x = mm->in[0];
        g->logits = -1;
        return;
    }
}

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
    fuse_head(g, uses, producer);
    return 0;
}
