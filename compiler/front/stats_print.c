/* stats_print.c - `moec stats` output: a table for people, one JSON object for tools.
 *
 * The JSON has the keys of moe-language.md section 6 (model, params{total, expert,
 * non_expert, active_per_token}, flops_per_token, memory_per_rank{weights, grads,
 * optimizer}, layers[...]) plus `total` memory, the activations when the caller planned
 * them, the embedding and head groups and the configuration the numbers came from.
 * Built with jansson and written in one piece, so a failure never leaves half an object.
 */
#include "stats.h"
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static const char *dtype_name(md_dtype t) {
    return t == MD_DT_BF16 ? "bf16" : t == MD_DT_FP16 ? "fp16" : "fp32";
}

static const char *kind_name(const md_model *m, const md_group_stats *g) {
    if (g->layer == 0) return "embedding";
    if (g->layer < 0) return "norm+head";
    if (!g->experts) return "dense";
    return m->moe.residual ? "moe+residual" : "moe";
}

enum { NUM = 40 };      /* room for any int64 or double we format */

/* 1234567 -> "1,234,567" (buf: NUM bytes) */
static const char *commas(int64_t v, char *buf) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%" PRId64, v < 0 ? -v : v), o = 0;
    if (v < 0) buf[o++] = '-';
    for (int i = 0; i < n; i++) {
        buf[o++] = tmp[i];
        if ((n - i - 1) % 3 == 0 && i != n - 1) buf[o++] = ',';
    }
    buf[o] = 0;
    return buf;
}

static const char *count(int64_t v, char *buf) {
    double x = (double)v;
    if (v < 10000) snprintf(buf, NUM, "%" PRId64, v);
    else if (x < 1e6) snprintf(buf, NUM, "%.1fK", x / 1e3);
    else if (x < 1e9) snprintf(buf, NUM, "%.1fM", x / 1e6);
    else if (x < 1e12) snprintf(buf, NUM, "%.2fB", x / 1e9);
    else snprintf(buf, NUM, "%.2fT", x / 1e12);
    return buf;
}

static const char *bytes(int64_t v, char *buf) {
    double x = (double)v;
    if (x < 1024.0 * 1024) snprintf(buf, NUM, "%.1f KiB", x / 1024);
    else if (x < 1024.0 * 1024 * 1024) snprintf(buf, NUM, "%.1f MiB", x / (1024.0 * 1024));
    else if (x < 1024.0 * 1024 * 1024 * 1024) snprintf(buf, NUM, "%.2f GiB", x / (1024.0 * 1024 * 1024));
    else snprintf(buf, NUM, "%.2f TiB", x / (1024.0 * 1024 * 1024 * 1024));
    return buf;
}

/* "32 x 10, 64 x 2" */
static void runs(FILE *out, const int *v, int n) {
    for (int i = 0; i < n;) {
        int j = i;
        while (j < n && v[j] == v[i]) j++;
        fprintf(out, "%s%d", i ? ", " : "", v[i]);
        if (j - i > 1) fprintf(out, " x %d", j - i);
        i = j;
    }
}

/* "2, 4, ..., 24" for an arithmetic progression, else the list (cut after 16). */
static void layer_list(FILE *out, const int *v, int n) {
    bool ap = n >= 4;
    for (int i = 2; ap && i < n; i++) ap = v[i] - v[i - 1] == v[1] - v[0];
    if (ap) { fprintf(out, "%d, %d, ..., %d", v[0], v[1], v[n - 1]); return; }
    for (int i = 0; i < n && i < 16; i++) fprintf(out, "%s%d", i ? ", " : "", v[i]);
    if (n > 16) fputs(", ...", out);
}

static int64_t mem_total(md_mem m) { return m.weights + m.grads + m.optimizer; }

static void row(FILE *out, const md_model *m, const md_group_stats *g) {
    char a[NUM], b[NUM], c[NUM], d[NUM], e[NUM], f[NUM];
    if (g->layer > 0) snprintf(e, sizeof e, "%d", g->layer);
    else snprintf(e, sizeof e, "%s", g->layer == 0 ? "embed" : "head");
    if (g->experts) snprintf(f, sizeof f, "%d", g->experts);
    else snprintf(f, sizeof f, "-");
    fprintf(out, "%6s  %-13s %7s %5d %10s %10s %10s %12.3f %12s\n", e, kind_name(m, g), f,
            g->expert_parallel, count(g->params, a),
            g->expert_params ? count(g->expert_params, b) : "-", count(g->active_params, c),
            (double)g->flops / 1e9, bytes(mem_total(g->mem), d));
}

