/* sema.c - the semantic pass, first half: entries, names, inheritance.
 *
 * 1. collect: every entry a model writes is checked on its own (known key in its
 *    block, no duplicate, right type, value in range, list items well formed and the
 *    list not longer than KEY_MAX_LIST). Each entry is checked once, where it is
 *    written, however many models inherit it.
 * 2. names: one namespace for all models of the file and its imports; a duplicate
 *    name is an error.
 * 3. inheritance: parents may come before or after their children (an extension of
 *    the spec's "defined earlier"); unknown parents and cycles are errors. A child's
 *    effective entries are its own, then its parent's, key by key, nested blocks
 *    included; a child's moe.every replaces an inherited moe.layers and vice versa.
 *    Chains are walked without recursion, so any depth is fine.
 * Then sema_model.c relates keys to each other and builds the md_models.
 */
#include "sema.h"
#include "sema_int.h"
#include "arena.h"
#include "moe_hash.h"
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- 1. entries ---- */

static const char *expect_phrase(const key_info *k, char *buf, int size) {
    switch (k->type) {
    case KT_INT: return "an integer";
    case KT_FLOAT: return "a number";
    case KT_BOOL: return "true or false";
    case KT_NAME: return "a model name";
    case KT_INTS: return "an integer or a list of integers";
    case KT_LIST: return "a list of integers";
    case KT_ENUM: {
        char w[256];
        snprintf(buf, (size_t)size, "one of %s", key_words_list(k, w, sizeof w));
        return buf;
    }
    }
    return "a value";
}

static void type_error(sema *s, const key_info *k, const ast_value *x) {
    char buf[300];
    diag_error(s->d, x->loc, "%s expects %s, got %s", k->qname, expect_phrase(k, buf, sizeof buf),
               ast_kind_phrase(x->kind));
    if (k->type == KT_ENUM && x->kind == AV_STRING)
        diag_hint(s->d, "write the word without quotes");
    else if (k->type == KT_LIST && x->kind == AV_INT)
        diag_hint(s->d, "write [%" PRId64 "] for a list of one", x->i);
    else if (k->type == KT_INT && x->kind == AV_FLOAT && x->f == floor(x->f) && fabs(x->f) < 1e15)
        diag_hint(s->d, "write %.0f without the decimal point", x->f);
}

/* Integer range of key k; `what` names the value ("moe.top_k = 3" or "an entry"). */
static bool int_in_range(sema *s, const key_info *k, diag_loc at, int64_t v, bool element) {
    if ((double)v >= k->lo && (double)v <= k->hi) return true;
    const char *pre = element ? "entry of " : "";
    if (k->hi >= 9007199254740992.0)
        diag_error(s->d, at, "%s%s must be at least %.0f, got %" PRId64, pre, k->qname, k->lo, v);
    else
        diag_error(s->d, at, "%s%s must be between %.0f and %.0f, got %" PRId64, pre, k->qname,
                   k->lo, k->hi, v);
    return false;
}

static bool float_in_range(sema *s, const key_info *k, diag_loc at, double v) {
    bool ok = (k->lo_open ? v > k->lo : v >= k->lo) && (k->hi_open ? v < k->hi : v <= k->hi);
    if (ok) return true;
    char lo[64], hi[64] = "";
    snprintf(lo, sizeof lo, "%s %g", k->lo_open ? ">" : ">=", k->lo);
    if (isfinite(k->hi)) snprintf(hi, sizeof hi, " and %s %g", k->hi_open ? "<" : "<=", k->hi);
    diag_error(s->d, at, "%s must be %s%s, got %g", k->qname, lo, hi, v);
    return false;
}

