/* export.c - `export --hf DIR`: a Hugging Face checkpoint (config.json + model.safetensors)
 * of a GPT-2-shaped or a Mixtral-shaped model, and the config.json that `train` leaves in
 * every checkpoint directory.
 *
 * GPT-2: our tensor names and layouts are GPT-2's in the Hugging Face layout (Conv1D weights
 * stored [in, out], c_attn's columns q, k, v, wte tied to the output), so the weights go out
 * unchanged under the same names; only the metadata differs ("format": "pt", which the
 * loader requires).
 * Mixtral: Hugging Face stores torch.nn.Linear weights [out, in], so each weight goes out
 * transposed under Mixtral's name: q_proj, k_proj and v_proj are column slices of c_attn,
 * w1 and w3 the gate and up halves of an expert's c_fc, and so on (the table in
 * hf_mixtral). The weights are downloaded once; the file is written a piece at a time by
 * one helper that reads a transposed 2-D slice (fetch_slice). Mixtral never drops tokens,
 * so its outputs are ours where our model drops none (drop_tokens = false guarantees it; a
 * model that may drop gets a note).
 * Every other shape is refused with the first reason it is neither.
 */
#include "cli.h"
#include "errbuf.h"
#include "log.h"
#include "st.h"
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* NULL when p is GPT-2-shaped, else why not */
static const char *not_gpt2(const moe_program *p) {
    if (p->n_moe) return "it has MoE layers (GPT-2 is dense)";
    if (strcmp(p->norm, "layernorm")) return "its norm is not layernorm";
    if (strcmp(p->position, "learned")) return "its positions are not learned (wpe)";
    if (!p->tied) return "its embeddings are not tied (GPT-2's lm_head is wte)";
    if (!strcmp(p->activation, "swiglu")) return "its activation is swiglu";
    if (!p->bias) return "it has no biases (bias = false)";
    if (p->kv_heads != p->heads) return "it has fewer kv_heads than heads (GPT-2 has no grouped-query attention)";
    return NULL;
}

/* NULL when p is Mixtral-shaped, else why not */
static const char *not_mixtral(const moe_program *p) {
    if (!p->n_moe) return "it is dense (every Mixtral block is MoE)";
    if (p->n_moe != p->layers) return "not every block is an MoE block";
    for (int i = 1; i < p->n_moe; i++)
        if (p->experts[i] != p->experts[0]) return "its MoE layers have different numbers of experts";
    if (strcmp(p->norm, "rmsnorm")) return "its norm is not rmsnorm";
    if (strcmp(p->position, "rope")) return "its positions are not rope";
    if (strcmp(p->activation, "swiglu")) return "its activation is not swiglu";
    if (p->bias) return "it has biases (Mixtral needs bias = false)";
    if (p->tied) return "its embeddings are tied (Mixtral has its own lm_head)";
    for (int i = 0; i < p->n_params; i++)
        if (strstr(p->params[i].name, ".moe.mlp.") || strstr(p->params[i].name, ".moe.coefficient."))
            return "it has a PR-MoE residual MLP (residual = true)";
    if (p->top_k < 2) return "its top_k is 1 (Mixtral gives a lone expert weight 1, moec its probability)";
    return NULL;
}

/* the parameter called name, or NULL */
static const moe_param_info *param_named(const moe_program *p, const char *name) {
    for (int i = 0; i < p->n_params; i++)
        if (!strcmp(p->params[i].name, name)) return &p->params[i];
    return NULL;
}

/* Mixtral's intermediate_size: the expert width, from h.B.moe.experts.c_proj.weight [E, f, d] */
static int64_t expert_width(const moe_program *p) {
    char name[64];
    snprintf(name, sizeof name, "h.%d.moe.experts.c_proj.weight", p->n_moe ? p->moe_block[0] : 0);
    const moe_param_info *q = param_named(p, name);
    return q && q->ndim == 3 ? q->shape[1] : 0;
}

/* GPT-2's name of our activation */
static const char *hf_activation(const char *ours) {
    return !strcmp(ours, "gelu") ? "gelu_new" : !strcmp(ours, "gelu_erf") ? "gelu" : ours;
}


/* the model as Hugging Face-style fields (GPT-2's keys, or Mixtral's for a Mixtral-shaped
 * model), ours under "moec"; NULL when out of memory */
