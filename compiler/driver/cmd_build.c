/* cmd_build.c - `moec build` and `moec tune`.
 *
 * build: front end -> forward graph -> fusion -> autodiff -> optimizer -> memory plan
 * (and the same, without autodiff, for the decode graph) -> C for the CPU -> the system
 * C compiler links it with the runtime into OUT (written as OUT.tmp, then renamed).
 */
#include "commands.h"
#include "front.h"
#include "arena.h"
#include "build.h"
#include "passes.h"
#include "codegen.h"
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MOE_BUILD_RUNTIME_DIR
#define MOE_BUILD_RUNTIME_DIR ""
#endif
#ifndef MOE_INSTALL_LIBDIR
#define MOE_INSTALL_LIBDIR ""
#endif
#ifndef MOE_BLAS_INCLUDE
#define MOE_BLAS_INCLUDE "/usr/include"
#endif
#ifndef MOE_BLAS_LIBDIR
#define MOE_BLAS_LIBDIR "/usr/lib"
#endif
#ifndef MOE_CC
#define MOE_CC "cc"
#endif
#ifndef MOE_SANITIZE_FLAGS
#define MOE_SANITIZE_FLAGS ""
#endif

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void build_usage(FILE *out) {
    fprintf(out,
        "usage: moec build FILE -o OUT [--model NAME] [--target cpu|cuda|all]\n"
        "                  [--emit ast|ir|schedule|c|cuda] [-O0..-O3] [--tune-db FILE] [--timings]\n"
        "  -o OUT        the executable to write\n"
        "  --model NAME  the model to compile (default: the last in FILE)\n"
        "  --target T    cpu (default); cuda and all need the CUDA back end (not in this build)\n"
        "  --emit FORM   print an intermediate form instead of building: ast, ir, schedule, c\n"
        "  -O0..-O3      -O0 turns fusion off; the level is passed to the C compiler (default -O3:\n"
        "                it vectorises the optimizer and elementwise loops, 2x on AdamW)\n"
        "  --tune-db F   kernel-variant database from `moec tune` (not read yet: a fixed rule picks variants)\n"
        "  --timings     print {\"front_ms\", \"lower_ms\", \"codegen_ms\", \"cc_ms\"} on stdout\n");
}

/* the runtime libraries: beside the build tree, or installed */
static const char *runtime_dir(void) {
    static char buf[PATH_MAX];
    const char *env = getenv("MOEC_RUNTIME_DIR");
    const char *cands[3] = {env, MOE_BUILD_RUNTIME_DIR, MOE_INSTALL_LIBDIR};
    for (int i = 0; i < 3; i++) {
        if (!cands[i] || !*cands[i]) continue;
        snprintf(buf, sizeof buf, "%s/libmoert.a", cands[i]);
        if (access(buf, R_OK) == 0) return cands[i];
    }
    return NULL;
}

static int write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, f) == n;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static int run_cc(const char *dir, const char *out, int opt) {
    const char *rt = runtime_dir();
    if (!rt) {
        fprintf(stderr, "moec: cannot find the runtime library libmoert.a (set MOEC_RUNTIME_DIR)\n");
        return -1;
    }
    /* the compiler moec was built with: the runtime's objects need its OpenMP runtime */
    const char *cc = getenv("MOEC_CC") && *getenv("MOEC_CC") ? getenv("MOEC_CC") : MOE_CC;
    char *cmd = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&cmd, &len);
    if (!m) return -1;
    fprintf(m, "%s -std=c11 -D_POSIX_C_SOURCE=200809L -O%d -march=native -fopenmp -fno-strict-aliasing -fno-math-errno %s "
               "-w -I'%s' -I'%s' '%s/model.c' '%s/libmoert_main.a' '%s/libmoert.a' -L'%s' -Wl,-rpath,'%s' -lopenblas "
               "-ljansson -lm -o '%s'",
            cc, opt, MOE_SANITIZE_FLAGS, dir, MOE_BLAS_INCLUDE, dir, rt, rt, MOE_BLAS_LIBDIR, MOE_BLAS_LIBDIR, out);
    fclose(m);
    int rc = system(cmd);
    if (rc != 0) fprintf(stderr, "moec: the C compiler failed (%s)\n", cmd);
    free(cmd);
    return rc == 0 ? 0 : -1;
}

