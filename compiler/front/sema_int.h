/* sema_int.h - what the two halves of the semantic pass share (internal).
 *
 * sema.c: per-entry checks (known key, type, range, list shape) into one `sval` per
 * written entry, the model namespace and inheritance (each model's effective entries
 * are its own over its parent's, key by key). sema_model.c: the rules that relate
 * keys to each other, defaults, and the md_model.
 */
#ifndef MOE_SEMA_INT_H
#define MOE_SEMA_INT_H
#include <stdbool.h>
#include <stdint.h>
#include "ast.h"
#include "keys.h"
#include "model.h"

struct arena;
typedef struct smodel smodel;

/* One written entry, checked against its key. */
typedef struct sval {
    const ast_entry *e;
    const smodel *owner;        /* the model whose block it was written in */
    bool bad;                   /* an error was reported for it: rules using it are skipped */
    bool is_list;
    int64_t i;                  /* KT_INT, KT_INTS (scalar form) */
    double f;                   /* KT_FLOAT */
    bool b;                     /* KT_BOOL */
    int word;                   /* KT_ENUM: index in key_info.words */
    const char *name;           /* KT_NAME */
    int64_t n;                  /* lists: entries after expansion (<= KEY_MAX_LIST) */
} sval;

enum { SM_NEW, SM_VISITING, SM_DONE, SM_BROKEN };

struct smodel {
    const ast_model *ast;
    int index, file;
    const sval *eff[K_COUNT];   /* its own entries (owner == this), then inherited ones */
    bool own_block[BLK_COUNT], has_block[BLK_COUNT];
    diag_loc block_loc[BLK_COUNT];
    smodel *parent;
    int state;
    bool failed;                /* an error concerns this model */
    bool may_be_abstract;       /* inherited from and not selected: required keys optional */
    bool incomplete;            /* required keys missing (reported or not) */
    md_model *md;
};

typedef struct sema {
    struct arena *a;
    diag_ctx *d;
    smodel *m;
    int n;
    smodel **table;             /* open addressing by name */
    size_t tcap;
} sema;

smodel *sema_lookup(const sema *s, const char *name);
/* Hint with the model name nearest to `name` (if any is close). */
void sema_hint_model(const sema *s, const char *name);
/* The entries of a checked list, in order: an arena array of v->n values (every
 * list key's range fits an int). */
int *sema_expand(sema *s, const sval *v);

/* sema_model.c */
void sema_build(sema *s, smodel *m);        /* rules and defaults -> m->md */
void sema_link(sema *s, smodel *m);         /* distill teacher */
#endif
