/* test_model.c - the md_model the front end fills: defaults, inheritance, selection.
 *
 * Loads the examples and small in-memory files and checks every field that matters,
 * so a default or a merge rule cannot change without a test noticing.
 * usage: test_model EXAMPLES_DIR
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "diag.h"
#include "front.h"
#include "stats.h"

static int fails;
#define CHECK(c) do { if (!(c)) { printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #c); fails++; } } while (0)
#define NEAR(a, b) CHECK(fabs((double)(a) - (double)(b)) <= 1e-12 * fabs((double)(b)) + 1e-15)

static const char *dir;

static const md_model *load(front **f, const char *file, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    *f = front_create();
    const md_model *m = front_load(*f, path, name);
    if (!m) { printf("FAIL: %s %s does not load\n", file, name ? name : ""); front_print_diagnostics(*f, stdout); fails++; }
    return m;
}

static const md_model *text(front **f, const char *src, const char *name) {
    *f = front_create();
    return front_load_text(*f, "mem.moe", src, strlen(src), name);
}

static void tiny(void) {
    front *f;
    const md_model *m = load(&f, "tiny.moe", NULL);
    if (m) {
        CHECK(!strcmp(m->name, "tiny"));
        CHECK(m->vocab == 256 && m->context == 128 && m->layers == 4 && m->hidden == 128);
        CHECK(m->heads == 4 && m->ffn == 512);
        CHECK(m->activation == MD_ACT_GELU && m->norm == MD_NORM_LAYERNORM);
        CHECK(m->position == MD_POS_LEARNED && m->tie_embeddings && m->dtype == MD_DT_FP32);
        NEAR(m->dropout, 0.0); NEAR(m->init_std, 0.02);
        CHECK(m->moe.n_moe == 2 && m->moe.layer[0] == 2 && m->moe.layer[1] == 4);
        CHECK(m->moe.experts[0] == 4 && m->moe.experts[1] == 8);
        CHECK(m->moe.ffn == 512 && m->moe.top_k == 1 && m->moe.residual);
        NEAR(m->moe.capacity_factor, 1.0); NEAR(m->moe.eval_capacity_factor, 1.0);
        CHECK(m->moe.min_capacity == 4 && m->moe.drop_tokens);
        CHECK(m->moe.noisy_gate == MD_NOISE_NONE);
        CHECK(m->moe.random_token_selection && m->moe.second_expert_sampling);
        NEAR(m->moe.aux_loss, 0.01); NEAR(m->moe.z_loss, 0.0);
        CHECK(m->parallel.data == 0 && m->parallel.tensor == 1 && m->parallel.expert_slicing == 1);
        CHECK(m->parallel.expert[0] == 1 && m->parallel.expert[1] == 1);
        CHECK(m->parallel.alltoall == MD_A2A_AUTO && m->parallel.ranks_per_node == 0);
        CHECK(m->train.batch == 8 && m->train.accumulate == 1 && m->train.steps == 600);
        CHECK(m->train.seed == 1234 && m->train.optimizer == MD_OPT_ADAMW);
        NEAR(m->train.lr, 1e-3); NEAR(m->train.min_lr, 1e-4);
        CHECK(m->train.warmup == 50 && m->train.schedule == MD_SCHED_COSINE);
        NEAR(m->train.beta1, 0.9); NEAR(m->train.beta2, 0.95); NEAR(m->train.eps, 1e-8);
        NEAR(m->train.weight_decay, 0.1); NEAR(m->train.grad_clip, 1.0);
        CHECK(m->train.eval_every == 100 && m->train.checkpoint_every == 200);
        CHECK(m->distill.teacher == NULL && m->distill.stop_step == -1);
        NEAR(m->distill.temperature, 1.0); NEAR(m->distill.weight, 1.0);
        CHECK(md_moe_index(m, 2) == 0 && md_moe_index(m, 4) == 1 && md_moe_index(m, 3) == -1);
    }
    front_destroy(f);
}

static void mos(void) {
    front *f;
    const md_model *m = load(&f, "mos.moe", "mos_350m");
    if (m) {
        CHECK(m->layers == 21 && m->hidden == 1024 && m->heads == 16 && m->vocab == 50257);
        CHECK(m->moe.n_moe == 10 && m->moe.layer[0] == 2 && m->moe.layer[9] == 20);
        CHECK(m->moe.experts[7] == 32 && m->moe.experts[8] == 64 && m->moe.residual);
        CHECK(m->parallel.expert[7] == 32 && m->parallel.expert[9] == 64);
        CHECK(m->distill.teacher && !strcmp(m->distill.teacher->name, "prmoe_350m"));
        CHECK(m->distill.teacher && m->distill.teacher->layers == 24);
        CHECK(m->distill.teacher && m->distill.teacher->moe.n_moe == 12);
        CHECK(m->distill.stop_step == 400000);
        NEAR(m->train.lr, 3e-4);                 /* from gpt_350m, two levels up */
    }
    front_destroy(f);
    m = load(&f, "mos.moe", NULL);
    CHECK(m && !strcmp(m->name, "mos_1_3b"));  /* default: the last model of the file */
    front_destroy(f);
}

