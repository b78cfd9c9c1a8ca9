/* export.c - `export --hf DIR`: a Hugging Face checkpoint (config.json + model.safetensors)
 * of a GPT-2-shaped model, and the config.json that `train` leaves in every checkpoint
 * directory.
 *
 * Our tensor names and layouts are GPT-2's in the Hugging Face layout (Conv1D weights stored
 * [in, out], c_attn's columns q, k, v, wte tied to the output), so a GPT-2-shaped model's
 * weights go out unchanged under the same names; only the metadata differs ("format": "pt",
 * which the loader requires). Mixtral's layout needs bias-free layers, which moec does not
 * build yet, so a Mixtral-shaped export is refused.
 */
#include "cli.h"
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
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
    return NULL;
}

/* GPT-2's name of our activation */
static const char *hf_activation(const char *ours) {
    return !strcmp(ours, "gelu") ? "gelu_new" : !strcmp(ours, "gelu_erf") ? "gelu" : ours;
}

/* a string, or null when it is not UTF-8 (a path or a file may hold any bytes) */
static json_t *utf8_or_null(const char *s) {
    json_t *v = json_string(s);
    return v ? v : json_null();
}

/* the model as Hugging Face-style fields, ours under "moec"; NULL when out of memory */
static json_t *model_config(const moe_program *p) {
    json_t *o = json_object(), *m = json_object(), *experts = json_array(), *blocks = json_array();
    int gpt2 = not_gpt2(p) == NULL, bad = !o || !m || !experts || !blocks;
    for (int i = 0; !bad && i < p->n_moe; i++) {
        bad |= json_array_append_new(experts, json_integer(p->experts[i]));
        bad |= json_array_append_new(blocks, json_integer(p->moe_block[i]));
    }
    if (!bad) {
        json_t *arch = json_array();
        bad |= !arch || json_array_append_new(arch, json_string(gpt2 ? "GPT2LMHeadModel" : "MoecForCausalLM"));
        bad |= json_object_set_new(o, "architectures", arch);
        bad |= json_object_set_new(o, "model_type", json_string(gpt2 ? "gpt2" : "moec"));
        bad |= json_object_set_new(o, "vocab_size", json_integer(p->vocab));
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
        bad |= json_object_set_new(o, "bos_token_id", json_integer(p->vocab - 1));
        bad |= json_object_set_new(o, "eos_token_id", json_integer(p->vocab - 1));
        bad |= json_object_set_new(o, "torch_dtype", json_string("float32"));
        /* what Hugging Face has no key for: ours */
        bad |= json_object_set_new(m, "model", utf8_or_null(p->model));
        bad |= json_object_set_new(m, "source", utf8_or_null(p->source));
        bad |= json_object_set_new(m, "moe_text", utf8_or_null(moe_model_text));
        bad |= json_object_set_new(m, "norm", json_string(p->norm));
        bad |= json_object_set_new(m, "position", json_string(p->position));
        bad |= json_object_set_new(m, "activation", json_string(p->activation));
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
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    json_t *c = model_config(cli_prog);
    int rc = !c || json_dump_file(c, tmp, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0 || rename(tmp, path) != 0;
    if (rc) {
        snprintf(err, errlen, "%s: cannot write: %s", path, c ? strerror(errno) : "out of memory");
        unlink(tmp);
    }
    json_decref(c);
    return rc ? -1 : 0;
}

int cli_export(int argc, char **argv) {
    moe_flag f[] = {{"--hf", 1, "directory for config.json and model.safetensors (Hugging Face GPT-2)", NULL},
                    {"--checkpoint", 1, "weights (a file, or a directory: its newest checkpoint)", NULL},
                    {"--device", 1, "cpu|cuda|cuda-emu", NULL}};
    int nf = (int)(sizeof f / sizeof f[0]);
    int r = moe_args_parse(moe_prog_name, "export", argc, argv, f, nf);
    if (r) return r > 0 ? MOE_EXIT_OK : MOE_EXIT_USAGE;
    const char *dir = moe_arg(f, nf, "--hf");
    if (!dir) { cli_fail("--hf DIR is required (the only export format)"); return MOE_EXIT_USAGE; }
    if (!moe_arg(f, nf, "--checkpoint")) { cli_fail("--checkpoint PATH is required"); return MOE_EXIT_USAGE; }
    const char *why = not_gpt2(cli_prog);
    if (why) {
        cli_fail("export --hf writes GPT-2-shaped models (dense, layernorm, gelu or relu, learned positions, tied "
                 "embeddings); model %s is not one: %s. (A Mixtral-shaped export needs bias-free layers, which "
                 "moec does not build yet.)", cli_prog->model, why);
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
    if (!r && (moe_ckpt_save_hf(rt, path, err, sizeof err) || cli_write_config(dir, err, sizeof err))) {
        cli_fail("%s", err);
        r = MOE_EXIT_FAIL;
    }
    if (!r) fprintf(stderr, "wrote %s/config.json and model.safetensors (GPT-2, from %s)\n", dir, file);
    moe_rt_destroy(rt);
    return r;
}
