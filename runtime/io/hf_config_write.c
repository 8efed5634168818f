/* hf_config_write.c: the other half of config.json (lg_hf.h): defaults, the structural checks the reader and
 * the writer share, writing a config transformers loads (for the tiny test model and `loragen merge`), and
 * checking a weight set against a config before anything is uploaded, so a mismatched checkpoint fails with
 * the tensor's name instead of a wrong shape deep inside the decoder. */
#include "lg_hf.h"
#include "lg_base.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lg_model_config_defaults(enum lg_model_family family, struct lg_model_config *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    out->family = family;
    out->rms_norm_eps = 1e-6;
    out->rope_theta = 10000.0;
    out->qkv_bias = family == LG_FAMILY_QWEN2;
    out->bos_token_id = -1;
}

static enum lg_status check_sizes(const struct lg_model_config *c)
{
    /* the reader's bounds (hf_config.c) for every size, also one it derives (head_dim = hidden / heads): what
     * is read always validates, writes and reads back */
    const struct {
        const char *name;
        int v, max;
    } sz[] = {{"hidden_size", c->hidden_size, 1 << 30},
              {"intermediate_size", c->intermediate_size, 1 << 30},
              {"num_hidden_layers", c->num_hidden_layers, 1 << 16},
              {"num_attention_heads", c->num_attention_heads, 1 << 16},
              {"num_key_value_heads", c->num_key_value_heads, 1 << 16},
              {"head_dim", c->head_dim, 1 << 16},
              {"vocab_size", c->vocab_size, 1 << 30},
              {"max_position_embeddings", c->max_position_embeddings, 1 << 30}};
    for (size_t i = 0; i < sizeof sz / sizeof *sz; i++)
        if (sz[i].v < 1 || sz[i].v > sz[i].max)
            return lg_fail(LG_ERR_INVALID, "%s = %d is out of range [1, %d]", sz[i].name, sz[i].v, sz[i].max);
    if (c->num_attention_heads % c->num_key_value_heads != 0)
        return lg_fail(LG_ERR_INVALID, "num_attention_heads %d is not a multiple of num_key_value_heads %d",
                       c->num_attention_heads, c->num_key_value_heads);
    if (c->head_dim % 2 != 0)
        return lg_fail(LG_ERR_INVALID, "head_dim %d must be even (RoPE rotates pairs)", c->head_dim);
    if ((int64_t)c->num_attention_heads * c->head_dim > (1 << 30))
        return lg_fail(LG_ERR_INVALID, "num_attention_heads * head_dim is over 2^30");
    return LG_OK;
}

enum lg_status lg_model_config_validate(const struct lg_model_config *c)
{
    if (!c)
        return lg_fail(LG_ERR_INVALID, "lg_model_config_validate: null argument");
    if (c->family != LG_FAMILY_LLAMA && c->family != LG_FAMILY_QWEN2)
        return lg_fail(LG_ERR_INVALID, "family %d is neither LLAMA nor QWEN2", (int)c->family);
    enum lg_status s = check_sizes(c);
    if (s != LG_OK)
        return s;
    if (!(c->rms_norm_eps > 0) || !isfinite(c->rms_norm_eps))
        return lg_fail(LG_ERR_INVALID, "rms_norm_eps %g must be positive", c->rms_norm_eps);
    if (!(c->rope_theta > 0) || !isfinite(c->rope_theta))
        return lg_fail(LG_ERR_INVALID, "rope_theta %g must be positive", c->rope_theta);
    if (c->rope_llama3) {
        if (!(c->rope_factor > 0) || !(c->rope_low_freq_factor > 0))
            return lg_fail(LG_ERR_INVALID, "llama3 rope: factor %g and low_freq_factor %g must be positive",
                           c->rope_factor, c->rope_low_freq_factor);
        if (!(c->rope_high_freq_factor > c->rope_low_freq_factor))
            return lg_fail(LG_ERR_INVALID, "llama3 rope: high_freq_factor %g must be above low_freq_factor %g",
                           c->rope_high_freq_factor, c->rope_low_freq_factor);
        if (c->rope_original_max_position < 1)
            return lg_fail(LG_ERR_INVALID, "llama3 rope: original_max_position_embeddings %d must be positive",
                           c->rope_original_max_position);
    }
    if (c->family == LG_FAMILY_QWEN2 && (!c->qkv_bias || c->o_bias))
        return lg_fail(LG_ERR_INVALID, "Qwen2 always has q/k/v biases and no o_proj bias (qkv_bias %d, o_bias %d)",
                       c->qkv_bias, c->o_bias);
    if (c->family == LG_FAMILY_LLAMA && c->qkv_bias != c->o_bias)
        return lg_fail(LG_ERR_INVALID, "Llama's attention_bias puts a bias on q/k/v and o_proj alike (qkv_bias %d, "
                       "o_bias %d)", c->qkv_bias, c->o_bias);
    if (c->n_eos < 0 || c->n_eos > LG_MODEL_MAX_EOS)
        return lg_fail(LG_ERR_INVALID, "n_eos %d is out of range [0, %d]", c->n_eos, LG_MODEL_MAX_EOS);
    return LG_OK;
}

