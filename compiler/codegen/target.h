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

struct cg;
struct arena;

/* What a renderer is given: the model (for the program's tables only; kernel code comes from
 * the lists), the source path recorded in the program, and the two lowered programs. */
typedef struct cg_unit {
    const md_model *model;
    const char *source;
    const lw_program *train, *decode;
    struct arena *arena;
} cg_unit;

typedef struct cg_target {
    const char *name;
    ir_caps caps;
    char *(*render)(const cg_unit *u);  /* malloc'ed source text, NULL on out of memory */
    const char *source_name;            /* the file the text is compiled from */
    const char *const *files;           /* embedded files written beside it, NULL-terminated */
} cg_target;

const cg_target *cg_target_find(const char *name);

/* Embedded kernel templates and headers (built from kernels/ and runtime/moe_program.h). */
typedef struct { const char *name, *text; } moe_embedded_file;
extern const moe_embedded_file moe_embedded_files[];
const char *cg_embedded(const char *name);     /* the text of an embedded file, or NULL */

/* tables.c: the learning-rate schedule and moe_program_def, after the step tables named
 * train_steps and decode_steps. */
void cg_emit_program(struct cg *b, const cg_unit *u, const char *target);

/* the CPU renderer (cpu.c) and its files */
char *cg_cpu_render(const cg_unit *u);
extern const char *const cg_cpu_files[];
#endif
