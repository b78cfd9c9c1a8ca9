/* front.h - the front end's one entry point: .moe text in, validated md_model out.
 *
 * front_load parses FILE and its imports, applies inheritance, runs the semantic pass
 * and fills defaults. On any error it returns NULL; every diagnostic of the file is
 * kept (file:line:col, source line, caret, hint) and printed by front_print_diagnostics.
 */
#ifndef MOE_FRONT_H
#define MOE_FRONT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include "model.h"

typedef struct front front;

front *front_create(void);
void front_destroy(front *f);           /* frees every model it returned */

/* name NULL = the last model of the file. */
const md_model *front_load(front *f, const char *path, const char *name);
int front_error_count(const front *f);
void front_print_diagnostics(const front *f, FILE *out);
struct arena *front_arena(front *f);    /* the compilation arena, for later phases */
/* the diagnostics list, where later phases report with the model's locations (printed by
 * front_print_diagnostics, source lines and all) */
struct diag_ctx *front_diag(front *f);

/* As front_load, with the text read from standard input to its end (a pipe, a file, a
 * terminal; at most 64 MiB), named "<stdin>" in diagnostics; its imports resolve against
 * the current directory. */
const md_model *front_load_stdin(front *f, const char *name);

/* Additions for tools and tests. One load per front end. */
/* As front_load, with the text of PATH given (imports still resolve against PATH). */
const md_model *front_load_text(front *f, const char *path, const char *text, size_t len,
                                const char *name);
/* A front end whose arena holds at most arena_bytes (0: the arena's default, 1 GiB);
 * running out is an "out of memory" error, never a crash (tests inject it). */
front *front_create_limit(size_t arena_bytes);
/* allow = false makes every import an error (the fuzzer uses it). Default: true. */
void front_allow_imports(front *f, bool allow);
/* Writes the syntax tree of every file loaded (moec check --dump-ast); -1 when the
 * files did not parse. */
int front_dump_ast(const front *f, FILE *out);
#endif
