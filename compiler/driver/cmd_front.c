/* cmd_front.c - `moec check` and `moec stats`: the front end's command lines.
 *
 * check FILE [--model NAME] [--dump-ast]: parse and validate, silent on success.
 * stats FILE [--model NAME] [--json]: parameters, FLOPs and memory per rank; the
 * activations come from the memory planner of the compiler proper, run from here so that
 * the front end does not depend on it. FILE "-" is standard input.
 * Diagnostics go to stderr; exit status 0 = fine, 1 = errors in the input,
 * 2 = a bad command line (cli.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "arena.h"
#include "cli.h"
#include "commands.h"
#include "diag.h"
#include "front.h"
#include "pipeline.h"
#include "stats.h"
#include "target.h"

typedef struct opts {
    const char *file, *model;
    int json, dump_ast, help;
} opts;

static void check_usage(FILE *out) {
    fputs("usage: moec check FILE [--model NAME] [--dump-ast]\n"
          "\n"
          "Parses FILE (- for standard input) and everything it imports and validates\n"
          "every model; prints nothing and exits 0 when all is well, else lists every\n"
          "error on stderr and exits 1 (2: a bad command line).\n"
          "  --model NAME   the model to select (default: the last model of FILE);\n"
          "                 it must exist\n"
          "  --dump-ast     print the syntax tree of every file (for tests and debugging)\n",
          out);
}

static void stats_usage(FILE *out) {
    fputs("usage: moec stats FILE [--model NAME] [--json]\n"
          "\n"
          "Per layer and in total: parameters (total, expert, non-expert, active per\n"
          "token), forward FLOPs per token and memory per rank for weights, gradients\n"
          "and AdamW state under the file's parallel layout; the activations of one\n"
          "training step as moec build plans them. FILE - is standard input.\n"
          "  --model NAME   the model (default: the last model of FILE)\n"
          "  --json         one JSON object instead of the table\n",
          out);
}

int moec_dump_ast(const char *file, const char *model, FILE *out) {
    front *f = front_create();
    if (!f) { fprintf(stderr, "moec: out of memory\n"); return CLI_FAILED; }
    const md_model *m = cli_load(f, file, model);
    if (out) front_dump_ast(f, out);
    front_print_diagnostics(f, stderr);
    front_destroy(f);
    return m ? CLI_OK : CLI_FAILED;
}

int moec_cmd_check(int argc, char **argv) {
    opts o = {0};
    const cli_opt table[] = {
        {"--model", "-m", &o.model, NULL, 0},
        {"--dump-ast", NULL, NULL, &o.dump_ast, 0},
    };
    int rc = cli_parse("check", argc, argv, table, 2, &o.file, &o.help, check_usage);
    if (rc) return rc;
    if (o.help) { check_usage(stdout); return CLI_OK; }
    return moec_dump_ast(o.file, o.model, o.dump_ast ? stdout : NULL);
}

/* The activation arena of one training step, from the memory planner: what `moec build`
 * plans for the cpu target (fp32, one process), run quietly (its warnings are build's
 * business). The planner's time grows with the square of the graph's tensors (about 50 per
 * layer), and its sizes are int64 products of the step's shape: models with more layers,
 * or with a tensor beyond STATS_PLAN_MAX_TENSOR bytes, are not planned here (see why_not). */
enum { STATS_PLAN_MAX_LAYERS = 128 };
#define STATS_PLAN_MAX_TENSOR 281474976710656.0     /* 2^48 bytes: 256 TiB */

static void plan_activations(front *f, const md_model *m, md_act *act) {
    if (m->layers > STATS_PLAN_MAX_LAYERS) {
        act->why_not = "more than 128 layers (the planner is slow on them: moec build --emit schedule plans it)";
        return;
    }
    /* the largest tensor of a step, bounded from above: rows of S*k tokens (k >= 1) of at
     * most 8 bytes times the widest row: vocab, 3 hidden, 2 ffn, or 4E + hidden + 3 (the gate state 2E + hidden, the
     * counts 4E + 3; the gate scratch, one row of 2E + 3S, is smaller than S such rows) */
    double S = (double)m->train.batch * (double)m->context, E = 1, k = m->moe.top_k > 1 ? m->moe.top_k : 1;
    for (int i = 0; i < m->moe.n_moe; i++)
        if (m->moe.experts[i] > E) E = m->moe.experts[i];
    double w = (double)m->vocab;
    if (3.0 * m->hidden > w) w = 3.0 * m->hidden;
    if (2.0 * m->ffn > w) w = 2.0 * m->ffn;
    if (2.0 * m->moe.ffn > w) w = 2.0 * m->moe.ffn;
    if (4 * E + m->hidden + 3 > w) w = 4 * E + m->hidden + 3;
    if (S * k * w * 8 > STATS_PLAN_MAX_TENSOR) {
        act->why_not = "a tensor of one training step would be larger than 256 TiB";
        return;
    }
    diag_ctx *quiet = diag_create(0);
    if (!quiet) { act->why_not = "out of memory"; return; }
    arena *a = front_arena(f);
    const cg_target *cpu = cg_target_find("cpu");
    pl_options po = {.caps = &cpu->caps, .opt_level = 3};
    pl_result pr = {0};
    if (pl_run(a, quiet, m, &po, &pr) == 0) {
        act->bytes = pr.train->buf_bytes[MOE_BUF_ACT];
    } else {
        const char *why = diag_first_error(quiet);
        act->why_not = arena_printf(a, "moec build refuses this model: %s", why ? why : "an error");
        if (!act->why_not) act->why_not = "moec build refuses this model";
    }
    diag_destroy(quiet);
}

int moec_cmd_stats(int argc, char **argv) {
    opts o = {0};
    const cli_opt table[] = {
        {"--model", "-m", &o.model, NULL, 0},
        {"--json", NULL, NULL, &o.json, 0},
    };
    int rc = cli_parse("stats", argc, argv, table, 2, &o.file, &o.help, stats_usage);
    if (rc) return rc;
    if (o.help) { stats_usage(stdout); return CLI_OK; }
    front *f = front_create();
    if (!f) { fprintf(stderr, "moec: out of memory\n"); return CLI_FAILED; }
    const md_model *m = cli_load(f, o.file, o.model);
    rc = CLI_FAILED;
    if (!m) {
        front_print_diagnostics(f, stderr);
    } else {
        md_stats s;
        if (md_stats_compute(m, front_arena(f), &s) < 0) {
            fprintf(stderr, "moec: out of memory\n");
        } else {
            plan_activations(f, m, &s.act);
            if (o.json) {
                rc = md_stats_print_json(stdout, m, &s) < 0 ? CLI_FAILED : CLI_OK;
                if (rc) fprintf(stderr, "moec stats: could not write JSON\n");
            } else {
                md_stats_print(stdout, m, &s);
                rc = CLI_OK;
            }
            if (!rc && (fflush(stdout) || ferror(stdout))) {
                fprintf(stderr, "moec stats: cannot write the output: %s\n", strerror(errno));
                rc = CLI_FAILED;
            }
        }
    }
    front_destroy(f);
    return rc;
}
