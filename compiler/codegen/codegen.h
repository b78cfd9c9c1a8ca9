/* codegen.h - code generation back ends. */
#ifndef MOE_CODEGEN_H
#define MOE_CODEGEN_H
#include "ir.h"

/* The whole C translation unit of an executable for the CPU target: step functions
 * for the training graph and the decode graph, the parameter table, the schedule.
 * Returns malloc'ed text or NULL. `source` is the .moe path recorded in the binary. */
char *cg_cpu_program(const ir_graph *train, const ir_graph *decode, const char *source);

/* Embedded kernel templates and the ABI header (built from kernels/ and runtime/). */
typedef struct { const char *name, *text; } moe_embedded_file;
extern const moe_embedded_file moe_embedded_files[];
#endif
