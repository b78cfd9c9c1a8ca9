/* optim.c - appends the optimizer program after the backward nodes.
 *
 * ALLREDUCE: the gradients averaged over the ranks (the identity in one process).
 * GRAD_NORM: the true global L2 norm over every gradient and the clip factor, written to
 * the statistics record. ADAMW: the decoupled AdamW update of every parameter at the
 * learning rate the host computes for the step (warmup, then cosine/linear/constant),
 * gradients scaled by the clip factor it reads from the record; weight decay on 2-D
 * weights only.
 */
#include "passes.h"

int pass_optimizer(ir_graph *g) {
    int n = ir_node_new(g, IR_ALLREDUCE, "grads.allreduce", IR_PHASE_OPT);
    int norm = ir_node_new(g, IR_GRAD_NORM, "grads.norm", IR_PHASE_OPT);
    int adam = ir_node_new(g, IR_ADAMW, "adamw", IR_PHASE_OPT);
    if (n < 0 || norm < 0 || adam < 0) return -1;
    g->n[norm].out[0] = g->stats;
    g->n[norm].acc[0] = 1;      /* writes its two entries of the record */
    g->n[norm].at.optim = g->optim;
    g->n[adam].in[0] = g->stats;
    g->n[adam].at.optim = g->optim;
    return 0;
}
