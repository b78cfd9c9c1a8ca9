/* arena.c - chunked bump allocator; see arena.h. */
#include "arena.h"
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct chunk {
    struct chunk *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
} chunk;

struct arena {
    chunk *head;
    size_t total, limit;
    int failed;
};

arena *arena_create(size_t limit_bytes) {
    arena *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->limit = limit_bytes ? limit_bytes : ((size_t)1 << 30);
    return a;
}

void arena_destroy(arena *a) {
    if (!a) return;
    for (chunk *c = a->head, *n; c; c = n) { n = c->next; free(c); }
    free(a);
}

void *arena_alloc(arena *a, size_t n) {
    if (!a || a->failed) return NULL;
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    chunk *c = a->head;
    if (!c || c->size - c->used < n) {
        size_t sz = n > 65536 ? n : 65536;
        if (a->total + sz > a->limit) { a->failed = 1; return NULL; }
        c = malloc(sizeof(chunk) + sz);
        if (!c) { a->failed = 1; return NULL; }
        c->size = sz; c->used = 0; c->next = a->head; a->head = c;
        a->total += sz;
    }
    void *p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

char *arena_strndup(arena *a, const char *s, size_t n) {
    char *p = arena_alloc(a, n + 1);
    if (p) { memcpy(p, s, n); p[n] = 0; }
    return p;
}

char *arena_strdup(arena *a, const char *s) { return arena_strndup(a, s, strlen(s)); }

char *arena_printf(arena *a, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *p = arena_alloc(a, (size_t)n + 1);
    if (!p) return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

int arena_failed(const arena *a) { return a ? a->failed : 1; }
size_t arena_used(const arena *a) { return a ? a->total : 0; }