static void mixtral(void) {
    front *f;
    const md_model *m = load(&f, "mixtral.moe", NULL);
    if (m) {
        CHECK(m->activation == MD_ACT_SWIGLU && m->norm == MD_NORM_RMSNORM);
        CHECK(m->position == MD_POS_ROPE && !m->tie_embeddings && m->dtype == MD_DT_BF16);
        CHECK(m->moe.n_moe == 32 && m->moe.layer[0] == 1 && m->moe.layer[31] == 32);
        CHECK(m->moe.top_k == 2 && m->moe.experts[31] == 8 && m->moe.ffn == 14336);
        CHECK(m->parallel.expert[0] == 8 && m->parallel.expert[31] == 8);
        md_stats s;
        CHECK(md_stats_compute(m, front_arena(f), &s) == 0);
        CHECK(m->heads == 32 && m->kv_heads == 8 && !m->bias);
        /* no biases; attention q [d, d], k and v [d, 1024] (8 of 32 heads), c_proj [d, d];
         * swiglu experts c_fc [d, 2f], c_proj [f, d]; rmsnorm: weights only. Mixtral's published
         * count: 46,702,792,704 */
        int64_t d = 4096, V = 32000, fw = 2 * 14336, fe = 14336, E = 8, kv = 1024;
        int64_t block = 2 * d * d + 2 * d * kv + 2 * d + d * E + E * (d * fw + fe * d);
        CHECK(s.params == 2 * V * d + 32 * block + d);
        CHECK(s.params == INT64_C(46702792704));
        CHECK(s.active_params == s.params - 32 * 6 * (d * fw + fe * d));
    }
    front_destroy(f);
}

