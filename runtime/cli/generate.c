/* generate.c - `generate`: sampling with the KV-cache decode program.
 *
 * Every token (prompt and sampled) goes through the decode steps once, which append its
 * keys and values to the cache; the gate routes it without a capacity limit (one
 * token never overflows), so the logits equal evaluation mode whenever evaluation drops
 * nothing. --check-cache verifies exactly that against a full forward of the prompt.
 * --prompts runs a file of prompts through B decode slots (continuous batching in its
 * simplest form): each slot holds one sequence and its KV cache, every round decodes one token
 * of every busy slot (their rows together through the decode program, which reads each weight
 * once for all of them), and a slot whose sequence ends takes the next prompt at once. Sequence j
 * samples from its own stream, so its output does not depend on B or on the other prompts.
 */
#include "cli.h"
#include "errbuf.h"
#include "moe_rng.h"
#include <jansson.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Top-p (nucleus): zero every probability outside the smallest set of the most likely tokens
 * whose mass reaches p of sum; returns the mass kept. */
static double nucleus(double *probs, int V, double sum, double p, int *order) {
    int n = 0;
    for (int v = 0; v < V; v++) if (probs[v] > 0) order[n++] = v;
    for (int i = 1; i < n; i++) {       /* insertion sort by probability, descending; ties by id */
        int v = order[i], j = i - 1;
        while (j >= 0 && probs[order[j]] < probs[v]) { order[j + 1] = order[j]; j--; }
        order[j + 1] = v;
    }
    double acc = 0.0;
    int keep = 0;
    while (keep < n && acc < p * sum) acc += probs[order[keep++]];
    for (int i = keep; i < n; i++) probs[order[i]] = 0.0;
    return acc;
}

/* The next token: greedy at temperature 0, else sampled from softmax(logits / temp) over the
 * top-k (0: all) and top-p (1: all) tokens, with draw i of `stream`. probs, order: [V]. */
static int sample(const float *logits, int V, double temp, int topk, double topp, uint64_t stream, uint64_t i,
                  double *probs, int *order) {
    if (temp <= 0.0) {
        int best = 0;
        for (int v = 1; v < V; v++) if (logits[v] > logits[best]) best = v;
        return best;
    }
    float cut = -INFINITY;
    if (topk > 0 && topk < V) {         /* the k-th largest logit */
        float *tmp = malloc(sizeof(float) * (size_t)V);
        if (tmp) {
            memcpy(tmp, logits, sizeof(float) * (size_t)V);
            for (int j = 0; j < topk; j++) {
                int b = j;
                for (int v = j + 1; v < V; v++) if (tmp[v] > tmp[b]) b = v;
                float t = tmp[j]; tmp[j] = tmp[b]; tmp[b] = t;
            }
            cut = tmp[topk - 1];
            free(tmp);
        }
    }
    double mx = -INFINITY, sum = 0.0;
    for (int v = 0; v < V; v++) if (logits[v] >= cut && logits[v] > mx) mx = logits[v];
    for (int v = 0; v < V; v++) sum += probs[v] = logits[v] >= cut ? exp((logits[v] - mx) / temp) : 0.0;
    if (topp < 1.0) sum = nucleus(probs, V, sum, topp, order);
    double u = moe_uniform(stream, i) * sum, acc = 0.0;
    for (int v = 0; v < V; v++) { acc += probs[v]; if (u < acc) return v; }
    return V - 1;
}

/* prompt -> tokens: bytes for a byte vocabulary (256), otherwise token ids separated by
 * spaces or commas. At most cap tokens are written; the count returned may exceed cap (a
 * prompt too long shows), or is -1 after a message that starts with `where`. */
