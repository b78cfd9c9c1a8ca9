/* test_passes.c - the compiler's passes on hand-built models (no front end):
 * every parameter gets a gradient, the memory plan never overlaps two tensors that
 * are live at once, fusion removes the residual adds, and code generation is
 * deterministic. */
#include "arena.h"
#include "build.h"
#include "codegen.h"
#include "passes.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define CHECK(c, ...) do { if (!(c)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

static md_model tiny(arena *a, int n_moe, int k, int residual, md_activation act, md_norm norm, md_position pos) {
    md_model m = {0};
    m.name = "t"; m.vocab = 64; m.context = 16; m.layers = 2; m.hidden = 32; m.heads = 4; m.ffn = 64;
    m.activation = act; m.norm = norm; m.position = pos; m.tie_embeddings = pos == MD_POS_LEARNED;
    m.init_std = 0.02;
    m.moe.n_moe = n_moe;
    m.moe.layer = ARENA_ARRAY(a, int, 2); m.moe.experts = ARENA_ARRAY(a, int, 2);
    m.parallel.expert = ARENA_ARRAY(a, int, 2);
    for (int i = 0; i < n_moe; i++) { m.moe.layer[i] = 2 - n_moe + 1 + i; m.moe.experts[i] = 4 + 4 * i; m.parallel.expert[i] = 1; }
    m.moe.ffn = 48; m.moe.top_k = k; m.moe.residual = residual; m.moe.capacity_factor = 1.0;
    m.moe.eval_capacity_factor = 1.0; m.moe.min_capacity = 4; m.moe.drop_tokens = true;
    m.moe.aux_loss = 0.01;
    m.train.batch = 4; m.train.accumulate = 1; m.train.steps = 10; m.train.lr = 1e-3; m.train.warmup = 2;
    m.train.beta1 = 0.9; m.train.beta2 = 0.95; m.train.eps = 1e-8; m.train.grad_clip = 1.0;
    return m;
}

static ir_graph *lower(arena *a, const md_model *m, int decode) {
    ir_graph *g = ir_build_forward(a, m, m->train.batch, m->context, decode);
    if (!g || pass_fuse(g) || (!decode && (pass_autodiff(g) || pass_optimizer(g))) || pass_comm(g) || pass_plan(g)) return NULL;
    return g;
}

static void check_model(const char *what, const md_model *m, arena *a) {
    ir_graph *g = lower(a, m, 0), *d = lower(a, m, 1);
    CHECK(g && d, "%s: lowering failed", what);
    if (!g || !d) return;
    /* every parameter's gradient is produced */
    for (int i = 0; i < g->n_params; i++) {
        int t = g->param_tensor[i], gt = g->t[t].grad, found = 0;
        for (int n = 0; gt >= 0 && n < g->nn && !found; n++)
            for (int j = 0; j < g->n[n].n_out; j++) found |= !g->n[n].dead && g->n[n].out[j] == gt;
        CHECK(found, "%s: no gradient for %s", what, g->params[i].name);
    }
    /* no residual ADD survives fusion */
    for (int n = 0; n < g->nn; n++)
        CHECK(g->n[n].op != IR_ADD || g->n[n].dead, "%s: unfused add %s", what, g->n[n].name);
    /* the plan: live-overlapping tensors never share memory */
    for (int i = 0; i < g->nt; i++) {
        const ir_tensor *x = &g->t[i];
        if (x->kind != IR_T_ACT || x->def < 0) continue;
        CHECK(x->offset + ir_tensor_numel_max(g, x) <= g->arena_floats, "%s: %s outside the arena", what, x->name);
        for (int j = i + 1; j < g->nt; j++) {
            const ir_tensor *y = &g->t[j];
            if (y->kind != IR_T_ACT || y->def < 0 || x->last < y->def || y->last < x->def) continue;
            int disjoint = x->offset + ir_tensor_numel_max(g, x) <= y->offset ||
                           y->offset + ir_tensor_numel_max(g, y) <= x->offset;
            CHECK(disjoint, "%s: %s and %s overlap while both live", what, x->name, y->name);
        }
    }
    /* deterministic code */
    char *c1 = cg_cpu_program(g, d, "t.moe"), *c2 = cg_cpu_program(g, d, "t.moe");
    CHECK(c1 && c2 && !strcmp(c1, c2), "%s: code generation is not deterministic", what);
    CHECK(c1 && !strstr(c1, "#error"), "%s: an op has no CPU code", what);
    free(c1); free(c2);
}

int main(void) {
    arena *a = arena_create(0);
    md_model m;
    m = tiny(a, 0, 1, 0, MD_ACT_GELU, MD_NORM_LAYERNORM, MD_POS_LEARNED); check_model("dense", &m, a);
    m = tiny(a, 1, 1, 0, MD_ACT_GELU, MD_NORM_LAYERNORM, MD_POS_LEARNED); check_model("top1", &m, a);
    m = tiny(a, 2, 2, 1, MD_ACT_RELU, MD_NORM_LAYERNORM, MD_POS_LEARNED); check_model("top2 residual pyramid", &m, a);
    m = tiny(a, 1, 2, 0, MD_ACT_SWIGLU, MD_NORM_RMSNORM, MD_POS_ROPE); check_model("modern", &m, a);
    m = tiny(a, 1, 1, 0, MD_ACT_GELU, MD_NORM_LAYERNORM, MD_POS_LEARNED);
    m.moe.noisy_gate = MD_NOISE_JITTER; check_model("jitter", &m, a);
    arena_destroy(a);
    printf("%d failed\n", failures);
    return failures != 0;
}
