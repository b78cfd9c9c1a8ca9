/* plan.c - the static memory plan: byte offsets in one buffer per class.
 *
 * Activations (and kernel scratch) go in the program's arena: a tensor lives from the first
 * live node that touches it to the last; the logits (or, with the head fused into the loss, the
 * head's input) stay live to the end of the forward (the runtime reads them after running the
 * forward alone, moe_rt_logits) and the per-token loss to the end (it reads the losses after a
 * step). The KV caches of the decode program are
 * one decode slot's layout in the KV buffer, one after the other (the runtime allocates a
 * slot per sequence decoding at a time). Tensors are placed largest first at the
 * lowest offset that overlaps no already-placed tensor with an intersecting live range
 * (first fit), each offset and size a multiple of the target's alignment.
 * Parameters and gradients keep the parameter table's offsets; the optimizer state is two
 * copies of that layout (AdamW m, then v); a distillation teacher's parameters keep its own
 * table's offsets in their own buffer. The IO buffer holds tokens, targets, the
 * statistics record and the decode rows' positions and slots at offsets that depend on the
 * model only, so the training and the decode program share it; host staging mirrors it. The result is data: t->offset,
 * g->buf_bytes.
 */
#include "passes.h"
#include "../util/arena.h"
#include <stdlib.h>

typedef struct span { int64_t lo, hi; } span;

static int by_lo(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static int64_t align_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

static int in_arena(const ir_tensor *t) { return t->buf == MOE_BUF_ACT && t->def >= 0; }

static void liveness(ir_graph *g) {
    int end = g->nn, fwd_end = 0;
    for (int i = 0; i < g->nt; i++) g->t[i].def = g->t[i].last = -1;
    for (int i = 0; i < g->nn; i++) {
        const ir_node *n = &g->n[i];
        if (n->dead) continue;
        if (n->phase == IR_PHASE_FWD) fwd_end = i;
        for (int k = 0; k < 2; k++) {
            const int *ids = k ? n->out : n->in;
            int cnt = k ? n->n_out : n->n_in;
            for (int j = 0; j < cnt; j++) {
                if (ids[j] < 0) continue;
                ir_tensor *t = &g->t[ids[j]];
                if (t->def < 0) t->def = i;
                t->last = i;
            }
        }
    }
    for (int i = 0; i < g->nt; i++) {
        ir_tensor *t = &g->t[i];
        if (t->def < 0) continue;
        if (t->kind == IR_T_CACHE) { t->def = 0; t->last = end; }
        if (i == g->loss) t->last = end;
        if ((i == g->logits || i == g->head_x) && t->last < fwd_end) t->last = fwd_end;
    }
}

/* tokens, targets, the statistics record, the decode rows' positions and slots: a layout of
 * the model alone (S_io, n_stats, decode_rows) */
static void plan_io(ir_graph *g) {
    int64_t a = g->align, tok = align_up(g->S_io * 4, a), stats = 2 * tok, rows = align_up(g->decode_rows * 4, a);
    g->pos_off = stats + align_up((int64_t)g->n_stats * 8, a);
    g->slot_off = g->pos_off + rows;
    if (g->tokens >= 0) g->t[g->tokens].offset = 0;
    if (g->targets >= 0) g->t[g->targets].offset = tok;
    if (g->stats >= 0) g->t[g->stats].offset = stats;
    if (g->pos >= 0) g->t[g->pos].offset = g->pos_off;
    if (g->slot >= 0) g->t[g->slot].offset = g->slot_off;
    g->buf_bytes[MOE_BUF_IO] = g->buf_bytes[MOE_BUF_STAGING] = g->slot_off + rows;
}

/* the KV caches: one decode slot's, one after the other */
static void plan_kv(ir_graph *g) {
    int64_t kv = 0;
    for (int i = 0; i < g->nt; i++) {
        ir_tensor *t = &g->t[i];
        if (t->buf != MOE_BUF_KV) continue;
        t->offset = kv;
        kv += align_up(ir_tensor_bytes_max(g, t), g->align);
    }
    g->buf_bytes[MOE_BUF_KV] = kv;
}

int pass_plan(ir_graph *g) {
    liveness(g);
    /* order: largest first, ties by id (deterministic) */
    int *order = ARENA_ARRAY(g->arena, int, g->nt + 1);
    int64_t *size = ARENA_ARRAY(g->arena, int64_t, g->nt + 1);
    span *busy = ARENA_ARRAY(g->arena, span, g->nt + 1);
    if (!order || !size || !busy) return -1;
    int n = 0;
    for (int i = 0; i < g->nt; i++) {
        if (!in_arena(&g->t[i])) continue;
        size[i] = align_up(ir_tensor_bytes_max(g, &g->t[i]), g->align);
        order[n++] = i;
    }
    for (int i = 1; i < n; i++) {   /* insertion sort: stable, n is small */
        int v = order[i], j = i - 1;
        while (j >= 0 && size[order[j]] < size[v]) { order[j + 1] = order[j]; j--; }
        order[j + 1] = v;
    }
    int64_t top = 0;
    for (int a = 0; a < n; a++) {
        ir_tensor *t = &g->t[order[a]];
        int64_t sz = size[order[a]];
        int nb = 0;
        for (int b = 0; b < a; b++) {
            const ir_tensor *u = &g->t[order[b]];
            if (u->last < t->def || t->last < u->def) continue;
            busy[nb].lo = u->offset;
            busy[nb].hi = u->offset + size[order[b]];
            nb++;
        }
        qsort(busy, (size_t)nb, sizeof *busy, by_lo);
        int64_t off = 0;
        for (int b = 0; b < nb; b++) {
            if (busy[b].lo >= off + sz) break;
            if (busy[b].hi > off) off = busy[b].hi;
        }
        t->offset = off;
        if (off + sz > top) top = off + sz;
    }
    g->buf_bytes[MOE_BUF_ACT] = top;
    g->buf_bytes[MOE_BUF_PARAM] = g->buf_bytes[MOE_BUF_GRAD] = g->params.bytes;
    g->buf_bytes[MOE_BUF_OPT] = 2 * g->params.bytes;
    g->buf_bytes[MOE_BUF_COMM] = 0;
    g->buf_bytes[MOE_BUF_TPARAM] = g->teacher ? g->teacher->params.bytes : 0;
    g->buf_bytes[MOE_BUF_QPARAM] = g->q8 ? g->params.qbytes : 0;
    plan_io(g);
    plan_kv(g);
    return 0;
}
