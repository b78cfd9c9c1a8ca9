/* cpu.c - emits the C of a model for the CPU target.
 *
 * Each live node becomes one `static void sN(moe_ctx *c)` that calls a kernel template
 * (kernels/cpu/k_*.h) with every model size as a literal, so the C compiler
 * specialises the call; the only run-time sizes are B and T of the step. Buffers are
 * addressed by planned offsets: A() the arena, P() parameters, G() gradients. The
 * step table lists the functions with their names and phases; the runtime walks it.
 */
#include "codegen.h"
#include "cg.h"
#include "../util/arena.h"
#include <stdlib.h>
#include <string.h>

typedef struct em { cg *b; const ir_graph *g; arena *a; const char *pre; } em;

/* a C expression for tensor id's base pointer */
static const char *ptr(em *e, int id) {
    if (id < 0) return "NULL";
    const ir_tensor *t = &e->g->t[id];
    switch (t->kind) {
    case IR_T_PARAM: return arena_printf(e->a, "P(%lld)", (long long)t->offset);
    case IR_T_GRAD: return arena_printf(e->a, "G(%lld)", (long long)t->offset);
    case IR_T_TOKENS: return "c->tokens";
    case IR_T_TARGETS: return "c->targets";
    default: return arena_printf(e->a, "A(%lld)", (long long)t->offset);
    }
}
static const char *iptr(em *e, int id) { return arena_printf(e->a, "(int32_t *)%s", ptr(e, id)); }
static int64_t width(em *e, int id) { return e->g->t[id].width; }

/* the routed row count R = off[E] of a counts tensor */
static const char *rows_R(em *e, int counts, int E) {
    return arena_printf(e->a, "((int32_t *)%s)[%d]", ptr(e, counts), 2 * E);
}

static void emit_gate_cfg(em *e, const ir_node *n) {
    const md_model *m = e->g->m;
    cg_line(e->b, "k_gate_cfg g = {%d, c->mode, c->mode == MOE_MODE_INFER ? 0 : %d, %d, %d && c->mode == MOE_MODE_TRAIN, "
                  "%d, %d, %.17g, %.17g, k_rng_stream(c->seed, (uint64_t)c->step * 1024u + (uint64_t)c->micro, %lld)};",
            m->moe.top_k, m->moe.drop_tokens, (int)m->moe.noisy_gate, m->moe.random_token_selection,
            m->moe.second_expert_sampling, m->moe.min_capacity, m->moe.capacity_factor, m->moe.eval_capacity_factor,
            (long long)n->a[0]);
}

static int load_offset(const md_model *m, int mi) {
    int o = 0;
    for (int i = 0; i < mi; i++) o += m->moe.experts[i];
    return o;
}

/* Grouped-GEMM variant (k_moe.h): experts across threads when there are many of them;
 * until `moec tune` measures the machine, this rule stands in for its database. */
static int expert_variant(const ir_node *n) { return n->a[1] >= 4 ? 2 : 1; }

static void emit_act(em *e, const ir_node *n, int bwd) {
    int act = (int)n->a[0];
    int64_t f = n->a[1];
    int x = bwd ? n->in[1] : n->in[0], counts = bwd ? n->in[2] : n->in[1];
    const char *rows = counts >= 0 ? rows_R(e, counts, (int)e->g->t[counts].width / 3 - 1) : "S";
    static const char *const names[] = {"gelu", "gelu_erf", "relu"};
    if (act == MD_ACT_SWIGLU) {
        if (!bwd) cg_line(e->b, "k_swiglu_fwd(%s, %s, %s, %lld);", ptr(e, n->out[0]), ptr(e, x), rows, (long long)f);
        else cg_line(e->b, "k_swiglu_bwd(%s, %s, %s, %s, %lld, %d);", ptr(e, n->out[0]), ptr(e, x), ptr(e, n->in[0]),
                     rows, (long long)f, n->acc[0]);
    } else if (!bwd) {
        cg_line(e->b, "k_%s_fwd(%s, %s, (long)(%s) * %lld);", names[act], ptr(e, n->out[0]), ptr(e, x), rows, (long long)f);
    } else {
        cg_line(e->b, "k_%s_bwd(%s, %s, %s, (long)(%s) * %lld, %d);", names[act], ptr(e, n->out[0]), ptr(e, x),
                ptr(e, n->in[0]), rows, (long long)f, n->acc[0]);
    }
}

