/* synthetic.c - the built-in deterministic corpus behind `--data synthetic`.
 *
 * The stream is a sequence of lines, each drawn from one of five sources, so that the
 * experts of a MoE layer have distinct kinds of text to specialise on:
 *   0. English-like sentences from a tiny grammar ("The old cat follows the ship.")
 *   1. arithmetic with correct answers ("12+35=47", "81-19=62", "7*8=56")
 *   2. a random Markov chain over the lowercase letters "etaoinshrdlcum", in words
 *   3. a second, unrelated Markov chain over the capitals "QWXZJKVBPYGF", in words
 *   4. patterns that need copying or counting: "7 9 11 13 15", "abcabcabc",
 *      "kfpaz|zapfk" (reversal), "dbca>abcd" (sorting)
 * Lines end with '\n'. With vocab >= 128 the tokens are the ASCII bytes, so generated
 * samples can be read. With 16 <= vocab < 128 the newline is token 0 and source s owns
 * tokens [1 + s*w, 1 + (s+1)*w) with w = (vocab - 1) / 5; a character becomes
 * 1 + s*w + (its index in the source's alphabet mod w).
 * Everything is integer arithmetic on a fixed seed (splitmix64 from moe_rng.h), so the
 * corpus is the same on every machine; tests pin a hash of it, so a change to this file
 * that changes the stream must update the golden constant in tests/runtime/test_data.c.
 */
#include "data.h"

#include <stdio.h>
#include <string.h>

#include "moe_rng.h"

#define SYN_SEED 0x5EED5EED2024ull
#define SYN_SOURCES 5
#define SYN_LINE 256

typedef struct syn_rng { uint64_t s; } syn_rng;

static uint64_t syn_next(syn_rng *g) {
    g->s += 0x9E3779B97F4A7C15ull;
    return moe_mix64(g->s);
}
static int syn_pick(syn_rng *g, int n) { return (int)(syn_next(g) % (uint64_t)n); }

static const char *const syn_det[] = {"the", "a", "one", "every", "my", "our", "that"};
static const char *const syn_adj[] = {"small", "red", "old", "quick", "quiet", "happy",
                                      "green", "big", "cold", "dark", "bright", "tired"};
static const char *const syn_noun[] = {"cat", "dog", "bird", "tree", "river", "house", "child",
                                       "ship", "stone", "garden", "king", "song", "farmer", "horse"};
static const char *const syn_verb[] = {"sees", "likes", "finds", "follows", "builds", "carries",
                                       "hears", "paints", "watches", "remembers", "keeps", "greets"};
static const char *const syn_prep[] = {"near", "under", "behind", "with", "beside", "across"};
#define SYN_N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Character sets: the Markov alphabets and, for small vocabularies, each source's alphabet. */
static const char syn_chain_a[] = "etaoinshrdlcum";
static const char syn_chain_b[] = "QWXZJKVBPYGF";
static const char *const syn_alpha[SYN_SOURCES] = {
    " abcdefghijklmnopqrstuvwxyz.",
    "0123456789+-*=",
    " etaoinshrdlcum",
    " QWXZJKVBPYGF",
    " 0123456789abcdefghijklmnopqrstuvwxyz|>",
};

/* A Markov chain: from each letter, three successors with weights out of 8. */
typedef struct syn_chain {
    const char *letters;
    int n;
    unsigned char next[16][3], weight[16][3];
} syn_chain;

static void syn_chain_init(syn_chain *c, const char *letters, uint64_t seed) {
    syn_rng g = {seed};
    c->letters = letters;
    c->n = (int)strlen(letters);
    for (int i = 0; i < c->n; i++) {
        for (int k = 0; k < 3; k++) c->next[i][k] = (unsigned char)syn_pick(&g, c->n);
        c->weight[i][0] = (unsigned char)(4 + syn_pick(&g, 3));     /* 4..6 */
        c->weight[i][1] = (unsigned char)(1 + syn_pick(&g, 8 - c->weight[i][0] - 1));
        c->weight[i][2] = (unsigned char)(8 - c->weight[i][0] - c->weight[i][1]);
    }
}

