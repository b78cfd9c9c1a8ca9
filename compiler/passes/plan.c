/* plan.c - the static memory plan: one arena, offsets from liveness.
 *
 * A tensor lives from the first node that touches it to the last; the logits and
 * the per-token loss stay live to the end (the runtime reads them after a step), and
 * KV-cache tensors live for the whole program. Tensors are placed largest first at
 * the lowest offset that overlaps no already-placed tensor with an intersecting live
 * range (first fit), 64-byte aligned. The result is data: t->offset, g->arena_floats.
 */
#include "passes.h"
#include "../util/arena.h"
#include <stdlib.h>

typedef struct span { int64_t lo, hi; } span;

static int by_lo(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static int planned(const ir_tensor *t) {
    return (t->kind == IR_T_ACT || t->kind == IR_T_CACHE) && t->def >= 0;
}

int pass_plan(ir_graph *g) {
    int end = g->nn;
    for (int i = 0; i < g->nt; i++) g->t[i].def = g->t[i].last = -1;
    for (int i = 0; i < g->nn; i++) {
        const ir_node *n = &g->n[i];
        if (n->dead) continue;
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
        if (i == g->logits || i == g->loss) t->last = end;
    }
    /* order: largest first, ties by id (deterministic) */
    int *order = ARENA_ARRAY(g->arena, int, g->nt + 1);
    span *busy = ARENA_ARRAY(g->arena, span, g->nt + 1);
    if (!order || !busy) return -1;
    int n = 0;
    for (int i = 0; i < g->nt; i++) if (planned(&g->t[i])) order[n++] = i;
    for (int i = 1; i < n; i++) {   /* insertion sort: stable, n is small */
        int v = order[i], j = i - 1;
        int64_t sz = ir_tensor_numel_max(g, &g->t[v]);
        while (j >= 0 && ir_tensor_numel_max(g, &g->t[order[j]]) < sz) { order[j + 1] = order[j]; j--; }
        order[j + 1] = v;
    }
    int64_t top = 0;
    for (int a = 0; a < n; a++) {
        ir_tensor *t = &g->t[order[a]];
        int64_t size = (ir_tensor_numel_max(g, t) + 15) & ~(int64_t)15;
        int nb = 0;
        for (int b = 0; b < a; b++) {
            const ir_tensor *u = &g->t[order[b]];
            if (u->last < t->def || t->last < u->def) continue;
            busy[nb].lo = u->offset;
            busy[nb].hi = u->offset + ((ir_tensor_numel_max(g, u) + 15) & ~(int64_t)15);
            nb++;
        }
        qsort(busy, (size_t)nb, sizeof *busy, by_lo);
        int64_t off = 0;
        for (int b = 0; b < nb; b++) {
            if (busy[b].lo >= off + size) break;
            if (busy[b].hi > off) off = busy[b].hi;
        }
        t->offset = off;
        if (off + size > top) top = off + size;
    }
    g->arena_floats = top;
    return 0;
}