/* The body of one step. */
static void emit_node(em *e, const ir_node *n) {
    const ir_graph *g = e->g;
    const md_model *m = g->m;
    cg *b = e->b;
    const int *in = n->in, *out = n->out;
    long long d = m->hidden, H = m->heads;
    const char *pos0 = g->decode ? "c->pos" : "0";
    switch (n->op) {
    case IR_EMBED:
        cg_line(b, "k_embed_fwd(%s, c->tokens, %s, %s, B, T, %lld, %s);", ptr(e, out[0]), ptr(e, in[1]), ptr(e, in[2]), d, pos0);
        break;
    case IR_EMBED_BWD:
        cg_line(b, "k_embed_bwd(%s, %s, %s, c->tokens, B, T, %lld);", ptr(e, out[0]), ptr(e, out[1]), ptr(e, in[0]), d);
        break;
    case IR_LAYERNORM:
        cg_line(b, "k_layernorm_fwd(%s, %s, %s, %s, %s, %s, S, %lld);", ptr(e, out[0]), ptr(e, out[1]), ptr(e, out[2]),
                ptr(e, in[0]), ptr(e, in[1]), ptr(e, in[2]), d);
        break;
    case IR_LAYERNORM_BWD:
        cg_line(b, "k_layernorm_bwd(%s, %s, %s, %s, %s, %s, %s, %s, S, %lld, %d);", ptr(e, out[0]), ptr(e, out[1]),
                ptr(e, out[2]), ptr(e, in[0]), ptr(e, in[1]), ptr(e, in[2]), ptr(e, in[3]), ptr(e, in[4]), d, n->acc[0]);
        break;
    case IR_RMSNORM:
        cg_line(b, "k_rmsnorm_fwd(%s, %s, %s, %s, S, %lld);", ptr(e, out[0]), ptr(e, out[1]), ptr(e, in[0]), ptr(e, in[1]), d);
        break;
    case IR_RMSNORM_BWD:
        cg_line(b, "k_rmsnorm_bwd(%s, %s, %s, %s, %s, %s, S, %lld, %d);", ptr(e, out[0]), ptr(e, out[1]), ptr(e, in[0]),
                ptr(e, in[1]), ptr(e, in[2]), ptr(e, in[3]), d, n->acc[0]);
        break;
    case IR_MATMUL: {
        long long K = width(e, in[0]), N = width(e, out[0]);
        if (in[3] >= 0)
            cg_line(b, "k_matmul_res_fwd(%s, %s, %s, %s, %s, S, %lld, %lld);", ptr(e, out[0]), ptr(e, in[0]),
                    ptr(e, in[1]), ptr(e, in[2]), ptr(e, in[3]), K, N);
        else
            cg_line(b, "k_matmul_fwd(%s, %s, %s, %s, S, %lld, %lld, %d);", ptr(e, out[0]), ptr(e, in[0]), ptr(e, in[1]),
                    ptr(e, in[2]), K, N, (int)n->a[0]);
        break;
    }
    case IR_MATMUL_BWD: {
        long long K = width(e, in[1]), N = width(e, in[0]);
        cg_line(b, "k_matmul_bwd(%s, %s, %s, %s, %s, %s, S, %lld, %lld, %d, %d);", ptr(e, out[0]), ptr(e, out[1]),
                ptr(e, out[2]), ptr(e, in[0]), ptr(e, in[1]), ptr(e, in[2]), K, N, (int)n->a[0], n->acc[0]);
        if (out[3] >= 0)
            cg_line(b, "k_accumulate(%s, %s, (long)S * %lld, %d);", ptr(e, out[3]), ptr(e, in[0]), N, n->acc[3]);
        break;
    }
    case IR_ROPE:
        cg_line(b, "k_rope_fwd(%s, %s, B, T, %lld, %lld, %s);", ptr(e, out[0]), ptr(e, in[0]), d, H, pos0);
        break;
    case IR_ROPE_BWD:
        cg_line(b, "k_rope_bwd(%s, %s, B, T, %lld, %lld, 0, %d);", ptr(e, out[0]), ptr(e, in[0]), d, H, n->acc[0]);
        break;
    case IR_ATTENTION:
        cg_line(b, "k_attention_fwd(%s, %s, %s, B, T, %lld, %lld);", ptr(e, out[0]), ptr(e, out[1]), ptr(e, in[0]), d, H);
        break;
    case IR_ATTENTION_BWD:
        cg_line(b, "k_attention_bwd(%s, %s, %s, %s, %s, B, T, %lld, %lld, %d);", ptr(e, out[0]), ptr(e, out[1]),
                ptr(e, in[0]), ptr(e, in[1]), ptr(e, in[2]), d, H, n->acc[0]);
        break;
    case IR_ATTN_DECODE:
        cg_line(b, "memcpy(%s + (int64_t)c->pos * %lld, %s + %lld, sizeof(float) * %lld);", ptr(e, in[1]), d, ptr(e, in[0]), d, d);
        cg_line(b, "memcpy(%s + (int64_t)c->pos * %lld, %s + %lld, sizeof(float) * %lld);", ptr(e, in[2]), d, ptr(e, in[0]), 2 * d, d);
        cg_line(b, "k_attention_cached(%s, %s, %lld, %s, %s, 1, c->pos, %lld, %lld);", ptr(e, out[0]), ptr(e, in[0]), 3 * d,
                ptr(e, in[1]), ptr(e, in[2]), d, H);
        break;
    case IR_ACT: emit_act(e, n, 0); break;
    case IR_ACT_BWD: emit_act(e, n, 1); break;
    case IR_ADD:
        cg_line(b, "k_add_fwd(%s, %s, %s, (long)S * %lld);", ptr(e, out[0]), ptr(e, in[0]), ptr(e, in[1]), (long long)width(e, out[0]));
        break;
    case IR_ADD_BWD:
        for (int j = 0; j < 2; j++)
            if (out[j] >= 0)
                cg_line(b, "k_accumulate(%s, %s, (long)S * %lld, %d);", ptr(e, out[j]), ptr(e, in[0]), (long long)width(e, in[0]), n->acc[j]);
        break;
    case IR_GATE: {
        int mi = (int)n->a[0], E = (int)n->a[1];
        emit_gate_cfg(e, n);
        cg_line(b, "double st[4];");
        cg_line(b, "k_moe_gate_fwd(%s, %s, %s, %s, S, %lld, %d, %lld, &g, st, c->loads + %d);", iptr(e, out[0]),
                iptr(e, out[1]), ptr(e, in[0]), ptr(e, in[1]), d, E, (long long)width(e, out[0]), load_offset(m, mi));
        cg_line(b, "c->aux[%d] = st[0]; c->z[%d] = st[1]; c->dropped[%d] = st[2]; c->choices[%d] = st[3];", mi, mi, mi, mi);
        break;
    }
    case IR_GATE_BWD: {
        int E = (int)n->a[1];
        cg_line(b, "k_moe_gate_bwd(%s, %s, %s, %s, %s, %s, %s, S, %lld, %d, %lld, %d, (float)%.9g, (float)%.9g, c->loss_scale, %d);",
                ptr(e, out[0]), ptr(e, out[1]), ptr(e, out[2]), ptr(e, in[0]), iptr(e, in[1]), ptr(e, in[3]),
                ptr(e, in[4]), d, E, (long long)width(e, in[1]), m->moe.top_k, m->moe.aux_loss, m->moe.z_loss, n->acc[0]);
        break;
    }
    case IR_DISPATCH:
        cg_line(b, "k_moe_dispatch_fwd(%s, %s, %s, S, %lld, %d, %lld);", ptr(e, out[0]), ptr(e, in[0]), iptr(e, in[1]), d,
                m->moe.top_k, (long long)width(e, in[1]));
        break;
    case IR_DISPATCH_BWD:
        cg_line(b, "k_moe_dispatch_bwd(%s, %s, %s, S, %lld, %d, %lld, %d);", ptr(e, out[0]), ptr(e, in[0]), iptr(e, in[1]),
                d, m->moe.top_k, (long long)width(e, in[1]), n->acc[0]);
        break;
    case IR_ALLTOALL: {
        if (in[0] == out[0]) {
            cg_line(b, "/* expert-parallel degree 1: nothing to exchange */");
            break;
        }
        /* one process: the exchange is a local copy of the R real rows */
        int E = (int)e->g->t[in[1]].width / 3 - 1;
        cg_line(b, "memcpy(%s, %s, sizeof(float) * (size_t)(%s) * %lld);", ptr(e, out[0]), ptr(e, in[0]),
                rows_R(e, in[1], E), (long long)width(e, in[0]));
        break;
    }
    case IR_EXPERT_MM:
        cg_line(b, "k_moe_expert_fwd(%s, %s, %s, %s, %s, %d, %lld, %lld, %d);", ptr(e, out[0]), ptr(e, in[0]),
                ptr(e, in[1]), ptr(e, in[2]), iptr(e, in[3]), (int)n->a[1], (long long)width(e, in[0]),
                (long long)width(e, out[0]), expert_variant(n));
        break;
    case IR_EXPERT_MM_BWD:
        cg_line(b, "k_moe_expert_bwd(%s, %s, %s, %s, %s, %s, %s, %d, %lld, %lld, %d, %d);", ptr(e, out[0]),
                ptr(e, out[1]), ptr(e, out[2]), ptr(e, in[0]), ptr(e, in[1]), ptr(e, in[2]), iptr(e, in[3]),
                (int)n->a[1], (long long)width(e, in[1]), (long long)width(e, in[0]), n->acc[0], expert_variant(n));
        break;
    case IR_COMBINE:
        cg_line(b, "k_moe_combine_fwd(%s, %s, %s, %s, %s, %s, S, %lld, %d, %lld);", ptr(e, out[0]), ptr(e, in[0]),
                iptr(e, in[1]), ptr(e, in[3]), ptr(e, in[4]), ptr(e, in[5]), d, m->moe.top_k, (long long)width(e, in[1]));
        break;
    case IR_COMBINE_BWD:
        cg_line(b, "k_moe_combine_bwd(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, S, %lld, %d, %lld, %d, %d);", ptr(e, out[0]),
                ptr(e, out[1]), ptr(e, out[2]), ptr(e, out[3]), ptr(e, out[4]), ptr(e, in[0]), ptr(e, in[1]),
                iptr(e, in[2]), ptr(e, in[4]), ptr(e, in[5]), d, m->moe.top_k, (long long)width(e, in[2]), n->acc[2],
                n->acc[4]);
        break;
    case IR_XENT:
        cg_line(b, "k_xent_fwd(%s, %s, c->targets, S, %lld);", ptr(e, in[0]), ptr(e, out[0]), (long long)m->vocab);
        break;
    case IR_XENT_BWD:
        cg_line(b, "k_xent_bwd(%s, %s, c->targets, c->loss_scale / (float)S, S, %lld);", ptr(e, out[0]), ptr(e, in[0]),
                (long long)m->vocab);
        break;
    case IR_ALLREDUCE:
        cg_open(b, "if (c->comm && c->comm->world > 1)");
        cg_line(b, "c->comm->allreduce_f32(c->comm, c->grads, %lld);", (long long)g->param_floats);
        cg_line(b, "k_scale(c->grads, 1.0f / (float)c->comm->world, %lld);", (long long)g->param_floats);
        cg_close(b, "");
        break;
    case IR_GRAD_NORM:
        cg_line(b, "c->grad_norm = sqrt(k_sumsq(c->grads, %lld));", (long long)g->param_floats);
        if (m->train.grad_clip > 0)
            cg_line(b, "c->clip = c->grad_norm > %.9g ? %.9g / (c->grad_norm + 1e-6) : 1.0;", m->train.grad_clip,
                    m->train.grad_clip);
        else
            cg_line(b, "c->clip = 1.0;");
        break;
    case IR_ADAMW:
        cg_line(b, "float lr = (float)lr_at(c->step);");
        cg_line(b, "c->lr = lr;");
        for (int i = 0; i < g->n_params; i++) {
            const md_param *p = &g->params[i];
            long long off = (long long)g->param_offset[i];
            cg_line(b, "k_adamw(P(%lld), G(%lld), c->adam_m + %lld, c->adam_v + %lld, %lld, lr, (float)%.9g, (float)%.9g, (float)%.9g, (float)%.9g, "
                       "(float)c->clip, (int)c->opt_step); /* %s */",
                    off, off, off, off, (long long)p->numel, m->train.beta1, m->train.beta2, m->train.eps,
                    p->decay ? m->train.weight_decay : 0.0, p->name);
        }
        break;
    default:
        cg_line(b, "#error \"no CPU code for op %s\"", ir_op_name(n->op));
    }
}