/* Items of an integer list: integers, counts >= 1, ranges lo <= hi, values in range. */
static bool check_list(sema *s, const key_info *k, const ast_value *x, int64_t *len) {
    bool ok = true;
    int64_t n = 0;
    for (const ast_item *it = x->items; it; it = it->next) {
        const ast_value *v = it->value;
        if (v->kind != AV_INT) {
            diag_error(s->d, v->loc, "%s: list entries must be integers, got %s", k->qname,
                       ast_kind_phrase(v->kind));
            ok = false;
            continue;
        }
        int64_t add = 1;
        if (!int_in_range(s, k, v->loc, v->i, true)) ok = false;
        if (it->kind == AI_REPEAT) {
            if (it->count < 1) {
                diag_error(s->d, it->count_loc, "repeat count must be at least 1, got %" PRId64,
                           it->count);
                ok = false;
            }
            add = it->count < 1 ? 0 : it->count;
        } else if (it->kind == AI_RANGE) {
            if (it->hi->i < v->i) {
                diag_error(s->d, v->loc, "empty range %" PRId64 "..%" PRId64, v->i, it->hi->i);
                diag_hint(s->d, "ranges count up: write the smaller bound first");
                ok = false;
                add = 0;
            } else {
                if (!int_in_range(s, k, it->hi->loc, it->hi->i, true)) ok = false;
                add = it->hi->i - v->i + 1;
            }
        }
        if (n <= KEY_MAX_LIST) n += add;      /* add <= 2^54: no overflow */
    }
    if (n > KEY_MAX_LIST) {
        diag_error(s->d, x->loc, "%s: list expands to more than %d entries", k->qname, KEY_MAX_LIST);
        ok = false;
    }
    *len = n;
    return ok;
}

static sval *convert(sema *s, smodel *m, int kid, const ast_entry *e) {
    const key_info *k = &key_table[kid];
    const ast_value *x = e->value;
    sval *v = ARENA_NEW(s->a, sval);
    if (!v) return NULL;
    v->e = e;
    v->owner = m;
    bool ok = true;
    switch (k->type) {
    case KT_INT:
        if (x->kind != AV_INT) { type_error(s, k, x); ok = false; break; }
        v->i = x->i;
        ok = int_in_range(s, k, x->loc, x->i, false);
        break;
    case KT_FLOAT:
        if (x->kind == AV_INT) v->f = (double)x->i;
        else if (x->kind == AV_FLOAT) v->f = x->f;
        else { type_error(s, k, x); ok = false; break; }
        ok = float_in_range(s, k, x->loc, v->f);
        break;
    case KT_BOOL:
        if (x->kind != AV_BOOL) { type_error(s, k, x); ok = false; break; }
        v->b = x->b;
        break;
    case KT_ENUM: {
        if (x->kind != AV_IDENT) { type_error(s, k, x); ok = false; break; }
        int n = 0;
        while (k->words[n] && strcmp(k->words[n], x->s)) n++;
        if (k->words[n]) { v->word = n; break; }
        ok = false;
        diag_error(s->d, x->loc, "unknown %s '%s'", k->qname, x->s);
        int nw = 0;
        while (k->words[nw]) nw++;
        const char *near = diag_nearest(x->s, k->words, nw);
        char buf[256];
        if (near) diag_hint(s->d, "did you mean '%s'?", near);
        else diag_hint(s->d, "%s is one of %s", k->qname, key_words_list(k, buf, sizeof buf));
        break;
    }
    case KT_NAME:
        if (x->kind != AV_IDENT) { type_error(s, k, x); ok = false; break; }
        v->name = x->s;
        break;
    case KT_INTS:
        if (x->kind == AV_INT) {
            v->i = x->i;
            ok = int_in_range(s, k, x->loc, x->i, false);
            break;
        }
        if (x->kind != AV_LIST) { type_error(s, k, x); ok = false; break; }
        v->is_list = true;
        ok = check_list(s, k, x, &v->n);
        break;
    case KT_LIST:
        if (x->kind != AV_LIST) { type_error(s, k, x); ok = false; break; }
        v->is_list = true;
        ok = check_list(s, k, x, &v->n);
        break;
    }
    v->bad = !ok;
    return v;
}

