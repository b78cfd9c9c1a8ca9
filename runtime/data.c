/* data.c - token sources: the built-in synthetic corpus, llm.c .bin token files, and
 * raw bytes (see data.h). The whole source is loaded at open into one uint16 array and
 * every token is checked against the vocabulary there, so batching never fails later.
 * Batching:
 *   - windows (eval, grad): sequence i of the data reads [i*T, (i+1)*T] (T inputs plus one
 *     more token for the last target);
 *   - training: window b of micro-batch `micro` at step `step` starts at a position drawn
 *     from a counter-based hash of (seed, step, micro, b), so batches do not depend on
 *     what ran before (a resumed run sees the same data) nor on the order they are drawn.
 * Not done here: streaming of sources larger than memory, sharded .bin sets, tokenisation.
 */
#include "data.h"
#include "errbuf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moe_rng.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "data.c reads little-endian .bin files in host byte order"
#endif

#define BIN_MAGIC 20240520
#define BIN_VERSION 1
#define BIN_HEADER_INTS 256
#define DATA_STREAM_DOMAIN 0xDA7A5EEDC0FFEE11ull   /* keeps batch draws apart from other RNG streams */

struct moe_data {
    char *name;
    uint16_t *tok;   /* [n] */
    int64_t n;
};


static int data_ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Opens path for reading as a regular file and reports its size. */
static FILE *data_fopen(const char *path, int64_t *size, char *err, size_t errlen) {
    int fd = moe_open_regular(path, size, err, errlen);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f) { moe_errf(err, errlen, path, "cannot open: %s", strerror(errno)); close(fd); }
    return f;
}

static int data_fread(FILE *f, void *buf, size_t n, const char *path, char *err, size_t errlen) {
    if (n && fread(buf, 1, n, f) != n) {
        moe_errf(err, errlen, path, "read failed: %s", ferror(f) ? strerror(errno) : "file ended early");
        return -1;
    }
    return 0;
}

static int data_load_bin(moe_data *d, const char *path, char *err, size_t errlen) {
    int64_t size = 0;
    FILE *f = data_fopen(path, &size, err, errlen);
    if (!f) return -1;
    int rc = -1;
    int32_t h[BIN_HEADER_INTS];
    if (size < (int64_t)sizeof h) {
        moe_errf(err, errlen, path, "too short (%lld bytes) for the %zu-byte .bin header", (long long)size, sizeof h);
        goto out;
    }
    if (data_fread(f, h, sizeof h, path, err, errlen) != 0) goto out;
    if (h[0] != BIN_MAGIC) {
        moe_errf(err, errlen, path, "bad magic %d (expected %d for an llm.c .bin token file)", h[0], BIN_MAGIC);
        goto out;
    }
    if (h[1] != BIN_VERSION) {
        moe_errf(err, errlen, path, "unsupported .bin version %d (expected %d: uint16 tokens)", h[1], BIN_VERSION);
        goto out;
    }
    if (h[2] < 0) { moe_errf(err, errlen, path, "negative token count %d in the header", h[2]); goto out; }
    int64_t count = h[2], have = (size - (int64_t)sizeof h) / 2;
    if (have < count) {
        moe_errf(err, errlen, path, "truncated: the header says %lld tokens but the file holds %lld",
                 (long long)count, (long long)have);
        goto out;
    }
    d->tok = malloc((size_t)(count ? count : 1) * sizeof *d->tok);
    if (!d->tok) { moe_errf(err, errlen, path, "out of memory for %lld tokens", (long long)count); goto out; }
    if (data_fread(f, d->tok, (size_t)count * sizeof *d->tok, path, err, errlen) != 0) goto out;
    d->n = count;
    rc = 0;
out:
    fclose(f);
    return rc;
}

static int data_load_bytes(moe_data *d, const char *path, char *err, size_t errlen) {
    int64_t size = 0;
    FILE *f = data_fopen(path, &size, err, errlen);
    if (!f) return -1;
    int rc = -1;
    unsigned char *raw = malloc((size_t)(size ? size : 1));
    d->tok = malloc((size_t)(size ? size : 1) * sizeof *d->tok);
    if (!raw || !d->tok) { moe_errf(err, errlen, path, "out of memory for %lld bytes", (long long)size); goto out; }
    if (data_fread(f, raw, (size_t)size, path, err, errlen) != 0) goto out;
    for (int64_t i = 0; i < size; i++) d->tok[i] = raw[i];
    d->n = size;
    rc = 0;
out:
    free(raw);
    fclose(f);
    return rc;
}