static void merges(void) {
    front *f;
    /* nested blocks merge key by key; parents may come later; every/layers replace each other */
    const char *src =
        "model child : parent { moe { top_k = 2 } }\n"
        "model parent { vocab = 256 context = 64 layers = 6 hidden = 64 heads = 2\n"
        "  moe { every = 3 experts = 4 residual = true } train { lr = 1e-3 } }\n"
        "model explicit : parent { moe { layers = [1, 3..5] experts = [2 x 2, 4, 8] } }\n"
        "model glued : parent { moe { experts = [2x1, 4] } parallel { expert = [1, 4x1] } }\n"
        "model dense { vocab = 256; context = 64; layers = 2; hidden = 64; heads = 2; }\n";
    const md_model *m = text(&f, src, "child");
    CHECK(m && m->moe.top_k == 2 && m->moe.residual && m->moe.n_moe == 2 && m->moe.layer[1] == 6);
    CHECK(m && m->moe.experts[1] == 4 && fabs(m->train.lr - 1e-3) < 1e-15);
    front_destroy(f);
    m = text(&f, src, "explicit");
    CHECK(m && m->moe.n_moe == 4 && m->moe.layer[0] == 1 && m->moe.layer[3] == 5);
    CHECK(m && m->moe.experts[1] == 2 && m->moe.experts[3] == 8 && m->moe.residual);
    front_destroy(f);
    m = text(&f, src, "glued");
    CHECK(m && m->moe.experts[0] == 2 && m->moe.experts[1] == 4 && m->parallel.expert[1] == 4);
    front_destroy(f);
    m = text(&f, src, NULL);
    CHECK(m && !strcmp(m->name, "dense") && m->moe.n_moe == 0 && m->ffn == 256);
    FILE *null = fopen("/dev/null", "w");
    CHECK(null && front_dump_ast(f, null) == 0);
    if (null) fclose(null);
    front_destroy(f);
    m = text(&f, "model base { vocab = 256 context = 64 train { steps = 5 } }\n"
                 "model small : base { layers = 2 hidden = 64 heads = 2 }", NULL);
    CHECK(m && m->train.steps == 5 && m->vocab == 256);  /* an abstract base is fine */
    front_destroy(f);
    m = text(&f, src, "nope");
    CHECK(!m && front_error_count(f) == 1);
    front_destroy(f);
}

static void errors(void) {
    front *f;
    CHECK(!text(&f, "model a { vocab = 1 } model b : a { hidden = 2.5 }", NULL));
    CHECK(front_error_count(f) >= 2);
    front_destroy(f);
    CHECK(!text(&f, "", NULL) && front_error_count(f) == 1);
    front_destroy(f);
    f = front_create();
    CHECK(!front_load(f, "/nonexistent/dir/x.moe", NULL) && front_error_count(f) == 1);
    front_destroy(f);
    f = front_create();
    front_allow_imports(f, false);
    const char *imp = "import \"x.moe\" model m { }";
    CHECK(!front_load_text(f, "m.moe", imp, strlen(imp), NULL));
    front_destroy(f);
}

/* Allocation failure injection: every arena size from tiny to enough either loads
 * the model or reports an error; nothing crashes (run under ASan in CI). */
static void out_of_memory(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/mos.moe", dir);
    int ok = 0, failed = 0;
    for (size_t limit = 1024; limit <= (size_t)4 << 20; limit += limit / 8 + 1024) {
        front *f = front_create_limit(limit);
        if (!f) continue;
        const md_model *m = front_load(f, path, "mos_350m");
        if (m) {
            md_stats s;
            ok += md_stats_compute(m, front_arena(f), &s) == 0 && s.params == 3541688340LL;
        } else {
            failed++;
            CHECK(front_error_count(f) > 0);
        }
        front_destroy(f);
    }
    CHECK(ok > 0 && failed > 0);
}

static void words(void) {
    CHECK(diag_edit_distance("expert", "experts", 3) == 1);
    CHECK(diag_edit_distance("kitten", "sitting", 3) == 3);
    CHECK(diag_edit_distance("abc", "xyzabc", 2) == 3);
    const char *w[] = {"vocab", "hidden", "heads", "experts"};
    CHECK(diag_nearest("hiden", w, 4) && !strcmp(diag_nearest("hiden", w, 4), "hidden"));
    CHECK(diag_nearest("qwertyuiop", w, 4) == NULL);
    CHECK(diag_utf8_len((const unsigned char *)"\xc3\xa9", 2) == 2);
    CHECK(diag_utf8_len((const unsigned char *)"\xc0\x80", 2) == 0);
    CHECK(diag_utf8_len((const unsigned char *)"\xed\xa0\x80", 3) == 0);
    CHECK(diag_utf8_len((const unsigned char *)"\xf0\x9f\x98\x80", 4) == 4);
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: test_model EXAMPLES_DIR\n"); return 2; }
    dir = argv[1];
    tiny();
    mos();
    mixtral();
    merges();
    errors();
    out_of_memory();
    words();
    if (fails) printf("%d failures\n", fails);
    else printf("ok\n");
    return fails ? 1 : 0;
}
