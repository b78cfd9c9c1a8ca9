/* diag.h - diagnostics as data: errors are collected, then printed once.
 *
 * diag_error(ctx, loc, fmt, ...) appends an error and counts it; diag_hint adds a
 * `hint:` line to the error just reported. A phase checks diag_count once at its end.
 * diag_print writes every error as
 *
 *     FILE:LINE:COL: error: MESSAGE
 *     the source line
 *         ^
 *     hint: ...
 *     note: ...
 *
 * sorted by file (in the order the sources were added), line and column; an error
 * reported twice at the same place with the same text is kept once. Columns are
 * 1-based and count characters (UTF-8 code points; an invalid byte counts as one).
 * After `max_errors` stored errors the rest are only counted. Nothing here exits.
 */
#ifndef MOE_DIAG_H
#define MOE_DIAG_H
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

/* line 0 = the whole file (no source line is shown); file NULL = no file at all. */
typedef struct diag_loc { const char *file; int line, col; } diag_loc;

typedef struct diag_ctx diag_ctx;

diag_ctx *diag_create(int max_errors);          /* max_errors <= 0: 100 */
void diag_destroy(diag_ctx *d);

/* Registers the text of FILE so that errors in it show their source line. The text
 * is not copied: it must outlive the context. */
void diag_add_source(diag_ctx *d, const char *file, const char *text, size_t len);
/* The i-th source registered (0-based): 0 and its file and text, or -1 past the last. */
int diag_source(const diag_ctx *d, int i, const char **file, const char **text, size_t *len);

void diag_error(diag_ctx *d, diag_loc loc, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
void diag_verror(diag_ctx *d, diag_loc loc, const char *fmt, va_list ap);
/* Attaches a hint to the last error reported (ignored if it was dropped). */
void diag_hint(diag_ctx *d, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Attaches a note to the last error reported, printed after its hint as `note: ...`:
 * facts that help (the valid keys of a block), where the hint is a suggestion. */
void diag_note(diag_ctx *d, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* The message of the first error stored (in report order), or NULL: for a caller that
 * says in a word why a phase it ran quietly did not succeed. */
const char *diag_first_error(const diag_ctx *d);
/* A warning: printed like an error ("warning:" for "error:"), counted apart, never fatal. */
void diag_warning(diag_ctx *d, diag_loc loc, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
int diag_count(const diag_ctx *d);              /* every error reported, stored or not */
int diag_warning_count(const diag_ctx *d);
void diag_print(const diag_ctx *d, FILE *out);

/* UTF-8 helpers shared by the scanner and the printer, so both count columns alike. */
/* Length (1..4) of the valid UTF-8 sequence at s (n bytes available), 0 if invalid. */
int diag_utf8_len(const unsigned char *s, size_t n);
/* Bytes of s[0..n) advanced by one column: a valid sequence, or one invalid byte. */
int diag_utf8_step(const unsigned char *s, size_t n);

/* "a -> b -> ... -> last" into buf (size > 8), cut with "..." when it would not fit with
 * room to spare: the path of an import or inheritance cycle. Returns buf. */
const char *diag_chain(char *buf, size_t size, const char *const *names, int n, const char *last);

/* Levenshtein distance of a and b, or limit+1 when it is larger than limit. */
int diag_edit_distance(const char *a, const char *b, int limit);
/* The word of `words` (n of them) nearest to `w`, or NULL when none is close. */
const char *diag_nearest(const char *w, const char *const *words, int n);
#endif
