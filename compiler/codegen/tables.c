/* tables.c - the program's data, the same C for every target: the learning-rate schedule,
 * the parameter table, the buffer sizes and IO layout, and moe_program_<target> (moe_program.h).
 * These are the sizes and hyper-parameters the runtime reads; the model description is read
 * here for them and for nothing else. Every string is escaped (cg_cstr).
 */
#include "target.h"
#include "cg.h"
#include "../util/arena.h"
#include "moe_hash.h"
#include <string.h>

const char *const cg_dtype_macro[MOE_DTYPE_COUNT] = {"F32", "BF16", "F16", "I32", "F64", "I8"};
const char *const cg_buf_macro[MOE_BUF_COUNT] = {"ACT", "PARAM", "GRAD", "OPT", "IO", "STAGING", "COMM",
                                                       "TPARAM", "QPARAM", "KV"};

const char *cg_rt_expr(arena *a, lw_rt r, int64_t factor, const char *ctx) {
    const char *v = r == LW_RT_B || r == LW_RT_T || r == LW_RT_S ? lw_rt_name(r)
                                                                 : arena_printf(a, "%s%s", ctx, lw_rt_name(r));
    return factor == 1 || !v ? v : arena_printf(a, "(long long)%s * %lld", v, (long long)factor);
}

/* The text of `OUT info`: live steps by phase and the memory plan. */
static void emit_summary(cg *b, arena *a, const lw_program *tr, const lw_program *dec) {
    int counts[3] = {0, 0, 0};
    for (int i = 0; i < tr->nsteps; i++) counts[tr->steps[i].phase]++;
    const ir_graph *g = tr->g, *d = dec->g;
    double train_b = (double)ir_plan_bytes(g, 1);     /* inference: with the KV caches of one sequence */
    double infer_b = (double)(ir_plan_bytes(g, 0) + d->buf_bytes[MOE_BUF_ACT] + d->buf_bytes[MOE_BUF_KV]);
    int gib = train_b >= 1073741824.0;      /* small plans in MiB */
    const char *s = arena_printf(a,
        "schedule: %d forward, %d backward, %d optimizer steps; decode: %d steps\n"
        "  memory plan: arena %.2f MiB for %lld x %lld tokens (decode %.2f MiB for %lld sequences at a time, KV caches "
        "%.2f MiB per sequence), parameters %.2f MiB (+ gradients and 2 AdamW moments of the same size), io %.2f KiB\n"
        "  memory per process: %.2f %s to train, %.2f %s for inference\n",
        counts[0], counts[1], counts[2], dec->nsteps, g->buf_bytes[MOE_BUF_ACT] / 1048576.0, (long long)g->B_max,
        (long long)g->T_max, d->buf_bytes[MOE_BUF_ACT] / 1048576.0, (long long)d->B_max,
        d->buf_bytes[MOE_BUF_KV] / 1048576.0, g->params.bytes / 1048576.0,
        g->buf_bytes[MOE_BUF_IO] / 1024.0, train_b / (gib ? 1073741824.0 : 1048576.0), gib ? "GiB" : "MiB",
        infer_b / (gib ? 1073741824.0 : 1048576.0), gib ? "GiB" : "MiB");
    cg_line(b, "static const char summary[] = %s;", cg_cstr(a, s));
}

/* The kernel variants the programs run, as a JSON array for `bench --json`: one object per
 * call with a numbered variant, saying whether the tuning database or the rule chose it. */
static void emit_variants(cg *b, arena *a, const lw_program *const progs[2]) {
    const char *s = "[";
    for (int q = 0; q < 2; q++)
        for (int i = 0; i < progs[q]->nsteps; i++)
            for (int c = 0; c < progs[q]->steps[i].ncalls; c++) {
                const lw_call *k = &progs[q]->steps[i].calls[c];
                if (!k->variant) continue;
                s = arena_printf(a, "%s%s{\"program\": \"%s\", \"step\": \"%s\", \"kernel\": \"%s\", \"variant\": %d, "
                                 "\"from\": \"%s\"}", s, s[1] ? ", " : "", q ? "decode" : "train",
                                 progs[q]->steps[i].name, k->kernel, k->variant, k->tuned ? "tuning database" : "rule");
            }
    cg_line(b, "static const char variants[] = %s;", cg_cstr(a, arena_printf(a, "%s]", s)));
}

static void emit_ints(cg *b, arena *a, const char *name, const int *v, int n) {
    cg_raw(b, arena_printf(a, "static const int %s[] = {", name));
    for (int i = 0; i < n; i++) cg_raw(b, arena_printf(a, "%d, ", v[i]));
    cg_raw(b, "0};\n");
}