static int tokenize(const char *where, const char *prompt, int V, int32_t *out, int cap) {
    int n = 0;
    if (V == 256) {
        for (const unsigned char *s = (const unsigned char *)prompt; *s; s++, n++)
            if (n < cap) out[n] = *s;
        return n;
    }
    for (const char *s = prompt;;) {
        while (*s == ' ' || *s == ',' || *s == '\t' || *s == '\n') s++;
        if (!*s) break;
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (end == s || errno || (*end && !strchr(" ,\t\n", *end))) {
            cli_fail("%s: '%.*s' is not a token id (this model's vocabulary of %d is not bytes: the prompt is "
                     "token ids from 0 to %d separated by spaces)", where, (int)strcspn(s, " ,\t\n"), s, V, V - 1);
            return -1;
        }
        if (v < 0 || v >= V) {
            cli_fail("%s: token id %lld is outside the vocabulary (0 to %d)", where, v, V - 1);
            return -1;
        }
        if (n < cap) out[n] = (int32_t)v;
        n++;
        s = end;
    }
    return n;
}

/* a token on stdout: the byte itself, or its id and a space */
static void put_token(int V, int32_t t) {
    if (V == 256) putchar(t);
    else printf("%d ", t);
}

/* How far --check-cache lets the KV cache's logits be from the full forward's: 1e-4 where both
 * compute in f32; a bf16 or fp16 model's training program (whose forward this is) rounds its
 * GEMM operands, while decoding computes in f32 (compiler/passes/precision.c), so there the
 * difference is the rounding's: about 2^-8 (bf16) or 2^-11 (fp16) of the logits' size, over
 * several layers. */
static double cache_tolerance(const moe_program *p) {
    return p->half == MOE_BF16 ? 0.1 : p->half == MOE_F16 ? 0.02 : 1e-4;
}

/* --check-cache: the decode program's logits over the prompt against a full evaluation-mode
 * forward. With B slots the prompt is decoded B times at once, copy j in slot j starting j
 * rounds later, so every pass holds rows at different positions and slots. Returns 0 when
 * they agree within cache_tolerance, else 1 (reported). */
static int check_cache(moe_rt *rt, const int32_t *tok, int n, int B) {
    const moe_program *p = cli_prog;
    int V = (int)p->vocab;
    double worst = 0.0;
    char err[256];
    if (moe_rt_shape(rt, 1, n, err, sizeof err)) { cli_fail("%s", err); return 1; }
    float *full = malloc(sizeof(float) * (size_t)n * (size_t)V);
    int32_t *rows = malloc(sizeof(int32_t) * 3 * (size_t)B);
    if (!full || !rows) { free(full), free(rows); cli_fail("out of memory"); return 1; }
    memcpy(rt->tokens, tok, sizeof(int32_t) * (size_t)n);
    moe_rt_upload_batch(rt);
    rt->ctx.mode = MOE_MODE_EVAL;
    moe_rt_stats_clear(rt);
    moe_rt_logits(rt);
    moe_stats st;
    moe_rt_stats_read(rt, &st);
    moe_rt_read_logits(rt, 0, n, full);
    for (int r = 0; r < n + B - 1; r++) {      /* round r: copy j at position r - j */
        int m = 0;
        for (int j = 0; j < B; j++)
            if (r - j >= 0 && r - j < n) rows[m] = tok[r - j], rows[B + m] = r - j, rows[2 * B + m++] = j;
        const float *lg = moe_rt_decode_rows(rt, m, rows, rows + B, rows + 2 * B);
        for (int i = 0; i < m; i++)
            for (int v = 0; v < V; v++) {
                double d = fabs((double)lg[(int64_t)i * V + v] - full[(int64_t)rows[B + i] * V + v]);
                if (d > worst) worst = d;
            }
    }
    free(full), free(rows);
    if (moe_rt_error(rt)) { cli_fail("%s", moe_rt_error(rt)); return 1; }
    printf("{\"positions\": %d, \"sequences\": %d, \"max_abs_diff\": %s, \"eval_dropped\": %.0f}\n", n, B,
           cli_json_num(worst).s, st.dropped);
    double tol = cache_tolerance(p);
    if (!(worst <= tol) && st.dropped > 0)
        cli_fail("the KV cache's logits differ from the full forward's by %.3g: the full forward dropped %.0f token "
                 "choices at capacity (evaluation mode), which decoding never does; a prompt that drops none "
                 "compares exactly", worst, st.dropped);
    else if (!(worst <= tol))
        cli_fail("the KV cache's logits differ from the full forward's by %.3g (more than %g%s)", worst, tol,
                 p->half == MOE_F32 ? "" : ": the forward's GEMMs read half operands, decoding's f32 ones");
    return worst <= tol ? 0 : 1;
}

