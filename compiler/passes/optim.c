/* optim.c - appends the optimizer program after the backward nodes.
 *
 * The gradient buffer is cut in buckets, one per block in each reduction group of the
 * parameter table, and an AR_START after the last backward node that writes a bucket starts
 * its sum over the ranks while the rest of the backward runs (overlap).
 * ALLREDUCE: the gradients averaged over the ranks, bucket by bucket: the started sums waited
 * for, the others made (the identity in one process).
 * GRAD_NORM: the true global L2 norm over every gradient and the clip factor, written to
 * the statistics record. ADAMW: the decoupled AdamW update of every parameter at the
 * learning rate the host computes for the step (warmup, then cosine/linear/constant),
 * gradients scaled by the clip factor it reads from the record; weight decay on 2-D
 * weights only.
 */
#include "passes.h"
#include "../util/arena.h"
#include <limits.h>

/* each group's parameters in buffer order, a new bucket where the block changes (past
 * MOE_MAX_BUCKETS, the rest of a group stays in its last bucket) */
static int make_buckets(ir_graph *g) {
    const ir_ptable *t = &g->params;
    g->n_buckets = 0;
    g->buckets = ARENA_ARRAY(g->arena, ir_bucket, MOE_MAX_BUCKETS);
    if (!g->buckets) return -1;
    for (int gi = 0; gi < t->ngroups; gi++) {
        int block = INT_MIN;
        for (int i = 0; i < t->n; i++) {    /* a group's offsets ascend with i (ir_ptable_layout) */
            if (t->offset[i] < t->group_off[gi] || t->offset[i] >= t->group_off[gi + 1]) continue;
            if (t->p[i].block != block && g->n_buckets < MOE_MAX_BUCKETS)
                g->buckets[g->n_buckets++] = (ir_bucket){gi, t->offset[i], 0};
            block = t->p[i].block;
        }
    }
    for (int b = 0; b < g->n_buckets; b++) {
        ir_bucket *k = &g->buckets[b];
        int64_t end = b + 1 < g->n_buckets && g->buckets[b + 1].group == k->group ? g->buckets[b + 1].offset
                                                                                   : t->group_off[k->group + 1];
        k->bytes = end - k->offset;
    }
    return 0;
}

/* the last backward node that writes a gradient in bucket k, or -1 */
static int last_writer(const ir_graph *g, const ir_bucket *k) {
    int last = -1;
    for (int i = 0; i < g->nn; i++) {
        const ir_node *n = &g->n[i];
        if (n->dead || n->phase != IR_PHASE_BWD) continue;
        for (int j = 0; j < n->n_out; j++) {
            const ir_tensor *t = n->out[j] >= 0 ? &g->t[n->out[j]] : NULL;
            if (t && t->kind == IR_T_GRAD && t->offset >= k->offset && t->offset < k->offset + k->bytes) last = i;
        }
    }
    return last;
}

int pass_optimizer(ir_graph *g) {
    if (make_buckets(g)) return -1;
    int ready[MOE_MAX_BUCKETS];
    for (int b = 0; b < g->n_buckets; b++) ready[b] = last_writer(g, &g->buckets[b]);
    for (int done = 0; done < g->n_buckets; done++) {  /* the latest first: insertions move only later nodes */
        int b = -1;
        for (int c = 0; c < g->n_buckets; c++)
            if (ready[c] >= 0 && (b < 0 || ready[c] > ready[b])) b = c;
        if (b < 0) break;
        int n = ir_node_insert(g, ready[b] + 1, IR_AR_START, arena_printf(g->arena, "grads.%d.start", b), IR_PHASE_BWD);
        if (n < 0) return -1;
        g->n[n].at.bucket.bucket = b;
        ready[b] = -1;
    }
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