/* a parameter table (moe_param_info) named `name` */
static void emit_params(cg *b, arena *a, const char *name, const ir_ptable *t) {
    cg_open(b, "static const moe_param_info %s[] =", name);
    for (int i = 0; i < t->n; i++) {
        const md_param *p = &t->p[i];
        cg_line(b, "{%s, %d, {%lld, %lld, %lld}, %lld, %lld, (float)%.9g, %d, %d, %d, 0x%016llxull, %lld, %lld, %lld, "
                "%d, %d, {%lld, %lld, %lld}},",
                cg_cstr(a, p->name), p->ndim, (long long)p->shape[0], (long long)p->shape[1], (long long)p->shape[2],
                (long long)t->offset[i], (long long)p->numel, p->init_std, p->init_one, p->decay, p->experts_all > 0,
                (unsigned long long)util_hash_str(p->name), (long long)p->experts_all, (long long)t->qoffset[i],
                (long long)t->qscale[i], p->tp, p->tp > 1 ? p->tp_dim : -1, (long long)p->tp_seg[0],
                (long long)p->tp_seg[1], (long long)p->tp_seg[2]);
    }
    cg_close(b, ";");
}

static void emit_schedule(cg *b, const lw_program *p, const char *field, const char *steps) {
    const ir_graph *g = p->g;
    cg_line(b, ".%s = {(int)(sizeof %s / sizeof %s[0]), %s, %lld, %lld, %lld, %lld, %lld},", field, steps, steps,
            steps, (long long)g->buf_bytes[MOE_BUF_ACT], (long long)g->B_max, (long long)g->T_max,
            g->logits >= 0 ? (long long)g->t[g->logits].offset : -1LL,
            g->logits < 0 && g->head_x >= 0 ? (long long)g->t[g->head_x].offset : -1LL);
}

/* Whether output j of node n is checked by `verify`: not a kernel's scratch, whose contents
 * each target lays out its own way. */
static int verified_out(const ir_node *n, int j) {
    return n->out[j] >= 0 && strcmp(ir_op_info(n->op)->out[j].name, "scratch") != 0;
}

/* the regions step s writes: its node's output tensors; the optimizer's, whole buffers */
static int emit_regions(cg *b, const ir_graph *g, const lw_step *s, const char *name) {
    const ir_node *n = &g->n[s->node];
    int count = 0;
    cg_open(b, "static const moe_region %s[] =", name);
    if (s->phase == IR_PHASE_OPT && n->n_out == 0) {
        cg_line(b, "{\"param\", MOE_BUF_PARAM, MOE_F32, 0, %lld},", (long long)g->buf_bytes[MOE_BUF_PARAM]);
        cg_line(b, "{\"opt\", MOE_BUF_OPT, MOE_F32, 0, %lld},", (long long)g->buf_bytes[MOE_BUF_OPT]);
        count = 2;
    }
    for (int j = 0; j < n->n_out; j++) {
        if (!verified_out(n, j)) continue;
        const ir_tensor *t = &g->t[n->out[j]];
        cg_line(b, "{\"%s\", MOE_BUF_%s, %d, %lld, %lld},", ir_op_info(n->op)->out[j].name, cg_buf_macro[t->buf],
                (int)t->dtype, (long long)t->offset, (long long)ir_tensor_bytes_max(g, t));
        count++;
    }
    cg_line(b, "{0, 0, 0, 0, 0}");
    cg_close(b, ";");
    return count;
}

void cg_emit_step_table(cg *b, arena *a, const lw_program *p, const char *pre, const char *table) {
    int *nouts = ARENA_ARRAY(a, int, p->nsteps + 1);
    for (int i = 0; nouts && i < p->nsteps; i++)
        nouts[i] = emit_regions(b, p->g, &p->steps[i], arena_printf(a, "%s_outs%d", table, i));
    cg_open(b, "static const moe_step %s[] =", table);
    for (int i = 0; nouts && i < p->nsteps; i++) {
        const lw_step *s = &p->steps[i];
        cg_line(b, "{%s, %s%d, %d, %uu, %d, %s_outs%d},", cg_cstr(a, s->name), pre, s->node, s->phase, s->kind,
                nouts[i], table, i);
    }
    if (!nouts) cg_line(b, "#error \"out of memory\"");
    cg_close(b, ";");
}

