/* test_st.c - safetensors: round trip, atomic writes, and hostile files with their exact
 * messages (run under ASan/UBSan too: none of them may crash or read out of bounds). */
#include <errno.h>
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>

#include "errbuf.h"
#include "st.h"
#include "t_common.h"

/* Raw file: 8-byte little-endian `hlen`, the header text, then `data_len` bytes 0x00.. */
static void put_raw(const char *path, uint64_t hlen, const char *hdr, size_t hdr_bytes, size_t data_len) {
    size_t n = 8 + hdr_bytes + data_len;
    unsigned char *b = malloc(n);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(b + 8, hdr, hdr_bytes);
    for (size_t i = 0; i < data_len; i++) b[8 + hdr_bytes + i] = (unsigned char)i;
    if (t_write_file(path, b, n) != 0) { perror(path); exit(2); }
    free(b);
}
static void put_st(const char *path, const char *hdr, size_t data_len) {
    put_raw(path, strlen(hdr), hdr, strlen(hdr), data_len);
}

/* Reads path, expects failure with exactly "path: want". */
static void expect_err(const char *path, const char *want) {
    char err[512] = "", full[1024];
    moe_st *st = (moe_st *)1;
    int rc = moe_st_read(path, &st, err, sizeof err);
    CHECK(rc == -1);
    CHECK(st == NULL);
    snprintf(full, sizeof full, "%s: %s", path, want);
    CHECK_STR(err, full);
    if (rc == 0) moe_st_free(st);
}