/* one prompt of a --prompts file and what became of it */
typedef struct gen_seq {
    char *text;             /* the prompt as written */
    int32_t *tok;           /* [context] the prompt, then the generated tokens */
    int n_prompt, n, fed;   /* prompt tokens; tokens so far; tokens through the decode program */
    long long max_new;      /* tokens it may generate */
    const char *stop;       /* NULL while running, then "length", "end" or "context" */
} gen_seq;

typedef struct gen_opts {
    double temp, topp;
    int topk, end;          /* end: the token that ends a sequence, or -1 */
    long long ntok;
    uint64_t seed;
} gen_opts;

/* Reads FILE.jsonl: one prompt per line, a JSON string or {"prompt": STRING, "tokens": N}.
 * Returns the count (0 after a message). */
static int read_prompts(const char *path, const gen_opts *o, gen_seq **out) {
    const moe_program *p = cli_prog;
    FILE *f = fopen(path, "r");
    if (!f) { cli_fail("--prompts %s: %s", path, strerror(errno)); return 0; }
    gen_seq *q = NULL;
    int n = 0, cap = 0, line = 0, bad = 0;
    char *buf = NULL;
    size_t len = 0;
    while (!bad && getline(&buf, &len, f) > 0) {
        line++;
        if (strspn(buf, " \t\r\n") == strlen(buf)) continue;
        json_error_t je;
        json_t *v = json_loads(buf, JSON_DECODE_ANY, &je);
        json_t *pr = json_is_object(v) ? json_object_get(v, "prompt") : v, *nt = json_object_get(v, "tokens");
        char where[4200];
        snprintf(where, sizeof where, "%s:%d", path, line);
        if (!json_is_string(pr) || (nt && (!json_is_integer(nt) || json_integer_value(nt) < 0))) {
            cli_fail("%s: %s", where, !v ? je.text : "a prompt is a JSON string or {\"prompt\": STRING, \"tokens\": N >= 0}");
            bad = 1;
        } else if (n == cap && !(q = realloc(q, sizeof *q * (size_t)(cap = cap ? 2 * cap : 16)))) {
            cli_fail("out of memory");
            bad = 1;
        } else {
            gen_seq *g = &q[n];
            memset(g, 0, sizeof *g);
            g->text = strdup(json_string_value(pr));
            g->tok = malloc(sizeof(int32_t) * (size_t)(p->context + 1));
            g->max_new = nt ? json_integer_value(nt) : o->ntok;
            n++;
            if (!g->text || !g->tok) { cli_fail("out of memory"); bad = 1; }
            else if ((g->n = g->n_prompt = tokenize(where, g->text, (int)p->vocab, g->tok, (int)p->context + 1)) < 0) bad = 1;
            else if (g->n == 0 || g->n > p->context) {
                cli_fail("%s: the prompt is %s", where, g->n ? "longer than the model's context" : "empty");
                bad = 1;
            }
        }
        json_decref(v);
    }
    free(buf);
    fclose(f);
    if (!bad && n == 0) { cli_fail("--prompts %s holds no prompt", path); bad = 1; }
    *out = q;
    if (bad) {
        for (int i = 0; i < n; i++) free(q[i].text), free(q[i].tok);
        free(q);
        *out = NULL;
        return 0;
    }
    return n;
}

/* the result of sequence g, a line of JSON: {"prompt", "completion" (text for a byte
 * vocabulary, null where it is not UTF-8; ids otherwise), "ids", "tokens", "stop"} */