void cg_emit_program(cg *b, const cg_unit *u, const char *target, const char *kernels) {
    const md_model *m = u->model;
    const ir_graph *g = u->train->g;
    arena *a = u->arena;
    emit_summary(b, a, u->train, u->decode);
    emit_variants(b, a, (const lw_program *const[2]){u->train, u->decode});
    emit_params(b, a, "params", &g->params);
    const ir_teacher *t = g->teacher;
    if (t) {
        emit_params(b, a, "teacher_params", &t->params);
        cg_line(b, "static const moe_teacher teacher = {%s, %d, teacher_params, %.17g, %.17g, %lld};",
                cg_cstr(a, t->name), t->params.n, t->tau, t->weight, (long long)t->stop_step);
    }
    int nm = m->moe.n_moe;
    int *blocks = ARENA_ARRAY(a, int, nm + 1);
    for (int i = 0; blocks && i < nm; i++) blocks[i] = m->moe.layer[i] - 1;
    emit_ints(b, a, "experts", m->moe.experts, nm);
    emit_ints(b, a, "moe_block", blocks ? blocks : m->moe.experts, blocks ? nm : 0);
    emit_ints(b, a, "stat_loads", g->stat_loads, nm);
    cg_open(b, "const moe_program moe_program_%s =", target);
    cg_line(b, ".abi = MOE_ABI_VERSION, .model = %s, .target = %s, .source = %s,", cg_cstr(a, m->name),
            cg_cstr(a, target), cg_cstr(a, u->source));
    cg_line(b, ".vocab = %lld, .context = %lld, .layers = %lld, .hidden = %lld, .heads = %lld, .ffn = %lld,",
            (long long)m->vocab, (long long)m->context, (long long)m->layers, (long long)m->hidden, (long long)m->heads,
            (long long)m->ffn);
    cg_line(b, ".kv_heads = %lld, .bias = %d,", (long long)m->kv_heads, m->bias ? 1 : 0);
    static const char *const act[] = {"gelu", "gelu_erf", "relu", "swiglu"};
    cg_line(b, ".activation = \"%s\", .norm = \"%s\", .position = \"%s\", .tied = %d,", act[m->activation],
            m->norm == MD_NORM_RMSNORM ? "rmsnorm" : "layernorm", m->position == MD_POS_ROPE ? "rope" : "learned",
            m->tie_embeddings ? 1 : 0);
    cg_line(b, ".half = MOE_%s,", cg_dtype_macro[g->half]);
    cg_line(b, ".n_moe = %d, .top_k = %d, .experts = experts, .moe_block = moe_block,", nm, g->top_k);
    cg_line(b, ".batch = %lld, .accumulate = %lld, .train_steps = %lld, .seed = %lld, .warmup = %lld,",
            (long long)m->train.batch, (long long)m->train.accumulate, (long long)m->train.steps,
            (long long)m->train.seed, (long long)m->train.warmup);
    cg_line(b, ".eval_every = %lld, .eval_batches = %lld, .checkpoint_every = %lld, .recompute = %d,",
            (long long)m->train.eval_every, (long long)m->train.eval_batches, (long long)m->train.checkpoint_every,
            (int)m->train.recompute);
    cg_line(b, ".lr = %.17g, .min_lr = %.17g, .beta1 = %.17g, .beta2 = %.17g, .eps = %.17g,", m->train.lr,
            m->train.min_lr, m->train.beta1, m->train.beta2, m->train.eps);
    cg_line(b, ".weight_decay = %.17g, .grad_clip = %.17g, .aux_loss = %.17g, .z_loss = %.17g,",
            m->train.weight_decay, m->train.grad_clip, nm ? m->moe.aux_loss : 0.0, nm ? m->moe.z_loss : 0.0);
    cg_line(b, ".schedule = %s, .capacity_factor = %.17g, .eval_capacity_factor = %.17g,",
            m->train.schedule == MD_SCHED_COSINE ? "MOE_SCHED_COSINE"
            : m->train.schedule == MD_SCHED_LINEAR ? "MOE_SCHED_LINEAR" : "MOE_SCHED_CONSTANT",
            nm ? m->moe.capacity_factor : 0.0, nm ? m->moe.eval_capacity_factor : 0.0);
    cg_line(b, ".drop_tokens = %d,", nm && m->moe.drop_tokens ? 1 : 0);
    static const int a2a[] = {[MD_A2A_AUTO] = MOE_A2A_AUTO, [MD_A2A_FLAT] = MOE_A2A_FLAT,
                              [MD_A2A_HIERARCHICAL] = MOE_A2A_HIERARCHICAL};
    cg_line(b, ".par_data = %d, .par_expert = %d, .par_tensor = %d, .par_alltoall = %d, .par_ranks_per_node = %d,",
            m->parallel.data, g->ep, m->parallel.tensor, a2a[m->parallel.alltoall], m->parallel.ranks_per_node);
    cg_line(b, ".par_expert_slicing = %d,", m->parallel.expert_slicing);
    cg_line(b, ".n_params = %d, .params = params, .align = %lld,", g->params.n, (long long)g->align);
    cg_raw(b, "    .buf_bytes = {");
    for (int i = 0; i < MOE_BUF_COUNT; i++)
        cg_raw(b, arena_printf(a, "%lld, ", i == MOE_BUF_ACT                          ? 0LL
                                            : i == MOE_BUF_QPARAM || i == MOE_BUF_KV ? (long long)u->decode->g->buf_bytes[i]
                                                                                     : (long long)g->buf_bytes[i]));
    cg_raw(b, "},\n");
    cg_line(b, ".tokens_off = %lld, .targets_off = %lld, .stats_off = %lld, .n_stats = %d, .stat_loads = stat_loads,",
            (long long)g->t[g->tokens].offset, (long long)g->t[g->targets].offset, (long long)g->t[g->stats].offset,
            g->n_stats);
    cg_line(b, ".pos_off = %lld, .slot_off = %lld,", (long long)g->pos_off, (long long)g->slot_off);
    emit_schedule(b, u->train, "train", "train_steps");
    emit_schedule(b, u->decode, "decode", "decode_steps");
    cg_line(b, ".teacher = %s,", t ? "&teacher" : "NULL");
    cg_line(b, ".summary = summary, .variants = variants,");
    cg_line(b, "%s", kernels);
    cg_close(b, ";");
}