static void test_round_trip(void) {
    float a[1] = {3.5f}, b[3] = {1, -2, 1e-30f}, c[24], d[1] = {0};
    for (int i = 0; i < 24; i++) c[i] = (float)i * 0.25f - 3.0f;
    moe_st_out t[] = {
        {.name = "scalar", .ndim = 0, .data = a},
        {.name = "h.0.ln_1.bias", .ndim = 1, .shape = {3}, .data = b},
        {.name = "h.0.moe.experts.c_fc.weight", .ndim = 3, .shape = {2, 3, 4}, .data = c},
        {.name = "empty", .ndim = 2, .shape = {0, 5}, .data = d},
        {.name = "alpha", .ndim = 2, .shape = {1, 1}, .data = a},
    };
    const char *meta[] = {"format", "pt", "moec_step", "1200"};
    const char *path = t_path("rt.safetensors");
    char err[512] = "";
    CHECK(moe_st_write(path, t, 5, meta, 2, err, sizeof err) == 0);
    CHECK_STR(err, "");

    /* layout: header padded with spaces to a multiple of 8, data contiguous to the end */
    size_t fsz = 0;
    unsigned char *raw = (unsigned char *)t_read_file(path, &fsz);
    CHECK(raw != NULL && fsz >= 8);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | raw[i];
    CHECK(hlen % 8 == 0);
    CHECK(fsz == 8 + hlen + (1 + 3 + 24 + 0 + 1) * 4);
    CHECK(raw[8] == '{');
    CHECK(strstr((char *)raw + 8, "\"__metadata__\"") != NULL);
    free(raw);

    moe_st *st = NULL;
    CHECK(moe_st_read(path, &st, err, sizeof err) == 0);
    if (!st) { fprintf(stderr, "read: %s\n", err); t_failures++; return; }
    CHECK(moe_st_count(st) == 5);
    for (int i = 0; i < 5 && i < moe_st_count(st); i++) {
        const moe_st_tensor *r = moe_st_get(st, i);
        CHECK_STR(r->name, t[i].name);                 /* order preserved */
        CHECK(r->ndim == t[i].ndim);
        int64_t numel = 1;
        for (int k = 0; k < r->ndim; k++) {
            CHECK(r->shape[k] == t[i].shape[k]);
            numel *= t[i].shape[k];
        }
        CHECK(r->numel == numel);
        CHECK(numel == 0 || ((uintptr_t)r->data % 64) == 0);
        if (numel) CHECK(memcmp(r->data, t[i].data, (size_t)numel * 4) == 0);
        CHECK(moe_st_find(st, t[i].name) == r);
    }
    CHECK(moe_st_find(st, "nope") == NULL);
    CHECK(moe_st_get(st, 5) == NULL && moe_st_get(st, -1) == NULL);
    CHECK_STR(moe_st_meta(st, "format"), "pt");
    CHECK_STR(moe_st_meta(st, "moec_step"), "1200");
    CHECK(moe_st_meta(st, "other") == NULL);
    moe_st_free(st);

    /* overwrite in place with fewer tensors, no metadata */
    CHECK(moe_st_write(path, t + 1, 1, NULL, 0, err, sizeof err) == 0);
    CHECK(moe_st_read(path, &st, err, sizeof err) == 0);
    CHECK(st && moe_st_count(st) == 1 && moe_st_meta(st, "format") == NULL);
    moe_st_free(st);

    /* I8 beside F32: 1 byte per element in the file; each tensor's data aligned on reading */
    int8_t q[5] = {-127, -1, 0, 1, 127};
    moe_st_out mixed[2] = {{.name = "q", .ndim = 1, .shape = {5}, .data = q, .dtype = MOE_ST_I8},
                           {.name = "s", .ndim = 1, .shape = {3}, .data = b}};
    CHECK(moe_st_write(path, mixed, 2, NULL, 0, err, sizeof err) == 0);
    raw = (unsigned char *)t_read_file(path, &fsz);
    hlen = 0;
    for (int i = 7; raw && i >= 0; i--) hlen = (hlen << 8) | raw[i];
    CHECK(raw && fsz == 8 + hlen + 5 + 3 * 4);
    CHECK(raw && strstr((char *)raw + 8, "\"q\":{\"dtype\":\"I8\",\"shape\":[5],\"data_offsets\":[0,5]}") != NULL);
    free(raw);
    CHECK(moe_st_read(path, &st, err, sizeof err) == 0);
    const moe_st_tensor *rq = st ? moe_st_find(st, "q") : NULL, *rs = st ? moe_st_find(st, "s") : NULL;
    CHECK(rq && rq->dtype == MOE_ST_I8 && rq->data == NULL && rq->i8 && memcmp(rq->i8, q, 5) == 0);
    CHECK(rs && rs->dtype == MOE_ST_F32 && rs->i8 == NULL && ((uintptr_t)rs->data % 64) == 0 &&
          memcmp(rs->data, b, 12) == 0);
    moe_st_free(st);

    /* zero tensors is a valid file */
    CHECK(moe_st_write(path, NULL, 0, NULL, 0, err, sizeof err) == 0);
    CHECK(moe_st_read(path, &st, err, sizeof err) == 0);
    CHECK(st && moe_st_count(st) == 0);
    moe_st_free(st);
    remove(path);
}

/* Only `keep` may be in the test directory (no temporary file left behind). */
static void check_dir_only(const char *keep) {
    DIR *dir = opendir(t_dir);
    struct dirent *e;
    while (dir && (e = readdir(dir))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || (keep && !strcmp(e->d_name, keep))) continue;
        fprintf(stderr, "unexpected file left: %s\n", e->d_name);
        t_failures++;
    }
    if (dir) closedir(dir);
}