/* A known key written with an error: it counts as present (so that no "missing
 * required key" follows) but no rule uses it. */
static sval *bad_value(sema *s, smodel *m, const ast_entry *e) {
    sval *v = ARENA_NEW(s->a, sval);
    if (v) { v->e = e; v->owner = m; v->bad = true; }
    return v;
}

/* Names a DeepSpeed-MoE user reaches for (the arguments of deepspeed.moe.layer.MoE, and
 * "dropless"), with the key that means the same here (keys.c, defaults in sema_model.c).
 * The names that are the same here (capacity_factor, eval_capacity_factor, min_capacity,
 * drop_tokens) need no entry. */
typedef struct ds_name {
    const char *name;
    key_id key;
    bool invert;                /* a boolean of the opposite sense */
    const char *what;           /* said after the suggestion, or NULL */
} ds_name;
static const ds_name ds_names[] = {
    {"num_experts", K_MOE_EXPERTS, false, NULL},
    {"k", K_MOE_TOP_K, false, NULL},
    {"ep_size", K_PAR_EXPERT, false, "the expert-parallel degree"},
    {"use_residual", K_MOE_RESIDUAL, false, "PR-MoE's residual MLP"},
    {"noisy_gate_policy", K_MOE_NOISY, false, "'Jitter', 'RSample', None are jitter, rsample, none"},
    {"dropless", K_MOE_DROP, true, "dropless: capacity grows to the largest expert load"},
    {"use_rts", K_MOE_RTS, false, NULL},
    {"top2_2nd_expert_sampling", K_MOE_SES, false, NULL},
};

/* Value x (NULL for a block) as written for dn's key: "8", "[...]", "false", "jitter"; "..."
 * when it does not carry over. */
static const char *ds_value(const ds_name *dn, const ast_value *x, char *buf, size_t size) {
    const key_info *k = &key_table[dn->key];
    bool is_bool = x && x->kind == AV_BOOL;
    snprintf(buf, size, "...");
    if (k->type == KT_BOOL)     /* a boolean is what the name asks for, whatever was written */
        snprintf(buf, size, "%s", (is_bool ? x->b : true) != dn->invert ? "true" : "false");
    else if (x && x->kind == AV_INT && (k->type == KT_INT || k->type == KT_INTS))
        snprintf(buf, size, "%" PRId64, x->i);
    else if (x && x->kind == AV_LIST && k->type == KT_INTS)
        snprintf(buf, size, "[...]");
    else if (x && (x->kind == AV_STRING || x->kind == AV_IDENT) && k->type == KT_ENUM)
        for (int i = 0; k->words[i]; i++)
            if (!strcasecmp(k->words[i], x->s)) snprintf(buf, size, "%s", k->words[i]);
    return buf;
}

static bool ds_hint(sema *s, smodel *m, key_block b, const ast_entry *e) {
    const ds_name *dn = NULL;
    for (size_t i = 0; i < sizeof ds_names / sizeof ds_names[0]; i++)
        if (!strcmp(ds_names[i].name, e->key)) dn = &ds_names[i];
    if (!dn) return false;
    const key_info *k = &key_table[dn->key];
    char v[64], write[160];
    ds_value(dn, e->block ? NULL : e->value, v, sizeof v);
    if (k->block == b)
        snprintf(write, sizeof write, "%s = %s", k->name, v);
    else
        snprintf(write, sizeof write, "%s { %s = %s }", key_block_name(k->block), k->name, v);
    const char *what = dn->invert && !strcmp(v, "true") ? NULL : dn->what;  /* "dropless = false" */
    diag_hint(s->d, "%s'%s' is %s here: write %s%s%s%s", dn->invert ? "" : "DeepSpeed's ", e->key, k->qname,
              write, what ? " (" : "", what ? what : "", what ? ")" : "");
    /* the entry stands for the key it translates to (no "missing moe.experts" after it) */
    if (k->block == b && !m->eff[dn->key]) m->eff[dn->key] = bad_value(s, m, e);
    return true;
}

