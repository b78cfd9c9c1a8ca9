/* target.h - the renderers: one table entry per target.
 *
 * A target turns the lowered kernel lists of a model (lower.h) into the source of an
 * executable, in the manner of tinygrad's renderers: `caps` tells the passes what it can run
 * (alignment, dtypes), `render` prints the lists in its language, `files` are the embedded
 * kernel templates and headers written beside the source. The program's tables (sizes,
 * hyper-parameters, parameter table, schedules; tables.c) are the same C for every target.
 */
#ifndef MOE_TARGET_H
#define MOE_TARGET_H
#include "lower.h"
#include "moe_program.h"    /* moe_gemm_def */

struct cg;
struct arena;

/* What a renderer is given: the model (for the program's tables only; kernel code comes from
 * the lists), the source path recorded in the program, and the two lowered programs. */
typedef struct cg_unit {
    const md_model *model;
    const char *source;
    const lw_program *train, *decode;
    struct arena *arena;
    int gemm_generated;                 /* cuda: linear layers as generated kernels, not cuBLAS */
} cg_unit;

typedef struct cg_target {
    const char *name;
    ir_caps caps;
    char *(*render)(const cg_unit *u);  /* malloc'ed source text, NULL on out of memory */
    char *(*kernel_source)(const cg_unit *u);   /* device code (--emit cuda), or NULL */
    const char *source_name;            /* the file the text is compiled from */
    const char *device_source_name;     /* the file kernel_source is written to, or NULL */
    const char *const *files;           /* embedded files written beside it, NULL-terminated */
} cg_target;

const cg_target *cg_target_find(const char *name);

/* Embedded kernel templates and headers (built from kernels/ and runtime/moe_program.h). */
typedef struct { const char *name, *text; } moe_embedded_file;
extern const moe_embedded_file moe_embedded_files[];
const char *cg_embedded(const char *name);     /* the text of an embedded file, or NULL */

/* tables.c: the step table `table` of program p, whose step functions are named pre<node>;
 * the learning-rate schedule and moe_program_<target>, after the step tables named train_steps
 * and decode_steps, with `kernels` the initialisers of its device-kernel fields. */
/* how generated code names a dtype's typed view (F32(...)) and a buffer class (ACT, ...) */
extern const char *const cg_dtype_macro[MOE_DTYPE_COUNT];
extern const char *const cg_buf_macro[MOE_BUF_COUNT];
/* a host run-time scalar times factor: B, T and S as the step's locals, the others as fields
 * of the context `ctx` ("c->", "ka.") named as lw_rt_name names them */
const char *cg_rt_expr(struct arena *a, lw_rt r, int64_t factor, const char *ctx);
void cg_emit_step_table(struct cg *b, struct arena *a, const lw_program *p, const char *pre, const char *table);
void cg_emit_program(struct cg *b, const cg_unit *u, const char *target, const char *kernels);

/* the CPU renderer (cpu.c) and its files */
char *cg_cpu_render(const cg_unit *u);
extern const char *const cg_cpu_files[];
/* the CUDA renderer (cuda.c): the self-contained kernel source NVRTC compiles, and the plan
 * behind it: the distinct kernels (a kernel is its template, part and literal arguments;
 * where its buffers live is a launch argument) and the launches of each program's steps */
typedef struct cg_cuda_kernel {
    const char *name, *body;
    const char *prelude;        /* source written before the kernel (a table it reads), or NULL */
    int sync;                   /* its blocks synchronise */
    int serial;                 /* one thread's work (launch bounds ask for no occupancy) */
} cg_cuda_kernel;
/* a kernel launch (kernel >= 0) or a library GEMM (kernel -1) */
typedef struct cg_cuda_launch {
    int kernel;
    unsigned grid;
    int n_offs;
    int64_t offs[MOE_MAX_OFFS];
    moe_gemm_def gemm;
    moe_grouped_def grouped;    /* kernel -2 */
} cg_cuda_launch;
typedef struct cg_cuda_launches {
    int n;
    cg_cuda_launch *launch;
    int *first;                 /* [nsteps + 1]: step i launches first[i] .. first[i+1]-1 */
} cg_cuda_launches;
typedef struct cg_cuda_plan {
    int n_kernels, cap_kernels;
    cg_cuda_kernel *kernels;
    cg_cuda_launches train, decode;
} cg_cuda_plan;
/* 0; -1 out of memory; -2 a lowered kernel without a CUDA template (a table error) */
int cg_cuda_plan_make(const cg_unit *u, cg_cuda_plan *pl);
char *cg_cuda_source(const cg_unit *u);
char *cg_cuda_render(const cg_unit *u);     /* the host side: launch tables, steps, program */
extern const char *const cg_cuda_files[];
#endif