static void test_atomic(void) {
    float big[4096];
    for (int i = 0; i < 4096; i++) big[i] = (float)i;
    moe_st_out good = {.name = "w", .ndim = 1, .shape = {4}, .data = big};
    moe_st_out large = {.name = "w", .ndim = 1, .shape = {4096}, .data = big};
    char err[512] = "", want[1024];

    /* into a directory that does not exist: fails before anything is created */
    const char *bad = t_path("no/such/dir/x.safetensors");
    CHECK(moe_st_write(bad, &good, 1, NULL, 0, err, sizeof err) == -1);
    snprintf(want, sizeof want, "%s: cannot create %s.tmp.%ld: No such file or directory", bad, bad, (long)getpid());
    CHECK_STR(err, want);

    /* a good checkpoint, then writes that fail in different places: it stays untouched */
    const char *path = t_path("ck.safetensors");
    CHECK(moe_st_write(path, &good, 1, NULL, 0, err, sizeof err) == 0);
    size_t n0 = 0, n1 = 0;
    char *before = t_read_file(path, &n0);

    moe_st_out dup[2] = {good, good};
    CHECK(moe_st_write(path, dup, 2, NULL, 0, err, sizeof err) == -1);
    snprintf(want, sizeof want, "%s: tensor 'w' is given twice", path);
    CHECK_STR(err, want);

    moe_st_out neg = {.name = "n", .ndim = 1, .shape = {-1}, .data = big};
    CHECK(moe_st_write(path, &neg, 1, NULL, 0, err, sizeof err) == -1);
    snprintf(want, sizeof want, "%s: tensor 'n' has a negative dimension", path);
    CHECK_STR(err, want);

    moe_st_out nine = {.name = "x", .ndim = 9, .shape = {1, 1, 1, 1, 1, 1, 1, 1}, .data = big};
    CHECK(moe_st_write(path, &nine, 1, NULL, 0, err, sizeof err) == -1);
    snprintf(want, sizeof want, "%s: tensor 'x' has 9 dimensions (0 to 8 allowed)", path);
    CHECK_STR(err, want);
    moe_st_out latin1 = {.name = "caf\xe9", .ndim = 1, .shape = {4}, .data = big};
    CHECK(moe_st_write(path, &latin1, 1, NULL, 0, err, sizeof err) == -1);
    snprintf(want, sizeof want, "%s: tensor 'caf\xe9': name is not valid UTF-8 or out of memory", path);
    CHECK_STR(err, want);
    moe_st_out reserved = {.name = "__metadata__", .ndim = 1, .shape = {4}, .data = big};
    CHECK(moe_st_write(path, &reserved, 1, NULL, 0, err, sizeof err) == -1);
    snprintf(want, sizeof want, "%s: tensor 0 has an empty or reserved name", path);
    CHECK_STR(err, want);
    const char *badmeta[] = {"k", "\xff"};
    CHECK(moe_st_write(path, &good, 1, badmeta, 1, err, sizeof err) == -1);
    snprintf(want, sizeof want, "%s: metadata pair 0 is not valid UTF-8", path);
    CHECK_STR(err, want);

    /* a write that runs out of space half-way (file size limit: EFBIG) */
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 4096;
    signal(SIGXFSZ, SIG_IGN);
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    int rc = moe_st_write(path, &large, 1, NULL, 0, err, sizeof err);
    setrlimit(RLIMIT_FSIZE, &old);
    CHECK(rc == -1);
    snprintf(want, sizeof want, "%s: write of %s.tmp.%ld failed: File too large", path, path, (long)getpid());
    CHECK_STR(err, want);

    char *after = t_read_file(path, &n1);
    CHECK(before && after && n0 == n1 && memcmp(before, after, n0) == 0);
    free(before);
    free(after);
    check_dir_only("ck.safetensors");

    /* the temporary name is taken by a directory: cannot create, target still intact */
    char tmpdir[600];
    snprintf(tmpdir, sizeof tmpdir, "%s.tmp.%ld", path, (long)getpid());
    CHECK(mkdir(tmpdir, 0755) == 0);
    CHECK(moe_st_write(path, &large, 1, NULL, 0, err, sizeof err) == -1);
    snprintf(want, sizeof want, "%s: cannot create %s: Is a directory", path, tmpdir);
    CHECK_STR(err, want);
    rmdir(tmpdir);
    moe_st *st = NULL;
    CHECK(moe_st_read(path, &st, err, sizeof err) == 0 && st && moe_st_get(st, 0)->numel == 4);
    moe_st_free(st);
}