/* note: the keys of block b, when nothing near what was written exists */
static void note_keys(sema *s, key_block b) {
    char buf[480];
    int used = 0;
    for (int k = 0; k < K_COUNT && used < (int)sizeof buf; k++)
        if (key_table[k].block == b)
            used += snprintf(buf + used, sizeof buf - (size_t)used, "%s%s", used ? ", " : "", key_table[k].name);
    if (b != BLK_MODEL) {
        diag_note(s->d, "the keys of the %s block are %s", key_block_name(b), buf);
        return;
    }
    diag_note(s->d, "the keys of a model are %s; its blocks are moe, parallel, train, distill", buf);
}

static void unknown_key(sema *s, smodel *m, key_block b, const ast_entry *e) {
    const char *words[K_COUNT + BLK_COUNT];
    int n = key_names(b, words);
    if (b == BLK_MODEL)
        diag_error(s->d, e->loc, "unknown key '%s' in model '%s'", e->key, m->ast->name);
    else
        diag_error(s->d, e->loc, "unknown key '%s' in the %s block", e->key, key_block_name(b));
    if (ds_hint(s, m, b, e)) return;
    const char *near = diag_nearest(e->key, words, n);
    int other = 0;
    while (other < BLK_COUNT && key_find((key_block)other, e->key) < 0) other++;
    const char *where = other == BLK_COUNT ? NULL : key_block_name((key_block)other);
    if (near && where)
        diag_hint(s->d, "did you mean '%s'? ('%s' is a key of the %s block)", near, e->key, where);
    else if (near)
        diag_hint(s->d, "did you mean '%s'?", near);
    else if (other == BLK_MODEL)
        diag_hint(s->d, "'%s' belongs at the top of the model, outside any block", e->key);
    else if (where)
        diag_hint(s->d, "'%s' belongs in the %s block: %s { %s = ... }", e->key, where, where,
                  e->key);
    else
        note_keys(s, b);
    if (!near) return;
    /* the misspelt entry stands for the key it resembles */
    int k = key_find(b, near);
    if (k >= 0 && !m->eff[k]) m->eff[k] = bad_value(s, m, e);
}

static void collect_block(sema *s, smodel *m, key_block b, const ast_block *blk) {
    for (const ast_entry *e = blk->first; e; e = e->next) {
        if (b == BLK_MODEL) {
            int sb = key_find_block(e->key);
            if (sb >= 0) {
                if (!e->block) {
                    diag_error(s->d, e->loc, "'%s' is a block: write %s { ... }", e->key, e->key);
                    m->failed = true;
                } else if (m->own_block[sb]) {
                    diag_error(s->d, e->loc, "duplicate block '%s'", e->key);
                    diag_hint(s->d, "the first is at line %d; merge the two", m->block_loc[sb].line);
                    m->failed = true;
                } else {
                    m->own_block[sb] = true;
                    m->block_loc[sb] = e->loc;
                    collect_block(s, m, (key_block)sb, e->block);
                }
                continue;
            }
        }
        int k = key_find(b, e->key);
        if (k < 0) { unknown_key(s, m, b, e); m->failed = true; continue; }
        if (e->block) {
            diag_error(s->d, e->loc, "%s takes a value, not a block", key_table[k].qname);
            diag_hint(s->d, "write %s = ...", e->key);
            m->failed = true;
            if (!m->eff[k]) m->eff[k] = bad_value(s, m, e);
            continue;
        }
        if (m->eff[k]) {
            diag_error(s->d, e->loc, "duplicate key '%s'", e->key);
            diag_hint(s->d, "it is first set at line %d", m->eff[k]->e->loc.line);
            m->failed = true;
            continue;
        }
        m->eff[k] = convert(s, m, k, e);
        if (m->eff[k] && m->eff[k]->bad) m->failed = true;
    }
}