typedef struct syn_buf { char s[SYN_LINE]; int n; } syn_buf;

static void syn_puts(syn_buf *b, const char *s) {
    while (*s && b->n < SYN_LINE - 2) b->s[b->n++] = *s++;
}
static void syn_putc(syn_buf *b, char c) {
    if (b->n < SYN_LINE - 2) b->s[b->n++] = c;
}
static void syn_word(syn_buf *b, const char *const *list, int n, syn_rng *g) {
    syn_puts(b, list[syn_pick(g, n)]);
}

static void syn_sentence(syn_buf *b, syn_rng *g) {
    int start = b->n;
    switch (syn_pick(g, 4)) {
    case 0:   /* DET ADJ NOUN VERB the NOUN. */
        syn_word(b, syn_det, SYN_N(syn_det), g); syn_putc(b, ' ');
        syn_word(b, syn_adj, SYN_N(syn_adj), g); syn_putc(b, ' ');
        syn_word(b, syn_noun, SYN_N(syn_noun), g); syn_putc(b, ' ');
        syn_word(b, syn_verb, SYN_N(syn_verb), g); syn_puts(b, " the ");
        syn_word(b, syn_noun, SYN_N(syn_noun), g);
        break;
    case 1:   /* DET NOUN VERB a ADJ NOUN PREP the NOUN. */
        syn_word(b, syn_det, SYN_N(syn_det), g); syn_putc(b, ' ');
        syn_word(b, syn_noun, SYN_N(syn_noun), g); syn_putc(b, ' ');
        syn_word(b, syn_verb, SYN_N(syn_verb), g); syn_puts(b, " a ");
        syn_word(b, syn_adj, SYN_N(syn_adj), g); syn_putc(b, ' ');
        syn_word(b, syn_noun, SYN_N(syn_noun), g); syn_putc(b, ' ');
        syn_word(b, syn_prep, SYN_N(syn_prep), g); syn_puts(b, " the ");
        syn_word(b, syn_noun, SYN_N(syn_noun), g);
        break;
    case 2:   /* the NOUN is ADJ. */
        syn_puts(b, "the "); syn_word(b, syn_noun, SYN_N(syn_noun), g); syn_puts(b, " is ");
        syn_word(b, syn_adj, SYN_N(syn_adj), g);
        break;
    default:  /* DET NOUN VERB the NOUN and the NOUN VERB it. */
        syn_word(b, syn_det, SYN_N(syn_det), g); syn_putc(b, ' ');
        syn_word(b, syn_noun, SYN_N(syn_noun), g); syn_putc(b, ' ');
        syn_word(b, syn_verb, SYN_N(syn_verb), g); syn_puts(b, " the ");
        syn_word(b, syn_noun, SYN_N(syn_noun), g); syn_puts(b, " and the ");
        syn_word(b, syn_noun, SYN_N(syn_noun), g); syn_putc(b, ' ');
        syn_word(b, syn_verb, SYN_N(syn_verb), g); syn_puts(b, " it");
        break;
    }
    syn_putc(b, '.');
    b->s[start] = (char)(b->s[start] - 'a' + 'A');   /* every template starts lowercase */
}

static void syn_arith(syn_buf *b, syn_rng *g) {
    char t[48];
    int x, y;
    switch (syn_pick(g, 3)) {
    case 0: x = syn_pick(g, 100); y = syn_pick(g, 100); snprintf(t, sizeof t, "%d+%d=%d", x, y, x + y); break;
    case 1: x = syn_pick(g, 100); y = syn_pick(g, x + 1); snprintf(t, sizeof t, "%d-%d=%d", x, y, x - y); break;
    default: x = syn_pick(g, 13); y = syn_pick(g, 13); snprintf(t, sizeof t, "%d*%d=%d", x, y, x * y); break;
    }
    syn_puts(b, t);
}

