/* ir.c - the op table's parsed signatures, graph construction helpers, printing. */
#include "ir.h"
#include "../util/arena.h"
#include <string.h>

typedef struct opdef { const char *name, *ins, *outs, *doc; int attr; unsigned flags; } opdef;

#define NONE IR_AT_NONE
#define MATMUL IR_AT_MATMUL
#define ACT IR_AT_ACT
#define CAST IR_AT_CAST
#define ATTN IR_AT_ATTN
#define MOE IR_AT_MOE
#define A2A IR_AT_A2A
#define TP IR_AT_TP
#define BUCKET IR_AT_BUCKET
#define OPTIM IR_AT_OPTIM
#define KD IR_AT_KD
#define COMM IR_OPF_COMM
#define LOSS IR_OPF_LOSS
static const opdef op_defs[] = {
#define OP(name, ins, outs, attr, flags, doc) {#name, ins, outs, doc, attr, flags},
#include "ops.def"
#undef OP
};
#undef NONE
#undef MATMUL
#undef ACT
#undef ATTN
#undef MOE
#undef A2A
#undef TP
#undef BUCKET
#undef OPTIM
#undef KD
#undef COMM
#undef LOSS
_Static_assert(sizeof op_defs / sizeof op_defs[0] == IR_OP_COUNT, "op table out of step");

static ir_opinfo op_info[IR_OP_COUNT];
static int op_info_ready;

/* "x:f W:p b:p? res:f?" -> slots; a malformed row is a programming error caught by the tests
 * (its slot gets type '?', which no tensor matches, so ir_verify reports it) */
static int parse_slots(const char *sig, ir_slot *slots) {
    int n = 0;
    for (const char *p = sig; *p && n < IR_MAX_IO;) {
        while (*p == ' ') p++;
        if (!*p) break;
        ir_slot *s = &slots[n++];
        memset(s, 0, sizeof *s);
        size_t len = 0;
        while (*p && *p != ':' && *p != ' ' && len + 1 < sizeof s->name) s->name[len++] = *p++;
        s->type = '?';
        if (*p == ':') { p++; s->type = *p ? *p++ : '?'; }
        for (; *p == '?' || *p == '+'; p++) {
            if (*p == '?') s->optional = true;
            else s->acc = true;
        }
        while (*p && *p != ' ') { s->type = '?'; p++; }
    }
    return n;
}

static void op_info_init(void) {
    for (int i = 0; i < IR_OP_COUNT; i++) {
        ir_opinfo *o = &op_info[i];
        o->name = op_defs[i].name;
        o->doc = op_defs[i].doc;
        o->attr = op_defs[i].attr;
        o->flags = op_defs[i].flags;
        o->n_in = parse_slots(op_defs[i].ins, o->in);
        o->n_out = parse_slots(op_defs[i].outs, o->out);
    }
    op_info_ready = 1;
}

const ir_opinfo *ir_op_info(ir_op op) {
    if (!op_info_ready) op_info_init();
    return (unsigned)op < IR_OP_COUNT ? &op_info[op] : NULL;
}

const char *ir_op_name(ir_op op) { return (unsigned)op < IR_OP_COUNT ? op_defs[op].name : "?"; }

int ir_slot_index(ir_op op, int out, const char *name) {
    const ir_opinfo *o = ir_op_info(op);
    if (!o) return -1;
    int n = out ? o->n_out : o->n_in;
    const ir_slot *s = out ? o->out : o->in;
    for (int i = 0; i < n; i++)
        if (!strcmp(s[i].name, name)) return i;
    return -1;
}