typedef struct opts {
    const char *file, *out, *model, *target, *emit;
    int opt, timings;
} opts;

static int parse(int argc, char **argv, opts *o) {
    o->opt = 3;
    o->target = "cpu";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = !strcmp(a, "-o") ? &o->out : !strcmp(a, "--model") ? &o->model
                         : !strcmp(a, "--target") ? &o->target : !strcmp(a, "--emit") ? &o->emit : NULL;
        if (dst || !strcmp(a, "--tune-db")) {
            if (i + 1 >= argc) { fprintf(stderr, "moec build: %s needs a value\n", a); return -1; }
            if (dst) *dst = argv[i + 1];
            i++;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            build_usage(stdout);
            return 1;
        } else if (!strcmp(a, "--timings")) {
            o->timings = 1;
        } else if (a[0] == '-' && a[1] == 'O' && a[2] >= '0' && a[2] <= '3' && !a[3]) {
            o->opt = a[2] - '0';
        } else if (a[0] == '-') {
            fprintf(stderr, "moec build: unknown option '%s'\n", a);
            return -1;
        } else if (!o->file) {
            o->file = a;
        } else {
            fprintf(stderr, "moec build: more than one input file ('%s')\n", a);
            return -1;
        }
    }
    if (!o->file) { fprintf(stderr, "moec build: no input file\n"); build_usage(stderr); return -1; }
    if (strcmp(o->target, "cpu") && strcmp(o->target, "cuda") && strcmp(o->target, "all")) {
        fprintf(stderr, "moec build: unknown target '%s' (cpu, cuda, all)\n", o->target);
        return -1;
    }
    if (strcmp(o->target, "cpu")) {
        fprintf(stderr, "moec build: target '%s' is not available yet: this moec builds the CPU target only\n", o->target);
        return -1;
    }
    static const char *const forms[] = {"ast", "ir", "schedule", "c", "cuda"};
    int ok = !o->emit;
    for (int i = 0; i < 5 && !ok; i++) ok = !strcmp(o->emit, forms[i]);
    if (!ok) { fprintf(stderr, "moec build: unknown --emit form '%s' (ast, ir, schedule, c)\n", o->emit); return -1; }
    if (o->emit && !strcmp(o->emit, "cuda")) {
        fprintf(stderr, "moec build: --emit cuda needs the CUDA back end, which this moec does not have yet\n");
        return -1;
    }
    if (!o->emit && !o->out) { fprintf(stderr, "moec build: -o OUT is required\n"); return -1; }
    return 0;
}

/* forward graph -> passes; decode graphs skip autodiff and the optimizer */
static ir_graph *lower(arena *a, const md_model *m, int decode, int opt) {
    ir_graph *g = ir_build_forward(a, m, m->train.batch, m->context, decode);
    if (!g) return NULL;
    if (opt >= 1 && pass_fuse(g)) return NULL;
    if (!decode && (pass_autodiff(g) || pass_optimizer(g))) return NULL;
    if (pass_comm(g) || pass_plan(g)) return NULL;
    return g;
}