static json_t *model_config(const moe_program *p) {
    json_t *o = json_object(), *m = json_object(), *experts = json_array(), *blocks = json_array();
    int gpt2 = not_gpt2(p) == NULL, mixtral = not_mixtral(p) == NULL, bad = !o || !m || !experts || !blocks;
    for (int i = 0; !bad && i < p->n_moe; i++) {
        bad |= json_array_append_new(experts, json_integer(p->experts[i]));
        bad |= json_array_append_new(blocks, json_integer(p->moe_block[i]));
    }
    if (!bad) {
        json_t *arch = json_array();
        const char *name = gpt2 ? "GPT2LMHeadModel" : mixtral ? "MixtralForCausalLM" : "MoecForCausalLM";
        bad |= !arch || json_array_append_new(arch, json_string(name));
        bad |= json_object_set_new(o, "architectures", arch);
        bad |= json_object_set_new(o, "model_type", json_string(gpt2 ? "gpt2" : mixtral ? "mixtral" : "moec"));
        bad |= json_object_set_new(o, "vocab_size", json_integer(p->vocab));
    }
    if (!bad && mixtral) {
        bad |= json_object_set_new(o, "hidden_size", json_integer(p->hidden));
        bad |= json_object_set_new(o, "intermediate_size", json_integer(expert_width(p)));
        bad |= json_object_set_new(o, "num_hidden_layers", json_integer(p->layers));
        bad |= json_object_set_new(o, "num_attention_heads", json_integer(p->heads));
        bad |= json_object_set_new(o, "num_key_value_heads", json_integer(p->kv_heads));
        bad |= json_object_set_new(o, "hidden_act", json_string("silu"));
        bad |= json_object_set_new(o, "max_position_embeddings", json_integer(p->context));
        bad |= json_object_set_new(o, "rms_norm_eps", json_real(1e-5));
        bad |= json_object_set_new(o, "rope_theta", json_real(10000.0));
        bad |= json_object_set_new(o, "tie_word_embeddings", json_false());
        bad |= json_object_set_new(o, "num_local_experts", json_integer(p->experts[0]));
        bad |= json_object_set_new(o, "num_experts_per_tok", json_integer(p->top_k));
        bad |= json_object_set_new(o, "router_aux_loss_coef", json_real(p->aux_loss));
        bad |= json_object_set_new(o, "output_router_logits", json_false());
        bad |= json_object_set_new(o, "sliding_window", json_null());
        bad |= json_object_set_new(o, "attention_dropout", json_real(0.0));
    } else if (!bad) {
        bad |= json_object_set_new(o, "n_positions", json_integer(p->context));
        bad |= json_object_set_new(o, "n_ctx", json_integer(p->context));
        bad |= json_object_set_new(o, "n_embd", json_integer(p->hidden));
        bad |= json_object_set_new(o, "n_layer", json_integer(p->layers));
        bad |= json_object_set_new(o, "n_head", json_integer(p->heads));
        bad |= json_object_set_new(o, "n_inner", json_integer(p->ffn));
        bad |= json_object_set_new(o, "activation_function", json_string(hf_activation(p->activation)));
        bad |= json_object_set_new(o, "layer_norm_epsilon", json_real(1e-5));
        bad |= json_object_set_new(o, "tie_word_embeddings", json_boolean(p->tied));
        bad |= json_object_set_new(o, "resid_pdrop", json_real(0.0));
        bad |= json_object_set_new(o, "embd_pdrop", json_real(0.0));
        bad |= json_object_set_new(o, "attn_pdrop", json_real(0.0));
    }
    if (!bad) {
        bad |= json_object_set_new(o, "bos_token_id", json_integer(p->vocab - 1));
        bad |= json_object_set_new(o, "eos_token_id", json_integer(p->vocab - 1));
        bad |= json_object_set_new(o, "torch_dtype", json_string("float32"));
        /* what Hugging Face has no key for: ours */
        bad |= json_object_set_new(m, "model", moe_json_str(p->model));
        bad |= json_object_set_new(m, "source", moe_json_str(p->source));
        bad |= json_object_set_new(m, "moe_text", moe_json_str(moe_model_text));
        bad |= json_object_set_new(m, "norm", json_string(p->norm));
        bad |= json_object_set_new(m, "position", json_string(p->position));
        bad |= json_object_set_new(m, "activation", json_string(p->activation));
        bad |= json_object_set_new(m, "kv_heads", json_integer(p->kv_heads));
        bad |= json_object_set_new(m, "bias", json_boolean(p->bias));
        bad |= json_object_set_new(m, "moe_blocks", blocks);
        blocks = NULL;
        bad |= json_object_set_new(m, "num_local_experts", experts);
        experts = NULL;
        bad |= json_object_set_new(m, "num_experts_per_tok", json_integer(p->n_moe ? p->top_k : 0));
        bad |= json_object_set_new(m, "capacity_factor", json_real(p->capacity_factor));
        bad |= json_object_set_new(m, "eval_capacity_factor", json_real(p->eval_capacity_factor));
        bad |= json_object_set_new(o, "moec", m);
        m = NULL;
    }
    json_decref(m);
    json_decref(experts);
    json_decref(blocks);
    if (bad) { json_decref(o); return NULL; }
    return o;
}

