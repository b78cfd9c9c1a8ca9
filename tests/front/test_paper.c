/* test_paper.c - parameter totals of the DeepSpeed-MoE example models.
 *
 * For each model of the paper (examples/gpt.moe, moe128.moe, prmoe.moe, mos.moe) the
 * total of `moec stats` (md_stats_compute, which sums md_params) must equal the
 * usual GPT count of moe-language.md section 6, computed here from the paper's
 * configuration alone: embeddings (vocab + context positions) + 12 d^2 + 13 d per
 * block + the final norm, each MoE layer's MLP replaced by its gate (d E), E experts
 * (8 d^2 + 5 d each) and, for PR-MoE, the residual MLP and its coefficient (2 d + 2).
 * And it must be within 3% of the size the paper gives.
 * usage: test_paper EXAMPLES_DIR
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "front.h"
#include "stats.h"

typedef struct paper_model {
    const char *file, *name;
    double paper;               /* the paper's size */
    int64_t d, layers;
    int e1, n1, e2, n2;         /* experts: e1 in the first n1 MoE layers, e2 in the next n2 */
    int residual;
} paper_model;

static const paper_model models[] = {
    {"gpt.moe", "gpt_350m", 350e6, 1024, 24, 0, 0, 0, 0, 0},
    {"gpt.moe", "gpt_1_3b", 1.3e9, 2048, 24, 0, 0, 0, 0, 0},
    {"gpt.moe", "gpt_6_7b", 6.7e9, 4096, 32, 0, 0, 0, 0, 0},
    {"moe128.moe", "moe_350m_128", 13e9, 1024, 24, 128, 12, 0, 0, 0},
    {"moe128.moe", "moe_1_3b_128", 52e9, 2048, 24, 128, 12, 0, 0, 0},
    {"prmoe.moe", "prmoe_350m", 4e9, 1024, 24, 32, 10, 64, 2, 1},
    {"prmoe.moe", "prmoe_1_3b", 31e9, 2048, 24, 64, 10, 128, 2, 1},
    {"mos.moe", "mos_350m", 3.5e9, 1024, 21, 32, 8, 64, 2, 1},
    {"mos.moe", "mos_1_3b", 27e9, 2048, 21, 64, 8, 128, 2, 1},
};

static int64_t rule(const paper_model *p) {
    const int64_t V = 50257, T = 2048, d = p->d;
    int64_t mlp = 8 * d * d + 5 * d;
    int64_t total = V * d + T * d + p->layers * (12 * d * d + 13 * d) + 2 * d;
    for (int i = 0; i < p->n1 + p->n2; i++) {
        int64_t E = i < p->n1 ? p->e1 : p->e2;
        total += -mlp + d * E + E * mlp;
        if (p->residual) total += mlp + 2 * d + 2;
    }
    return total;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: test_paper EXAMPLES_DIR\n"); return 2; }
    int fails = 0;
    printf("%-14s %16s %16s %10s %8s\n", "model", "ours", "rule", "paper", "vs paper");
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        const paper_model *p = &models[i];
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", argv[1], p->file);
        front *f = front_create();
        const md_model *m = f ? front_load(f, path, p->name) : NULL;
        md_stats s;
        if (!m || md_stats_compute(m, front_arena(f), &s) < 0) {
            printf("FAIL %s: does not load\n", p->name);
            if (f) front_print_diagnostics(f, stdout);
            front_destroy(f);
            fails++;
            continue;
        }
        int64_t want = rule(p);
        double rel = (double)s.params / p->paper - 1.0;
        printf("%-14s %16lld %16lld %9.3gB %+7.2f%%\n", p->name, (long long)s.params,
               (long long)want, p->paper / 1e9, 100 * rel);
        if (s.params != want) { printf("FAIL %s: %lld != rule %lld\n", p->name, (long long)s.params, (long long)want); fails++; }
        if (fabs(rel) > 0.03) { printf("FAIL %s: more than 3%% from the paper\n", p->name); fails++; }
        if (s.expert_params + s.non_expert_params != s.params) {
            printf("FAIL %s: expert + non-expert != total\n", p->name); fails++;
        }
        int64_t sum = s.embed.params + s.head.params;
        for (int l = 0; l < s.n_layers; l++) sum += s.layers[l].params;
        if (sum != s.params) { printf("FAIL %s: layers do not add up\n", p->name); fails++; }
        if (m->moe.n_moe != p->n1 + p->n2) {
            printf("FAIL %s: %d MoE layers, expected %d\n", p->name, m->moe.n_moe, p->n1 + p->n2);
            fails++;
        }
        front_destroy(f);
    }
    if (fails) printf("%d failures\n", fails);
    return fails ? 1 : 0;
}