static void emit_steps(em *e, const char *table) {
    const ir_graph *g = e->g;
    for (int i = 0; i < g->nn; i++) {
        const ir_node *n = &g->n[i];
        if (n->dead) continue;
        cg_line(e->b, "/* %s %s */", ir_op_name(n->op), n->name);
        cg_open(e->b, "static void %s%d(moe_ctx *c)", e->pre, i);
        cg_line(e->b, "const int B = c->B, T = c->T, S = B * T;");
        cg_line(e->b, "(void)B; (void)T; (void)S;");
        emit_node(e, n);
        cg_close(e->b, "");
    }
    cg_open(e->b, "static const moe_step %s[] =", table);
    for (int i = 0; i < g->nn; i++) {
        const ir_node *n = &g->n[i];
        if (n->dead) continue;
        cg_line(e->b, "{\"%s\", %s%d, %d, %d},", n->name, e->pre, i, n->phase, n->op == IR_ALLTOALL || n->op == IR_ALLREDUCE);
    }
    cg_close(e->b, ";");
}

static void emit_lr(cg *b, const md_model *m) {
    cg_line(b, "/* learning rate at 0-based step: linear warmup, then %s decay to min_lr */",
            m->train.schedule == MD_SCHED_COSINE ? "cosine" : m->train.schedule == MD_SCHED_LINEAR ? "linear" : "no");
    cg_open(b, "static double lr_at(int64_t step)");
    cg_line(b, "const double lr = %.17g, min_lr = %.17g;", m->train.lr, m->train.min_lr);
    cg_line(b, "const int64_t warmup = %lld, steps = %lld;", (long long)m->train.warmup, (long long)m->train.steps);
    cg_line(b, "if (step < warmup) return lr * (double)(step + 1) / (double)warmup;");
    cg_line(b, "double p = steps > warmup ? (double)(step - warmup) / (double)(steps - warmup) : 1.0;");
    cg_line(b, "if (p > 1.0) p = 1.0;");
    cg_line(b, "(void)p; (void)min_lr;");
    if (m->train.schedule == MD_SCHED_COSINE) cg_line(b, "return min_lr + 0.5 * (lr - min_lr) * (1.0 + cos(3.14159265358979323846 * p));");
    else if (m->train.schedule == MD_SCHED_LINEAR) cg_line(b, "return lr - (lr - min_lr) * p;");
    else cg_line(b, "return lr;");
    cg_close(b, "");
}