int *sema_expand(sema *s, const sval *v) {
    int *out = ARENA_ARRAY(s->a, int, v->n > 0 ? v->n : 1);
    if (!out) return NULL;
    int64_t n = 0;
    for (const ast_item *it = v->e->value->items; it && n < v->n; it = it->next) {
        int x = (int)it->value->i;      /* checked: within the key's range */
        if (it->kind == AI_SCALAR) out[n++] = x;
        else if (it->kind == AI_REPEAT)
            for (int64_t j = 0; j < it->count && n < v->n; j++) out[n++] = x;
        else
            for (int64_t y = x; y <= it->hi->i && n < v->n; y++) out[n++] = (int)y;
    }
    return out;
}

/* ---- 2. names ---- */

smodel *sema_lookup(const sema *s, const char *name) {
    if (!s->table) return NULL;
    for (size_t i = util_hash_str(name) & (s->tcap - 1);; i = (i + 1) & (s->tcap - 1)) {
        smodel *m = s->table[i];
        if (!m) return NULL;
        if (!strcmp(m->ast->name, name)) return m;
    }
}

void sema_hint_model(const sema *s, const char *name) {
    /* Compare against at most a few thousand names: enough for any real file. */
    const char *best = NULL;
    int lim = strlen(name) <= 3 ? 1 : strlen(name) <= 6 ? 2 : 3, bestd = lim + 1;
    for (int i = 0; i < s->n && i < 4096; i++) {
        int d = diag_edit_distance(name, s->m[i].ast->name, lim);
        if (d < bestd) { bestd = d; best = s->m[i].ast->name; }
    }
    if (best) diag_hint(s->d, "did you mean '%s'?", best);
}

static bool build_table(sema *s) {
    s->tcap = 16;
    while (s->tcap < 2 * (size_t)s->n) s->tcap *= 2;
    s->table = ARENA_ARRAY(s->a, smodel *, s->tcap);
    if (!s->table) return false;
    for (int i = 0; i < s->n; i++) {
        smodel *m = &s->m[i];
        size_t j = util_hash_str(m->ast->name) & (s->tcap - 1);
        for (; s->table[j]; j = (j + 1) & (s->tcap - 1))
            if (!strcmp(s->table[j]->ast->name, m->ast->name)) break;
        if (!s->table[j]) { s->table[j] = m; continue; }
        const smodel *first = s->table[j];
        diag_error(s->d, m->ast->loc, "duplicate model '%s'", m->ast->name);
        diag_hint(s->d, "the first is at %s:%d:%d", first->ast->loc.file, first->ast->loc.line,
                  first->ast->loc.col);
        m->state = SM_BROKEN;
    }
    return true;
}

/* ---- 3. inheritance ---- */

/* eff[] holds the model's own entries (owner == m) until this fills in the parent's. */
static bool owns(const smodel *m, int k) { return m->eff[k] && m->eff[k]->owner == m; }

static void inherit(smodel *m) {
    const smodel *p = m->parent;
    if (p) {
        /* a child's every and layers replace each other */
        bool every = owns(m, K_MOE_EVERY), layers = owns(m, K_MOE_LAYERS);
        for (int k = 0; k < K_COUNT; k++)
            if (!m->eff[k]) m->eff[k] = p->eff[k];
        if (every && !layers) m->eff[K_MOE_LAYERS] = NULL;
        if (layers && !every) m->eff[K_MOE_EVERY] = NULL;
    }
    for (int b = 0; b < BLK_COUNT; b++) {
        m->has_block[b] = m->own_block[b] || (p && p->has_block[b]);
        if (!m->own_block[b] && p) m->block_loc[b] = p->block_loc[b];
    }
}

static void cycle_error(sema *s, smodel **stack, int from, int n) {
    smodel *last = stack[n - 1];
    if (from == n - 1) {
        diag_error(s->d, last->ast->parent_loc, "model '%s' inherits from itself", last->ast->name);
        return;
    }
    const char **names = ARENA_ARRAY(s->a, const char *, n);
    if (!names) return;
    for (int i = from; i < n; i++) names[i] = stack[i]->ast->name;
    char buf[400];
    diag_error(s->d, last->ast->parent_loc, "inheritance cycle: %s",
               diag_chain(buf, sizeof buf, names + from, n - from, stack[from]->ast->name));
}

