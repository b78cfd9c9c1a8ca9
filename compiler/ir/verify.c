/* verify.c - ir_verify: every live node against its row of ops.def.
 *
 * What a row promises and this checks: the node has the op's slot counts; every slot not
 * marked '?' holds a tensor; each tensor has the slot's type (kind, dtype and so buffer
 * class); an accumulate flag sits only on a '+' output; the ops whose sizes relate agree
 * (matmul, add, the MoE records); and every activation a node reads was written by an
 * earlier live node, and that nothing outside distillation reads what only distillation
 * (the teacher's forward, the KD loss: nodes flagged kd) writes. The pipeline runs it after every pass, so a pass that breaks the
 * graph is named in the message instead of surfacing as wrong numbers or a crash.
 */
#include "ir.h"
#include "../util/diag.h"
#include "../util/arena.h"
#include <stdarg.h>
#include <stdlib.h>

typedef struct vctx { const ir_graph *g; const char *after; int errors; } vctx;

static void fail(vctx *v, int node, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(vctx *v, int node, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const ir_node *n = &v->g->n[node];
    diag_loc at = {v->g->loc.file, v->g->loc.line, v->g->loc.col};
    diag_error(v->g->diag, at, "internal error: the IR is broken after %s: node %%%d %s '%s': %s", v->after, node,
               ir_op_name(n->op), n->name, msg);
    v->errors++;
}

static const char *kind_name(ir_tkind k) {
    static const char *const nm[] = {"activation", "parameter", "gradient", "input", "statistics", "cache"};
    return nm[k];
}

/* does tensor t fit slot type c? */
static int fits(const ir_tensor *t, char c) {
    switch (c) {
    case 'f': return t->kind == IR_T_ACT && t->dtype == MOE_F32;
    case 'i': return t->kind == IR_T_ACT && t->dtype == MOE_I32;
    case 'd': return t->kind == IR_T_ACT && t->dtype == MOE_F64;
    case 'c': return t->kind == IR_T_CACHE && t->dtype == MOE_F32 && t->buf == MOE_BUF_KV;
    case 'h': return t->kind == IR_T_ACT && (t->dtype == MOE_F32 || t->dtype == MOE_BF16 || t->dtype == MOE_F16);
    case 'a': return fits(t, 'f') || fits(t, 'p');
    case 'w': return fits(t, 'p') || (t->kind == IR_T_ACT && (t->dtype == MOE_BF16 || t->dtype == MOE_F16));
    case 'p': return t->kind == IR_T_PARAM && t->dtype == MOE_F32 && (t->buf == MOE_BUF_PARAM || t->buf == MOE_BUF_TPARAM);
    case 'q': return t->kind == IR_T_PARAM && t->buf == MOE_BUF_QPARAM && (t->dtype == MOE_I8 || t->dtype == MOE_F32);
    case 'g': return t->kind == IR_T_GRAD && t->dtype == MOE_F32 && t->buf == MOE_BUF_GRAD;
    case 't': return t->kind == IR_T_INPUT && t->dtype == MOE_I32 && t->buf == MOE_BUF_IO;
    case 's': return t->kind == IR_T_STATS && t->dtype == MOE_F64 && t->buf == MOE_BUF_IO;
    }
    return 0;
}

static void check_slots(vctx *v, int node, int out, const char *written) {
    const ir_graph *g = v->g;
    const ir_node *n = &g->n[node];
    const ir_opinfo *o = ir_op_info(n->op);
    int cnt = out ? n->n_out : n->n_in;
    const int *ids = out ? n->out : n->in;
    const ir_slot *sl = out ? o->out : o->in;
    const char *side = out ? "output" : "input";
    for (int j = 0; j < cnt; j++) {
        int id = ids[j];
        if (id < -1 || id >= g->nt) { fail(v, node, "%s %d '%s' is tensor %d, which does not exist", side, j, sl[j].name, id); continue; }
        if (id < 0) {
            if (!sl[j].optional) fail(v, node, "%s %d '%s' is required but absent", side, j, sl[j].name);
            if (out && n->acc[j]) fail(v, node, "absent output %d '%s' has an accumulate flag", j, sl[j].name);
            continue;
        }
        const ir_tensor *t = &g->t[id];
        if (!fits(t, sl[j].type))
            fail(v, node, "%s %d '%s' must be of type '%c', but '%s' is a %s %s tensor in %s", side, j, sl[j].name,
                 sl[j].type, t->name, ir_dtype_name(t->dtype), kind_name(t->kind), ir_buf_name(t->buf));
        if (out && n->acc[j] && !sl[j].acc)
            fail(v, node, "output %d '%s' may not accumulate (ops.def has no '+')", j, sl[j].name);
        if (!out && t->kind == IR_T_ACT && !written[id])
            fail(v, node, "input %d '%s' reads '%s' before any live node writes it", j, sl[j].name, t->name);
        if (!out && !n->kd && ((t->kind == IR_T_ACT && written[id] == 2) || t->buf == MOE_BUF_TPARAM))
            fail(v, node, "input %d '%s' reads '%s', which only distillation provides (it does not run without a "
                 "teacher)", j, sl[j].name, t->name);
    }
}

/* sizes of the ops whose operands relate */
static void check_shapes(vctx *v, int node) {
    const ir_graph *g = v->g;
    const ir_node *n = &g->n[node];
    const ir_tensor *T = g->t;
    switch (n->op) {
    case IR_MATMUL: {
        const ir_tensor *x = &T[n->in[0]], *W = &T[n->in[1]], *y = &T[n->out[0]];
        if (W->width != x->width * y->width)
            fail(v, node, "W has %lld elements, not K x N = %lld x %lld", (long long)W->width, (long long)x->width,
                 (long long)y->width);
        if (x->rows != y->rows) fail(v, node, "x and y have different row counts");
        if (n->in[2] >= 0 && T[n->in[2]].width != y->width) fail(v, node, "the bias is not N wide");
        if (n->in[3] >= 0 && (T[n->in[3]].width != y->width || T[n->in[3]].rows != y->rows))
            fail(v, node, "the residual is not shaped like y");
        break;
    }
    case IR_ADD:
        if (T[n->in[0]].width != T[n->in[1]].width || T[n->in[0]].width != T[n->out[0]].width)
            fail(v, node, "a, b and y differ in width");
        break;
    case IR_TP_COPY:
    case IR_TP_SUM:
        for (int j = 0; j < n->n_in; j++)
            if (n->in[j] >= 0 && ir_op_info(n->op)->in[j].type != 'i' && T[n->in[j]].width != T[n->out[0]].width)
                fail(v, node, "%s is not as wide as y", ir_op_info(n->op)->in[j].name);
        if (n->at.tp.degree < 2) fail(v, node, "a tensor group of %d ranks", n->at.tp.degree);
        break;
    case IR_GATE: case IR_EXPERT_MM: case IR_EXPERT_MM_BWD: case IR_ACT: case IR_ACT_BWD: case IR_ALLTOALL: {
        int s = ir_slot_index(n->op, 0, "counts"), c = s >= 0 ? n->in[s] : -1;
        if (n->op == IR_GATE) c = n->out[ir_slot_index(IR_GATE, 1, "counts")];
        int attr = ir_op_info(n->op)->attr;
        int E = attr == IR_AT_MOE ? n->at.moe.experts : attr == IR_AT_ACT ? n->at.act.experts : n->at.a2a.experts;
        /* a received layout (expert parallelism) starts with the counts record of its experts */
        if (c >= 0 && E > 0 && T[c].width != MOE_COUNTS_LEN(E) && (T[c].width - MOE_COUNTS_LEN(E)) % E)
            fail(v, node, "counts has %lld entries, not MOE_COUNTS_LEN(%d) = %d", (long long)T[c].width, E,
                 MOE_COUNTS_LEN(E));
        /* (an expert-parallel rank's experts may be fewer than top_k) */
        if (attr == IR_AT_MOE && (E < 1 || n->at.moe.top_k < 1 || (n->at.moe.top_k > E && n->op == IR_GATE)))
            fail(v, node, "E = %d and top_k = %d are not a MoE layer", E, n->at.moe.top_k);
        break;
    }
    default: break;
    }
}

int ir_verify(const ir_graph *g, const char *after) {
    vctx v = {g, after, 0};
    char *written = calloc((size_t)g->nt + 1, 1);
    if (!written) return 0;     /* the check is an extra: out of memory skips it */
    for (int i = 0; i < g->nn; i++) {
        const ir_node *n = &g->n[i];
        if (n->dead) continue;
        const ir_opinfo *o = ir_op_info(n->op);
        if (!o) { fail(&v, i, "unknown op %d", (int)n->op); continue; }
        if (n->n_in != o->n_in || n->n_out != o->n_out) {
            fail(&v, i, "has %d inputs and %d outputs, ops.def says %d and %d", n->n_in, n->n_out, o->n_in, o->n_out);
            continue;
        }
        int before = v.errors;
        check_slots(&v, i, 0, written);
        check_slots(&v, i, 1, written);
        if (v.errors == before) check_shapes(&v, i);
        for (int j = 0; j < n->n_out; j++)   /* 1: first written outside distillation, 2: by it */
            if (n->out[j] >= 0 && n->out[j] < g->nt && !written[n->out[j]]) written[n->out[j]] = n->kd ? 2 : 1;
    }
    free(written);
    return v.errors;
}