/* The text of `OUT info`: sizes, the schedule by phase and the memory plan. */
static void emit_summary(cg *b, arena *a, const ir_graph *g, const ir_graph *dec) {
    int counts[3] = {0, 0, 0};
    for (int i = 0; i < g->nn; i++) if (!g->n[i].dead) counts[g->n[i].phase]++;
    const char *s = arena_printf(a,
        "schedule: %d forward, %d backward, %d optimizer steps; decode: %d steps\\n"
        "memory plan: arena %.2f MiB for %lld x %lld tokens (decode %.2f MiB), parameters %.2f MiB "
        "(+ gradients and 2 AdamW moments of the same size)\\n",
        counts[0], counts[1], counts[2], dec->nn, g->arena_floats * 4.0 / 1048576.0, (long long)g->B_max,
        (long long)g->T_max, dec->arena_floats * 4.0 / 1048576.0, g->param_floats * 4.0 / 1048576.0);
    cg_line(b, "static const char summary[] = \"%s\";", s);
}

static void emit_tables(cg *b, arena *a, const ir_graph *g, const ir_graph *dec, const char *source) {
    const md_model *m = g->m;
    emit_summary(b, a, g, dec);
    cg_open(b, "static const moe_param_info params[] =");
    for (int i = 0; i < g->n_params; i++) {
        const md_param *p = &g->params[i];
        cg_line(b, "{\"%s\", %d, {%lld, %lld, %lld}, %lld, %lld, (float)%.9g, %d, %d, %d},", p->name, p->ndim,
                (long long)p->shape[0], (long long)p->shape[1], (long long)p->shape[2], (long long)g->param_offset[i],
                (long long)p->numel, p->init_std, p->init_one, p->decay,
                p->kind == MD_P_EXPERT_W || p->kind == MD_P_EXPERT_B);
    }
    cg_close(b, ";");
    int nm = m->moe.n_moe;
    cg_raw(b, "static const int experts[] = {");
    for (int i = 0; i < nm; i++) cg_raw(b, arena_printf(a, "%d, ", m->moe.experts[i]));
    cg_raw(b, "0};\nstatic const int moe_block[] = {");
    for (int i = 0; i < nm; i++) cg_raw(b, arena_printf(a, "%d, ", m->moe.layer[i] - 1));
    cg_raw(b, "0};\n");
    cg_open(b, "const moe_program moe_program_def =");
    cg_line(b, ".abi = MOE_ABI_VERSION, .model = \"%s\", .target = \"cpu\", .source = \"%s\",", m->name, source);
    cg_line(b, ".vocab = %lld, .context = %lld, .layers = %lld, .hidden = %lld, .heads = %lld, .ffn = %lld,",
            (long long)m->vocab, (long long)m->context, (long long)m->layers, (long long)m->hidden, (long long)m->heads,
            (long long)m->ffn);
    cg_line(b, ".n_moe = %d, .top_k = %d, .experts = experts, .moe_block = moe_block,", nm, g->top_k);
    cg_line(b, ".batch = %lld, .accumulate = %lld, .train_steps = %lld, .seed = %lld, .warmup = %lld,", (long long)m->train.batch,
            (long long)m->train.accumulate, (long long)m->train.steps, (long long)m->train.seed, (long long)m->train.warmup);
    cg_line(b, ".eval_every = %lld, .checkpoint_every = %lld,", (long long)m->train.eval_every,
            (long long)m->train.checkpoint_every);
    cg_line(b, ".lr = %.17g, .min_lr = %.17g, .beta1 = %.17g, .beta2 = %.17g, .eps = %.17g,", m->train.lr, m->train.min_lr,
            m->train.beta1, m->train.beta2, m->train.eps);
    cg_line(b, ".weight_decay = %.17g, .grad_clip = %.17g, .aux_loss = %.17g, .z_loss = %.17g,", m->train.weight_decay,
            m->train.grad_clip, nm ? m->moe.aux_loss : 0.0, nm ? m->moe.z_loss : 0.0);
    cg_line(b, ".n_params = %d, .params = params, .param_floats = %lld,", g->n_params, (long long)g->param_floats);
    cg_line(b, ".B_max = %lld, .T_max = %lld, .arena_floats = %lld,", (long long)g->B_max, (long long)g->T_max,
            (long long)g->arena_floats);
    cg_line(b, ".logits_off = %lld, .loss_off = %lld,", (long long)g->t[g->logits].offset, (long long)g->t[g->loss].offset);
    cg_line(b, ".n_steps = (int)(sizeof train_steps / sizeof train_steps[0]), .steps = train_steps,");
    cg_line(b, ".dec_arena_floats = %lld, .dec_logits_off = %lld,", (long long)dec->arena_floats,
            (long long)dec->t[dec->logits].offset);
    cg_line(b, ".n_dec_steps = (int)(sizeof decode_steps / sizeof decode_steps[0]), .dec_steps = decode_steps,");
    cg_line(b, ".summary = summary,");
    cg_close(b, ";");
}

