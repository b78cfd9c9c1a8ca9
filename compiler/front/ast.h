/* ast.h - the syntax tree of one .moe file, exactly as written.
 *
 * The grammar actions of dsl/parser.y build it through the ast_* builders below; it
 * keeps lists unexpanded (`64 x 10`, `13..24`) and every node's location. Meaning
 * (keys, types, inheritance, defaults) is the semantic pass's business (sema.c).
 * All nodes live in the compilation arena.
 */
#ifndef MOE_AST_H
#define MOE_AST_H
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "diag.h"

struct arena;

typedef enum { AV_INT, AV_FLOAT, AV_STRING, AV_IDENT, AV_BOOL, AV_LIST } ast_vkind;
typedef enum { AI_SCALAR, AI_REPEAT, AI_RANGE } ast_ikind;

typedef struct ast_value ast_value;
typedef struct ast_item ast_item;
typedef struct ast_entry ast_entry;
typedef struct ast_block ast_block;

/* A list item: `v`, `v x count` or `lo..hi`. */
struct ast_item {
    ast_ikind kind;
    diag_loc loc;
    ast_value *value;           /* the scalar; for a range, lo */
    ast_value *hi;              /* range only */
    int64_t count;              /* repeat only, as written (may be < 1: sema says so) */
    diag_loc count_loc;
    ast_item *next;
};

struct ast_value {
    ast_vkind kind;
    int n_items;                /* AV_LIST */
    diag_loc loc;
    union {
        int64_t i;              /* AV_INT */
        double f;               /* AV_FLOAT */
        const char *s;          /* AV_STRING, AV_IDENT */
        bool b;                 /* AV_BOOL */
        struct { ast_item *items, *last; };     /* AV_LIST */
    };
};

/* `key = value` or `key { ... }`: exactly one of value and block is set. */
struct ast_entry {
    const char *key;
    diag_loc loc;
    ast_value *value;
    ast_block *block;
    ast_entry *next;
};

struct ast_block {
    diag_loc loc;               /* the '{' */
    ast_entry *first, *last;
    int n;
};

typedef struct ast_model {
    const char *name;
    diag_loc loc;               /* the name */
    const char *parent;         /* NULL: no parent */
    diag_loc parent_loc;
    ast_block *body;
    struct ast_model *next;
} ast_model;

typedef struct ast_import {
    const char *path;           /* as written */
    diag_loc loc;
    struct ast_import *next;
} ast_import;

typedef struct ast_file {
    const char *path;           /* as shown in diagnostics */
    const char *text;
    size_t len;
    ast_import *imports, *last_import;
    ast_model *models, *last_model;
    int n_models;
} ast_file;

/* Builders: each returns NULL only when the arena is exhausted (sticky). */
ast_value *ast_int(struct arena *a, diag_loc loc, int64_t v);
ast_value *ast_float(struct arena *a, diag_loc loc, double v);
ast_value *ast_string(struct arena *a, diag_loc loc, const char *s);
ast_value *ast_ident(struct arena *a, diag_loc loc, const char *s);
ast_value *ast_bool(struct arena *a, diag_loc loc, bool b);
ast_value *ast_list(struct arena *a, diag_loc loc);
ast_value *ast_list_add(ast_value *list, ast_item *it);
ast_item *ast_item_scalar(struct arena *a, ast_value *v);
ast_item *ast_item_repeat(struct arena *a, ast_value *v, int64_t count, diag_loc count_loc);
ast_item *ast_item_range(struct arena *a, ast_value *lo, ast_value *hi);
ast_entry *ast_entry_value(struct arena *a, diag_loc loc, const char *key, ast_value *v);
ast_entry *ast_entry_block(struct arena *a, diag_loc loc, const char *key, ast_block *b);
ast_block *ast_block_new(struct arena *a, diag_loc loc);
ast_block *ast_block_add(ast_block *b, ast_entry *e);
ast_model *ast_model_new(struct arena *a, diag_loc loc, const char *name,
                         const char *parent, diag_loc parent_loc, ast_block *body);
void ast_file_add_model(ast_file *f, ast_model *m);
void ast_file_add_import(struct arena *a, ast_file *f, diag_loc loc, const char *path);

/* The name of a value kind for messages: "an integer", "a list", ... */
const char *ast_kind_phrase(ast_vkind k);

/* Writes the tree in a stable, indented text form (moec check --dump-ast). */
void ast_dump(const ast_file *f, FILE *out);
#endif