int moec_cmd_build(int argc, char **argv) {
    opts o = {0};
    int pr = parse(argc, argv, &o);
    if (pr) return pr > 0 ? 0 : 2;
    if (o.emit && !strcmp(o.emit, "ast")) {
        char *args[] = {"check", "--dump-ast", (char *)o.file, o.model ? "--model" : NULL, (char *)o.model, NULL};
        return moec_cmd_check(o.model ? 5 : 3, args);
    }
    double t0 = now_ms();
    front *f = front_create();
    if (!f) { fprintf(stderr, "moec: out of memory\n"); return 1; }
    const md_model *m = front_load(f, o.file, o.model);
    if (!m) {
        front_print_diagnostics(f, stderr);
        front_destroy(f);
        return 1;
    }
    double t1 = now_ms();
    arena *a = front_arena(f);
    ir_graph *g = lower(a, m, 0, o.opt);
    ir_graph *dec = g ? lower(a, m, 1, o.opt) : NULL;
    int rc = 0;
    if (!g || !dec) {
        fprintf(stderr, "moec: out of memory while lowering %s\n", m->name);
        rc = 1;
    } else if (o.emit && !strcmp(o.emit, "ir")) {
        ir_print(g, stdout);
        ir_print(dec, stdout);
    } else if (o.emit && !strcmp(o.emit, "schedule")) {
        ir_print_schedule(g, stdout);
        ir_print_schedule(dec, stdout);
    }
    if (rc || (o.emit && strcmp(o.emit, "c"))) { front_destroy(f); return rc; }
    double t2 = now_ms();
    char *src = cg_cpu_program(g, dec, o.file);
    double t3 = now_ms();
    if (!src) { fprintf(stderr, "moec: out of memory in code generation\n"); front_destroy(f); return 1; }
    if (o.emit) {
        fputs(src, stdout);
        free(src);
        front_destroy(f);
        return 0;
    }
    /* generated sources go to a private directory, then the C compiler writes OUT.tmp */
    char dir[] = "/tmp/moec-XXXXXX";
    if (!mkdtemp(dir)) { fprintf(stderr, "moec: cannot create a temporary directory: %s\n", strerror(errno)); rc = 1; }
    char path[PATH_MAX];
    for (int i = 0; !rc && moe_embedded_files[i].name; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, moe_embedded_files[i].name);
        if (write_file(path, moe_embedded_files[i].text)) rc = 1;
    }
    snprintf(path, sizeof path, "%s/model.c", dir);
    if (!rc && write_file(path, src)) rc = 1;
    if (rc) fprintf(stderr, "moec: cannot write generated code under %s\n", dir);
    free(src);
    char *tmp_out = malloc(strlen(o.out) + 16);
    double t4 = now_ms();
    if (!rc && tmp_out) {
        sprintf(tmp_out, "%s.tmp", o.out);
        rc = run_cc(dir, tmp_out, o.opt) ? 1 : 0;
        if (!rc && rename(tmp_out, o.out)) {
            fprintf(stderr, "moec: cannot write %s: %s\n", o.out, strerror(errno));
            rc = 1;
        }
        if (rc) unlink(tmp_out);
    }
    double t5 = now_ms();
    free(tmp_out);
    if (!getenv("MOEC_KEEP_GENERATED")) {
        for (int i = 0; moe_embedded_files[i].name; i++) {
            snprintf(path, sizeof path, "%s/%s", dir, moe_embedded_files[i].name);
            unlink(path);
        }
        snprintf(path, sizeof path, "%s/model.c", dir);
        unlink(path);
        rmdir(dir);
    } else {
        fprintf(stderr, "moec: generated code kept in %s\n", dir);
    }
    if (!rc && o.timings)
        printf("{\"front_ms\": %.3f, \"lower_ms\": %.3f, \"codegen_ms\": %.3f, \"cc_ms\": %.3f}\n", t1 - t0, t2 - t1,
               t3 - t2, t5 - t4);
    front_destroy(f);
    return rc;
}

int moec_cmd_tune(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: moec tune FILE [--target cpu|cuda] [--db FILE]\n"
                   "  measures kernel variants on this machine and records the winners\n");
            return 0;
        }
    fprintf(stderr, "moec tune: the autotuner is not built yet (bench/kernels/ times the variants by hand)\n");
    return 1;
}
