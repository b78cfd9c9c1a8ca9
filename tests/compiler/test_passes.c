/* test_passes.c - the compiler's pipeline on hand-built models (no front end):
 *   - every parameter gets a gradient, fusion removes the residual adds, the memory plan
 *     never overlaps two tensors that are live at once and respects the alignment;
 *   - the lowering and the CPU renderer are deterministic, every op has a rule, and no step
 *     of the generated C reads device memory on the host;
 *   - ir_verify catches a graph that breaks the op table, naming the pass and the node;
 *   - train.recompute leaves no block's backward reading its forward's activations;
 *   - settings the target cannot honour are errors or warnings with the key's location. */
#include "arena.h"
#include "diag.h"
#include "pipeline.h"
#include "target.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define CHECK(c, ...) do { if (!(c)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

static md_model tiny(arena *a, int n_moe, int k, int residual, md_activation act, md_norm norm, md_position pos) {
    md_model m = {0};
    m.name = "t"; m.vocab = 64; m.context = 16; m.layers = 2; m.hidden = 32; m.heads = 4; m.ffn = 64;
    m.loc = (md_loc){"t.moe", 1, 1};
    m.activation = act; m.norm = norm; m.position = pos; m.tie_embeddings = pos == MD_POS_LEARNED;
    m.init_std = 0.02;
    m.moe.n_moe = n_moe;
    m.moe.layer = ARENA_ARRAY(a, int, 2); m.moe.experts = ARENA_ARRAY(a, int, 2);
    m.parallel.expert = ARENA_ARRAY(a, int, 2);
    m.parallel.tensor = m.parallel.expert_slicing = 1;
    for (int i = 0; i < n_moe; i++) { m.moe.layer[i] = 2 - n_moe + 1 + i; m.moe.experts[i] = 4 + 4 * i; m.parallel.expert[i] = 1; }
    m.moe.ffn = 48; m.moe.top_k = k; m.moe.residual = residual; m.moe.capacity_factor = 1.0;
    m.moe.eval_capacity_factor = 1.0; m.moe.min_capacity = 4; m.moe.drop_tokens = true;
    m.moe.aux_loss = 0.01;
    m.train.batch = 4; m.train.accumulate = 1; m.train.steps = 10; m.train.lr = 1e-3; m.train.warmup = 2;
    m.train.beta1 = 0.9; m.train.beta2 = 0.95; m.train.eps = 1e-8; m.train.grad_clip = 1.0;
    return m;
}

static const cg_target *cpu(void) { return cg_target_find("cpu"); }

/* the diagnostics as printed */
static char *printed(diag_ctx *d) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    diag_print(d, f);
    fclose(f);
    return buf;
}

static int run(arena *a, diag_ctx *d, const md_model *m, pl_result *r, void (*hook)(ir_graph *, const char *, void *)) {
    pl_options o = {.caps = &cpu()->caps, .opt_level = 3, .after_pass = hook};
    return pl_run(a, d, m, &o, r);
}

/* the bodies of the generated step functions may name only these host values of the context */
static void check_no_host_reads(const char *what, const char *c) {
    static const char *const ok[] = {"c->B", "c->T", "c->pos", "c->mode", "c->rng", "c->loss_scale", "c->lr",
                                     "c->opt_step", "c->comm", "c->reduce", "c->grad_scale"};
    int steps = 0;
    for (const char *p = strstr(c, "(moe_ctx *c) {\n"); p; p = strstr(p + 1, "(moe_ctx *c) {\n")) {
        const char *end = strstr(p, "\n}\n");
        if (!end) break;
        steps++;
        for (const char *q = p + 15; q < end; q++) {
            if (!strncmp(q, "/*", 2)) {         /* comments say anything */
                const char *e = strstr(q + 2, "*/");
                if (e) q = e + 1;
                continue;
            }
            CHECK(*q != '[' && (*q != '*' || (q[-1] == ' ' && q[1] == ' ')),
                  "%s: a step body indexes or dereferences memory: %.60s", what, q);
            if (strncmp(q, "c->", 3)) continue;
            int known = 0;
            for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
                size_t n = strlen(ok[i]);
                known |= !strncmp(q, ok[i], n) && !(q[n] == '_' || (q[n] >= 'a' && q[n] <= 'z'));
            }
            CHECK(known, "%s: a step reads %.20s", what, q);
        }
    }
    CHECK(steps > 20, "%s: only %d step functions found", what, steps);
}