/* ---- writing ---- */

/* The fewest significant digits (15..17) that print every value back exactly, so 1e-05 is written 1e-5 (jansson
 * drops the exponent's leading zero) and not 1.0000000000000001e-05. */
static int real_precision(const double *v, size_t n)
{
    char buf[64];
    for (int p = 15; p < 17; p++) {
        size_t i = 0;
        for (; i < n; i++) {
            snprintf(buf, sizeof buf, "%.*g", p, v[i]);
            if (strtod(buf, NULL) != v[i])
                break;
        }
        if (i == n)
            return p;
    }
    return 17;
}

static json_t *rope_scaling(const struct lg_model_config *c)
{
    if (!c->rope_llama3)
        return json_null();
    json_t *r = json_object();
    json_object_set_new(r, "factor", json_real(c->rope_factor));
    json_object_set_new(r, "high_freq_factor", json_real(c->rope_high_freq_factor));
    json_object_set_new(r, "low_freq_factor", json_real(c->rope_low_freq_factor));
    json_object_set_new(r, "original_max_position_embeddings", json_integer(c->rope_original_max_position));
    json_object_set_new(r, "rope_type", json_string("llama3"));
    return r;
}

static json_t *eos_ids(const struct lg_model_config *c)
{
    if (c->n_eos == 0)
        return json_null();
    if (c->n_eos == 1)
        return json_integer(c->eos_token_id[0]);
    json_t *a = json_array();
    for (int i = 0; i < c->n_eos; i++)
        json_array_append_new(a, json_integer(c->eos_token_id[i]));
    return a;
}

/* The 4.x layout: 4.x reads it as is, and 5.x converts rope_theta + rope_scaling into rope_parameters. */
static json_t *config_json(const struct lg_model_config *c)
{
    int llama = c->family == LG_FAMILY_LLAMA;
    json_t *o = json_object();
    json_object_set_new(o, "architectures", json_pack("[s]", llama ? "LlamaForCausalLM" : "Qwen2ForCausalLM"));
    json_object_set_new(o, "model_type", json_string(llama ? "llama" : "qwen2"));
    json_object_set_new(o, "attention_dropout", json_real(0.0));
    json_object_set_new(o, "bos_token_id", c->bos_token_id >= 0 ? json_integer(c->bos_token_id) : json_null());
    json_object_set_new(o, "eos_token_id", eos_ids(c));
    json_object_set_new(o, "hidden_act", json_string("silu"));
    json_object_set_new(o, "hidden_size", json_integer(c->hidden_size));
    json_object_set_new(o, "initializer_range", json_real(0.02));
    json_object_set_new(o, "intermediate_size", json_integer(c->intermediate_size));
    json_object_set_new(o, "max_position_embeddings", json_integer(c->max_position_embeddings));
    json_object_set_new(o, "num_attention_heads", json_integer(c->num_attention_heads));
    json_object_set_new(o, "num_hidden_layers", json_integer(c->num_hidden_layers));
    json_object_set_new(o, "num_key_value_heads", json_integer(c->num_key_value_heads));
    json_object_set_new(o, "rms_norm_eps", json_real(c->rms_norm_eps));
    json_object_set_new(o, "rope_scaling", rope_scaling(c));
    json_object_set_new(o, "rope_theta", json_real(c->rope_theta));
    json_object_set_new(o, "tie_word_embeddings", json_boolean(c->tie_word_embeddings));
    if (c->has_dtype)
        json_object_set_new(o, "torch_dtype", json_string(c->dtype == LG_BF16   ? "bfloat16"
                                                          : c->dtype == LG_FP16 ? "float16"
                                                                                : "float32"));
    json_object_set_new(o, "use_cache", json_true());
    json_object_set_new(o, "vocab_size", json_integer(c->vocab_size));
    if (llama) {
        json_object_set_new(o, "attention_bias", json_boolean(c->qkv_bias));
        json_object_set_new(o, "head_dim", json_integer(c->head_dim));
        json_object_set_new(o, "mlp_bias", json_false());
        json_object_set_new(o, "pretraining_tp", json_integer(1));
    } else {
        if (c->head_dim * c->num_attention_heads != c->hidden_size)
            json_object_set_new(o, "head_dim", json_integer(c->head_dim));
        json_object_set_new(o, "max_window_layers", json_integer(c->num_hidden_layers));
        json_object_set_new(o, "sliding_window", json_null());
        json_object_set_new(o, "use_sliding_window", json_false());
    }
    return o;
}