/* Resolves m and its ancestors, oldest first. stack has room for every model. */
static void resolve(sema *s, smodel *m, smodel **stack) {
    int n = 0;
    bool broken = false;
    smodel *cur = m;
    for (;;) {
        if (cur->state == SM_DONE) break;
        if (cur->state == SM_BROKEN) { broken = true; break; }
        if (cur->state == SM_VISITING) {
            int from = n - 1;
            while (from > 0 && stack[from] != cur) from--;
            cycle_error(s, stack, from, n);
            broken = true;
            break;
        }
        cur->state = SM_VISITING;
        stack[n++] = cur;
        if (!cur->ast->parent) break;
        smodel *p = sema_lookup(s, cur->ast->parent);
        if (!p) {
            diag_error(s->d, cur->ast->parent_loc, "unknown parent model '%s'", cur->ast->parent);
            sema_hint_model(s, cur->ast->parent);
            broken = true;
            break;
        }
        cur->parent = p;
        cur = p;
    }
    for (int i = n - 1; i >= 0; i--) {
        if (broken) { stack[i]->state = SM_BROKEN; continue; }
        inherit(stack[i]);
        stack[i]->state = SM_DONE;
    }
}

int sema_run(arena *a, diag_ctx *d, ast_file *const *files, int nfiles,
             const ast_model *selected, sema_out *out) {
    int before = diag_count(d);
    sema s = {.a = a, .d = d};
    for (int f = 0; f < nfiles; f++) s.n += files[f]->n_models;
    s.m = ARENA_ARRAY(a, smodel, s.n > 0 ? s.n : 1);
    smodel **stack = ARENA_ARRAY(a, smodel *, s.n > 0 ? s.n : 1);
    out->n = s.n;
    out->ast = ARENA_ARRAY(a, const ast_model *, s.n > 0 ? s.n : 1);
    out->md = ARENA_ARRAY(a, const md_model *, s.n > 0 ? s.n : 1);
    out->file = ARENA_ARRAY(a, int, s.n > 0 ? s.n : 1);
    if (!s.m || !stack || !out->ast || !out->md || !out->file) {
        diag_error(d, (diag_loc){0}, "out of memory");
        return diag_count(d) - before;
    }
    int i = 0;
    for (int f = 0; f < nfiles; f++)
        for (const ast_model *am = files[f]->models; am; am = am->next, i++) {
            s.m[i].ast = am;
            s.m[i].index = i;
            s.m[i].file = f;
            out->ast[i] = am;
            out->file[i] = f;
        }
    for (i = 0; i < s.n; i++) collect_block(&s, &s.m[i], BLK_MODEL, s.m[i].ast->body);
    if (!build_table(&s)) {
        diag_error(d, (diag_loc){0}, "out of memory");
        return diag_count(d) - before;
    }
    for (i = 0; i < s.n; i++)
        if (s.m[i].state == SM_NEW) resolve(&s, &s.m[i], stack);
    for (i = 0; i < s.n; i++)
        if (s.m[i].parent) s.m[i].parent->may_be_abstract = true;
    for (i = 0; i < s.n; i++)
        if (s.m[i].ast == selected) s.m[i].may_be_abstract = false;
    for (i = 0; i < s.n; i++)
        if (s.m[i].state == SM_DONE) sema_build(&s, &s.m[i]);
    for (i = 0; i < s.n; i++)
        if (s.m[i].md) sema_link(&s, &s.m[i]);
    if (arena_failed(a)) diag_error(d, (diag_loc){0}, "out of memory");
    for (i = 0; i < s.n; i++) out->md[i] = s.m[i].failed ? NULL : s.m[i].md;
    return diag_count(d) - before;
}
