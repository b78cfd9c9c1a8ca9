/* cmd_build.c - `moec build`.
 *
 * build: front end (FILE, or standard input for "-") -> the pass pipeline
 * (passes/pipeline.h: forward graph, fusion, autodiff, optimizer, communication, memory
 * plan, each checked) for the training and the decode program -> the backend-neutral
 * kernel lists (codegen/lower.h) -> the target's renderer (codegen/target.h) -> the
 * system C compiler links the source with the runtime into OUT (written as OUT.tmp, then
 * renamed). The C compiler runs from an argument vector, never through a shell, so no
 * path can inject a command. --emit FORM prints one intermediate form instead, on stdout
 * or, with -o, into OUT (also written whole, then renamed). Exit status: cli.h.
 */
#include "cli.h"
#include "commands.h"
#include "front.h"
#include "arena.h"
#include "diag.h"
#include "pipeline.h"
#include "target.h"
#include "nvrtc.h"
#include "tune.h"
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef MOE_BUILD_RUNTIME_DIR
#define MOE_BUILD_RUNTIME_DIR ""
#endif
#ifndef MOE_INSTALL_LIBDIR
#define MOE_INSTALL_LIBDIR ""
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
        "usage: moec build FILE -o OUT [--model NAME] [--target cpu|cuda|all] [--gemm cublas|generated]\n"
        "                  [--emit ast|ir|schedule|kernels|c|cuda] [-O0..-O3] [--tune-db FILE] [--arch ARCH]\n"
        "                  [--timings] [--no-kernel-check]\n"
        "  FILE          the model file; - reads it from standard input\n"
        "  -o OUT        the executable to write (also --output); with --emit, the file the form\n"
        "                goes to instead of standard output\n"
        "  --model NAME  the model to compile (default: the last in FILE)\n"
        "  --target T    cpu (default); cuda: CUDA kernels, which the executable runs with\n"
        "                --device cuda (a GPU) or cuda-emu (on the CPU; docs/cuda.md); all: both\n"
        "                in one executable (the GPU where there is one, else the CPU)\n"
        "  --gemm G      cuda: the linear layers on cublas (default), or as generated kernels\n"
        "  --emit FORM   print an intermediate form instead of building: ast, ir, schedule\n"
        "                (steps and the memory plan), kernels (the lowered kernel calls), c,\n"
        "                cuda (the model's CUDA kernels, self-contained; needs --target cuda)\n"
        "  -O0..-O3      -O0 turns fusion off; the level is passed to the C compiler (default -O3:\n"
        "                it vectorises the optimizer and elementwise loops, 2x on AdamW)\n"
        "  --tune-db F   kernel variants measured by `moec tune` (default: its database in the cache\n"
        "                directory, when there is one); a built-in rule picks the rest\n"
        "  --arch ARCH   the processor the executable runs on, as -march takes it (default native:\n"
        "                this one; x86-64-v3 runs on any AVX2 machine); it refuses to start on one\n"
        "                without the instructions ARCH allows ($MOEC_MARCH sets the default)\n"
        "  --timings     print {\"front_ms\", \"lower_ms\", \"codegen_ms\", \"nvrtc_ms\", \"nvrtc_cached\",\n"
        "                \"cc_ms\"} on stdout\n"
        "  --no-kernel-check  cuda, all: do not compile the CUDA kernels with NVRTC at build time\n"
        "                (the executable still compiles them, through the kernel cache, when it\n"
        "                opens a GPU)\n");
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

/* a plan larger than this (per process) draws a warning: 4 TiB, more than any one machine */
#define MOEC_SANE_BYTES (4.0 * 1099511627776.0)

/* one target's generated code: the host source and, for cuda, the device source */
typedef struct gen { const cg_target *t; char *src, *dev_src; } gen;

/* The C++ compiler that matches the C compiler (the emulated kernels are C++): MOEC_CXX, or
 * clang -> clang++, gcc -> g++, cc -> c++ in the C compiler's name. */
static const char *cxx_of(arena *a, const char *cc) {
    const char *env = getenv("MOEC_CXX");
    if (env && *env) return env;
    const char *base = strrchr(cc, '/') ? strrchr(cc, '/') + 1 : cc;
    size_t dir = (size_t)(base - cc);
    const char *sub = !strncmp(base, "clang", 5) ? "clang++" : !strncmp(base, "gcc", 3) ? "g++" : "c++";
    const char *ver = !strncmp(base, "clang", 5) ? base + 5 : !strncmp(base, "gcc", 3) ? base + 3 : "";
    return arena_printf(a, "%.*s%s%s", (int)dir, cc, sub, ver);     /* keeps a -NN version suffix */
}

