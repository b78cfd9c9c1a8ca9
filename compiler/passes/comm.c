/* comm.c - communication steps that move nothing become identities.
 *
 * An all-to-all over an expert-parallel group of one rank (parallel.expert = 1 for
 * that layer: every rank holds all experts) exchanges nothing, in any number of
 * processes, and the forward of a tensor group's input (TP_COPY) is the input itself. Its
 * output is renamed to its input everywhere, forward and backward, so the step stays in
 * the schedule (as an in-place identity) but costs no copy and no memory. Runs after
 * autodiff (which gave the renamed tensor's gradient its own tensor), before planning.
 * Likewise the gradient of a TP_SUM's partial products, which is its output's gradient
 * (TP_SUM_BWD's dx = dy where nothing else writes dx): the matmul's backward reads dy itself.
 */
#include "passes.h"

static void replace_tensor(ir_graph *g, int from, int to) {
    for (int i = 0; i < g->nn; i++) {
        ir_node *n = &g->n[i];
        for (int j = 0; j < n->n_in; j++) if (n->in[j] == from) n->in[j] = to;
        for (int j = 0; j < n->n_out; j++) if (n->out[j] == from) n->out[j] = to;
    }
}

int pass_comm(ir_graph *g) {
    for (int i = 0; i < g->nn; i++) {
        ir_node *n = &g->n[i];
        int identity = (n->op == IR_ALLTOALL && n->at.a2a.degree == 1) || (n->op == IR_TP_COPY && n->phase == IR_PHASE_FWD) ||
                       (n->op == IR_TP_SUM_BWD && !n->acc[0]);
        if (n->dead || !identity) continue;
        int in = n->in[0], out = n->out[0];
        if (in < 0 || out < 0 || in == out) continue;
        replace_tensor(g, out, in);
    }
    return 0;
}
