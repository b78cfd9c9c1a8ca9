/* sema.h - the semantic pass: from syntax trees to validated md_models.
 *
 * Checks every key of every model (moe-language.md sections 4 and 5), resolves the
 * model namespace (all models of the file and of everything it imports) and
 * inheritance, fills defaults and builds one md_model per model. All errors are
 * reported to the diagnostics list; nothing is printed here.
 */
#ifndef MOE_SEMA_H
#define MOE_SEMA_H
#include "ast.h"
#include "model.h"

struct arena;

typedef struct sema_out {
    int n;                      /* models of all files, in load order */
    const ast_model **ast;      /* [n] */
    const md_model **md;        /* [n], NULL for a model with errors */
    int *file;                  /* [n] index into the files array */
} sema_out;

/* Returns the number of errors it reported. `selected` is the model the tool will use
 * (NULL: none in particular): a model that others inherit from may leave required keys
 * to its children (an abstract base) unless it is selected or named as a teacher. */
int sema_run(struct arena *a, diag_ctx *d, ast_file *const *files, int nfiles,
             const ast_model *selected, sema_out *out);
#endif
