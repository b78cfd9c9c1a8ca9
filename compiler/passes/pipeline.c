/* pipeline.c - see pipeline.h. */
#include "pipeline.h"
#include "build.h"
#include "passes.h"
#include "../util/arena.h"
#include "../util/diag.h"

static diag_loc loc_of(md_loc where, md_loc model) {
    md_loc l = where.file ? where : model;
    return (diag_loc){l.file, l.line, l.col};
}

/* Settings the language accepts that this compiler cannot honour on the target, and gate
 * options written where they have no effect. */
static void check_settings(diag_ctx *d, const md_model *m, const ir_caps *caps, const char *alike) {
    if (m->parallel.tensor > 1 && !caps->tensor_parallel) {
        diag_error(d, loc_of(m->where.tensor, m->loc),
                   "parallel.tensor = %d: the %s target has no tensor slicing yet (its sums need NCCL)",
                   m->parallel.tensor, caps->target);
        diag_hint(d, "build for --target cpu, or set parallel.tensor = 1");
    }
    int X = m->parallel.expert_slicing, T = m->parallel.tensor, ep = 1;
    for (int i = 0; i < m->moe.n_moe; i++) ep = m->parallel.expert[i] > ep ? m->parallel.expert[i] : ep;
    diag_loc xl = loc_of(m->where.expert_slicing, m->loc);
    if (X > 1 && !caps->tensor_parallel) {
        diag_error(d, xl, "parallel.expert_slicing = %d: the %s target has no expert slicing yet (its sums need NCCL)",
                   X, caps->target);
        diag_hint(d, "build for --target cpu, or set parallel.expert_slicing = 1");
    } else if (X > 1 && !m->moe.n_moe) {
        diag_error(d, xl, "parallel.expert_slicing = %d, but model '%s' has no experts to split", X, m->name);
    } else if (X > 1 && T > 1 && X != T) {
        diag_error(d, xl, "parallel.expert_slicing = %d and parallel.tensor = %d: expert slicing splits the experts "
                   "over the tensor groups, so the two must be equal (or one of them 1)", X, T);
    } else if (X > 1 && ep > 1) {
        diag_error(d, xl, "parallel.expert_slicing = %d with parallel.expert = %d: slicing experts that are spread "
                   "over expert groups is not implemented yet", X, ep);
        diag_hint(d, "slice the experts (expert_slicing) or spread them (expert), not both");
    }
    if (m->dtype != MD_DT_FP32) {
        moe_dtype dt = m->dtype == MD_DT_BF16 ? MOE_BF16 : MOE_F16;
        if (!(caps->dtypes & (1u << dt))) {
            diag_warning(d, loc_of(m->where.dtype, m->loc),
                         "dtype = %s: the %s target computes in fp32 only, so this model will compute in fp32",
                         dt == MOE_BF16 ? "bf16" : "fp16", caps->target);
            if (alike)
                diag_hint(d, "--target all plans both programs alike, so the %s program computes in fp32 too; "
                          "build --target %s for %s", alike, alike, dt == MOE_BF16 ? "bf16" : "fp16");
        }
    }
    if (m->dropout > 0)
        diag_warning(d, loc_of(m->where.dropout, m->loc),
                     "dropout = %g is not applied: moec has no dropout yet, so this model trains without it",
                     m->dropout);
    if (ep > 1 && !caps->expert_parallel)
        diag_warning(d, loc_of(m->where.expert, m->loc),
                     "parallel.expert = %d: the %s target has no expert parallelism yet (its all-to-all needs NCCL): "
                     "every process holds all the experts, and several processes run data-parallel", ep,
                     caps->target);
    if (m->moe.n_moe && m->moe.noisy_gate == MD_NOISE_RSAMPLE && m->moe.top_k > 1)
        diag_warning(d, loc_of(m->where.noisy_gate, m->loc),
                     "noisy_gate = rsample acts on top-1 gates only (as in DeepSpeed-MoE): with top_k = %d the "
                     "gate has no noise", m->moe.top_k);
    if (m->moe.n_moe && m->where.rts.file && m->moe.random_token_selection && (m->moe.top_k != 1 || !m->moe.drop_tokens))
        diag_warning(d, loc_of(m->where.rts, m->loc),
                     "random_token_selection acts on top-1 gates that drop tokens only (as in DeepSpeed-MoE): "
                     "it has no effect here");
    if (m->moe.n_moe && m->where.second_sampling.file && m->moe.second_expert_sampling && m->moe.top_k != 2)
        diag_warning(d, loc_of(m->where.second_sampling, m->loc),
                     "second_expert_sampling acts on top-2 gates only: with top_k = %d it has no effect", m->moe.top_k);
}

/* one pass, then the test hook, then the check of the whole graph */
static int step(ir_graph *g, const char *name, int (*pass)(ir_graph *), const pl_options *o, diag_ctx *d) {
    if (pass && pass(g)) {
        diag_error(d, loc_of(g->loc, g->loc), "out of memory in the %s pass", name);
        return -1;
    }
    if (o->after_pass) o->after_pass(g, name, o->ctx);
    return ir_verify(g, name) ? -1 : 0;
}

static ir_graph *lower(struct arena *a, diag_ctx *d, const md_model *m, const pl_options *o, int decode) {
    ir_build_kind kind = !decode ? IR_BUILD_TRAIN : o->caps->int8_decode ? IR_BUILD_DECODE_Q8 : IR_BUILD_DECODE;
    ir_graph *g = ir_build_forward(a, d, m, o->caps->align, kind);
    if (!g) {
        if (!diag_count(d)) diag_error(d, loc_of(m->loc, m->loc), "out of memory building the graph of '%s'", m->name);
        return NULL;
    }
    g->fuse_head = o->caps->fused_head;
    if (!decode && m->dtype != MD_DT_FP32) {    /* the decode program computes in f32 (precision.c) */
        moe_dtype h = m->dtype == MD_DT_BF16 ? MOE_BF16 : MOE_F16;
        if (o->caps->dtypes & (1u << h)) g->half = h;
    }
    if (step(g, "build", NULL, o, d)) return NULL;
    if (o->opt_level >= 1 && step(g, "fuse", pass_fuse, o, d)) return NULL;
    if (!decode && (step(g, "autodiff", pass_autodiff, o, d) || step(g, "recompute", pass_recompute, o, d) ||
                    step(g, "precision", pass_precision, o, d) || step(g, "optimizer", pass_optimizer, o, d)))
        return NULL;
    if (step(g, "comm", pass_comm, o, d) || (o->opt_level >= 1 && step(g, "fuse_casts", pass_fuse_casts, o, d)) ||
        step(g, "plan", pass_plan, o, d))
        return NULL;
    return g;
}

int pl_run(struct arena *a, diag_ctx *d, const md_model *m, const pl_options *o, pl_result *out) {
    out->train = out->decode = NULL;
    check_settings(d, m, o->caps, o->alike);
    if (diag_count(d)) return -1;
    md_model whole;     /* a target without expert parallelism: every expert on every rank */
    if (!o->caps->expert_parallel && m->moe.n_moe) {
        whole = *m;
        whole.parallel.expert = ARENA_ARRAY(a, int, m->moe.n_moe);
        if (!whole.parallel.expert) return -1;
        for (int i = 0; i < m->moe.n_moe; i++) whole.parallel.expert[i] = 1;
        m = &whole;
    }
    out->train = lower(a, d, m, o, 0);
    out->decode = out->train ? lower(a, d, m, o, 1) : NULL;
    return out->train && out->decode ? 0 : -1;
}