char *cg_cpu_program(const ir_graph *g, const ir_graph *dec, const char *source) {
    cg *b = cg_create();
    if (!b) return NULL;
    arena *a = g->arena;
    cg_line(b, "/* generated by moec from %s (model %s), do not edit */", source, g->m->name);
    cg_line(b, "#include \"moe_program.h\"");
    static const char *const hdr[] = {"k_common.h", "k_matmul.h", "k_norm.h", "k_act.h", "k_attn.h", "k_embed.h",
                                      "k_xent.h", "k_optim.h", "k_moe.h", "k_fused.h"};
    for (size_t i = 0; i < sizeof hdr / sizeof hdr[0]; i++) cg_line(b, "#include \"%s\"", hdr[i]);
    cg_line(b, "#define A(o) (c->act + (o))");
    cg_line(b, "#define P(o) (c->params + (o))");
    cg_line(b, "#define G(o) (c->grads + (o))");
    cg_line(b, "_Static_assert(K_MODE_INFER == MOE_MODE_INFER && K_MODE_GRAD == MOE_MODE_GRAD, \"mode enums\");");
    emit_lr(b, g->m);
    em e = {b, g, a, "s"};
    emit_steps(&e, "train_steps");
    em d = {b, dec, a, "d"};
    emit_steps(&d, "decode_steps");
    emit_tables(b, a, g, dec, source);
    const char *text = cg_finish(b);
    char *res = text ? strdup(text) : NULL;
    cg_destroy(b);
    return res;
}
