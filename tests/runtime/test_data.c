/* test_data.c - token sources: .bin files (good and bad, with exact messages), bytes,
 * window batching values, deterministic training batches, the synthetic corpus. */
#include <stdint.h>

#include "data.h"
#include "t_common.h"

static char err[1024];

/* Opens spec with vocab, expects failure with exactly "spec: want". */
static void expect_err(const char *spec, int64_t vocab, const char *want) {
    char full[1024];
    moe_data *d = (moe_data *)1;
    err[0] = 0;
    CHECK(moe_data_open(spec, vocab, &d, err, sizeof err) == -1);
    CHECK(d == NULL);
    snprintf(full, sizeof full, "%s: %s", spec, want);
    CHECK_STR(err, full);
}

/* A .bin file with the given header fields and `n` tokens tok[i] = f(i). */
static void put_bin(const char *path, int32_t magic, int32_t version, int32_t count, const uint16_t *tok, size_t n) {
    int32_t h[256] = {magic, version, count};
    size_t bytes = sizeof h + n * 2;
    unsigned char *b = malloc(bytes);
    memcpy(b, h, sizeof h);
    if (n) memcpy(b + sizeof h, tok, n * 2);
    t_write_file(path, b, bytes);
    free(b);
}

static void test_bin(void) {
    enum { N = 2000 };
    uint16_t tok[N];
    for (int i = 0; i < N; i++) tok[i] = (uint16_t)(i % 250);
    const char *p = t_path("tok.bin");
    CHECK(moe_data_write_bin(p, tok, N, err, sizeof err) == 0);

    moe_data *d = NULL;
    CHECK(moe_data_open(p, 256, &d, err, sizeof err) == 0);
    CHECK(d && moe_data_tokens(d) == N);
    CHECK_STR(moe_data_name(d), p);
    moe_data_close(d);

    /* the layout is llm.c's: 1024-byte header, then uint16 */
    size_t n = 0;
    char *raw = t_read_file(p, &n);
    int32_t h[3];
    memcpy(h, raw, sizeof h);
    CHECK(n == 1024 + 2 * N && h[0] == 20240520 && h[1] == 1 && h[2] == N);
    CHECK(memcmp(raw + 1024, tok, 2 * N) == 0);
    free(raw);

    put_bin(p, 12345, 1, 10, tok, 10);
    expect_err(p, 256, "bad magic 12345 (expected 20240520 for an llm.c .bin token file)");
    put_bin(p, 20240520, 2, 10, tok, 10);
    expect_err(p, 256, "unsupported .bin version 2 (expected 1: uint16 tokens)");
    put_bin(p, 20240520, 1, 100, tok, 50);
    expect_err(p, 256, "truncated: the header says 100 tokens but the file holds 50");
    put_bin(p, 20240520, 1, -5, tok, 0);
    expect_err(p, 256, "negative token count -5 in the header");
    t_write_file(p, "0123456789", 10);
    expect_err(p, 256, "too short (10 bytes) for the 1024-byte .bin header");
    t_write_file(p, "", 0);
    expect_err(p, 256, "too short (0 bytes) for the 1024-byte .bin header");

    tok[1234] = 300;
    CHECK(moe_data_write_bin(p, tok, N, err, sizeof err) == 0);
    expect_err(p, 256, "token 300 at offset 1234 is outside the vocabulary (256)");
    CHECK(moe_data_open(p, 301, &d, err, sizeof err) == 0);   /* fits a larger vocabulary */
    moe_data_close(d);
    expect_err(p, 300, "token 300 at offset 1234 is outside the vocabulary (300)");

    /* more tokens than the header says: the extra ones are ignored */
    put_bin(p, 20240520, 1, 5, tok, 10);
    CHECK(moe_data_open(p, 256, &d, err, sizeof err) == 0 && moe_data_tokens(d) == 5);
    moe_data_close(d);

    /* an empty token file opens; it just has no windows */
    put_bin(p, 20240520, 1, 0, tok, 0);
    CHECK(moe_data_open(p, 256, &d, err, sizeof err) == 0);
    CHECK(d && moe_data_tokens(d) == 0 && moe_data_windows(d, 4) == 0);
    moe_data_close(d);

    expect_err(t_path("missing.bin"), 256, "cannot open: No such file or directory");
    expect_err(t_path("no/such/dir/x.bin"), 256, "cannot open: No such file or directory");
    char dir_bin[600];
    snprintf(dir_bin, sizeof dir_bin, "%s/d.bin", t_dir);
    CHECK(mkdir(dir_bin, 0755) == 0);
    expect_err(dir_bin, 256, "not a regular file");
    rmdir(dir_bin);
    CHECK(moe_data_write_bin(t_path("no/such/dir/x.bin"), tok, 4, err, sizeof err) == -1);
}