/* `warnings`: those the model is meant to draw (an expert-parallel degree in one process) */
static void check_model_warned(const char *what, const md_model *m, arena *a, int warnings) {
    diag_ctx *d = diag_create(0);
    pl_result r;
    CHECK(run(a, d, m, &r, NULL) == 0 && diag_count(d) == 0 && diag_warning_count(d) == warnings,
          "%s: pipeline failed", what);
    diag_destroy(d);
    ir_graph *g = r.train;
    if (!g || !r.decode) return;
    /* every parameter's gradient is produced */
    for (int i = 0; i < g->params.n; i++) {
        int t = g->params.tensor[i], gt = g->t[t].grad, found = 0;
        for (int n = 0; gt >= 0 && n < g->nn && !found; n++)
            for (int j = 0; j < g->n[n].n_out; j++) found |= !g->n[n].dead && g->n[n].out[j] == gt;
        CHECK(found, "%s: no gradient for %s", what, g->params.p[i].name);
    }
    /* no residual ADD survives fusion */
    for (int n = 0; n < g->nn; n++)
        CHECK(g->n[n].op != IR_ADD || g->n[n].dead, "%s: unfused add %s", what, g->n[n].name);
    /* the plan: aligned, inside its buffer, and live-overlapping tensors never share bytes */
    const ir_graph *gs[2] = {r.train, r.decode};
    for (int k = 0; k < 2; k++) {
        const ir_graph *h = gs[k];
        for (int i = 0; i < h->nt; i++) {
            const ir_tensor *x = &h->t[i];
            if (x->def < 0) continue;
            CHECK(x->offset % h->align == 0, "%s: %s at %lld is not %lld-aligned", what, x->name, (long long)x->offset,
                  (long long)h->align);
            CHECK(x->buf == MOE_BUF_PARAM || x->buf == MOE_BUF_GRAD ||
                  x->offset + ir_tensor_bytes_max(h, x) <= h->buf_bytes[x->buf],
                  "%s: %s outside its buffer", what, x->name);
            if (x->buf != MOE_BUF_ACT) continue;
            for (int j = i + 1; j < h->nt; j++) {
                const ir_tensor *y = &h->t[j];
                if (y->buf != MOE_BUF_ACT || y->def < 0 || x->last < y->def || y->last < x->def) continue;
                int disjoint = x->offset + ir_tensor_bytes_max(h, x) <= y->offset ||
                               y->offset + ir_tensor_bytes_max(h, y) <= x->offset;
                CHECK(disjoint, "%s: %s and %s overlap while both live", what, x->name, y->name);
            }
        }
    }
    CHECK(r.train->t[r.train->stats].offset == r.decode->t[r.decode->stats].offset &&
          r.train->buf_bytes[MOE_BUF_IO] == r.decode->buf_bytes[MOE_BUF_IO],
          "%s: the two programs disagree on the IO buffer", what);
    /* lowering: every live node becomes a step; calls only where the op has work */
    lw_program *lt = lw_lower(r.train), *ld = lw_lower(r.decode);
    CHECK(lt && ld, "%s: lowering failed", what);
    if (!lt || !ld) return;
    for (int i = 0; i < lt->nsteps; i++)
        CHECK(lt->steps[i].ncalls > 0 || lt->steps[i].note, "%s: step %s has no kernel", what, lt->steps[i].name);
    /* deterministic code without host reads of device memory */
    cg_unit u = {m, "t.moe", lt, ld, a, 0};
    char *c1 = cpu()->render(&u), *c2 = cpu()->render(&u);
    CHECK(c1 && c2 && !strcmp(c1, c2), "%s: code generation is not deterministic", what);
    if (c1) check_no_host_reads(what, c1);
    free(c1);
    free(c2);
}

static void check_model(const char *what, const md_model *m, arena *a) { check_model_warned(what, m, a, 0); }

/* ---- train.recompute: a block's backward reads none of its forward's activations but the
 * gate's and the count exchange's, the LM head is fused with the loss, and the arena shrinks ---- */
