/* diag.c - the diagnostics list; see diag.h.
 *
 * Errors are stored with their own copies of the message (in a private arena) and
 * only formatted for output by diag_print, which sorts them and echoes each source
 * line with a caret. Lines longer than DIAG_WIDE columns are clipped to a window
 * around the column, and bytes that would garble a terminal (control characters,
 * invalid UTF-8) are echoed as '?', so any input prints as plain text.
 */
#include "diag.h"
#include "moe_nearest.h"
#include "arena.h"
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { DIAG_WIDE = 160, DIAG_CTX = 60 };

typedef struct drec {
    diag_loc loc;
    const char *msg, *hint, *note;
    int seq;
    int warning;
} drec;

typedef struct dsrc { const char *file, *text; size_t len; } dsrc;

struct diag_ctx {
    arena *a;
    drec *rec;
    int n, cap, max, count, warnings;
    int last;                   /* index of the last stored error, -1 if dropped */
    dsrc *src;
    int nsrc, srccap;
};

diag_ctx *diag_create(int max_errors) {
    diag_ctx *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->a = arena_create(0);
    if (!d->a) { free(d); return NULL; }
    d->max = max_errors > 0 ? max_errors : 100;
    d->last = -1;
    return d;
}

void diag_destroy(diag_ctx *d) {
    if (!d) return;
    arena_destroy(d->a);
    free(d->rec);
    free(d->src);
    free(d);
}

int diag_source(const diag_ctx *d, int i, const char **file, const char **text, size_t *len) {
    if (!d || i < 0 || i >= d->nsrc) return -1;
    *file = d->src[i].file;
    *text = d->src[i].text;
    *len = d->src[i].len;
    return 0;
}

void diag_add_source(diag_ctx *d, const char *file, const char *text, size_t len) {
    if (!d || !file) return;
    if (d->nsrc == d->srccap) {
        int cap = d->srccap ? 2 * d->srccap : 8;
        dsrc *ns = realloc(d->src, sizeof *ns * (size_t)cap);
        if (!ns) return;
        d->src = ns; d->srccap = cap;
    }
    d->src[d->nsrc++] = (dsrc){file, text, len};
}

static int same_loc(diag_loc a, diag_loc b) {
    if (a.line != b.line || a.col != b.col) return 0;
    if (!a.file || !b.file) return a.file == b.file;
    return strcmp(a.file, b.file) == 0;
}

void diag_error(diag_ctx *d, diag_loc loc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    diag_verror(d, loc, fmt, ap);
    va_end(ap);
}

/* stores one record; an identical one (same place, same text) is kept once */
static void add(diag_ctx *d, diag_loc loc, int warning, const char *fmt, va_list ap) {
    if (!d) return;
    int *count = warning ? &d->warnings : &d->count;
    (*count)++;
    d->last = -1;
    if (d->n >= d->max) return;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    for (int i = 0; i < d->n; i++)
        if (same_loc(d->rec[i].loc, loc) && !strcmp(d->rec[i].msg, buf) && d->rec[i].warning == warning) {
            (*count)--;
            return;
        }
    if (d->n == d->cap) {
        int cap = d->cap ? 2 * d->cap : 16;
        drec *nr = realloc(d->rec, sizeof *nr * (size_t)cap);
        if (!nr) return;
        d->rec = nr; d->cap = cap;
    }
    const char *msg = arena_strdup(d->a, buf);
    const char *file = loc.file ? arena_strdup(d->a, loc.file) : NULL;
    if (!msg || (loc.file && !file)) return;
    loc.file = file;
    d->rec[d->n] = (drec){loc, msg, NULL, NULL, d->n, warning};
    d->last = d->n++;
}

void diag_verror(diag_ctx *d, diag_loc loc, const char *fmt, va_list ap) { add(d, loc, 0, fmt, ap); }

void diag_warning(diag_ctx *d, diag_loc loc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    add(d, loc, 1, fmt, ap);
    va_end(ap);
}

int diag_warning_count(const diag_ctx *d) { return d ? d->warnings : 0; }

const char *diag_chain(char *buf, size_t size, const char *const *names, int n, const char *last) {
    size_t used = 0, cut = size / 4 * 3;       /* a quarter left for the last name */
    buf[0] = 0;
    for (int i = 0; i < n && used < cut; i++) {
        int w = snprintf(buf + used, size - used, "%s -> ", names[i]);
        used += w > 0 ? (size_t)w : 0;
    }
    if (used < cut) snprintf(buf + used, size - used, "%s", last);
    else snprintf(buf + cut - 4, size - (cut - 4), "...");
    return buf;
}

/* the text of a hint or note of the last diagnostic, in the context's arena */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 0)))
#endif
static const char *annotation(diag_ctx *d, const char *fmt, va_list ap) {
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    return arena_strdup(d->a, buf);
}

void diag_hint(diag_ctx *d, const char *fmt, ...) {
    if (!d || d->last < 0) return;
    va_list ap;
    va_start(ap, fmt);
    d->rec[d->last].hint = annotation(d, fmt, ap);
    va_end(ap);
}

void diag_note(diag_ctx *d, const char *fmt, ...) {
    if (!d || d->last < 0) return;
    va_list ap;
    va_start(ap, fmt);
    d->rec[d->last].note = annotation(d, fmt, ap);
    va_end(ap);
}

const char *diag_first_error(const diag_ctx *d) {
    for (int i = 0; d && i < d->n; i++)
        if (!d->rec[i].warning) return d->rec[i].msg;
    return NULL;
}

int diag_count(const diag_ctx *d) { return d ? d->count : 0; }

/* ---- UTF-8 ---- */