size_t ir_dtype_size(moe_dtype dt) {
    static const size_t sz[MOE_DTYPE_COUNT] = {4, 2, 2, 4, 8, 1};
    return (unsigned)dt < MOE_DTYPE_COUNT ? sz[dt] : 0;
}
const char *ir_dtype_name(moe_dtype dt) {
    static const char *const nm[MOE_DTYPE_COUNT] = {"f32", "bf16", "f16", "i32", "f64", "i8"};
    return (unsigned)dt < MOE_DTYPE_COUNT ? nm[dt] : "?";
}
const char *ir_buf_name(moe_buf b) {
    static const char *const nm[MOE_BUF_COUNT] = {"act", "param", "grad", "opt", "io", "staging", "comm",
                                                    "tparam", "qparam", "kv"};
    return (unsigned)b < MOE_BUF_COUNT ? nm[b] : "?";
}

static int64_t align_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

int ir_param_degree(const md_param *p) { return p->experts_all ? (int)(p->experts_all / p->shape[0]) : 1; }

int ir_param_quantized(const md_param *p) { return p->experts_all > 0 && p->ndim == 3; }

int ir_ptable_layout(arena *a, ir_ptable *t, const md_param *p, int n, int64_t align) {
    t->p = p;
    t->n = n;
    t->offset = ARENA_ARRAY(a, int64_t, n + 1);
    t->tensor = ARENA_ARRAY(a, int, n + 1);
    t->qoffset = ARENA_ARRAY(a, int64_t, n + 1);
    t->qscale = ARENA_ARRAY(a, int64_t, n + 1);
    t->qtensor = ARENA_ARRAY(a, int, n + 1);
    t->stensor = ARENA_ARRAY(a, int, n + 1);
    if (!t->offset || !t->tensor || !t->qoffset || !t->qscale || !t->qtensor || !t->stensor) return -1;
    t->qbytes = 0;
    for (int i = 0; i < n; i++) {
        t->qtensor[i] = t->stensor[i] = -1;
        int q = ir_param_quantized(&p[i]);
        t->qoffset[i] = q ? t->qbytes : -1;
        t->qscale[i] = q ? t->qbytes + align_up(p[i].numel, align) : -1;
        if (q) t->qbytes = t->qscale[i] + align_up(p[i].shape[0] * p[i].shape[2] * 4, align);
    }
    int64_t off = 0;
    t->ngroups = 0;
    /* the groups in order of their keys: 2 whole, 3 split, 2 P the experts of degree P */
    for (int key = 2, next; key > 0; key = next) {
        next = 0;
        if (t->ngroups == IR_MAX_DEGREES) return -1;
        t->degree[t->ngroups] = key / 2;
        t->sliced[t->ngroups] = key & 1;
        t->group_off[t->ngroups++] = off;
        for (int i = 0; i < n; i++) {
            int d = 2 * ir_param_degree(&p[i]) + (p[i].tp > 1);
            if (d > key && (!next || d < next)) next = d;
            if (d != key) continue;
            t->offset[i] = off;
            t->tensor[i] = -1;
            off += align_up(p[i].numel * 4, align);
        }
    }
    t->group_off[t->ngroups] = off;
    t->bytes = off;
    return 0;
}

ir_graph *ir_graph_create(arena *a, const char *name, const md_param *params, int n_params, int64_t align) {
    ir_graph *g = ARENA_NEW(a, ir_graph);
    if (!g) return NULL;
    g->arena = a; g->name = name;
    g->align = align > 0 ? align : 64;
    if (ir_ptable_layout(a, &g->params, params, n_params, g->align)) return NULL;
    g->tokens = g->targets = g->stats = g->loss = g->logits = g->head_x = g->pos = g->slot = -1;
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
    case IR_ROWS_CTX: return g->context;
    case IR_ROWS_RECV: return g->recv_rows;
    }
    return 0;
}

int64_t ir_tensor_numel_max(const ir_graph *g, const ir_tensor *t) { return ir_rows_max(g, t->rows) * t->width; }
int64_t ir_plan_bytes(const ir_graph *g, int train) {
    int64_t b = g->buf_bytes[MOE_BUF_PARAM] + g->buf_bytes[MOE_BUF_ACT] + 2 * g->buf_bytes[MOE_BUF_IO] +
                g->buf_bytes[MOE_BUF_COMM];     /* IO twice: the device's and its host staging */
    return train ? b + g->buf_bytes[MOE_BUF_GRAD] + g->buf_bytes[MOE_BUF_OPT] + g->buf_bytes[MOE_BUF_TPARAM] : b;
}

