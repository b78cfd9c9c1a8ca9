/* dsl.h - the scanner and parser of .moe text (scanner.l, parser.y).
 *
 * dsl_parse turns the text of one file into its ast_file and reports lexical and
 * syntax errors to the diagnostics list; it never stops at the first error (bison
 * error recovery resynchronises at the next entry, `model` or `import`).
 * The state below is shared by the reentrant scanner and the pure parser; there are
 * no globals. Imports are not followed here (compiler/front/front.c does that).
 */
#ifndef MOE_DSL_H
#define MOE_DSL_H
#include <stdbool.h>
#include "ast.h"
#include "diag.h"

struct arena;

enum {
    DSL_MAX_DEPTH = 32,         /* nested blocks */
    DSL_MAX_IDENT = 255,        /* identifier length in bytes */
    DSL_MAX_STRING = 4096,      /* string length in bytes, after escapes */
};

typedef struct dsl_state {
    struct arena *a;
    diag_ctx *diag;
    ast_file *file;             /* being built */
    int line, col;              /* position after the last token */
    int depth;                  /* open '{' */
    diag_loc open[DSL_MAX_DEPTH];
    bool after_num;             /* last token was a number: `4x2` reads as 4 x 2 */
    const char **words;         /* interned identifiers (open addressing), malloc'd */
    size_t n_words, cap_words;
    bool stop;                  /* fatal scanner error: the parser stays quiet */
} dsl_state;

/* Parses f->text (f->len bytes, named f->path) into f. Returns the number of errors. */
int dsl_parse(struct arena *a, diag_ctx *d, ast_file *f);
#endif