/* The emulated kernels (cuda-emu): the device source compiled as C++ with the emulation
 * prelude, into dir/kernels_emu.o. */
static int run_cxx_emu(arena *a, const char *dir, const cg_target *t, const char *cc) {
    const char *argv[24];
    int n = 0;
    argv[n++] = cxx_of(a, cc);
    argv[n++] = "-std=c++17";
    argv[n++] = "-x";
    argv[n++] = "c++";
    argv[n++] = "-O2";
    argv[n++] = "-fno-exceptions";
    argv[n++] = "-fno-rtti";
    argv[n++] = "-fno-math-errno";
    if (*MOE_SANITIZE_FLAGS) argv[n++] = MOE_SANITIZE_FLAGS;
    argv[n++] = "-w";
    argv[n++] = "-include";
    argv[n++] = arena_printf(a, "%s/cu_emu.h", dir);
    argv[n++] = arena_printf(a, "-I%s", dir);
    argv[n++] = "-c";
    argv[n++] = arena_printf(a, "%s/%s", dir, t->device_source_name);
    argv[n++] = "-o";
    argv[n++] = arena_printf(a, "%s/kernels_emu.o", dir);
    argv[n] = NULL;
    return cli_run(argv, n, "C++ compiler (emulated kernels)", NULL);
}

static int run_cc(arena *a, const char *dir, const gen *gs, int ng, const char *out, int opt, const char *arch) {
    const char *rt = runtime_dir();
    if (!rt) {
        fprintf(stderr, "moec: cannot find the runtime library libmoert.a (set MOEC_RUNTIME_DIR)\n");
        return CLI_USAGE;
    }
    /* the compiler moec was built with: the runtime's objects need its OpenMP runtime */
    const char *cc = cli_cc();
    const cg_target *dev = NULL;        /* the target with device kernels */
    for (int i = 0; i < ng; i++)
        if (gs[i].t->device_source_name) dev = gs[i].t;
    if (dev && run_cxx_emu(a, dir, dev, cc)) return -1;
    const char *argv[40];
    int n = 0;
    argv[n++] = cc;
    argv[n++] = "-std=c11";
    argv[n++] = "-D_POSIX_C_SOURCE=200809L";
    argv[n++] = arena_printf(a, "-O%d", opt);
    argv[n++] = arena_printf(a, "-march=%s", arch);     /* the executable checks it at start */
    argv[n++] = "-fopenmp";
    argv[n++] = "-fno-math-errno";
    if (*MOE_SANITIZE_FLAGS) argv[n++] = MOE_SANITIZE_FLAGS;
    argv[n++] = "-w";
    argv[n++] = arena_printf(a, "-I%s", dir);
    argv[n++] = arena_printf(a, "-I%s", MOE_BLAS_INCLUDE);
    for (int i = 0; i < ng; i++) argv[n++] = arena_printf(a, "%s/%s", dir, gs[i].t->source_name);
    argv[n++] = arena_printf(a, "%s/programs.c", dir);
    if (dev) {
        /* the cuda-emu device finds the emulated kernels by name (dlsym) */
        argv[n++] = arena_printf(a, "%s/kernels_emu.o", dir);
        argv[n++] = "-rdynamic";
        if (*MOE_SANITIZE_FLAGS) argv[n++] = "-lstdc++";   /* UBSan's C++ checks use its type info */
    }
    argv[n++] = arena_printf(a, "%s/libmoert_main.a", rt);
    argv[n++] = arena_printf(a, "%s/libmoert.a", rt);
    argv[n++] = arena_printf(a, "-L%s", MOE_BLAS_LIBDIR);
    argv[n++] = arena_printf(a, "-Wl,-rpath,%s", MOE_BLAS_LIBDIR);
    argv[n++] = "-lopenblas";
    if (*MOE_MPI_LIB) {     /* the runtime's communicator for mpirun (comm_mpi.c) */
        argv[n++] = MOE_MPI_LIB;
        const char *slash = strrchr(MOE_MPI_LIB, '/');
        if (slash) argv[n++] = arena_printf(a, "-Wl,-rpath,%.*s", (int)(slash - MOE_MPI_LIB), MOE_MPI_LIB);
    }
    argv[n++] = "-ljansson";
    argv[n++] = "-ldl";
    argv[n++] = "-lm";
    argv[n++] = "-o";
    argv[n++] = out;
    argv[n] = NULL;
    return cli_run(argv, n, "C compiler", NULL);
}

