/* ir.c - graph construction helpers, names of ops, printing. */
#include "ir.h"
#include "../util/arena.h"
#include <string.h>

static const char *const op_names[] = {
#define OP(name, nin, nout, doc) #name,
#include "ops.def"
#undef OP
};
_Static_assert(sizeof op_names / sizeof op_names[0] == IR_OP_COUNT, "op name table out of step");

const char *ir_op_name(ir_op op) { return op < IR_OP_COUNT ? op_names[op] : "?"; }

ir_graph *ir_graph_create(arena *a, const md_model *m, const md_param *params, int n_params) {
    ir_graph *g = ARENA_NEW(a, ir_graph);
    if (!g) return NULL;
    g->arena = a; g->m = m; g->params = params; g->n_params = n_params;
    g->param_offset = ARENA_ARRAY(a, int64_t, n_params + 1);
    g->param_tensor = ARENA_ARRAY(a, int, n_params + 1);
    if (!g->param_offset || !g->param_tensor) return NULL;
    int64_t off = 0;
    for (int i = 0; i < n_params; i++) {
        g->param_offset[i] = off;
        off += (params[i].numel + 15) & ~(int64_t)15;   /* 64-byte aligned tensors */
    }
    g->param_floats = off;
    g->tokens = g->targets = g->loss = g->logits = -1;
    return g;
}

static int grow(ir_graph *g, void **p, int *cap, int n, size_t elt) {
    if (n < *cap) return 0;
    int nc = *cap ? *cap * 2 : 256;
    void *np = arena_alloc(g->arena, elt * (size_t)nc);
    if (!np) { g->oom = 1; return -1; }
    if (*p) memcpy(np, *p, elt * (size_t)n);
    *p = np; *cap = nc;
    return 0;
}

int64_t ir_rows_max(const ir_graph *g, ir_rows r) {
    switch (r) {
    case IR_ROWS_ONE: return 1;
    case IR_ROWS_S: return g->S_max;
    case IR_ROWS_ROUTED: return g->S_max * g->top_k;
    case IR_ROWS_ATT: return g->S_max * g->m->heads * g->T_max;
    case IR_ROWS_CTX: return g->m->context;
    }
    return 0;
}

int64_t ir_tensor_numel_max(const ir_graph *g, const ir_tensor *t) {
    return ir_rows_max(g, t->rows) * t->width;
}

int ir_tensor_new(ir_graph *g, const char *name, ir_tkind kind, ir_rows rows, int64_t width) {
    if (grow(g, (void **)&g->t, &g->capt, g->nt, sizeof(ir_tensor))) return -1;
    ir_tensor *t = &g->t[g->nt];
    memset(t, 0, sizeof *t);
    t->name = name; t->kind = kind; t->rows = rows; t->width = width;
    t->param = -1; t->grad = -1; t->def = t->last = -1;
    static const char *const rn[] = {"1", "S", "S*k", "S*H*T", "ctx"};
    t->shape = rows == IR_ROWS_ONE ? arena_printf(g->arena, "[%lld]", (long long)width)
                                   : arena_printf(g->arena, "[%s, %lld]", rn[rows], (long long)width);
    return g->nt++;
}

int ir_node_new(ir_graph *g, ir_op op, const char *name, int phase) {
    if (grow(g, (void **)&g->n, &g->capn, g->nn, sizeof(ir_node))) return -1;
    ir_node *n = &g->n[g->nn];
    memset(n, 0, sizeof *n);
    n->op = op; n->name = name; n->phase = phase;
    for (int i = 0; i < IR_MAX_IO; i++) n->in[i] = n->out[i] = -1;
    return g->nn++;
}

void ir_io(ir_graph *g, int node, const int *in, const int *out) {
    if (node < 0) return;
    ir_node *n = &g->n[node];
    n->n_in = n->n_out = 0;
    for (int i = 0; in && in[i] != -2 && i < IR_MAX_IO; i++) n->in[n->n_in++] = in[i];
    for (int i = 0; out && out[i] != -2 && i < IR_MAX_IO; i++) n->out[n->n_out++] = out[i];
}

static const char *tname(const ir_graph *g, int id) { return id < 0 ? "-" : g->t[id].name; }

void ir_print(const ir_graph *g, FILE *out) {
    static const char *const ph[] = {"forward", "backward", "optimizer"};
    fprintf(out, "graph %s%s: %d tensors, %d nodes, S_max %lld (B %lld x T %lld)\n", g->m->name,
            g->decode ? " (decode)" : "", g->nt, g->nn, (long long)g->S_max, (long long)g->B_max,
            (long long)g->T_max);
    int phase = -1;
    for (int i = 0; i < g->nn; i++) {
        const ir_node *n = &g->n[i];
        if (n->dead) continue;
        if (n->phase != phase) { phase = n->phase; fprintf(out, "%s:\n", ph[phase]); }
        fprintf(out, "  %%%d %-13s %-28s (", i, ir_op_name(n->op), n->name);
        for (int j = 0; j < n->n_in; j++)
            fprintf(out, "%s%s", j ? ", " : "", tname(g, n->in[j]));
        fprintf(out, ") -> (");
        for (int j = 0; j < n->n_out; j++)
            fprintf(out, "%s%s%s%s", j ? ", " : "", n->acc[j] ? "+=" : "", tname(g, n->out[j]),
                    n->out[j] >= 0 ? g->t[n->out[j]].shape : "");
        fprintf(out, ")\n");
    }
}

void ir_print_schedule(const ir_graph *g, FILE *out) {
    int64_t peak = g->arena_floats * 4;
    fprintf(out, "schedule %s%s: arena %lld bytes (%.2f MiB), params %lld bytes\n", g->m->name,
            g->decode ? " (decode)" : "", (long long)peak, peak / 1048576.0,
            (long long)g->param_floats * 4);
    int k = 0;
    for (int i = 0; i < g->nn; i++) {
        const ir_node *n = &g->n[i];
        if (n->dead) continue;
        fprintf(out, "  step %3d  %-13s %s\n", k++, ir_op_name(n->op), n->name);
    }
    fprintf(out, "plan (offsets in bytes, live steps):\n");
    for (int i = 0; i < g->nt; i++) {
        const ir_tensor *t = &g->t[i];
        if ((t->kind != IR_T_ACT && t->kind != IR_T_CACHE) || t->def < 0) continue;
        fprintf(out, "  %-32s %-14s @%-10lld %10lld B  [%d..%d]\n", t->name, t->shape,
                (long long)t->offset * 4, (long long)ir_tensor_numel_max(g, t) * 4, t->def, t->last);
    }
}
