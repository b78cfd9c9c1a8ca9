/* cg.c - see cg.h. */
#include "cg.h"
#include "../util/arena.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cg { char *buf; size_t len, cap; int indent, failed; };

cg *cg_create(void) { return calloc(1, sizeof(cg)); }
void cg_destroy(cg *b) { if (b) { free(b->buf); free(b); } }
size_t cg_len(const cg *b) { return b->len; }

static void put(cg *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->len + n + 1) nc *= 2;
        char *nb = realloc(b->buf, nc);
        if (!nb) { b->failed = 1; return; }
        b->buf = nb; b->cap = nc;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = 0;
}

static void vline(cg *b, const char *fmt, va_list ap, const char *tail) {
    char tmp[1024];
    va_list cp;
    va_copy(cp, ap);
    int n = vsnprintf(tmp, sizeof tmp, fmt, cp);
    va_end(cp);
    if (n < 0) { b->failed = 1; return; }
    for (int i = 0; i < b->indent; i++) put(b, "    ", 4);
    if ((size_t)n < sizeof tmp) {
        put(b, tmp, (size_t)n);
    } else {
        char *big = malloc((size_t)n + 1);
        if (!big) { b->failed = 1; return; }
        vsnprintf(big, (size_t)n + 1, fmt, ap);
        put(b, big, (size_t)n);
        free(big);
    }
    put(b, tail, strlen(tail));
}

void cg_line(cg *b, const char *fmt, ...) {
    va_list ap; va_start(ap, fmt); vline(b, fmt, ap, "\n"); va_end(ap);
}
void cg_open(cg *b, const char *fmt, ...) {
    va_list ap; va_start(ap, fmt); vline(b, fmt, ap, " {\n"); va_end(ap);
    b->indent++;
}
void cg_close(cg *b, const char *suffix) {
    if (b->indent > 0) b->indent--;
    for (int i = 0; i < b->indent; i++) put(b, "    ", 4);
    put(b, "}", 1);
    put(b, suffix, strlen(suffix));
    put(b, "\n", 1);
}
void cg_raw(cg *b, const char *text) { put(b, text, strlen(text)); }
const char *cg_finish(cg *b) { return b->failed ? NULL : (b->buf ? b->buf : ""); }

const char *cg_cstr(arena *a, const char *s) {
    size_t n = strlen(s);
    char *out = arena_alloc(a, 4 * n + 3), *o = out;
    if (!out) return "\"\"";
    *o++ = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '\\' || *p == '"' || *p == '?') { *o++ = '\\'; *o++ = (char)*p; }
        else if (*p < 0x20 || *p >= 0x7f) o += sprintf(o, "\\%03o", *p);
        else *o++ = (char)*p;
    }
    *o++ = '"';
    *o = 0;
    return out;
}