int cli_write_config(const char *dir, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *c = model_config(cli_prog);
    moe_afile a;
    FILE *f = c ? moe_afile_open(&a, path) : NULL;
    int rc = !f || moe_afile_close(&a, json_dumpf(c, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER) == 0) != 0;
    if (rc) snprintf(err, errlen, "%s: cannot write: %s", path, c ? strerror(errno) : "out of memory");
    json_decref(c);
    return rc ? -1 : 0;
}

/* One tensor of the Mixtral file: elements of the downloaded parameters from `off` on, copied
 * as they are, or (rows > 0) the transpose of a slice with `rows` rows, `ld` apart. */
typedef struct slice { int64_t off, rows, ld; } slice;
typedef struct hf_list {
    const moe_program *p;
    const float *host;          /* the parameter buffer */
    moe_st_out *t;
    slice *s;
    char (*names)[128];
    int n;
} hf_list;

/* moe_st_fetch: bytes [off, off + n) of tensor t, element (r, c) of a transposed slice being
 * its source's (c, r) */
static int fetch_slice(void *ctx, const moe_st_out *t, size_t off, void *dst, size_t n) {
    const hf_list *l = ctx;
    const slice *s = &l->s[t - l->t];
    const float *src = l->host + s->off;
    float *d = dst;
    for (int64_t k = (int64_t)(off / 4); k < (int64_t)((off + n) / 4); k++)
        *d++ = s->rows ? src[(k % s->rows) * s->ld + k / s->rows] : src[k];
    return 0;
}

/* adds `name`: parameter `ours` as it is (cols = 0), or the transpose [cols, rows] of its
 * columns [c0, c0 + cols) (of expert e's matrix when the experts are stacked) */
static void put(hf_list *l, const char *name, const char *ours, int64_t e, int64_t c0, int64_t cols) {
    const moe_param_info *q = param_named(l->p, ours);
    if (!q) return;     /* the caller finds fewer tensors than it expects */
    moe_st_out *t = &l->t[l->n];
    slice *s = &l->s[l->n];
    snprintf(l->names[l->n], sizeof l->names[0], "%s", name);
    t->name = l->names[l->n++];
    *s = (slice){q->offset / (int64_t)sizeof(float), 0, 0};
    t->ndim = q->ndim;
    for (int d = 0; d < q->ndim; d++) t->shape[d] = q->shape[d];
    if (cols) {
        s->rows = q->shape[q->ndim - 2];
        s->ld = q->shape[q->ndim - 1];
        s->off += (q->ndim == 3 ? e * s->rows * s->ld : 0) + c0;
        t->ndim = 2;
        t->shape[0] = cols;
        t->shape[1] = s->rows;
    }
    t->data = l->host + s->off;     /* the writer wants a handle; fetch_slice reads through s */
}

#define NAME(buf, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), buf)

/* Writes the Mixtral model.safetensors of the weights in rt to path; 0 or -1 with err. */
static int hf_mixtral(const moe_rt *rt, const char *path, char *err, size_t errlen) {
    const moe_program *p = rt->prog;
    int64_t d = p->hidden, kv = p->kv_heads * (p->hidden / p->heads), f = expert_width(p), E = p->experts[0];
    int64_t n = 3 + p->layers * (7 + 3 * E), bytes = p->buf_bytes[MOE_BUF_PARAM];
    hf_list l = {p, malloc((size_t)bytes), calloc((size_t)n, sizeof(moe_st_out)), calloc((size_t)n, sizeof(slice)),
                 calloc((size_t)n, sizeof *l.names), 0};
    int rc = -1;
    if (!l.host || !l.t || !l.s || !l.names) {
        snprintf(err, errlen, "out of memory");
    } else if (moe_rt_error(rt) ||
               rt->dev->ops->download(rt->dev, (void *)l.host, rt->buf[MOE_BUF_PARAM], (size_t)bytes)) {
        snprintf(err, errlen, "reading the weights: %s", moe_rt_error(rt) ? moe_rt_error(rt) : rt->dev->err);
    } else {
        char a[128], b[128], x[64], y[64];     /* Mixtral's name, ours; their layer prefixes */
        put(&l, "model.embed_tokens.weight", "wte.weight", 0, 0, 0);
        for (int i = 0; i < p->layers; i++) {
            NAME(x, "model.layers.%d.", i);
            NAME(y, "h.%d.", i);
            put(&l, NAME(a, "%sinput_layernorm.weight", x), NAME(b, "%sln_1.weight", y), 0, 0, 0);
            put(&l, NAME(a, "%sself_attn.q_proj.weight", x), NAME(b, "%sattn.c_attn.weight", y), 0, 0, d);
            put(&l, NAME(a, "%sself_attn.k_proj.weight", x), b, 0, d, kv);
            put(&l, NAME(a, "%sself_attn.v_proj.weight", x), b, 0, d + kv, kv);
            put(&l, NAME(a, "%sself_attn.o_proj.weight", x), NAME(b, "%sattn.c_proj.weight", y), 0, 0, d);
            put(&l, NAME(a, "%spost_attention_layernorm.weight", x), NAME(b, "%sln_2.weight", y), 0, 0, 0);
            put(&l, NAME(a, "%sblock_sparse_moe.gate.weight", x), NAME(b, "%smoe.gate.weight", y), 0, 0, E);
            for (int64_t e = 0; e < E; e++) {
                long long ee = (long long)e;
                NAME(b, "%smoe.experts.c_fc.weight", y);
                put(&l, NAME(a, "%sblock_sparse_moe.experts.%lld.w1.weight", x, ee), b, e, 0, f);   /* gate half */
                put(&l, NAME(a, "%sblock_sparse_moe.experts.%lld.w3.weight", x, ee), b, e, f, f);   /* up half */
                NAME(b, "%smoe.experts.c_proj.weight", y);
                put(&l, NAME(a, "%sblock_sparse_moe.experts.%lld.w2.weight", x, ee), b, e, 0, d);
            }
        }
        put(&l, "model.norm.weight", "ln_f.weight", 0, 0, 0);
        put(&l, "lm_head.weight", "lm_head.weight", 0, 0, p->vocab);
        const char *meta[] = {"format", "pt"};      /* what Hugging Face's loader requires */
        if (l.n != n) snprintf(err, errlen, "model %s lacks a tensor Mixtral needs", p->model);
        else rc = moe_st_write_fetch(path, l.t, l.n, meta, 1, fetch_slice, &l, err, errlen);
    }
    free((void *)l.host);
    free(l.t);
    free(l.s);
    free(l.names);
    return rc;
}

