/* arena.h - bump allocator for everything that lives as long as one compilation.
 *
 * Every AST node, string, IR node and plan entry of a compilation comes from one
 * arena and is freed at once by arena_destroy. Allocation failure is sticky:
 * arena_alloc returns NULL and arena_failed() reports it, so callers may check once.
 */
#ifndef MOE_ARENA_H
#define MOE_ARENA_H
#include <stddef.h>

typedef struct arena arena;

arena *arena_create(size_t limit_bytes);   /* limit 0 = 1 GiB default */
void   arena_destroy(arena *a);
void  *arena_alloc(arena *a, size_t n);     /* zeroed, 16-byte aligned, NULL on failure */
char  *arena_strdup(arena *a, const char *s);
char  *arena_strndup(arena *a, const char *s, size_t n);
char  *arena_printf(arena *a, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
int    arena_failed(const arena *a);
size_t arena_used(const arena *a);

#define ARENA_NEW(a, T) ((T *)arena_alloc((a), sizeof(T)))
#define ARENA_ARRAY(a, T, n) ((T *)arena_alloc((a), sizeof(T) * (size_t)(n)))
#endif