static void check_recompute(const char *what, md_model m, arena *a) {
    int64_t bytes[2] = {0, 0};
    for (int rc = 0; rc < 2; rc++) {
        m.train.recompute = rc;
        check_model(what, &m, a);
        diag_ctx *d = diag_create(0);
        pl_result r;
        int ok = run(a, d, &m, &r, NULL) == 0;
        diag_destroy(d);
        if (!ok) return;
        const ir_graph *g = r.train;
        bytes[rc] = g->buf_bytes[MOE_BUF_ACT];
        int *fwd_block = calloc((size_t)g->nt, sizeof(int)), clones = 0, stale = 0, heads = 0;
        for (int i = 0; i < g->nn; i++) {
            const ir_node *n = &g->n[i];
            int keep = n->op == IR_GATE || n->op == IR_A2A_COUNTS;
            if (n->dead || n->phase != IR_PHASE_FWD || n->block < 0 || keep) continue;
            for (int j = 0; j < n->n_out; j++)
                if (n->out[j] >= 0 && g->t[n->out[j]].kind == IR_T_ACT) fwd_block[n->out[j]] = n->block + 1;
        }
        for (int i = 0; i < g->nn; i++) {
            const ir_node *n = &g->n[i];
            if (n->dead || n->phase != IR_PHASE_BWD) continue;
            clones += strstr(n->name, ".recompute") != NULL;
            heads += n->op == IR_HEAD_XENT_BWD;
            for (int j = 0; j < n->n_in; j++)
                stale += n->in[j] >= 0 && n->block >= 0 && fwd_block[n->in[j]] == n->block + 1;
        }
        free(fwd_block);
        CHECK(rc ? clones > 0 && stale == 0 : clones == 0 && stale > 0,
              "%s, recompute %d: %d clones, %d backward reads of the block's forward", what, rc, clones, stale);
        /* the head is fused with the loss with recompute only: no [S, V] logits then */
        CHECK(heads == rc && (g->logits < 0) == rc && (g->head_x >= 0) == rc, "%s, recompute %d: %d fused heads", what,
              rc, heads);
    }
    CHECK(bytes[1] < bytes[0], "%s: recompute plans %lld bytes, without %lld", what, (long long)bytes[1],
          (long long)bytes[0]);
}

/* ---- ir_verify: a pass that breaks the graph is caught and named ---- */
static void drop_matmul_weight(ir_graph *g, const char *pass, void *ctx) {
    (void)ctx;
    if (strcmp(pass, "fuse")) return;
    for (int i = 0; i < g->nn; i++)
        if (g->n[i].op == IR_MATMUL && !g->n[i].dead) { g->n[i].in[1] = -1; return; }
}
static void wrong_type(ir_graph *g, const char *pass, void *ctx) {
    (void)ctx;
    if (strcmp(pass, "autodiff")) return;
    for (int i = 0; i < g->nn; i++)     /* the layernorm's weight slot gets an activation */
        if (g->n[i].op == IR_LAYERNORM) { g->n[i].in[1] = g->n[i].in[0]; return; }
}
static void read_before_write(ir_graph *g, const char *pass, void *ctx) {
    (void)ctx;
    if (strcmp(pass, "build")) return;
    g->n[0].dead = 1;     /* the embedding: its output is read but never written */
}
static void bad_acc(ir_graph *g, const char *pass, void *ctx) {
    (void)ctx;
    if (strcmp(pass, "plan")) return;
    for (int i = 0; i < g->nn; i++)
        if (g->n[i].op == IR_EMBED) { g->n[i].acc[0] = 1; return; }
}

