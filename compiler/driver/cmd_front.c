/* cmd_front.c - `moec check` and `moec stats`: the front end's command lines.
 *
 * check FILE [--model NAME] [--dump-ast]: parse and validate, silent on success.
 * stats FILE [--model NAME] [--json]: parameters, FLOPs and memory per rank.
 * Diagnostics go to stderr; exit status 0 = fine, 1 = errors in the input,
 * 2 = a bad command line.
 */
#include <stdio.h>
#include <string.h>
#include "commands.h"
#include "front.h"
#include "stats.h"

typedef struct opts {
    const char *file, *model;
    int json, dump_ast, help;
} opts;

/* Returns 0, or 2 after printing what is wrong. */
static int parse_args(int argc, char **argv, opts *o, int allow_json, int allow_dump,
                      void (*usage)(FILE *)) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { o->help = 1; return 0; }
        if (!strcmp(a, "--model") || !strcmp(a, "-m")) {
            if (i + 1 >= argc) { fprintf(stderr, "moec: %s needs a model name\n", a); return 2; }
            o->model = argv[++i];
        } else if (!strncmp(a, "--model=", 8)) {
            o->model = a + 8;
        } else if (allow_json && !strcmp(a, "--json")) {
            o->json = 1;
        } else if (allow_dump && !strcmp(a, "--dump-ast")) {
            o->dump_ast = 1;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "moec: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        } else if (o->file) {
            fprintf(stderr, "moec: one file only ('%s' and '%s')\n", o->file, a);
            return 2;
        } else {
            o->file = a;
        }
    }
    if (!o->file) { usage(stderr); return 2; }
    return 0;
}

static void check_usage(FILE *out) {
    fputs("usage: moec check FILE [--model NAME] [--dump-ast]\n"
          "\n"
          "Parses FILE and everything it imports and validates every model; prints\n"
          "nothing and exits 0 when all is well, else lists every error on stderr and\n"
          "exits 1.\n"
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
          "and AdamW state under the file's parallel layout.\n"
          "  --model NAME   the model (default: the last model of FILE)\n"
          "  --json         one JSON object instead of the table\n",
          out);
}

int moec_cmd_check(int argc, char **argv) {
    opts o = {0};
    int rc = parse_args(argc, argv, &o, 0, 1, check_usage);
    if (rc) return rc;
    if (o.help) { check_usage(stdout); return 0; }
    front *f = front_create();
    if (!f) { fprintf(stderr, "moec: out of memory\n"); return 1; }
    const md_model *m = front_load(f, o.file, o.model);
    if (o.dump_ast) front_dump_ast(f, stdout);
    front_print_diagnostics(f, stderr);
    rc = m ? 0 : 1;
    front_destroy(f);
    return rc;
}

int moec_cmd_stats(int argc, char **argv) {
    opts o = {0};
    int rc = parse_args(argc, argv, &o, 1, 0, stats_usage);
    if (rc) return rc;
    if (o.help) { stats_usage(stdout); return 0; }
    front *f = front_create();
    if (!f) { fprintf(stderr, "moec: out of memory\n"); return 1; }
    const md_model *m = front_load(f, o.file, o.model);
    rc = 1;
    if (!m) {
        front_print_diagnostics(f, stderr);
    } else {
        md_stats s;
        if (md_stats_compute(m, front_arena(f), &s) < 0) {
            fprintf(stderr, "moec: out of memory\n");
        } else if (o.json) {
            rc = md_stats_print_json(stdout, m, &s) < 0 ? 1 : 0;
            if (rc) fprintf(stderr, "moec: could not write JSON\n");
        } else {
            md_stats_print(stdout, m, &s);
            rc = 0;
        }
    }
    front_destroy(f);
    return rc;
}