static void test_bytes(void) {
    const char *p = t_path("text.txt");
    t_write_file(p, "hello\xff world\n", 13);
    moe_data *d = NULL;
    CHECK(moe_data_open(p, 256, &d, err, sizeof err) == 0);
    CHECK(d && moe_data_tokens(d) == 13);
    int32_t x[4], y[4];
    moe_data_window_batch(d, 1, 1, 4, x, y);   /* tokens [4, 8) = "o\xff w" */
    CHECK(x[0] == 'o' && x[1] == 0xff && x[2] == ' ' && x[3] == 'w');
    CHECK(y[0] == 0xff && y[3] == 'o');
    CHECK(moe_data_windows(d, 4) == 3);        /* 12 / 4 */
    moe_data_close(d);
    expect_err(p, 100, "bytes data needs vocab >= 256 (vocab is 100)");
    expect_err(p, 0, "vocabulary size 0 is not positive");

    const char *e = t_path("empty.txt");
    t_write_file(e, "", 0);
    CHECK(moe_data_open(e, 256, &d, err, sizeof err) == 0);
    CHECK(moe_data_tokens(d) == 0 && moe_data_windows(d, 1) == 0);
    moe_data_close(d);
    CHECK(moe_data_open("", 256, &d, err, sizeof err) == -1 && d == NULL);
}

static moe_data *open_counting(int n) {
    uint16_t *tok = malloc((size_t)n * 2);
    for (int i = 0; i < n; i++) tok[i] = (uint16_t)i;
    const char *p = t_path("count.bin");
    moe_data *d = NULL;
    CHECK(moe_data_write_bin(p, tok, n, err, sizeof err) == 0);
    CHECK(moe_data_open(p, 65536, &d, err, sizeof err) == 0);
    free(tok);
    return d;
}

static void test_windows(void) {
    moe_data *d = open_counting(100);
    CHECK(moe_data_windows(d, 8) == 12);       /* (100 - 1) / 8 */
    CHECK(moe_data_windows(d, 99) == 1 && moe_data_windows(d, 100) == 0 && moe_data_windows(d, 0) == 0);
    int32_t x[3 * 8], y[3 * 8];
    moe_data_window_batch(d, 2, 3, 8, x, y);
    for (int b = 0; b < 3; b++)
        for (int t = 0; t < 8; t++) {
            CHECK(x[b * 8 + t] == (2 + b) * 8 + t);
            CHECK(y[b * 8 + t] == (2 + b) * 8 + t + 1);
        }
    moe_data_window_batch(d, 11, 1, 8, x, y);   /* the last full window ends on token 96 */
    CHECK(x[0] == 88 && x[7] == 95 && y[7] == 96);
    moe_data_close(d);

    d = open_counting(17);                       /* exactly 2 windows of 8 (+1 target) */
    CHECK(moe_data_windows(d, 8) == 2);
    moe_data_window_batch(d, 0, 2, 8, x, y);
    CHECK(x[8] == 8 && x[15] == 15 && y[15] == 16);
    moe_data_close(d);
}

static void test_train_batches(void) {
    enum { B = 4, T = 16 };
    moe_data *d = open_counting(5000);
    int32_t x1[B * T], y1[B * T], x2[B * T], y2[B * T];
    moe_data_train_batch(d, 42, 7, 1, B, T, x1, y1);
    moe_data_train_batch(d, 42, 7, 1, B, T, x2, y2);
    CHECK(memcmp(x1, x2, sizeof x1) == 0 && memcmp(y1, y2, sizeof y1) == 0);
    for (int b = 0; b < B; b++) {                /* each window is a contiguous slice */
        CHECK(x1[b * T] >= 0 && x1[b * T] <= 5000 - T - 1);
        for (int t = 0; t < T; t++) {
            CHECK(x1[b * T + t] == x1[b * T] + t);
            CHECK(y1[b * T + t] == x1[b * T + t] + 1);
        }
    }
    /* a different step, micro-batch or seed gives different windows */
    moe_data_train_batch(d, 42, 8, 1, B, T, x2, y2);
    CHECK(memcmp(x1, x2, sizeof x1) != 0);
    moe_data_train_batch(d, 42, 7, 0, B, T, x2, y2);
    CHECK(memcmp(x1, x2, sizeof x1) != 0);
    moe_data_train_batch(d, 43, 7, 1, B, T, x2, y2);
    CHECK(memcmp(x1, x2, sizeof x1) != 0);
    /* micro-step u of batch B holds windows u*B .. u*B+B-1 of the step: micro 1 of B = 2
     * is windows 2 and 3 of micro 0 with B = 4 */
    int32_t xs[2 * T], ys[2 * T], x4[4 * T], y4[4 * T];
    moe_data_train_batch(d, 42, 7, 1, 2, T, xs, ys);
    moe_data_train_batch(d, 42, 7, 0, 4, T, x4, y4);
    CHECK(memcmp(xs, x4 + 2 * T, sizeof xs) == 0 && memcmp(ys, y4 + 2 * T, sizeof ys) == 0);
    moe_data_close(d);

    /* starts cover exactly [0, n - T - 1]: n = T + 3 allows 0, 1, 2 */
    d = open_counting(T + 3);
    int seen[3] = {0}, bad = 0;
    for (int step = 0; step < 300; step++) {
        moe_data_train_batch(d, 1, step, 0, 1, T, x2, y2);
        if (x2[0] < 0 || x2[0] > 2 || y2[T - 1] != x2[0] + T) bad++;
        else seen[x2[0]]++;
    }
    CHECK(bad == 0 && seen[0] > 50 && seen[1] > 50 && seen[2] > 50);
    moe_data_close(d);
}