static int write_result(FILE *out, const gen_seq *g, int V) {
    json_t *o = json_object(), *ids = json_array();
    char *text = malloc((size_t)(g->n - g->n_prompt) * 12 + 1);
    size_t k = 0;
    for (int t = g->n_prompt; text && t < g->n; t++) {
        json_array_append_new(ids, json_integer(g->tok[t]));
        if (V == 256) text[k++] = (char)g->tok[t];
        else k += (size_t)sprintf(text + k, "%s%d", k ? " " : "", g->tok[t]);
    }
    json_t *completion = text ? json_stringn(text, k) : NULL;
    json_object_set_new(o, "prompt", json_string(g->text));
    json_object_set_new(o, "completion", completion ? completion : json_null());
    json_object_set_new(o, "ids", ids);
    json_object_set_new(o, "tokens", json_integer(g->n - g->n_prompt));
    json_object_set_new(o, "stop", json_string(g->stop));
    char *line = text ? json_dumps(o, JSON_COMPACT) : NULL;
    int rc = line && fprintf(out, "%s\n", line) > 0 ? 0 : -1;
    free(line);
    free(text);
    json_decref(o);
    return rc;
}

/* --prompts: the file's prompts through `slots` decode slots; results in input order */
static int generate_batch(moe_rt *rt, const char *path, const char *out_path, const gen_opts *o) {
    const moe_program *p = cli_prog;
    int V = (int)p->vocab, B = rt->n_slots;
    gen_seq *q = NULL;
    int n = read_prompts(path, o, &q);
    if (!n) return MOE_EXIT_FAIL;
    int *slot = malloc(sizeof(int) * (size_t)B), *order = malloc(sizeof(int) * (size_t)V);
    float *last = malloc(sizeof(float) * (size_t)V * (size_t)B);   /* each slot's latest logits */
    int32_t *rows = malloc(sizeof(int32_t) * 3 * (size_t)B);      /* a round's tokens, positions, slots */
    double *probs = malloc(sizeof(double) * (size_t)V), t0 = moe_now_ms();
    int rc = slot && order && last && rows && probs ? 0 : (cli_fail("out of memory"), MOE_EXIT_FAIL);
    long long generated = 0, decoded = 0;
    int next = 0, busy = 0;
    for (int s = 0; !rc && s < B; s++) {
        slot[s] = next < n ? next++ : -1;
        busy += slot[s] >= 0;
    }
    while (!rc && busy && !moe_rt_error(rt)) {
        /* a round: every busy slot's next token through the decode program, the slots' rows
         * together */
        int m = 0;
        for (int s = 0; s < B; s++) {
            if (slot[s] < 0 || q[slot[s]].fed >= q[slot[s]].n) continue;
            gen_seq *g = &q[slot[s]];
            rows[m] = g->tok[g->fed], rows[B + m] = g->fed, rows[2 * B + m] = s;
            m++;
        }
        const float *lg = m ? moe_rt_decode_rows(rt, m, rows, rows + B, rows + 2 * B) : NULL;
        for (int r = 0; r < m; r++) {
            int s = rows[2 * B + r];
            memcpy(last + (size_t)s * V, lg + (size_t)r * V, sizeof(float) * (size_t)V);
            q[slot[s]].fed++;
        }
        decoded += m;
        for (int s = 0; s < B; s++) {
            if (slot[s] < 0) continue;
            gen_seq *g = &q[slot[s]];
            if (g->fed < g->n) continue;    /* its prompt is not through yet */
            long long made = g->n - g->n_prompt;
            if (made >= g->max_new) g->stop = "length";
            else if (g->n >= p->context) g->stop = "context";
            else {
                uint64_t stream = moe_rng_stream(o->seed, 0x6E4E, (uint64_t)slot[s]);
                int t = sample(last + (size_t)s * V, V, o->temp, o->topk, o->topp, stream, (uint64_t)made, probs, order);
                g->tok[g->n++] = t;
                generated++;
                if (t == o->end) g->stop = "end";
            }
            if (g->stop) {          /* the slot takes the next prompt */
                slot[s] = next < n ? next++ : -1;
                busy -= slot[s] < 0;
            }
        }
    }
    if (!rc && moe_rt_error(rt)) { cli_fail("%s", moe_rt_error(rt)); rc = MOE_EXIT_FAIL; }
    double secs = (moe_now_ms() - t0) / 1e3;
    if (!rc) {
        moe_afile a;
        FILE *out = out_path ? moe_afile_open(&a, out_path) : stdout;
        for (int i = 0; out && i < n && !rc; i++) rc = write_result(out, &q[i], V) ? MOE_EXIT_FAIL : 0;
        if (!out || (out_path && moe_afile_close(&a, !rc) != 0) || rc) {
            cli_fail("cannot write %s: %s", out_path ? out_path : "the results", strerror(errno));
            rc = MOE_EXIT_FAIL;
        }
        fprintf(stderr, "%s generate: %d prompts in %d slots: %lld tokens through the decode program (%lld generated) "
                "in %.2f s, %.1f tokens/s\n", moe_prog_name, n, B, decoded, generated, secs, secs > 0 ? decoded / secs : 0.0);
    }
    for (int i = 0; i < n; i++) free(q[i].text), free(q[i].tok);
    free(q);
    free(slot), free(order), free(last), free(rows), free(probs);
    return rc;
}