typedef struct opts {
    const char *file, *out, *model, *target, *emit, *gemm, *level, *tune_db;
    const char *arch;           /* -march of the host code: --arch, else $MOEC_MARCH, else native */
    tune_db *db;                /* the tuning database (NULL: none) */
    int opt, timings, help;
    int no_kernel_check;        /* --no-kernel-check: skip the build-time NVRTC compile */
    FILE *emit_to;              /* --emit: stdout, or the file -o names */
} opts;

/* Returns CLI_OK or CLI_USAGE (after saying why); o->help for -h. */
static int parse(int argc, char **argv, opts *o) {
    o->opt = 3;
    o->target = "cpu";
    const cli_opt table[] = {
        {"--output", "-o", &o->out, NULL, 0},
        {"--model", "-m", &o->model, NULL, 0},
        {"--target", NULL, &o->target, NULL, 0},
        {"--emit", NULL, &o->emit, NULL, 0},
        {"--gemm", NULL, &o->gemm, NULL, 0},
        {"--tune-db", NULL, &o->tune_db, NULL, 0},
        {"--arch", NULL, &o->arch, NULL, 0},
        {"--timings", NULL, NULL, &o->timings, 0},
        {"--no-kernel-check", NULL, NULL, &o->no_kernel_check, 0},
        {"-O", NULL, &o->level, NULL, 1},
    };
    int rc = cli_parse("build", argc, argv, table, (int)(sizeof table / sizeof table[0]), &o->file, &o->help,
                       build_usage);
    if (rc || o->help) return rc;
    if (o->level) {
        if (o->level[0] < '0' || o->level[0] > '3' || o->level[1]) {
            fprintf(stderr, "moec build: unknown optimisation level '-O%s' (-O0, -O1, -O2, -O3)\n", o->level);
            return CLI_USAGE;
        }
        o->opt = o->level[0] - '0';
    }
    if (!o->arch) o->arch = cli_march();
    if (!*o->arch || strspn(o->arch, "abcdefghijklmnopqrstuvwxyz0123456789-_.+") != strlen(o->arch)) {
        fprintf(stderr, "moec build: --arch '%s' is not a processor name (native, x86-64-v2, x86-64-v3, "
                "skylake-avx512, znver3, ...: what the C compiler's -march takes)\n", o->arch);
        return CLI_USAGE;
    }
    if (strcmp(o->target, "cpu") && strcmp(o->target, "cuda") && strcmp(o->target, "all")) {
        fprintf(stderr, "moec build: unknown target '%s' (cpu, cuda, all)\n", o->target);
        return CLI_USAGE;
    }
    /* the tuning database: --tune-db (which must be one), else the default location if any */
    char err[4300];
    o->db = tune_db_load(o->tune_db ? o->tune_db : tune_default_path(), !o->tune_db, err, sizeof err);
    if (!o->db && o->tune_db) {
        fprintf(stderr, "moec build: --tune-db %s\n", err);
        return CLI_FAILED;
    }
    if (!o->db)
        fprintf(stderr, "moec build: warning: %s (the built-in rule picks the kernel variants; `moec tune` "
                "rewrites it)\n", err);
    int all = !strcmp(o->target, "all");
    const cg_target *t = cg_target_find(all ? "cuda" : o->target);
    if (all && o->emit) {
        fprintf(stderr, "moec build: --emit prints one target's form: use --target cpu or cuda\n");
        return CLI_USAGE;
    }
    if (o->gemm && strcmp(o->gemm, "cublas") && strcmp(o->gemm, "generated")) {
        fprintf(stderr, "moec build: unknown --gemm '%s' (cublas, generated)\n", o->gemm);
        return CLI_USAGE;
    }
    if (o->gemm && !t->kernel_source) {
        fprintf(stderr, "moec build: --gemm chooses the cuda target's linear layers: add --target cuda (the cpu "
                        "target's are OpenBLAS)\n");
        return CLI_USAGE;
    }
    static const char *const forms[] = {"ast", "ir", "schedule", "kernels", "c", "cuda"};
    int ok = !o->emit;
    for (int i = 0; i < 6 && !ok; i++) ok = !strcmp(o->emit, forms[i]);
    if (!ok) {
        fprintf(stderr, "moec build: unknown --emit form '%s' (ast, ir, schedule, kernels, c, cuda)\n", o->emit);
        return CLI_USAGE;
    }
    if (o->emit && !strcmp(o->emit, "cuda") && !t->kernel_source) {
        fprintf(stderr, "moec build: --emit cuda prints the kernels of the cuda target: add --target cuda\n");
        return CLI_USAGE;
    }
    if (!o->emit && !o->out) { fprintf(stderr, "moec build: -o OUT is required\n"); return CLI_USAGE; }
    struct stat st;
    if (!o->emit && stat(o->out, &st) == 0 && !S_ISREG(st.st_mode)) {   /* never replaced by the rename */
        fprintf(stderr, "moec build: -o %s is not a regular file: the executable is written only to a file path\n",
                o->out);
        return CLI_FAILED;
    }
    return CLI_OK;
}

