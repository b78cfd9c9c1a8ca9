/* moe_nearest.h - the nearest word by edit distance, for did-you-mean hints: the front
 * end's keys and names, moec's flags, and the built executable's flags. */
#ifndef MOE_NEAREST_H
#define MOE_NEAREST_H
#include <string.h>

/* Levenshtein distance of a and b, or limit + 1 once it is known to exceed limit. */
static inline int moe_edit_distance(const char *a, const char *b, int limit) {
    size_t la = strlen(a), lb = strlen(b);
    size_t diff = la > lb ? la - lb : lb - la;
    if (diff > (size_t)limit || lb > 255) return limit + 1;
    int row[257];
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int prev = row[0], best;
        row[0] = (int)i;
        best = row[0];
        for (size_t j = 1; j <= lb; j++) {
            int cur = row[j];
            int sub = prev + (a[i - 1] != b[j - 1]);
            int v = row[j] + 1 < row[j - 1] + 1 ? row[j] + 1 : row[j - 1] + 1;
            row[j] = sub < v ? sub : v;
            if (row[j] < best) best = row[j];
            prev = cur;
        }
        if (best > limit) return limit + 1;
    }
    return row[lb] <= limit ? row[lb] : limit + 1;
}

/* The word of words[0..n) nearest to w, within 1 edit for words of up to 3 letters, 2 up to
 * 6, else 3; NULL when none is that near. `stride` is the distance in bytes between
 * consecutive word pointers (sizeof(const char *) for an array of them, or the size of a
 * table's row whose first member is the name). */
static inline const char *moe_nearest(const char *w, const void *words, int n, size_t stride) {
    size_t lw = strlen(w);
    int limit = lw <= 3 ? 1 : lw <= 6 ? 2 : 3, bestd = limit + 1;
    const char *best = NULL;
    for (int i = 0; i < n; i++) {
        const char *cand = *(const char *const *)((const char *)words + (size_t)i * stride);
        int d = moe_edit_distance(w, cand, limit);
        if (d < bestd) { bestd = d; best = cand; }
    }
    return best;
}
#endif