int cli_export(int argc, char **argv) {
    moe_flag f[] = {{"--hf", 1, "directory for config.json and model.safetensors (Hugging Face GPT-2 or Mixtral)",
                     NULL},
                    {"--checkpoint", 1, "weights (a file, or a directory: its newest checkpoint)", NULL},
                    {"--device", 1, "cpu|cuda|cuda-emu", NULL}};
    int nf = (int)(sizeof f / sizeof f[0]);
    int r = moe_args_parse(moe_prog_name, "export", argc, argv, f, nf);
    if (r) return r > 0 ? MOE_EXIT_OK : MOE_EXIT_USAGE;
    const char *dir = moe_arg(f, nf, "--hf");
    if (!dir) { cli_fail("--hf DIR is required (the only export format)"); return MOE_EXIT_USAGE; }
    if (!moe_arg(f, nf, "--checkpoint")) { cli_fail("--checkpoint PATH is required"); return MOE_EXIT_USAGE; }
    const char *why_gpt2 = not_gpt2(cli_prog), *why_mixtral = not_mixtral(cli_prog);
    if (why_gpt2 && why_mixtral) {
        cli_fail("export --hf writes GPT-2-shaped models (dense, layernorm, gelu or relu, learned positions, tied "
                 "embeddings, biases) and Mixtral-shaped ones (every block MoE with the same experts, rmsnorm, rope, "
                 "swiglu, bias = false, untied embeddings, no residual, top_k >= 2); model %s is neither: not GPT-2 "
                 "because %s; not Mixtral because %s.", cli_prog->model, why_gpt2, why_mixtral);
        return MOE_EXIT_FAIL;
    }
    struct stat sb;
    if (mkdir(dir, 0777) != 0 && (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))) {
        cli_fail("cannot create %s: %s", dir, strerror(errno == EEXIST ? ENOTDIR : errno));
        return MOE_EXIT_FAIL;
    }
    moe_rt *rt = cli_rt(MOE_RT_INFER, 0, moe_arg(f, nf, "--device"));
    if (!rt) return MOE_EXIT_FAIL;
    char file[4096], path[4200], err[1024];
    int64_t step;
    r = cli_load(rt, moe_arg(f, nf, "--checkpoint"), file, sizeof file, &step);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!r && ((why_gpt2 ? hf_mixtral(rt, path, err, sizeof err) : moe_ckpt_save_hf(rt, path, err, sizeof err)) ||
               cli_write_config(dir, err, sizeof err))) {
        cli_fail("%s", err);
        r = MOE_EXIT_FAIL;
    }
    if (!r) fprintf(stderr, "wrote %s/config.json and model.safetensors (%s, from %s)\n", dir,
                    why_gpt2 ? "Mixtral" : "GPT-2", file);
    if (!r && why_gpt2 && cli_prog->drop_tokens)
        fprintf(stderr, "note: Mixtral never drops tokens, so transformers computes what this model computes where it "
                        "drops none (drop_tokens = false would guarantee it)\n");
    moe_rt_destroy(rt);
    return r;
}