/* s as a C string literal, split into lines */
static void c_literal(FILE *m, const char *s, size_t n) {
    fputs("\"", m);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fputs(i + 1 < n ? "\\n\"\n    \"" : "\\n", m);
        else if (c == '"' || c == '\\' || c == '?') fprintf(m, "\\%c", c);     /* '?': no trigraphs */
        else if (c < 0x20 || c >= 0x7f) fprintf(m, "\\%03o", c);
        else fputc(c, m);
    }
    fputs("\"", m);
}

/* The instruction-set extensions a -march may use, as the C compiler's predefined macros name
 * them and as the runtime checks them (__builtin_cpu_supports; runtime/cli/main.c). */
static const char *const isa_macros[][2] = {
    {"__SSE3__", "sse3"}, {"__SSSE3__", "ssse3"}, {"__SSE4_1__", "sse4.1"}, {"__SSE4_2__", "sse4.2"},
    {"__SSE4A__", "sse4a"}, {"__POPCNT__", "popcnt"}, {"__AVX__", "avx"}, {"__AVX2__", "avx2"}, {"__FMA__", "fma"},
    {"__F16C__", "f16c"}, {"__BMI__", "bmi"}, {"__BMI2__", "bmi2"}, {"__AVX512F__", "avx512f"},
    {"__AVX512CD__", "avx512cd"}, {"__AVX512BW__", "avx512bw"}, {"__AVX512DQ__", "avx512dq"},
    {"__AVX512VL__", "avx512vl"}, {"__AVX512VNNI__", "avx512vnni"}, {"__AVX512BF16__", "avx512bf16"},
    {"__AVX512FP16__", "avx512fp16"},
};

/* The table of the executable's programs (moe_program.h), one per target; the processor its
 * host code was compiled for (-march and the extensions that allows, from the compiler's own
 * macros: programs.c is compiled with the same -march); and the model's .moe text: every file
 * the front end read, each after a "# file: PATH" line. */
static char *programs_source(const gen *gs, int ng, const diag_ctx *d, const char *arch) {
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    if (!m) return NULL;
    fputs("/* generated by moec: the programs of this executable, one per target */\n#include \"moe_program.h\"\n", m);
    for (int i = 0; i < ng; i++) fprintf(m, "extern const moe_program moe_program_%s;\n", gs[i].t->name);
    fputs("const moe_program *const moe_programs[] = {", m);
    for (int i = 0; i < ng; i++) fprintf(m, "&moe_program_%s, ", gs[i].t->name);
    fputs("0};\nconst char moe_build_arch[] = ", m);
    c_literal(m, arch, strlen(arch));
    fputs(";\nconst char *const moe_build_isa[] = {\n", m);
    for (size_t i = 0; i < sizeof isa_macros / sizeof isa_macros[0]; i++)
        fprintf(m, "#ifdef %s\n    \"%s\",\n#endif\n", isa_macros[i][0], isa_macros[i][1]);
    fputs("    0};\nconst char moe_model_text[] =\n    ", m);
    const char *file, *src;
    size_t n;
    for (int i = 0; diag_source(d, i, &file, &src, &n) == 0; i++) {
        fputs("\"# file: \" ", m);
        c_literal(m, file, strlen(file));
        fputs(" \"\\n\"\n    ", m);
        c_literal(m, src, n);
        fputs("\n    \"\\n\"\n    ", m);
    }
    fputs("\"\";\n", m);
    return fclose(m) == 0 ? text : (free(text), NULL);
}