int moe_data_open(const char *spec, int64_t vocab, moe_data **out, char *err, size_t errlen) {
    *out = NULL;
    if (!spec || !spec[0]) { moe_errf(err, errlen, "data", "no source given (a path or \"synthetic\")"); return -1; }
    if (vocab <= 0) { moe_errf(err, errlen, spec, "vocabulary size %lld is not positive", (long long)vocab); return -1; }
    moe_data *d = calloc(1, sizeof *d);
    if (!d || !(d->name = strdup(spec))) {
        free(d);
        moe_errf(err, errlen, spec, "out of memory");
        return -1;
    }
    int rc;
    if (strcmp(spec, "synthetic") == 0) {
        rc = -1;
        if (vocab < 16) moe_errf(err, errlen, spec, "synthetic data needs vocab >= 16 (vocab is %lld)", (long long)vocab);
        else if (!(d->tok = malloc(MOE_DATA_SYNTHETIC_TOKENS * sizeof *d->tok))) moe_errf(err, errlen, spec, "out of memory");
        else {
            moe_data_synthetic(d->tok, MOE_DATA_SYNTHETIC_TOKENS, vocab);
            d->n = MOE_DATA_SYNTHETIC_TOKENS;
            rc = 0;
        }
    } else if (data_ends_with(spec, ".bin")) {
        rc = data_load_bin(d, spec, err, errlen);
    } else if (vocab < 256) {
        rc = -1;
        moe_errf(err, errlen, spec, "bytes data needs vocab >= 256 (vocab is %lld)", (long long)vocab);
    } else {
        rc = data_load_bytes(d, spec, err, errlen);
    }
    for (int64_t i = 0; rc == 0 && i < d->n; i++) {
        if (d->tok[i] >= vocab) {
            moe_errf(err, errlen, spec, "token %u at offset %lld is outside the vocabulary (%lld)",
                     (unsigned)d->tok[i], (long long)i, (long long)vocab);
            rc = -1;
        }
    }
    if (rc != 0) { moe_data_close(d); return -1; }
    *out = d;
    return 0;
}

void moe_data_close(moe_data *d) {
    if (!d) return;
    free(d->name);
    free(d->tok);
    free(d);
}

int64_t moe_data_tokens(const moe_data *d) { return d ? d->n : 0; }
const char *moe_data_name(const moe_data *d) { return d ? d->name : ""; }

int64_t moe_data_windows(const moe_data *d, int64_t T) {
    if (!d || T <= 0 || d->n < 1) return 0;
    return (d->n - 1) / T;
}

/* Window starting at token p: x = tok[p .. p+T), y = tok[p+1 .. p+T]; zeros where the data ends. */
static void data_window(const moe_data *d, int64_t p, int T, int32_t *x, int32_t *y) {
    for (int t = 0; t < T; t++) {
        int64_t i = p + t;
        x[t] = (i >= 0 && i < d->n) ? d->tok[i] : 0;
        y[t] = (i + 1 >= 0 && i + 1 < d->n) ? d->tok[i + 1] : 0;
    }
}

void moe_data_window_batch(const moe_data *d, int64_t first, int B, int T, int32_t *x, int32_t *y) {
    if (!d || B <= 0 || T <= 0) return;
    for (int b = 0; b < B; b++) data_window(d, (first + b) * (int64_t)T, T, x + (size_t)b * T, y + (size_t)b * T);
}

void moe_data_train_batch(const moe_data *d, uint64_t seed, int64_t step, int micro, int B, int T,
                          int32_t *x, int32_t *y) {
    if (!d || B <= 0 || T <= 0) return;
    int64_t range = d->n - T;      /* starts in [0, n - T - 1] leave room for T + 1 tokens */
    /* window b of micro-step u is window u*B + b of the step: a step trains on the same
     * sequences however it is split into micro-steps (accumulate 2 x B/2 = 1 x B) */
    uint64_t stream = moe_rng_stream(seed ^ DATA_STREAM_DOMAIN, (uint64_t)step, 0);
    for (int b = 0; b < B; b++) {
        int64_t p = 0;
        if (range > 0) {
            p = (int64_t)(moe_uniform(stream, (uint64_t)micro * (uint64_t)B + (uint64_t)b) * (double)range);
            if (p >= range) p = range - 1;   /* u * range can round up to range */
        }
        data_window(d, p, T, x + (size_t)b * T, y + (size_t)b * T);
    }
}

int moe_data_write_bin(const char *path, const uint16_t *tok, int64_t n, char *err, size_t errlen) {
    if (n < 0 || n > INT32_MAX || (n > 0 && !tok)) {
        moe_errf(err, errlen, path, "cannot write %lld tokens (0 to %d)", (long long)n, INT32_MAX);
        return -1;
    }
    int32_t h[BIN_HEADER_INTS] = {BIN_MAGIC, BIN_VERSION, (int32_t)n};
    FILE *f = fopen(path, "wb");
    if (!f) { moe_errf(err, errlen, path, "cannot create: %s", strerror(errno)); return -1; }
    int ok = fwrite(h, sizeof h, 1, f) == 1 && (n == 0 || fwrite(tok, sizeof *tok, (size_t)n, f) == (size_t)n);
    int saved = errno;
    if (fclose(f) != 0 && ok) { ok = 0; saved = errno; }
    if (!ok) {
        remove(path);
        moe_errf(err, errlen, path, "write failed: %s", strerror(saved));
        return -1;
    }
    return 0;
}
