/* hash.h - FNV-1a of a string: the compiler's name tables, and the key of a parameter's
 * init stream (the program carries it, so the runtime needs no hash of its own). */
#ifndef MOE_HASH_H
#define MOE_HASH_H
#include <stdint.h>

static inline uint64_t util_hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}
#endif