static void syn_markov(syn_buf *b, const syn_chain *c, syn_rng *g) {
    int words = 3 + syn_pick(g, 6);
    for (int w = 0; w < words; w++) {
        if (w) syn_putc(b, ' ');
        int len = 2 + syn_pick(g, 6), cur = syn_pick(g, c->n);
        for (int i = 0; i < len; i++) {
            syn_putc(b, c->letters[cur]);
            int r = syn_pick(g, 8), k = 0;
            while (k < 2 && r >= c->weight[cur][k]) r -= c->weight[cur][k++];
            cur = c->next[cur][k];
        }
    }
}

static void syn_pattern(syn_buf *b, syn_rng *g) {
    char t[16], u[16];
    int n;
    switch (syn_pick(g, 4)) {
    case 0: {   /* counting with a stride */
        int v = syn_pick(g, 100), step = 1 + syn_pick(g, 3), count = 4 + syn_pick(g, 8);
        for (int i = 0; i < count; i++, v += step) {
            snprintf(t, sizeof t, i ? " %d" : "%d", v);
            syn_puts(b, t);
        }
        break;
    }
    case 1: {   /* a short unit repeated */
        n = 2 + syn_pick(g, 3);
        for (int i = 0; i < n; i++) u[i] = (char)('a' + syn_pick(g, 26));
        u[n] = 0;
        int reps = 3 + syn_pick(g, 6);
        for (int i = 0; i < reps; i++) syn_puts(b, u);
        break;
    }
    case 2:     /* a word and its reversal */
        n = 3 + syn_pick(g, 6);
        for (int i = 0; i < n; i++) u[i] = (char)('a' + syn_pick(g, 26));
        u[n] = 0;
        syn_puts(b, u); syn_putc(b, '|');
        for (int i = n - 1; i >= 0; i--) syn_putc(b, u[i]);
        break;
    default:    /* a word and its letters sorted */
        n = 3 + syn_pick(g, 6);
        for (int i = 0; i < n; i++) u[i] = (char)('a' + syn_pick(g, 26));
        u[n] = 0;
        syn_puts(b, u); syn_putc(b, '>');
        for (char c = 'a'; c <= 'z'; c++)
            for (int i = 0; i < n; i++)
                if (u[i] == c) syn_putc(b, c);
        break;
    }
}

/* Token of character c from source s (see the file comment). */
static uint16_t syn_token(char c, int s, int64_t vocab) {
    if (vocab >= 128) return (uint16_t)(unsigned char)c;
    if (c == '\n') return 0;
    if (c >= 'A' && c <= 'Z' && s == 0) c = (char)(c - 'A' + 'a');
    int64_t w = (vocab - 1) / SYN_SOURCES;
    const char *p = strchr(syn_alpha[s], c);
    int64_t idx = p ? (int64_t)(p - syn_alpha[s]) : 0;
    return (uint16_t)(1 + s * w + idx % w);
}

void moe_data_synthetic(uint16_t *tok, int64_t n, int64_t vocab) {
    if (!tok || n <= 0) return;
    if (vocab < 16) {           /* callers check; never write out-of-range tokens */
        memset(tok, 0, (size_t)n * sizeof *tok);
        return;
    }
    syn_chain ca, cb;
    syn_chain_init(&ca, syn_chain_a, SYN_SEED ^ 0xA);
    syn_chain_init(&cb, syn_chain_b, SYN_SEED ^ 0xB);
    syn_rng g = {SYN_SEED};
    int64_t pos = 0;
    while (pos < n) {
        syn_buf b = {.n = 0};
        /* mix: sentences 30%, arithmetic 20%, chain A 15%, chain B 15%, patterns 20% */
        int r = syn_pick(&g, 20), s;
        if (r < 6) { s = 0; syn_sentence(&b, &g); }
        else if (r < 10) { s = 1; syn_arith(&b, &g); }
        else if (r < 13) { s = 2; syn_markov(&b, &ca, &g); }
        else if (r < 16) { s = 3; syn_markov(&b, &cb, &g); }
        else { s = 4; syn_pattern(&b, &g); }
        b.s[b.n++] = '\n';
        for (int i = 0; i < b.n && pos < n; i++) tok[pos++] = syn_token(b.s[i], s, vocab);
    }
}
