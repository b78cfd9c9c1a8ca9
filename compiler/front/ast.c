/* ast.c - builders and the text dump of the syntax tree; see ast.h.
 *
 * Builders only allocate and link; they check nothing. A NULL argument (from an
 * exhausted arena or error recovery in the parser) is tolerated everywhere, so the
 * parser's actions need no checks of their own.
 */
#include "ast.h"
#include "arena.h"
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static ast_value *value(arena *a, ast_vkind k, diag_loc loc) {
    ast_value *v = ARENA_NEW(a, ast_value);
    if (v) { v->kind = k; v->loc = loc; }
    return v;
}

ast_value *ast_int(arena *a, diag_loc loc, int64_t i) {
    ast_value *v = value(a, AV_INT, loc);
    if (v) v->i = i;
    return v;
}
ast_value *ast_float(arena *a, diag_loc loc, double f) {
    ast_value *v = value(a, AV_FLOAT, loc);
    if (v) v->f = f;
    return v;
}
ast_value *ast_string(arena *a, diag_loc loc, const char *s) {
    ast_value *v = value(a, AV_STRING, loc);
    if (v) v->s = s ? s : "";
    return v;
}
ast_value *ast_ident(arena *a, diag_loc loc, const char *s) {
    ast_value *v = value(a, AV_IDENT, loc);
    if (v) v->s = s ? s : "";
    return v;
}
ast_value *ast_bool(arena *a, diag_loc loc, bool b) {
    ast_value *v = value(a, AV_BOOL, loc);
    if (v) v->b = b;
    return v;
}
ast_value *ast_list(arena *a, diag_loc loc) { return value(a, AV_LIST, loc); }

ast_value *ast_list_add(ast_value *list, ast_item *it) {
    if (!list || !it) return list;
    if (list->last) list->last->next = it; else list->items = it;
    list->last = it;
    list->n_items++;
    return list;
}

ast_item *ast_item_scalar(arena *a, ast_value *v) {
    if (!v) return NULL;
    ast_item *it = ARENA_NEW(a, ast_item);
    if (it) { it->kind = AI_SCALAR; it->loc = v->loc; it->value = v; }
    return it;
}
ast_item *ast_item_repeat(arena *a, ast_value *v, int64_t count, diag_loc count_loc) {
    ast_item *it = ast_item_scalar(a, v);
    if (it) { it->kind = AI_REPEAT; it->count = count; it->count_loc = count_loc; }
    return it;
}
ast_item *ast_item_range(arena *a, ast_value *lo, ast_value *hi) {
    ast_item *it = ast_item_scalar(a, lo);
    if (it) { it->kind = AI_RANGE; it->hi = hi; }
    return it;
}

ast_entry *ast_entry_value(arena *a, diag_loc loc, const char *key, ast_value *v) {
    if (!key || !v) return NULL;
    ast_entry *e = ARENA_NEW(a, ast_entry);
    if (e) { e->key = key; e->loc = loc; e->value = v; }
    return e;
}
ast_entry *ast_entry_block(arena *a, diag_loc loc, const char *key, ast_block *b) {
    if (!key || !b) return NULL;
    ast_entry *e = ARENA_NEW(a, ast_entry);
    if (e) { e->key = key; e->loc = loc; e->block = b; }
    return e;
}
ast_block *ast_block_new(arena *a, diag_loc loc) {
    ast_block *b = ARENA_NEW(a, ast_block);
    if (b) b->loc = loc;
    return b;
}
ast_block *ast_block_add(ast_block *b, ast_entry *e) {
    if (!b || !e) return b;
    if (b->last) b->last->next = e; else b->first = e;
    b->last = e;
    b->n++;
    return b;
}

ast_model *ast_model_new(arena *a, diag_loc loc, const char *name, const char *parent,
                         diag_loc parent_loc, ast_block *body) {
    if (!name || !body) return NULL;
    ast_model *m = ARENA_NEW(a, ast_model);
    if (m) {
        m->name = name; m->loc = loc; m->parent = parent;
        m->parent_loc = parent_loc; m->body = body;
    }
    return m;
}