/* Every file the targets need, beside their sources in dir. */
static int write_sources(const char *dir, const gen *gs, int ng, const diag_ctx *d, const char *arch) {
    char path[PATH_MAX];
    for (int g = 0; g < ng; g++) {
        const cg_target *t = gs[g].t;
        for (int i = 0; t->files[i]; i++) {
            const char *text = cg_embedded(t->files[i]);
            if (!text) { fprintf(stderr, "moec: internal error: '%s' is not embedded in moec\n", t->files[i]); return -1; }
            snprintf(path, sizeof path, "%s/%s", dir, t->files[i]);
            if (cli_write_file(path, text)) return -1;
        }
        if (t->device_source_name) {
            snprintf(path, sizeof path, "%s/%s", dir, t->device_source_name);
            if (cli_write_file(path, gs[g].dev_src)) return -1;
        }
        snprintf(path, sizeof path, "%s/%s", dir, t->source_name);
        if (cli_write_file(path, gs[g].src)) return -1;
    }
    char *table = programs_source(gs, ng, d, arch);
    snprintf(path, sizeof path, "%s/programs.c", dir);
    int rc = table ? cli_write_file(path, table) : -1;
    free(table);
    return rc;
}

static void remove_sources(const char *dir, const gen *gs, int ng) {
    char path[PATH_MAX];
    for (int g = 0; g < ng; g++) {
        const cg_target *t = gs[g].t;
        for (int i = 0; t->files[i]; i++) {
            snprintf(path, sizeof path, "%s/%s", dir, t->files[i]);
            unlink(path);
        }
        if (t->device_source_name) {
            snprintf(path, sizeof path, "%s/%s", dir, t->device_source_name);
            unlink(path);
            snprintf(path, sizeof path, "%s/kernels_emu.o", dir);
            unlink(path);
        }
        snprintf(path, sizeof path, "%s/%s", dir, t->source_name);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/programs.c", dir);
    unlink(path);
    rmdir(dir);
}

/* Compiles the generated code into OUT through a private directory and a temporary file beside OUT with a
 * unique name (OUT.tmp.XXXXXX), renamed over OUT when the compiler succeeds: concurrent
 * builds to one OUT each write their own file, and OUT is always one whole executable. */
static int compile(arena *a, const gen *gs, int ng, const diag_ctx *d, const opts *o, double *cc_ms) {
    const char *out = o->out;
    char dir[] = "/tmp/moec-XXXXXX";
    if (!mkdtemp(dir)) {
        fprintf(stderr, "moec: cannot create a temporary directory: %s\n", strerror(errno));
        return 1;
    }
    int rc = 0;
    if (write_sources(dir, gs, ng, d, o->arch)) { fprintf(stderr, "moec: cannot write generated code under %s\n", dir); rc = 1; }
    char tmp_out[PATH_MAX];
    int fd = -1;
    if (!rc && snprintf(tmp_out, sizeof tmp_out, "%s.tmp.XXXXXX", out) < (int)sizeof tmp_out) fd = mkstemp(tmp_out);
    if (!rc && fd < 0) {
        fprintf(stderr, "moec: cannot create a temporary file beside %s: %s\n", out, strerror(errno));
        rc = 1;
    }
    if (fd >= 0) close(fd);
    double t0 = now_ms();
    if (!rc) {
        rc = run_cc(a, dir, gs, ng, tmp_out, o->opt, o->arch) ? 1 : 0;
        mode_t mask = umask(0);         /* mkstemp made it 0600: give it an executable's mode */
        umask(mask);
        if (!rc && (chmod(tmp_out, 0777 & ~mask) || rename(tmp_out, out))) {
            fprintf(stderr, "moec: cannot write %s: %s\n", out, strerror(errno));
            rc = 1;
        }
        if (rc) unlink(tmp_out);
    }
    *cc_ms = now_ms() - t0;
    if (!getenv("MOEC_KEEP_GENERATED")) remove_sources(dir, gs, ng);
    else fprintf(stderr, "moec: generated code kept in %s\n", dir);
    return rc;
}

/* The device kernels compiled with NVRTC for the architectures the cuda target supports,
 * so that kernel errors show at build time, with NVRTC's log. */
static int check_device_source(const char *dev_src, moe_nvrtc_result *nv) {
    static const char *const archs[] = {"sm_80", "sm_90"};
    char *log = NULL;
    if (moe_nvrtc_compile(dev_src, "kernels.cu", archs, 2, nv, &log, NULL)) {
        fprintf(stderr, "moec: the model's CUDA kernels do not compile with NVRTC:\n%s", log ? log : "");
        free(log);
        return CLI_USAGE;
    }
    if (!nv->available)
        fprintf(stderr, "moec: warning: NVRTC (libnvrtc.so) was not found, so the CUDA kernels were not compiled for "
                        "sm_80 and sm_90 at build time\n");
    return 0;
}

/* The code of one target: the pipeline with its capabilities (planned at alignment `align`
 * at least, with expert parallelism only where `ep` allows), the lowering, and the renderers; or, with --emit, the form asked for on
 * o->emit_to (*printed = 1). The pipeline's diagnostics go to d. 0, or 1 after an error (reported). */
typedef struct timings { double lower_ms, codegen_ms; moe_nvrtc_result nv; } timings;
static int gen_target(front *f, diag_ctx *d, const md_model *m, const opts *o, const cg_target *t, int64_t align,
                      int ep, int head, unsigned dtypes, const char *alike, gen *out, int *printed, timings *tm) {
    arena *a = front_arena(f);
    double t0 = now_ms();
    pl_result pr = {0};
    ir_caps caps = t->caps;
    if (caps.align < align) caps.align = align;
    caps.expert_parallel &= ep;
    caps.fused_head &= head;
    caps.dtypes &= dtypes;
    pl_options po = {.caps = &caps, .opt_level = o->opt, .alike = alike};
    if (pl_run(a, d, m, &po, &pr) != 0) return 1;
    const double tib = 1099511627776.0, need = (double)ir_plan_bytes(pr.train, 1);
    if (need > MOEC_SANE_BYTES && d == front_diag(f) && !o->emit)     /* once: the first target's pipeline */
        fprintf(stderr, "moec: warning: model %s plans %.1f TiB per process to train (%.1f TiB of activations for "
                "%lld x %lld tokens): no machine has that much memory; lower train.batch or the context, or spread "
                "the model over processes\n", m->name, need / tib, pr.train->buf_bytes[MOE_BUF_ACT] / tib,
                (long long)pr.train->B_max, (long long)pr.train->T_max);
    lw_program *ltr = lw_lower(pr.train), *ldec = ltr ? lw_lower(pr.decode) : NULL;
    if (!ltr || !ldec) { fprintf(stderr, "moec: out of memory while lowering %s\n", m->name); return 1; }
    tune_target_rule(ltr, t->name);
    tune_target_rule(ldec, t->name);
    tune_apply(ltr, o->db, t->name, cli_compiler_id());
    tune_apply(ldec, o->db, t->name, cli_compiler_id());
    double t1 = now_ms();
    tm->lower_ms += t1 - t0;
    cg_unit u = {m, cli_file_name(o->file), ltr, ldec, a, o->gemm && !strcmp(o->gemm, "generated")};
    *printed = 1;
    if (o->emit && !strcmp(o->emit, "ir")) {
        ir_print(pr.train, o->emit_to);
        ir_print(pr.decode, o->emit_to);
        return 0;
    }
    if (o->emit && !strcmp(o->emit, "schedule")) {
        ir_print_schedule(pr.train, o->emit_to);
        ir_print_schedule(pr.decode, o->emit_to);
        return 0;
    }
    if (o->emit && !strcmp(o->emit, "kernels")) {
        lw_print(ltr, t->name, o->emit_to);
        lw_print(ldec, t->name, o->emit_to);
        return 0;
    }
    int emit_cuda = o->emit && !strcmp(o->emit, "cuda");
    *printed = o->emit != NULL;
    out->t = t;
    out->src = emit_cuda ? NULL : t->render(&u);
    out->dev_src = t->kernel_source && (!o->emit || emit_cuda) ? t->kernel_source(&u) : NULL;
    tm->codegen_ms += now_ms() - t1;
    if ((!emit_cuda && !out->src) || (t->kernel_source && (!o->emit || emit_cuda) && !out->dev_src)) {
        fprintf(stderr, "moec: out of memory in code generation\n");
        return 1;
    }
    if (o->emit) {
        fputs(emit_cuda ? out->dev_src : out->src, o->emit_to);
        return 0;
    }
    return out->dev_src && !o->no_kernel_check && check_device_source(out->dev_src, &tm->nv) ? 1 : 0;
}

/* The executable, or with --emit one form (on o->emit_to); FILE "-" is standard input. */
static int build(const opts *o) {
    /* --target all: the cpu and cuda programs in one executable, planned alike (the larger
     * alignment, the experts spread and the head fused only if both can), so that `verify`
     * can compare them tensor by tensor */
    const char *names[2] = {o->target, NULL};
    if (!strcmp(o->target, "all")) { names[0] = "cpu"; names[1] = "cuda"; }
    int64_t align = 0;
    int ep = 1, head = 1;
    unsigned dtypes = ~0u;
    for (int i = 0; i < 2 && names[i]; i++) {
        const ir_caps *c = &cg_target_find(names[i])->caps;
        if (c->align > align) align = c->align;
        ep &= c->expert_parallel;
        head &= c->fused_head;
        dtypes &= c->dtypes;
    }
    double t0 = now_ms();
    front *f = front_create();
    if (!f) { fprintf(stderr, "moec: out of memory\n"); return 1; }
    const md_model *m = cli_load(f, o->file, o->model);
    double t1 = now_ms();
    gen gs[2] = {{0}};
    int ng = 0, rc = m ? 0 : 1, printed = 0;
    timings tm = {0};
    diag_ctx *quiet = diag_create(0);   /* the second target's pipeline says again what the first said */
    for (int i = 0; i < 2 && names[i] && !rc && !printed; i++) {
        rc = gen_target(f, i ? quiet : front_diag(f), m, o, cg_target_find(names[i]), align, ep, head, dtypes,
                        names[1] ? names[1 - i] : NULL, &gs[ng],
                        &printed, &tm);
        ng += gs[ng].t != NULL;
    }
    front_print_diagnostics(f, stderr);     /* errors, or the pipeline's warnings */
    if (!quiet || (diag_count(quiet) && !rc)) {
        if (quiet) diag_print(quiet, stderr);
        rc = 1;
    }
    diag_destroy(quiet);
    double cc_ms = 0;
    if (!rc && !printed) rc = compile(front_arena(f), gs, ng, front_diag(f), o, &cc_ms);
    for (int i = 0; i < ng; i++) { free(gs[i].src); free(gs[i].dev_src); }
    if (!rc && o->timings && !o->emit)
        printf("{\"front_ms\": %.3f, \"lower_ms\": %.3f, \"codegen_ms\": %.3f, \"nvrtc_ms\": %.3f, "
               "\"nvrtc_cached\": %d, \"cc_ms\": %.3f}\n", t1 - t0, tm.lower_ms, tm.codegen_ms, tm.nv.ms, tm.nv.cached,
               cc_ms);
    front_destroy(f);
    return rc;
}

/* the executable, or --emit FORM on standard output or (with -o) into OUT, whole or not at all */
static int build_or_emit(opts *o) {
    if (!o->emit) return build(o);
    cli_out out = {0};
    o->emit_to = stdout;
    if (o->out) {
        if (cli_out_open(&out, "build", o->out)) return CLI_FAILED;
        o->emit_to = out.f;
    }
    int rc = !strcmp(o->emit, "ast") ? moec_dump_ast(o->file, o->model, o->emit_to) : build(o);
    if (o->out) return cli_out_close(&out, "build", rc == CLI_OK) ? CLI_FAILED : rc;
    if (!rc && (fflush(stdout) || ferror(stdout))) {
        fprintf(stderr, "moec build: cannot write the output: %s\n", strerror(errno));
        rc = CLI_FAILED;
    }
    return rc;
}

int moec_cmd_build(int argc, char **argv) {
    opts o = {0};
    int rc = parse(argc, argv, &o);
    if (!rc && o.help) build_usage(stdout);
    else if (!rc) rc = build_or_emit(&o);
    tune_db_destroy(o.db);
    return rc;
}