void md_stats_print(FILE *out, const md_model *m, const md_stats *s) {
    char a[NUM], b[NUM], c[NUM], d[NUM];
    fprintf(out, "model %s: %" PRId64 " layers, hidden %" PRId64 ", heads %" PRId64, m->name, m->layers, m->hidden,
            m->heads);
    if (m->kv_heads != m->heads) fprintf(out, " (%" PRId64 " key/value)", m->kv_heads);
    fprintf(out, ", ffn %" PRId64 ", vocab %" PRId64 ", context %" PRId64 "%s\n", m->ffn, m->vocab, m->context,
            m->bias ? "" : ", no biases");
    if (m->moe.n_moe) {
        fprintf(out, "  moe: %d MoE layers (", m->moe.n_moe);
        layer_list(out, m->moe.layer, m->moe.n_moe);
        fprintf(out, "), top-%d%s, experts ", m->moe.top_k, m->moe.residual ? ", residual" : "");
        runs(out, m->moe.experts, m->moe.n_moe);
        fputs("\n  parallel: expert ", out);
        runs(out, m->parallel.expert, m->moe.n_moe);
        fprintf(out, ", tensor %d; dtype %s\n", m->parallel.tensor, dtype_name(m->dtype));
    } else {
        fprintf(out, "  dense; parallel: tensor %d; dtype %s\n", m->parallel.tensor,
                dtype_name(m->dtype));
    }
    if (m->distill.teacher) {
        fprintf(out, "  distill: teacher %s (its forward in every step", m->distill.teacher->name);
        if (m->distill.stop_step >= 0) fprintf(out, " up to step %" PRId64, m->distill.stop_step);
        fprintf(out, "), temperature %g, weight %g\n", m->distill.temperature, m->distill.weight);
    }
    fprintf(out, "\n%6s  %-13s %7s %5s %10s %10s %10s %12s %12s\n", "layer", "kind", "experts",
            "EP", "params", "expert", "active", "GFLOP/token", "memory/rank");
    row(out, m, &s->embed);
    for (int i = 0; i < s->n_layers; i++) row(out, m, &s->layers[i]);
    row(out, m, &s->head);
    fprintf(out, "%6s  %-13s %7s %5s %10s %10s %10s %12.3f %12s\n\n", "total", "", "", "",
            count(s->params, a), s->expert_params ? count(s->expert_params, b) : "-",
            count(s->active_params, c), (double)s->flops / 1e9, bytes(mem_total(s->mem), d));
    fprintf(out, "parameters         %s total: %s expert, %s non-expert\n", commas(s->params, a),
            commas(s->expert_params, b), commas(s->non_expert_params, c));
    if (m->moe.n_moe)
        fprintf(out, "active per token   %s (top-%d experts of each MoE layer + all non-expert)\n",
                commas(s->active_params, a), m->moe.top_k);
    else
        fprintf(out, "active per token   %s (dense: every parameter)\n", commas(s->active_params, a));
    fprintf(out, "forward FLOPs      %s per token (2 per multiply-add; attention over %" PRId64
            " positions)\n", commas(s->flops, a), m->context);
    fprintf(out, "memory per rank    weights %s + grads %s + optimizer %s = %s\n",
            bytes(s->mem.weights, a), bytes(s->mem.grads, b), bytes(s->mem.optimizer, c),
            bytes(mem_total(s->mem), d));
    fprintf(out, "                   (%s weights and grads, AdamW m + v%s in fp32; experts / "
            "expert-parallel degree%s, %s / tensor %d%s)\n", dtype_name(m->dtype),
            m->dtype == MD_DT_FP32 ? "" : " + master weights", m->parallel.expert_slicing > 1 ? " / expert slicing" : "",
            m->parallel.tensor > 1 ? "attention and MLPs" : "the rest", m->parallel.tensor,
            m->parallel.tensor > 1 ? ", the rest whole" : "");
    if (s->act.bytes >= 0)
        fprintf(out, "activations        %s per rank for one training step of train.batch %" PRId64 " x context %"
                PRId64 " (fp32, as moec build plans it)\n", bytes(s->act.bytes, a), s->act.batch, s->act.context);
    else if (s->act.why_not)
        fprintf(out, "activations        not planned: %s\n", s->act.why_not);
}

/* ---- JSON ---- */