void ast_file_add_model(ast_file *f, ast_model *m) {
    if (!f || !m) return;
    if (f->last_model) f->last_model->next = m; else f->models = m;
    f->last_model = m;
    f->n_models++;
}

void ast_file_add_import(arena *a, ast_file *f, diag_loc loc, const char *path) {
    if (!f || !path) return;
    ast_import *im = ARENA_NEW(a, ast_import);
    if (!im) return;
    im->path = path; im->loc = loc;
    if (f->last_import) f->last_import->next = im; else f->imports = im;
    f->last_import = im;
}

const char *ast_kind_phrase(ast_vkind k) {
    switch (k) {
    case AV_INT: return "an integer";
    case AV_FLOAT: return "a float";
    case AV_STRING: return "a string";
    case AV_IDENT: return "a word";
    case AV_BOOL: return "a boolean";
    case AV_LIST: return "a list";
    }
    return "a value";
}

/* ---- dump ---- */

static void dump_string(FILE *out, const char *s) {
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', out);
        fputc(*s, out);
    }
    fputc('"', out);
}

static void dump_scalar(FILE *out, const ast_value *v) {
    switch (v->kind) {
    case AV_INT: fprintf(out, "int %" PRId64, v->i); break;
    case AV_FLOAT: {
        /* the shortest of %.15g / %.17g that reads back exactly */
        char buf[40];
        snprintf(buf, sizeof buf, "%.15g", v->f);
        if (strtod(buf, NULL) != v->f) snprintf(buf, sizeof buf, "%.17g", v->f);
        fprintf(out, "float %s", buf);
        break;
    }
    case AV_STRING: fputs("string ", out); dump_string(out, v->s); break;
    case AV_IDENT: fprintf(out, "word %s", v->s); break;
    case AV_BOOL: fprintf(out, "bool %s", v->b ? "true" : "false"); break;
    case AV_LIST: fputs("list", out); break;
    }
}

static void indent(FILE *out, int depth) {
    for (int i = 0; i < depth; i++) fputs("  ", out);
}

static void dump_block(FILE *out, const ast_block *b, int depth) {
    for (const ast_entry *e = b->first; e; e = e->next) {
        indent(out, depth);
        if (e->block) {
            fprintf(out, "block %s @%d:%d\n", e->key, e->loc.line, e->loc.col);
            dump_block(out, e->block, depth + 1);
            continue;
        }
        const ast_value *v = e->value;
        fprintf(out, "entry %s @%d:%d = ", e->key, e->loc.line, e->loc.col);
        if (v->kind != AV_LIST) {
            dump_scalar(out, v);
            fputc('\n', out);
            continue;
        }
        fprintf(out, "list (%d items)\n", v->n_items);
        for (const ast_item *it = v->items; it; it = it->next) {
            indent(out, depth + 1);
            fprintf(out, "@%d:%d ", it->loc.line, it->loc.col);
            dump_scalar(out, it->value);
            if (it->kind == AI_REPEAT) fprintf(out, " x %" PRId64, it->count);
            if (it->kind == AI_RANGE) fprintf(out, " .. %" PRId64, it->hi->i);
            fputc('\n', out);
        }
    }
}

void ast_dump(const ast_file *f, FILE *out) {
    fputs("file ", out);
    dump_string(out, f->path);
    fputc('\n', out);
    for (const ast_import *im = f->imports; im; im = im->next) {
        fprintf(out, "  import @%d:%d ", im->loc.line, im->loc.col);
        dump_string(out, im->path);
        fputc('\n', out);
    }
    for (const ast_model *m = f->models; m; m = m->next) {
        fprintf(out, "  model %s @%d:%d", m->name, m->loc.line, m->loc.col);
        if (m->parent) fprintf(out, " : %s @%d:%d", m->parent, m->parent_loc.line, m->parent_loc.col);
        fputc('\n', out);
        dump_block(out, m->body, 2);
    }
}
