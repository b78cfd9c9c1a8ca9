/* moe_hash.h - FNV-1a of a string: the compiler's name tables, and the key of a parameter's
 * init stream (the program carries it); of bytes: the kernel cache's keys and checksums
 * (runtime/nvrtc.c, shared by moec and the runtime). */
#ifndef MOE_HASH_H
#define MOE_HASH_H
#include <stdint.h>

#include <stddef.h>

static inline uint64_t util_hash_bytes(const void *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211ull;
    return h;
}

static inline uint64_t util_hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}
#endif