int64_t ir_tensor_bytes_max(const ir_graph *g, const ir_tensor *t) {
    return ir_tensor_numel_max(g, t) * (int64_t)ir_dtype_size(t->dtype);
}

int ir_tensor_new(ir_graph *g, const char *name, ir_tkind kind, moe_dtype dt, ir_rows rows, int64_t width) {
    if (grow(g, (void **)&g->t, &g->capt, g->nt, sizeof(ir_tensor))) return -1;
    ir_tensor *t = &g->t[g->nt];
    memset(t, 0, sizeof *t);
    t->name = name; t->kind = kind; t->dtype = dt; t->rows = rows; t->width = width;
    t->param = -1; t->grad = -1; t->def = t->last = -1;
    static const moe_buf buf[] = {MOE_BUF_ACT, MOE_BUF_PARAM, MOE_BUF_GRAD, MOE_BUF_IO, MOE_BUF_IO, MOE_BUF_KV};
    t->buf = buf[kind];
    static const char *const rn[] = {"1", "S", "S*k", "ctx", "recv"};
    t->shape = rows == IR_ROWS_ONE ? arena_printf(g->arena, "[%lld]", (long long)width)
                                   : arena_printf(g->arena, "[%s, %lld]", rn[rows], (long long)width);
    if (!name || !t->shape) g->oom = 1;
    return g->nt++;
}

int ir_node_new(ir_graph *g, ir_op op, const char *name, int phase) {
    if (grow(g, (void **)&g->n, &g->capn, g->nn, sizeof(ir_node))) return -1;
    ir_node *n = &g->n[g->nn];
    memset(n, 0, sizeof *n);
    const ir_opinfo *o = ir_op_info(op);
    n->op = op; n->name = name; n->phase = phase; n->block = -1;
    n->n_in = o->n_in; n->n_out = o->n_out;
    for (int i = 0; i < IR_MAX_IO; i++) n->in[i] = n->out[i] = -1;
    if (!name) g->oom = 1;
    return g->nn++;
}

int ir_node_insert(ir_graph *g, int at, ir_op op, const char *name, int phase) {
    int n = ir_node_new(g, op, name, phase);
    if (n < 0 || at >= n) return n;
    ir_node moved = g->n[n];
    memmove(&g->n[at + 1], &g->n[at], sizeof(ir_node) * (size_t)(n - at));
    g->n[at] = moved;
    return at;
}

void ir_io(ir_graph *g, int node, const int *in, const int *out) {
    if (node < 0) return;
    ir_node *n = &g->n[node];
    for (int i = 0; in && in[i] != -2 && i < IR_MAX_IO; i++) n->in[i] = in[i];
    for (int i = 0; out && out[i] != -2 && i < IR_MAX_IO; i++) n->out[i] = out[i];
}

/* ---- printing ---- */

static const char *tname(const ir_graph *g, int id) { return id < 0 ? "-" : g->t[id].name; }

