/* generate.c - `generate`: sampling with the KV-cache decode program.
 *
 * Every token (prompt and sampled) goes through the decode steps once, which append its
 * keys and values to the cache; the gate routes it without a capacity limit (one
 * token never overflows), so the logits equal evaluation mode whenever evaluation drops
 * nothing. --check-cache verifies exactly that against a full forward of the prompt.
 */
#include "cli.h"
#include "moe_rng.h"
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int sample(const float *logits, int V, double temp, int topk, uint64_t stream, uint64_t i, double *probs) {
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
    double u = moe_uniform(stream, i) * sum, acc = 0.0;
    for (int v = 0; v < V; v++) { acc += probs[v]; if (u < acc) return v; }
    return V - 1;
}

/* prompt -> tokens: bytes for a byte vocabulary (256), otherwise token ids separated by
 * spaces or commas. At most cap tokens are written; the count returned may exceed cap (a
 * prompt too long shows), or is -1 after a message. */
static int tokenize(const char *prompt, int V, int32_t *out, int cap) {
    int n = 0;
    if (V == 256) {
        for (const unsigned char *s = (const unsigned char *)prompt; *s && n < cap; s++) out[n++] = *s;
        return n;
    }
    for (const char *s = prompt;;) {
        while (*s == ' ' || *s == ',' || *s == '\t' || *s == '\n') s++;
        if (!*s) break;
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (end == s || errno || (*end && !strchr(" ,\t\n", *end))) {
            cli_fail("--prompt: '%.*s' is not a token id (this model's vocabulary of %d is not bytes: the prompt is "
                     "token ids from 0 to %d separated by spaces)", (int)strcspn(s, " ,\t\n"), s, V, V - 1);
            return -1;
        }
        if (v < 0 || v >= V) {
            cli_fail("--prompt: token id %lld is outside the vocabulary (0 to %d)", v, V - 1);
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

static double check_cache(moe_rt *rt, const int32_t *tok, int n) {
    const moe_program *p = cli_prog;
    int V = (int)p->vocab;
    double worst = 0.0;
    char err[256];
    if (moe_rt_shape(rt, 1, n, err, sizeof err)) { cli_fail("%s", err); return INFINITY; }
    float *full = malloc(sizeof(float) * (size_t)n * (size_t)V);
    if (!full) { cli_fail("out of memory"); return INFINITY; }
    memcpy(rt->tokens, tok, sizeof(int32_t) * (size_t)n);
    moe_rt_upload_batch(rt);
    rt->ctx.mode = MOE_MODE_EVAL;
    moe_rt_stats_clear(rt);
    moe_rt_logits(rt);
    moe_stats st;
    moe_rt_stats_read(rt, &st);
    moe_rt_read_logits(rt, 0, n, full);
    for (int t = 0; t < n; t++) {
        const float *lg = moe_rt_decode(rt, tok[t], t);
        for (int v = 0; v < V; v++) {
            double d = fabs((double)lg[v] - full[(int64_t)t * V + v]);
            if (d > worst) worst = d;
        }
    }
    free(full);
    if (moe_rt_error(rt)) { cli_fail("%s", moe_rt_error(rt)); return INFINITY; }
    printf("{\"positions\": %d, \"max_abs_diff\": %s, \"eval_dropped\": %.0f}\n", n, cli_json_num(worst).s,
           st.dropped);
    if (!(worst <= 1e-4) && st.dropped > 0)
        cli_fail("the KV cache's logits differ from the full forward's by %.3g: the full forward dropped %.0f token "
                 "choices at capacity (evaluation mode), which decoding never does; a prompt that drops none "
                 "compares exactly", worst, st.dropped);
    else if (!(worst <= 1e-4))
        cli_fail("the KV cache's logits differ from the full forward's by %.3g (more than 1e-4)", worst);
    return worst;
}

int cli_generate(int argc, char **argv) {
    moe_flag f[] = {{"--checkpoint", 1, "weights", NULL},
                    {"--prompt", 1, "text to continue (vocab 256); otherwise token ids: \"15496 11 995\"", NULL},
                    {"--tokens", 1, "tokens to generate (default 200)", NULL},
                    {"--temperature", 1, "sampling temperature, 0 = greedy (default 1.0)", NULL},
                    {"--top-k", 1, "sample among the k most likely tokens (default 0 = all)", NULL},
                    {"--seed", 1, "sampling seed", NULL},
                    {"--check-cache", 0, "compare KV-cache logits with a full forward of the prompt", NULL},
                    {"--device", 1, "cpu|cuda|cuda-emu", NULL}};
    int nf = (int)(sizeof f / sizeof f[0]);
    int r = moe_args_parse(moe_prog_name, "generate", argc, argv, f, nf);
    if (r) return r > 0 ? MOE_EXIT_OK : MOE_EXIT_USAGE;
    const moe_program *p = cli_prog;
    long long ntok, topk, seed;
    double temp;
    if (moe_arg_int(f, nf, "--tokens", 200, 0, INT_MAX, &ntok) || moe_arg_int(f, nf, "--top-k", 0, 0, p->vocab, &topk) ||
        moe_arg_int(f, nf, "--seed", p->seed, 0, LLONG_MAX, &seed) || moe_arg_double(f, nf, "--temperature", 1.0, &temp))
        return MOE_EXIT_USAGE;
    int ctxlen = (int)p->context, V = (int)p->vocab;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)(ctxlen + 1));     /* one more: a prompt too long shows */
    double *probs = malloc(sizeof(double) * (size_t)V);
    moe_rt *rt = tok && probs ? cli_rt(MOE_RT_INFER, 1, moe_arg(f, nf, "--device")) : NULL;
    int rc = 0;
    if (temp < 0) { cli_fail("--temperature %g: must be 0 (greedy) or positive", temp); rc = MOE_EXIT_USAGE; }
    if (!rc && !rt) rc = MOE_EXIT_FAIL;
    if (!rc) rc = cli_load(rt, moe_arg(f, nf, "--checkpoint"), NULL, 0, NULL);
    const char *prompt = moe_arg(f, nf, "--prompt") ? moe_arg(f, nf, "--prompt") : (V == 256 ? "\n" : "0");
    int n = rc ? 0 : tokenize(prompt, V, tok, ctxlen + 1);
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
        rc = check_cache(rt, tok, n) <= 1e-4 ? 0 : 1;
    } else if (!rc) {
        uint64_t stream = moe_rng_stream((uint64_t)seed, 0x6E4E, 0);
        const float *lg = NULL;
        for (int t = 0; t < n; t++) {
            lg = moe_rt_decode(rt, tok[t], t);
            put_token(V, tok[t]);
        }
        long long i = 0;
        for (; i < ntok && n < ctxlen; i++) {
            int next = sample(lg, V, temp, (int)topk, stream, (uint64_t)i, probs);
            tok[n] = next;
            put_token(V, next);
            lg = moe_rt_decode(rt, next, n++);
        }
        putchar('\n');
        if (moe_rt_error(rt)) { cli_fail("%s", moe_rt_error(rt)); rc = 1; }
        else if (i < ntok)
            fprintf(stderr, "%s generate: generated %lld of %lld tokens: stopped at the model's context of %d\n",
                    moe_prog_name, i, ntok, ctxlen);
    }
    moe_rt_destroy(rt);
    free(tok);
    free(probs);
    return rc;
}