static json_t *mem_json(md_mem m) {
    return json_pack("{s:I, s:I, s:I, s:I}", "weights", (json_int_t)m.weights, "grads",
                     (json_int_t)m.grads, "optimizer", (json_int_t)m.optimizer, "total",
                     (json_int_t)mem_total(m));
}

static json_t *group_json(const md_model *m, const md_group_stats *g) {
    json_t *o = json_object();
    if (!o) return NULL;
    if (g->layer > 0) json_object_set_new(o, "layer", json_integer(g->layer));
    json_object_set_new(o, "kind", json_string(kind_name(m, g)));
    if (g->layer > 0) {
        json_object_set_new(o, "experts", json_integer(g->experts));
        json_object_set_new(o, "expert_parallel", json_integer(g->expert_parallel));
    }
    json_object_set_new(o, "params", json_integer((json_int_t)g->params));
    json_object_set_new(o, "expert_params", json_integer((json_int_t)g->expert_params));
    json_object_set_new(o, "non_expert_params", json_integer((json_int_t)g->non_expert_params));
    json_object_set_new(o, "active_params", json_integer((json_int_t)g->active_params));
    json_object_set_new(o, "flops_per_token", json_integer((json_int_t)g->flops));
    json_object_set_new(o, "memory_per_rank", mem_json(g->mem));
    return o;
}

static json_t *int_array(const int *v, int n) {
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

int md_stats_print_json(FILE *out, const md_model *m, const md_stats *s) {
    json_t *root = json_object(), *layers = json_array(), *cfg = json_object();
    if (!root || !layers || !cfg) {
        json_decref(root); json_decref(layers); json_decref(cfg);
        return -1;
    }
    json_object_set_new(root, "model", json_string(m->name));
    json_object_set_new(root, "params", json_pack("{s:I, s:I, s:I, s:I}",
        "total", (json_int_t)s->params, "expert", (json_int_t)s->expert_params,
        "non_expert", (json_int_t)s->non_expert_params,
        "active_per_token", (json_int_t)s->active_params));
    json_object_set_new(root, "flops_per_token", json_integer((json_int_t)s->flops));
    json_object_set_new(root, "memory_per_rank", mem_json(s->mem));
    if (s->act.bytes >= 0)
        json_object_set_new(root, "activations_per_rank", json_pack("{s:I, s:I, s:I}", "bytes",
            (json_int_t)s->act.bytes, "batch", (json_int_t)s->act.batch, "context", (json_int_t)s->act.context));
    else if (s->act.why_not)
        json_object_set_new(root, "activations_per_rank", json_pack("{s:n, s:s}", "bytes", "why_not", s->act.why_not));
    for (int i = 0; i < s->n_layers; i++) json_array_append_new(layers, group_json(m, &s->layers[i]));
    json_object_set_new(root, "layers", layers);
    json_object_set_new(root, "embedding", group_json(m, &s->embed));
    json_object_set_new(root, "head", group_json(m, &s->head));
    json_object_set_new(cfg, "layers", json_integer((json_int_t)m->layers));
    json_object_set_new(cfg, "hidden", json_integer((json_int_t)m->hidden));
    json_object_set_new(cfg, "heads", json_integer((json_int_t)m->heads));
    json_object_set_new(cfg, "kv_heads", json_integer((json_int_t)m->kv_heads));
    json_object_set_new(cfg, "bias", json_boolean(m->bias));
    json_object_set_new(cfg, "ffn", json_integer((json_int_t)m->ffn));
    json_object_set_new(cfg, "vocab", json_integer((json_int_t)m->vocab));
    json_object_set_new(cfg, "context", json_integer((json_int_t)m->context));
    json_object_set_new(cfg, "dtype", json_string(dtype_name(m->dtype)));
    json_object_set_new(cfg, "moe_layers", int_array(m->moe.layer, m->moe.n_moe));
    json_object_set_new(cfg, "experts", int_array(m->moe.experts, m->moe.n_moe));
    json_object_set_new(cfg, "expert_parallel", int_array(m->parallel.expert, m->moe.n_moe));
    json_object_set_new(cfg, "top_k", json_integer(m->moe.top_k));
    json_object_set_new(cfg, "residual", json_boolean(m->moe.residual));
    json_object_set_new(cfg, "tensor", json_integer(m->parallel.tensor));
    json_object_set_new(cfg, "tensors", json_integer(s->n_tensors));
    json_object_set_new(root, "config", cfg);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text) return -1;
    fputs(text, out);
    fputc('\n', out);
    free(text);
    return 0;
}