static void print_attr(const ir_node *n, FILE *out) {
    switch (ir_op_info(n->op)->attr) {
    case IR_AT_MATMUL: if (n->at.matmul.trans_w) fprintf(out, " {trans_w}"); break;
    case IR_AT_ACT: {
        static const char *const fn[] = {"gelu", "gelu_erf", "relu", "swiglu"};
        fprintf(out, " {%s}", (unsigned)n->at.act.fn < 4 ? fn[n->at.act.fn] : "?");
        break;
    }
    case IR_AT_CAST: if (n->at.cast.experts) fprintf(out, " {E=%d}", n->at.cast.experts); break;
    case IR_AT_ATTN:
        if (n->at.attn.kv_heads == n->at.attn.heads) fprintf(out, " {heads=%lld}", (long long)n->at.attn.heads);
        else fprintf(out, " {heads=%lld kv_heads=%lld}", (long long)n->at.attn.heads, (long long)n->at.attn.kv_heads);
        break;
    case IR_AT_MOE:
        fprintf(out, " {layer=%d E=%d k=%d%s}", n->at.moe.layer, n->at.moe.experts, n->at.moe.top_k,
                n->at.moe.eval_only ? " eval" : "");
        break;
    case IR_AT_A2A:
        fprintf(out, " {layer=%d ep=%d %s%s}", n->at.a2a.layer, n->at.a2a.degree,
                n->at.a2a.to_experts ? "to experts" : "to tokens", n->at.a2a.backward ? " bwd" : "");
        break;
    case IR_AT_TP: fprintf(out, " {tensor=%d}", n->at.tp.degree); break;
    case IR_AT_BUCKET: fprintf(out, " {bucket=%d}", n->at.bucket.bucket); break;
    case IR_AT_KD: fprintf(out, " {tau=%g weight=%g}", n->at.kd.tau, n->at.kd.weight); break;
    default: break;
    }
}

void ir_print(const ir_graph *g, FILE *out) {
    static const char *const ph[] = {"forward", "backward", "optimizer"};
    fprintf(out, "graph %s%s: %d tensors, %d nodes, S_max %lld (B %lld x T %lld)\n", g->name,
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
        for (int j = 0; j < n->n_out; j++) {
            int t = n->out[j];
            fprintf(out, "%s%s%s", j ? ", " : "", n->acc[j] ? "+=" : "", tname(g, t));
            if (t >= 0) fprintf(out, "%s%s%s", g->t[t].shape, g->t[t].dtype == MOE_F32 ? "" : " ",
                                g->t[t].dtype == MOE_F32 ? "" : ir_dtype_name(g->t[t].dtype));
        }
        fprintf(out, ")");
        print_attr(n, out);
        fprintf(out, "%s\n", n->kd ? " [kd]" : "");
    }
}

void ir_print_schedule(const ir_graph *g, FILE *out) {
    fprintf(out, "schedule %s%s: alignment %lld bytes\n", g->name, g->decode ? " (decode)" : "", (long long)g->align);
    fprintf(out, "buffers:");
    for (int b = 0; b < MOE_BUF_COUNT; b++)
        fprintf(out, " %s %lld%s", ir_buf_name((moe_buf)b), (long long)g->buf_bytes[b], b + 1 < MOE_BUF_COUNT ? "," : "");
    fprintf(out, " (bytes; act %.2f MiB)\n", g->buf_bytes[MOE_BUF_ACT] / 1048576.0);
    int *step = arena_alloc(g->arena, sizeof(int) * ((size_t)g->nn + 1));  /* node -> step number */
    int k = 0;
    for (int i = 0; i < g->nn; i++) {
        const ir_node *n = &g->n[i];
        if (step) step[i] = k;
        if (n->dead) continue;
        fprintf(out, "  step %3d  %-13s %s\n", k++, ir_op_name(n->op), n->name);
    }
    if (step) step[g->nn] = k;      /* live to the end of the program */
    fprintf(out, "plan (buffer, dtype, offset and size in bytes, live steps):\n");
    for (int i = 0; i < g->nt; i++) {
        const ir_tensor *t = &g->t[i];
        if (t->kind == IR_T_PARAM || t->kind == IR_T_GRAD || t->def < 0) continue;
        fprintf(out, "  %-32s %-14s %-4s %-4s @%-10lld %10lld B  [%d..%d]\n", t->name, t->shape, ir_buf_name(t->buf),
                ir_dtype_name(t->dtype), (long long)t->offset, (long long)ir_tensor_bytes_max(g, t),
                step ? step[t->def] : t->def, step ? step[t->last] : t->last);
    }
}