int diag_utf8_len(const unsigned char *s, size_t n) {
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;          /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if (n < (size_t)len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return len;
}

int diag_utf8_step(const unsigned char *s, size_t n) {
    int l = diag_utf8_len(s, n);
    return l ? l : 1;
}

/* ---- nearest word ---- */

int diag_edit_distance(const char *a, const char *b, int limit) { return moe_edit_distance(a, b, limit); }

const char *diag_nearest(const char *w, const char *const *words, int n) {
    return moe_nearest(w, words, n, sizeof *words);
}

/* ---- printing ---- */

static int src_index(const diag_ctx *d, const char *file) {
    if (!file) return d->nsrc + 1;
    for (int i = 0; i < d->nsrc; i++)
        if (!strcmp(d->src[i].file, file)) return i;
    return d->nsrc;
}

typedef struct skey { int src, line, col, seq; const drec *r; } skey;

static int cmp_key(const void *pa, const void *pb) {
    const skey *a = pa, *b = pb;
    if (a->src != b->src) return a->src < b->src ? -1 : 1;
    if (a->line != b->line) return a->line < b->line ? -1 : 1;
    if (a->col != b->col) return a->col < b->col ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Finds line `line` (1-based) of a source: [*start, *end). Linear, but only called
 * for the few errors that are printed. */
static int find_line(const dsrc *s, int line, size_t *start, size_t *end) {
    size_t p = 0;
    for (int l = 1; l < line; l++) {
        const char *nl = memchr(s->text + p, '\n', s->len - p);
        if (!nl) return 0;
        p = (size_t)(nl - s->text) + 1;
    }
    const char *nl = memchr(s->text + p, '\n', s->len - p);
    *start = p;
    *end = nl ? (size_t)(nl - s->text) : s->len;
    if (*end > *start && s->text[*end - 1] == '\r') (*end)--;
    return 1;
}

/* Echoes bytes [b, e) of a line, one character per column. */
static void echo(FILE *out, const unsigned char *t, size_t b, size_t e) {
    while (b < e) {
        int l = diag_utf8_len(t + b, e - b);
        if (l == 0) { fputc('?', out); b++; continue; }
        if (l == 1) {
            unsigned c = t[b];
            fputc(c == '\t' || (c >= 0x20 && c != 0x7f) ? (int)c : '?', out);
        } else fwrite(t + b, 1, (size_t)l, out);
        b += (size_t)l;
    }
}

static void show_line(FILE *out, const dsrc *s, int line, int col) {
    size_t ls, le;
    if (!s || !s->text || line <= 0 || !find_line(s, line, &ls, &le)) return;
    const unsigned char *t = (const unsigned char *)s->text;
    /* Columns of the line, and the byte where each interesting column starts. */
    int ncol = 0, first = 1;
    size_t p = ls, at_first = ls;
    if (col < 1) col = 1;
    int want_first = col - DIAG_CTX;
    for (; p < le; ncol++) {
        if (ncol + 1 == want_first) at_first = p;
        p += (size_t)diag_utf8_step(t + p, le - p);
    }
    size_t b = ls, e = le;
    int clip_left = 0, clip_right = 0;
    if (ncol > DIAG_WIDE) {
        if (want_first > 1) { b = at_first; first = want_first; clip_left = 1; }
        /* the window is 2 * DIAG_CTX columns wide */
        int cols = 0;
        size_t q = b;
        while (q < le && cols < 2 * DIAG_CTX) {
            q += (size_t)diag_utf8_step(t + q, le - q);
            cols++;
        }
        if (q < le) { e = q; clip_right = 1; }
    }
    if (clip_left) fputs("...", out);
    echo(out, t, b, e);
    if (clip_right) fputs("...", out);
    fputc('\n', out);
    /* The caret line keeps the tabs of the source so the caret lines up. */
    if (clip_left) fputs("   ", out);
    size_t q = b;
    for (int c = first; c < col && q < le; c++) {
        fputc(t[q] == '\t' ? '\t' : ' ', out);
        q += (size_t)diag_utf8_step(t + q, le - q);
    }
    fputs("^\n", out);
}

void diag_print(const diag_ctx *d, FILE *out) {
    if (!d || !out || d->n == 0) return;
    skey *k = malloc(sizeof *k * (size_t)d->n);
    if (!k) {
        for (int i = 0; i < d->n; i++) fprintf(out, "error: %s\n", d->rec[i].msg);
        return;
    }
    for (int i = 0; i < d->n; i++) {
        const drec *r = &d->rec[i];
        k[i] = (skey){src_index(d, r->loc.file), r->loc.line, r->loc.col, r->seq, r};
    }
    qsort(k, (size_t)d->n, sizeof *k, cmp_key);
    for (int i = 0; i < d->n; i++) {
        const drec *r = k[i].r;
        const char *what = r->warning ? "warning" : "error";
        if (!r->loc.file) fprintf(out, "%s: %s\n", what, r->msg);
        else if (r->loc.line <= 0) fprintf(out, "%s: %s: %s\n", r->loc.file, what, r->msg);
        else {
            fprintf(out, "%s:%d:%d: %s: %s\n", r->loc.file, r->loc.line, r->loc.col, what, r->msg);
            show_line(out, k[i].src < d->nsrc ? &d->src[k[i].src] : NULL, r->loc.line, r->loc.col);
        }
        if (r->hint) fprintf(out, "hint: %s\n", r->hint);
        if (r->note) fprintf(out, "note: %s\n", r->note);
    }
    int shown = 0;
    for (int i = 0; i < d->n; i++) shown += !d->rec[i].warning;
    if (d->count > shown)
        fprintf(out, "(%d more error%s not shown)\n", d->count - shown, d->count - shown == 1 ? "" : "s");
    free(k);
}