static void check_verify(arena *a) {
    static const struct {
        void (*hook)(ir_graph *, const char *, void *);
        const char *want;
    } cases[] = {
        {drop_matmul_weight, "t.moe:1:1: error: internal error: the IR is broken after fuse: node %2 MATMUL "
                             "'h.0.attn.c_attn': input 1 'W' is required but absent"},
        {wrong_type, "error: internal error: the IR is broken after autodiff: node %1 LAYERNORM 'h.0.ln_1': input 1 'w' "
                     "must be of type 'p', but 'embed.out' is a f32 activation tensor in act"},
        {read_before_write, "after build: node %1 LAYERNORM 'h.0.ln_1': input 0 'x' reads 'embed.out' before any live "
                            "node writes it"},
        {bad_acc, "after plan: node %0 EMBED 'embed': output 0 'x' may not accumulate (ops.def has no '+')"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        md_model m = tiny(a, 1, 1, 0, MD_ACT_GELU, MD_NORM_LAYERNORM, MD_POS_LEARNED);
        diag_ctx *d = diag_create(0);
        pl_result r;
        int rc = run(a, d, &m, &r, cases[i].hook);
        char *text = printed(d);
        CHECK(rc != 0 && diag_count(d) > 0, "verify case %zu: a broken graph was accepted", i);
        CHECK(text && strstr(text, cases[i].want), "verify case %zu: expected\n  %s\ngot\n%s", i, cases[i].want,
              text ? text : "(nothing)");
        free(text);
        diag_destroy(d);
    }
}

/* ---- settings a target cannot honour ---- */
static void check_settings(arena *a) {
    md_model m = tiny(a, 1, 1, 0, MD_ACT_GELU, MD_NORM_LAYERNORM, MD_POS_LEARNED);
    m.parallel.tensor = 2;
    m.where.tensor = (md_loc){"t.moe", 7, 16};
    m.parallel.expert_slicing = 4;
    diag_ctx *d = diag_create(0);
    pl_result r;
    CHECK(run(a, d, &m, &r, NULL) != 0 && diag_count(d) == 1, "expert slicing over other groups than the tensor "
          "slicing's must be refused, tensor slicing not");
    char *text = printed(d);
    CHECK(text && strstr(text, "t.moe:1:1: error: parallel.expert_slicing = 4 and parallel.tensor = 2: expert slicing "
                               "splits the experts over the tensor groups"),
          "expert slicing message (at the model when the key has no location): %s", text ? text : "");
    free(text);
    diag_destroy(d);
    m.parallel.expert_slicing = 1;      /* the cuda target has no tensor slicing */
    d = diag_create(0);
    pl_options cuda = {.caps = &cg_target_find("cuda")->caps, .opt_level = 3};
    CHECK(pl_run(a, d, &m, &cuda, &r) != 0 && diag_count(d) == 1, "the cuda target must refuse tensor slicing");
    text = printed(d);
    CHECK(text && strstr(text, "t.moe:7:16: error: parallel.tensor = 2: the cuda target has no tensor slicing yet"),
          "tensor slicing message: %s", text ? text : "");
    free(text);
    diag_destroy(d);

    m = tiny(a, 1, 1, 0, MD_ACT_GELU, MD_NORM_LAYERNORM, MD_POS_LEARNED);
    m.dtype = MD_DT_BF16;
    m.where.dtype = (md_loc){"t.moe", 3, 5};
    m.dropout = 0.1;
    d = diag_create(0);
    CHECK(run(a, d, &m, &r, NULL) == 0 && diag_count(d) == 0 && diag_warning_count(d) == 2,
          "bf16 and dropout build, with two warnings");
    text = printed(d);
    CHECK(text && strstr(text, "t.moe:3:5: warning: dtype = bf16: the cpu target computes in fp32 only, so this model "
                               "will compute in fp32"), "dtype warning: %s", text ? text : "");
    CHECK(text && strstr(text, "warning: dropout = 0.1 is not applied"), "dropout warning: %s", text ? text : "");
    free(text);
    diag_destroy(d);
}

/* dtype bf16/fp16 on the cuda target: every GEMM reads half x and W (and dyh in the backward,
 * beside an f32 dy); each weight is cast once; every cast feeds a GEMM; the decode program
 * and the cpu target's (or --target all's) have none */
static int gemm_op(ir_op op) { return op == IR_MATMUL || op == IR_EXPERT_MM || op == IR_MATMUL_BWD || op == IR_EXPERT_MM_BWD; }
static int count_casts(const ir_graph *g) {
    int n = 0;
    for (int i = 0; i < g->nn; i++) n += !g->n[i].dead && g->n[i].op == IR_CAST;
    return n;
}
static void check_precision_of(const char *what, md_model m, md_dtype dt, int recompute, arena *a) {
    m.dtype = dt;
    m.train.recompute = recompute;
    moe_dtype h = dt == MD_DT_BF16 ? MOE_BF16 : MOE_F16;
    diag_ctx *d = diag_create(0);
    pl_options cuda = {.caps = &cg_target_find("cuda")->caps, .opt_level = 3};
    pl_result r;
    CHECK(pl_run(a, d, &m, &cuda, &r) == 0 && diag_count(d) == 0 && diag_warning_count(d) == 0, "%s: pipeline", what);
    diag_destroy(d);
    if (!r.train) return;
    const ir_graph *g = r.train;
    CHECK(g->half == h && r.decode->half == MOE_F32 && count_casts(r.decode) == 0, "%s: the decode program casts", what);
    int *reads = calloc((size_t)g->nt, sizeof(int)), *casts_of = calloc((size_t)g->nt, sizeof(int)), gemms = 0;
    for (int i = 0; i < g->nn; i++) {
        const ir_node *n = &g->n[i];
        if (n->dead) continue;
        if (n->op == IR_CAST) {
            CHECK(g->t[n->out[0]].dtype == h && g->t[n->in[0]].dtype == MOE_F32, "%s: %s", what, n->name);
            if (g->t[n->in[0]].kind == IR_T_PARAM) casts_of[n->in[0]]++;
        }
        if (!gemm_op(n->op)) continue;
        gemms++;
        int x = n->in[ir_slot_index(n->op, 0, "x")], w = n->in[ir_slot_index(n->op, 0, "W")];
        CHECK(g->t[x].dtype == h && g->t[w].dtype == h && g->t[w].kind == IR_T_ACT, "%s: %s reads f32 operands", what,
              n->name);
        reads[x]++, reads[w]++;
        if (n->op == IR_MATMUL_BWD || n->op == IR_EXPERT_MM_BWD) {
            int dy = n->in[ir_slot_index(n->op, 0, "dy")], dyh = n->in[ir_slot_index(n->op, 0, "dyh")];
            CHECK(dyh >= 0 && g->t[dyh].dtype == h && g->t[dy].dtype == MOE_F32, "%s: %s: dy and dyh", what, n->name);
            if (dyh >= 0) reads[dyh]++;
        }
    }
    for (int i = 0; i < g->nn; i++)
        if (!g->n[i].dead && g->n[i].op == IR_CAST)
            CHECK(reads[g->n[i].out[0]] > 0, "%s: %s feeds no GEMM", what, g->n[i].name);
    for (int t = 0; t < g->nt; t++)
        CHECK(casts_of[t] <= 1, "%s: parameter %s cast %d times", what, g->t[t].name, casts_of[t]);
    CHECK(gemms > 10 && count_casts(g) > 10, "%s: %d GEMMs, %d casts", what, gemms, count_casts(g));
    free(reads), free(casts_of);
}
static void check_precision(arena *a) {
    md_model m = tiny(a, 2, 2, 1, MD_ACT_RELU, MD_NORM_LAYERNORM, MD_POS_LEARNED);
    check_precision_of("bf16 top2 residual pyramid", m, MD_DT_BF16, 0, a);
    check_precision_of("fp16 top2 residual pyramid, recompute", m, MD_DT_FP16, 1, a);
    check_precision_of("bf16 modern", tiny(a, 1, 2, 0, MD_ACT_SWIGLU, MD_NORM_RMSNORM, MD_POS_ROPE), MD_DT_BF16, 0, a);
    /* --target all: the cpu program (its pipeline speaks first) rules both; the warning says so */
    m.dtype = MD_DT_BF16;
    ir_caps both = cpu()->caps;
    both.dtypes &= cg_target_find("cuda")->caps.dtypes;
    pl_options o = {.caps = &both, .opt_level = 3, .alike = "cuda"};
    diag_ctx *d = diag_create(0);
    pl_result r;
    CHECK(pl_run(a, d, &m, &o, &r) == 0 && diag_warning_count(d) == 1 && count_casts(r.train) == 0, "all: bf16");
    char *text = printed(d);
    CHECK(text && strstr(text, "--target all plans both programs alike, so the cuda program computes in fp32 too; build "
                               "--target cuda for bf16"), "all: the hint: %s", text ? text : "");
    free(text);
    diag_destroy(d);
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
    m = tiny(a, 1, 1, 0, MD_ACT_GELU, MD_NORM_LAYERNORM, MD_POS_LEARNED);
    m.parallel.expert[0] = 2; check_model_warned("expert-parallel", &m, a, 0);
    check_recompute("recompute dense", tiny(a, 0, 1, 0, MD_ACT_GELU, MD_NORM_LAYERNORM, MD_POS_LEARNED), a);
    check_recompute("recompute top2 residual", tiny(a, 2, 2, 1, MD_ACT_RELU, MD_NORM_LAYERNORM, MD_POS_LEARNED), a);
    check_recompute("recompute modern", tiny(a, 1, 2, 0, MD_ACT_SWIGLU, MD_NORM_RMSNORM, MD_POS_ROPE), a);
    check_verify(a);
    check_settings(a);
    check_precision(a);
    arena_destroy(a);
    printf("%d failed\n", failures);
    return failures != 0;
}