int cli_generate(int argc, char **argv) {
    moe_flag f[] = {{"--checkpoint", 1, "weights", NULL},
                    {"--prompt", 1, "text to continue (vocab 256); otherwise token ids: \"15496 11 995\"", NULL},
                    {"--prompts", 1, "a JSONL file of prompts (strings, or {\"prompt\", \"tokens\"}), decoded together", NULL},
                    {"--batch", 1, "--prompts: sequences decoding at the same time (default 8); --check-cache: "
                     "copies of the prompt decoded together, each a round later (default 1)", NULL},
                    {"--out", 1, "--prompts: the JSONL results, in input order (default: standard output)", NULL},
                    {"--tokens", 1, "tokens to generate (default 200)", NULL},
                    {"--temperature", 1, "sampling temperature, 0 = greedy (default 1.0)", NULL},
                    {"--top-k", 1, "sample among the k most likely tokens (default 0 = all)", NULL},
                    {"--top-p", 1, "sample among the most likely tokens holding this mass (default 1 = all)", NULL},
                    {"--end", 1, "a token id that ends a sequence (vocab 256: a byte, 10 = newline)", NULL},
                    {"--seed", 1, "sampling seed", NULL},
                    {"--check-cache", 0, "compare KV-cache logits with a full forward of the prompt", NULL},
                    {"--device", 1, "cpu|cuda|cuda-emu", NULL}};
    int nf = (int)(sizeof f / sizeof f[0]);
    int r = moe_args_parse(moe_prog_name, "generate", argc, argv, f, nf);
    if (r) return r > 0 ? MOE_EXIT_OK : MOE_EXIT_USAGE;
    const moe_program *p = cli_prog;
    long long topk, seed, end, slots;
    gen_opts o;
    if (moe_arg_int(f, nf, "--tokens", 200, 0, INT_MAX, &o.ntok) || moe_arg_int(f, nf, "--top-k", 0, 0, p->vocab, &topk) ||
        moe_arg_int(f, nf, "--seed", p->seed, 0, LLONG_MAX, &seed) || moe_arg_double(f, nf, "--temperature", 1.0, &o.temp) ||
        moe_arg_double(f, nf, "--top-p", 1.0, &o.topp) || moe_arg_int(f, nf, "--end", -1, -1, p->vocab - 1, &end) ||
        moe_arg_int(f, nf, "--batch", 8, 1, 4096, &slots))
        return MOE_EXIT_USAGE;
    o.topk = (int)topk, o.end = (int)end, o.seed = (uint64_t)seed;
    const char *batch_file = moe_arg(f, nf, "--prompts");
    if (o.temp < 0 || !(o.topp > 0 && o.topp <= 1)) {
        if (o.temp < 0) cli_fail("--temperature %g: must be 0 (greedy) or positive", o.temp);
        else cli_fail("--top-p %g: must be more than 0 and at most 1", o.topp);
        return MOE_EXIT_USAGE;
    }
    if (batch_file && (moe_arg(f, nf, "--prompt") || moe_arg(f, nf, "--check-cache"))) {
        cli_fail("--prompts runs a file of prompts: not with --prompt or --check-cache");
        return MOE_EXIT_USAGE;
    }
    int checking = moe_arg(f, nf, "--check-cache") != NULL;
    if (!batch_file && ((moe_arg(f, nf, "--batch") && !checking) || moe_arg(f, nf, "--out"))) {
        cli_fail("--batch and --out go with --prompts FILE.jsonl (--batch also with --check-cache)");
        return MOE_EXIT_USAGE;
    }
    int ctxlen = (int)p->context, V = (int)p->vocab;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)(ctxlen + 1));     /* one more: a prompt too long shows */
    double *probs = malloc(sizeof(double) * (size_t)V);
    int *order = malloc(sizeof(int) * (size_t)V);
    int nslots = batch_file || moe_arg(f, nf, "--batch") ? (int)slots : 1;
    moe_rt *rt = tok && probs && order ? cli_rt(MOE_RT_INFER, nslots, moe_arg(f, nf, "--device"))
                                       : NULL;
    int rc = rt ? cli_load(rt, moe_arg(f, nf, "--checkpoint"), NULL, 0, NULL) : MOE_EXIT_FAIL;
    if (!rc && batch_file) {
        rc = generate_batch(rt, batch_file, moe_arg(f, nf, "--out"), &o);
        moe_rt_destroy(rt);
        free(tok), free(probs), free(order);
        return rc;
    }
    const char *prompt = moe_arg(f, nf, "--prompt") ? moe_arg(f, nf, "--prompt") : (V == 256 ? "\n" : "0");
    int n = rc ? 0 : tokenize("--prompt", prompt, V, tok, ctxlen + 1);
    if (!rc && n < 0) {
        rc = MOE_EXIT_USAGE;
    } else if (!rc && n == 0) {
        cli_fail("the prompt is empty");
        rc = MOE_EXIT_USAGE;
    } else if (!rc && n > ctxlen) {
        cli_fail("the prompt is longer than the model's context of %d tokens; shorten it", ctxlen);
        rc = MOE_EXIT_USAGE;
    }
    if (!rc && moe_arg(f, nf, "--check-cache")) {
        rc = check_cache(rt, tok, n, nslots);
    } else if (!rc) {
        uint64_t stream = moe_rng_stream(o.seed, 0x6E4E, 0);
        const float *lg = NULL;
        for (int t = 0; t < n; t++) {
            lg = moe_rt_decode(rt, 0, tok[t], t);
            put_token(V, tok[t]);
        }
        long long i = 0;
        int ended = 0;
        for (; i < o.ntok && n < ctxlen && !ended; i++) {
            int next = sample(lg, V, o.temp, o.topk, o.topp, stream, (uint64_t)i, probs, order);
            tok[n] = next;
            put_token(V, next);
            ended = next == o.end;
            lg = moe_rt_decode(rt, 0, next, n++);
        }
        putchar('\n');
        if (moe_rt_error(rt)) { cli_fail("%s", moe_rt_error(rt)); rc = 1; }
        else if (i < o.ntok && !ended)
            fprintf(stderr, "%s generate: generated %lld of %lld tokens: stopped at the model's context of %d\n",
                    moe_prog_name, i, o.ntok, ctxlen);
    }
    moe_rt_destroy(rt);
    free(tok), free(probs), free(order);
    return rc;
}
