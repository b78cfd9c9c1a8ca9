/* data.h - token sources for train, eval and grad: the one module that reads data files.
 *
 * A source is "synthetic" (a built-in deterministic corpus), an llm.c .bin token file
 * (header of 256 int32: magic 20240520, version 1, token count; then uint16 tokens), or
 * any other file read as bytes (needs vocab >= 256). Every token is checked against the
 * vocabulary when the source is opened: an out-of-range token is an error naming the
 * file and the token's offset.
 */
#ifndef MOE_DATA_H
#define MOE_DATA_H
#include <stddef.h>
#include <stdint.h>

typedef struct moe_data moe_data;

/* Opens `spec` (a path, or "synthetic"). Returns 0, or -1 with a one-line message. */
int moe_data_open(const char *spec, int64_t vocab, moe_data **out, char *err, size_t errlen);
void moe_data_close(moe_data *d);
int64_t moe_data_tokens(const moe_data *d);     /* number of tokens in the source */
const char *moe_data_name(const moe_data *d);

/* Consecutive windows (eval, grad): sequence i of a batch reads tokens
 * [(first + i) * T, (first + i + 1) * T) into x and the next-token targets into y.
 * moe_data_windows returns the number of full windows i, those with tokens up to
 * (i + 1) * T (the last target) present: (n - 1) / T, 0 when none. Positions past the end of
 * the data (a caller asking beyond moe_data_windows) read as token 0. */
int64_t moe_data_windows(const moe_data *d, int64_t T);
void moe_data_window_batch(const moe_data *d, int64_t first, int B, int T, int32_t *x, int32_t *y);

/* Training batches: B windows of T+1 tokens at positions drawn from (seed, step, micro),
 * so a resumed run sees exactly the batches of an uninterrupted one. Starts are uniform in
 * [0, n - T - 1]; with fewer than T + 1 tokens the batch is all zeros (check windows first). */
void moe_data_train_batch(const moe_data *d, uint64_t seed, int64_t step, int micro, int B, int T,
                          int32_t *x, int32_t *y);

/* The built-in corpus behind "synthetic": fills tok[0..n) deterministically; needs vocab >= 16.
 * With vocab >= 128 the tokens are ASCII text; below, each source has its own token range. */
#define MOE_DATA_SYNTHETIC_TOKENS (1 << 20)
void moe_data_synthetic(uint16_t *tok, int64_t n, int64_t vocab);

/* Writes a .bin token file (llm.c layout) - for tests and tools. */
int moe_data_write_bin(const char *path, const uint16_t *tok, int64_t n, char *err, size_t errlen);
#endif
