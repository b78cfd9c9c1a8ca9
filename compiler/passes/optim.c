/* optim.c - appends the optimizer program after the backward nodes.
 *
 * ALLREDUCE: dense gradients are averaged over the data-parallel group, expert
 * gradients summed over the expert-data-parallel group and divided by the data size
 * (moe-semantics.md section 4); in one process it is the identity.
 * GRAD_NORM: the true global L2 norm over every gradient, and the clip factor.
 * ADAMW: the scheduled learning rate (warmup, then cosine/linear/constant) and the
 * decoupled AdamW update of every parameter, weight decay on 2-D weights only.
 */
#include "passes.h"

int pass_optimizer(ir_graph *g) {
    static const ir_op ops[] = {IR_ALLREDUCE, IR_GRAD_NORM, IR_ADAMW};
    static const char *const names[] = {"grads.allreduce", "grads.norm", "adamw"};
    for (int i = 0; i < 3; i++)
        if (ir_node_new(g, ops[i], names[i], IR_PHASE_OPT) < 0) return -1;
    return 0;
}