static void test_hostile(void) {
    const char *p = t_path("bad.safetensors");
    char buf[64];

    t_write_file(p, "", 0);
    expect_err(p, "file is too short (0 bytes) to be safetensors");
    t_write_file(p, "\x02\0\0\0\0", 5);
    expect_err(p, "file is too short (5 bytes) to be safetensors");
    put_raw(p, 1ull << 40, "{}", 2, 0);
    expect_err(p, "header length 1099511627776 exceeds the 100 MB limit");
    put_raw(p, UINT64_MAX, "{}", 2, 0);
    expect_err(p, "header length 18446744073709551615 exceeds the 100 MB limit");
    put_raw(p, 100, "{}      ", 8, 4);
    expect_err(p, "header length 100 exceeds the file size (20 bytes)");
    put_raw(p, 0, "", 0, 0);
    expect_err(p, "header is not valid JSON: '[' or '{' expected near end of file (byte 0)");
    put_st(p, "{\"a\": ", 0);
    expect_err(p, "header is not valid JSON: unexpected token near end of file (byte 6)");
    put_st(p, "{\"a\": {\"dtype\": \"F32\"}} trailing", 0);
    expect_err(p, "header is not valid JSON: end of file expected near 'trailing' (byte 32)");
    put_raw(p, 10, "{\"a\":\0 1}  ", 10, 0);
    expect_err(p, "header is not valid JSON: invalid token near end of file (byte 6)");
    put_st(p, "[1, 2]", 0);
    expect_err(p, "header is not a JSON object");
    put_st(p, "{\"w\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}, "
              "\"w\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    expect_err(p, "header has a duplicate key (byte 59)");

    put_st(p, "{\"w\": 3}", 0);
    expect_err(p, "tensor 'w': entry is not an object");
    put_st(p, "{\"w\": {\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_err(p, "tensor 'w': dtype is missing or not a string");
    put_st(p, "{\"w\": {\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4);
    expect_err(p, "tensor 'w' has dtype BF16; only F32 and I8 are supported");
    put_st(p, "{\"ok\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}, "
              "\"bad\\nname\": {\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[4,12]}}", 12);
    expect_err(p, "tensor 'bad?name' has dtype F64; only F32 and I8 are supported");
    put_st(p, "{\"w\": {\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}}", 16);
    expect_err(p, "tensor 'w': shape is missing or not a list");
    put_st(p, "{\"w\": {\"dtype\":\"F32\",\"shape\":[2,-2],\"data_offsets\":[0,16]}}", 16);
    expect_err(p, "tensor 'w': shape is not a list of non-negative integers");
    put_st(p, "{\"w\": {\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,16]}}", 16);
    expect_err(p, "tensor 'w': shape is not a list of non-negative integers");
    put_st(p, "{\"w\": {\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4);
    expect_err(p, "tensor 'w': shape has 9 dimensions (at most 8)");
    put_st(p, "{\"w\": {\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,16]}}", 16);
    expect_err(p, "tensor 'w': shape product overflows");
    put_st(p, "{\"w\": {\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0]}}", 16);
    expect_err(p, "tensor 'w': data_offsets is not [begin, end] with 0 <= begin <= end");
    put_st(p, "{\"w\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 16);
    expect_err(p, "tensor 'w': data_offsets is not [begin, end] with 0 <= begin <= end");
    put_st(p, "{\"w\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 16);
    expect_err(p, "tensor 'w': data_offsets is not [begin, end] with 0 <= begin <= end");
    put_st(p, "{\"w\": {\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}", 16);
    expect_err(p, "tensor 'w': data_offsets [0, 400] lie outside the data section (16 bytes)");
    put_st(p, "{\"w\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[9223372036854775800,9223372036854775804]}}", 16);
    expect_err(p, "tensor 'w': data_offsets [9223372036854775800, 9223372036854775804] lie outside the data "
                  "section (16 bytes)");
    put_st(p, "{\"w\": {\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 16);
    expect_err(p, "tensor 'w': data_offsets span 12 bytes but the shape needs 16");
    put_st(p, "{\"a\": {\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}, "
              "\"b\": {\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 24);
    expect_err(p, "tensors 'a' and 'b' overlap in the data section");
    put_st(p, "{\"a\": {\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}, "
              "\"b\": {\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16);
    expect_err(p, "tensors 'b' and 'a' overlap in the data section");
    put_st(p, "{\"__metadata__\": [1]}", 0);
    expect_err(p, "__metadata__ is not an object");
    put_st(p, "{\"__metadata__\": {\"step\": 5}}", 0);
    expect_err(p, "__metadata__ value of 'step' is not a string");

    /* a very long name is cut in the message, which stays one line */
    char hdr[600];
    memset(buf, 'n', 63);
    buf[63] = 0;
    snprintf(hdr, sizeof hdr, "{\"%s%s\": {\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", buf, buf);
    put_st(p, hdr, 1);
    char want[200];
    snprintf(want, sizeof want, "tensor '%.64s...' has dtype U8; only F32 and I8 are supported", hdr + 2);
    expect_err(p, want);

    const char *missing = t_path("missing.safetensors");
    expect_err(missing, "cannot open: No such file or directory");
    expect_err(t_dir, "not a regular file");

    /* accepted edge cases: unaligned offsets (data still aligned), empty tensors, gaps,
     * unknown keys, trailing bytes */
    put_st(p, "{\"a\": {\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[2,10],\"x\":1}, "
              "\"e\": {\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]}, "
              "\"b\": {\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[12,16]}}", 20);
    moe_st *st = NULL;
    char err[512];
    CHECK(moe_st_read(p, &st, err, sizeof err) == 0);
    if (st) {
        const moe_st_tensor *a = moe_st_find(st, "a"), *b = moe_st_find(st, "b");
        unsigned char ea[8] = {2, 3, 4, 5, 6, 7, 8, 9}, eb[4] = {12, 13, 14, 15};
        CHECK(a && ((uintptr_t)a->data % 64) == 0 && memcmp(a->data, ea, 8) == 0);
        CHECK(b && b->ndim == 0 && b->numel == 1 && memcmp(b->data, eb, 4) == 0);
        CHECK(moe_st_find(st, "e") && moe_st_find(st, "e")->numel == 0);
        moe_st_free(st);
    }
}

/* Every truncation of a valid file fails cleanly; random byte flips never crash. */
static void test_mangled(void) {
    float w[6] = {1, 2, 3, 4, 5, 6};
    moe_st_out t[2] = {{.name = "a", .ndim = 2, .shape = {2, 2}, .data = w},
                       {.name = "b", .ndim = 1, .shape = {2}, .data = w + 4}};
    const char *meta[] = {"k", "v"};
    const char *good = t_path("good.safetensors"), *p = t_path("mangled.safetensors");
    char err[512];
    CHECK(moe_st_write(good, t, 2, meta, 1, err, sizeof err) == 0);
    size_t n = 0;
    unsigned char *raw = (unsigned char *)t_read_file(good, &n);
    if (!raw) { t_failures++; return; }
    for (size_t len = 0; len < n; len++) {
        t_write_file(p, raw, len);
        moe_st *st = NULL;
        int rc = moe_st_read(p, &st, err, sizeof err);
        CHECK(rc == -1 && st == NULL && strncmp(err, p, strlen(p)) == 0 && !strchr(err, '\n'));
        moe_st_free(st);
    }
    uint64_t s = 12345;
    unsigned char *m = malloc(n);
    for (int it = 0; it < 3000; it++) {
        memcpy(m, raw, n);
        int flips = 1 + (int)(s % 4);
        for (int k = 0; k < flips; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(s >> 33) % n;
            m[at] = (unsigned char)(s >> 17);
        }
        t_write_file(p, m, n);
        moe_st *st = NULL;
        if (moe_st_read(p, &st, err, sizeof err) == 0) {
            for (int i = 0; i < moe_st_count(st); i++) {   /* touch all data: ASan checks it */
                const moe_st_tensor *x = moe_st_get(st, i);
                volatile float acc = 0;
                for (int64_t j = 0; j < x->numel; j++) acc += x->data[j];
                (void)acc;
            }
            moe_st_free(st);
        } else {
            CHECK(!strchr(err, '\n'));
        }
    }
    free(m);
    free(raw);
}

/* moe_st_fetch for the test: the "device" is a buffer of shifted values; a piece at offset
 * fail_at makes it fail */
typedef struct fetch_ctx { int calls; size_t fail_at; } fetch_ctx;
static int fetch_shifted(void *ctx, const moe_st_out *t, size_t off, void *dst, size_t n) {
    fetch_ctx *c = ctx;
    c->calls++;
    if (off == c->fail_at) return -1;
    const float *src = t->data;
    for (size_t i = 0; i < n / 4; i++) ((float *)dst)[i] = src[off / 4 + i] + 1.0f;
    return 0;
}

/* data the host cannot read directly comes through fetch, in pieces of at most 8 MiB; a
 * failing fetch leaves no file */
static void test_fetch(void) {
    enum { N = 3 << 20 };       /* 12 MiB: two pieces */
    float *w = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) w[i] = (float)(i % 1000);
    moe_st_out t[2] = {{.name = "a", .ndim = 1, .shape = {3}, .data = w}, {.name = "b", .ndim = 1, .shape = {N}, .data = w}};
    char err[512];
    const char *path = t_path("fetched.safetensors");
    fetch_ctx c = {0, (size_t)-1};
    CHECK(moe_st_write_fetch(path, t, 2, NULL, 0, fetch_shifted, &c, err, sizeof err) == 0);
    CHECK(c.calls == 3);
    moe_st *st = NULL;
    CHECK(moe_st_read(path, &st, err, sizeof err) == 0);
    const moe_st_tensor *b = st ? moe_st_find(st, "b") : NULL;
    CHECK(b && b->numel == N);
    int same = b != NULL;
    for (int i = 0; same && i < N; i++) same = b->data[i] == w[i] + 1.0f;
    CHECK(same);
    moe_st_free(st);
    remove(path);
    c = (fetch_ctx){0, (size_t)8 << 20};     /* the second piece of b fails */
    CHECK(moe_st_write_fetch(path, t, 2, NULL, 0, fetch_shifted, &c, err, sizeof err) == -1);
    CHECK(strstr(err, "reading the data of") != NULL);
    DIR *dir = opendir(t_dir);      /* neither the file nor its temporary */
    struct dirent *e;
    while (dir && (e = readdir(dir))) CHECK(strncmp(e->d_name, "fetched", 7) != 0);
    if (dir) closedir(dir);
    free(w);
}

/* moe_afile (errbuf.h), the small files' writer: whole or not at all, never a .tmp left */
static void test_afile(void) {
    const char *path = t_path("small.txt");
    moe_afile a;
    FILE *f = moe_afile_open(&a, path);
    CHECK(f && fputs("first\n", f) >= 0 && moe_afile_close(&a, 1) == 0);
    f = moe_afile_open(&a, path);             /* a failed writer: the file keeps its old text */
    CHECK(f && fputs("second\n", f) >= 0);
    errno = ENOSPC;
    CHECK(moe_afile_close(&a, 0) == -1 && errno == ENOSPC);
    char got[32] = "";
    FILE *in = fopen(path, "r");
    CHECK(in && fgets(got, sizeof got, in));
    if (in) fclose(in);
    CHECK_STR(got, "first\n");
    DIR *dir = opendir(t_dir);
    for (struct dirent *e; dir && (e = readdir(dir));)
        CHECK(strncmp(e->d_name, "small.txt.tmp", 13) != 0);
    if (dir) closedir(dir);
    errno = 0;                                /* a directory that does not exist */
    CHECK(!moe_afile_open(&a, t_path("no/such/dir/x.txt")) && errno == ENOENT && moe_afile_close(&a, 1) == -1);
    remove(path);
}

int main(void) {
    t_mkdir();
    test_round_trip();
    test_atomic();
    test_afile();
    test_hostile();
    test_mangled();
    test_fetch();
    return t_done("test_st");
}