enum lg_status lg_model_config_write(const char *path, const struct lg_model_config *c)
{
    if (!path || !c)
        return lg_fail(LG_ERR_INVALID, "lg_model_config_write: null argument");
    enum lg_status s = lg_model_config_validate(c);
    if (s != LG_OK)
        return lg_fail_wrap(s, "%s: cannot write this config: ", path);
    json_t *o = config_json(c);
    const double reals[] = {c->rms_norm_eps, c->rope_theta, c->rope_factor, c->rope_low_freq_factor,
                            c->rope_high_freq_factor, 0.02};
    int prec = real_precision(reals, sizeof reals / sizeof *reals);
    char *text = o ? json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(prec)) : NULL;
    json_decref(o);
    size_t n = text ? strlen(text) : 0;
    char *buf = text ? realloc(text, n + 2) : NULL;
    if (!buf) {
        free(text);
        return lg_fail(LG_ERR_OOM, "%s: out of memory", path);
    }
    memcpy(buf + n, "\n", 2); /* transformers ends the file with a newline */
    s = lg_file_write_atomic(path, buf, n + 1);
    free(buf);
    return s;
}

/* ---- weights against the config ---- */

static enum lg_status want(const lg_st_t *st, const char *name, int ndim, int64_t d0, int64_t d1)
{
    int64_t shape[2] = {d0, d1};
    struct lg_st_tensor t;
    enum lg_status s = lg_st_check(st, name, ndim, shape, &t);
    if (s != LG_OK)
        return s;
    if (t.dtype != LG_ST_F32 && t.dtype != LG_ST_F16 && t.dtype != LG_ST_BF16)
        return lg_fail(LG_ERR_IO, "%s: tensor %s: dtype %s, expected a float type (F32, F16 or BF16)", t.file, name,
                       lg_st_dtype_name(t.dtype));
    return LG_OK;
}

static enum lg_status check_layer(const struct lg_model_config *c, const lg_st_t *st, int l)
{
    int64_t H = c->hidden_size, F = c->intermediate_size, Q = (int64_t)c->num_attention_heads * c->head_dim;
    int64_t KV = (int64_t)c->num_key_value_heads * c->head_dim;
    const struct {
        const char *part;
        int ndim;
        int64_t d0, d1;
        int on;
    } w[] = {
        {"input_layernorm.weight", 1, H, 0, 1},       {"self_attn.q_proj.weight", 2, Q, H, 1},
        {"self_attn.k_proj.weight", 2, KV, H, 1},     {"self_attn.v_proj.weight", 2, KV, H, 1},
        {"self_attn.o_proj.weight", 2, H, Q, 1},      {"self_attn.q_proj.bias", 1, Q, 0, c->qkv_bias},
        {"self_attn.k_proj.bias", 1, KV, 0, c->qkv_bias}, {"self_attn.v_proj.bias", 1, KV, 0, c->qkv_bias},
        {"self_attn.o_proj.bias", 1, H, 0, c->o_bias}, {"post_attention_layernorm.weight", 1, H, 0, 1},
        {"mlp.gate_proj.weight", 2, F, H, 1},         {"mlp.up_proj.weight", 2, F, H, 1},
        {"mlp.down_proj.weight", 2, H, F, 1},
    };
    char name[160];
    enum lg_status s = LG_OK;
    for (size_t i = 0; i < sizeof w / sizeof *w && s == LG_OK; i++) {
        if (!w[i].on)
            continue;
        snprintf(name, sizeof name, "model.layers.%d.%s", l, w[i].part);
        s = want(st, name, w[i].ndim, w[i].d0, w[i].d1);
    }
    return s;
}

enum lg_status lg_model_config_check_weights(const struct lg_model_config *c, const lg_st_t *st)
{
    if (!c || !st)
        return lg_fail(LG_ERR_INVALID, "lg_model_config_check_weights: null argument");
    enum lg_status s = lg_model_config_validate(c);
    if (s != LG_OK)
        return s;
    int64_t V = c->vocab_size, H = c->hidden_size;
    s = want(st, "model.embed_tokens.weight", 2, V, H);
    for (int l = 0; s == LG_OK && l < c->num_hidden_layers; l++)
        s = check_layer(c, st, l);
    if (s == LG_OK)
        s = want(st, "model.norm.weight", 1, H, 0);
    /* A tied model may still carry lm_head.weight (some exporters write it); then it must fit too. */
    if (s == LG_OK && (!c->tie_word_embeddings || lg_st_contains(st, "lm_head.weight")))
        s = want(st, "lm_head.weight", 2, V, H);
    return s; /* the messages name the model path or the shard, and the tensor */
}