static uint64_t fnv1a(const uint16_t *t, int64_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int64_t i = 0; i < n; i++) {
        h = (h ^ (t[i] & 0xff)) * 0x100000001b3ull;
        h = (h ^ (t[i] >> 8)) * 0x100000001b3ull;
    }
    return h;
}

static void test_synthetic(void) {
    /* Golden hashes of the first 100k tokens: they pin the generator (runtime/synthetic.c);
     * change them only together with an intended change of the corpus. */
    static const struct { int64_t vocab; uint64_t hash; } golden[] = {
        {16, 0xfc092ae5f63a2ecdull},
        {64, 0xfcf9101d5e382225ull},
        {256, 0xd643dcfb1aae300full},
        {50257, 0xd643dcfb1aae300full},   /* large vocabularies use the same ASCII text */
    };
    enum { N = MOE_DATA_SYNTHETIC_TOKENS };
    uint16_t *a = malloc(N * sizeof *a);
    for (size_t g = 0; g < sizeof golden / sizeof golden[0]; g++) {
        int64_t v = golden[g].vocab;
        moe_data *d = NULL, *d2 = NULL;
        CHECK(moe_data_open("synthetic", v, &d, err, sizeof err) == 0);
        CHECK(moe_data_open("synthetic", v, &d2, err, sizeof err) == 0);
        if (!d || !d2) { moe_data_close(d); moe_data_close(d2); continue; }
        CHECK(moe_data_tokens(d) == N);
        CHECK_STR(moe_data_name(d), "synthetic");
        moe_data_synthetic(a, N, v);
        int32_t x[256], y[256], x2[256], y2[256];
        moe_data_window_batch(d, 0, 1, 256, x, y);
        moe_data_window_batch(d2, 0, 1, 256, x2, y2);
        CHECK(memcmp(x, x2, sizeof x) == 0 && memcmp(y, y2, sizeof y) == 0);
        for (int t = 0; t < 256; t++) CHECK(x[t] == a[t]);
        uint64_t h = fnv1a(a, 100000);
        if (h != golden[g].hash) {
            fprintf(stderr, "synthetic vocab %lld: hash 0x%016llxull, golden 0x%016llxull\n", (long long)v,
                    (unsigned long long)h, (unsigned long long)golden[g].hash);
            t_failures++;
        }
        /* within the vocabulary; every token id used for small ones; ASCII text for large */
        int used[256] = {0}, outside = 0, unprintable = 0;
        for (int64_t i = 0; i < N; i++) {
            if (a[i] >= v) outside++;
            else if (a[i] < 256) used[a[i]] = 1;
            if (v >= 128 && a[i] != '\n' && (a[i] < 32 || a[i] > 126)) unprintable++;
        }
        CHECK(outside == 0);
        CHECK(unprintable == 0);
        if (v < 128) {
            int n_used = 0;
            for (int i = 0; i < v; i++) n_used += used[i];
            CHECK(n_used >= (int)v - 4);   /* the five sources spread over the whole range */
        }
        moe_data_close(d);
        moe_data_close(d2);
    }
    /* the ASCII text holds each source */
    moe_data_synthetic(a, 20000, 256);
    char *text = malloc(20001);
    for (int i = 0; i < 20000; i++) text[i] = (char)a[i];
    text[20000] = 0;
    CHECK(strstr(text, " the ") && strchr(text, '=') && strchr(text, '|') && strchr(text, '>') && strchr(text, 'Q'));
    free(text);
    free(a);
    expect_err("synthetic", 8, "synthetic data needs vocab >= 16 (vocab is 8)");
}

int main(void) {
    t_mkdir();
    test_bin();
    test_bytes();
    test_windows();
    test_train_batches();
    test_synthetic();
    return t_done("test_data");
}
