/* hf_config.c: reading a Llama or Qwen2 config.json (lg_hf.h) in the transformers 4.x layout (rope_theta,
 * rope_scaling, torch_dtype) and the 5.x one (rope_parameters holding rope_type and rope_theta, dtype).
 * A field that changes the math and that the decoder does not implement must stop the run, not be skipped: a
 * model trained with the wrong RoPE or activation loads fine and is silently wrong. So every field is either
 * parsed, known harmless, checked against its neutral value, or listed in the warnings. */
#include "lg_hf.h"
#include "lg_base.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct ctx {
    const char *path;
    json_t *root;
    struct lg_model_config *c;
};

/* Fields that are informational or only affect inference, caching, initialisation or other tools. */
static const char *const harmless[] = {
    "architectures", "model_type", "transformers_version", "_name_or_path", "use_cache", "initializer_range",
    "pad_token_id", "pretraining_tp", "max_window_layers", "sliding_window", "torch_dtype", "dtype",
    "bos_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id", "return_dict",
    "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16", "tf_legacy_loss",
    "pruned_heads", "chunk_size_feed_forward", "is_encoder_decoder", "is_decoder", "add_cross_attention",
    "cross_attention_hidden_size", "tie_encoder_decoder", "finetuning_task", "id2label", "label2id",
    "num_labels", "tokenizer_class", "prefix", "task_specific_params", "problem_type",
    "_attn_implementation_autoset", "attn_implementation", "max_length", "min_length", "do_sample",
    "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p",
    "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "output_scores",
    "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "use_return_dict",
    NULL};

/* Fields of other architectures that change the math unless they hold their neutral value. */
enum neutral { N_FALSE, N_ONE, N_ZERO, N_NULL, N_INV_SQRT_HEAD_DIM, N_HEAD_DIM };
static const struct {
    const char *name;
    enum neutral kind;
} math_fields[] = {
    {"partial_rotary_factor", N_ONE},   {"rotary_pct", N_ONE},           {"qk_norm", N_FALSE},
    {"use_qk_norm", N_FALSE},           {"qk_layernorm", N_FALSE},       {"attn_logit_softcapping", N_ZERO},
    {"final_logit_softcapping", N_ZERO}, {"logits_scaling", N_ONE},      {"logit_scale", N_ONE},
    {"embedding_multiplier", N_ONE},    {"residual_multiplier", N_ONE},  {"scale_emb", N_ONE},
    {"scale_depth", N_ONE},             {"dim_model_base", N_NULL},      {"attention_multiplier", N_INV_SQRT_HEAD_DIM},
    {"query_pre_attn_scalar", N_HEAD_DIM}, {"num_experts", N_ZERO},      {"num_local_experts", N_ZERO},
    {"n_routed_experts", N_ZERO},       {"moe_num_experts", N_ZERO},     {"n_shared_experts", N_ZERO},
    {"clip_qkv", N_NULL},               {"use_parallel_residual", N_FALSE}, {"parallel_attn", N_FALSE},
    {"use_alibi", N_FALSE},             {"alibi", N_FALSE},              {"quantization_config", N_NULL},
    {"use_mrope", N_FALSE},             {"mrope_section", N_NULL},       {"no_rope_layers", N_NULL},
    {"auto_map", N_NULL},
};

static void warn(struct lg_model_config *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(struct lg_model_config *c, const char *fmt, ...)
{
    size_t cap = sizeof c->warnings, len = strlen(c->warnings);
    if (len + 4 >= cap)
        return;
    if (len)
        len += (size_t)snprintf(c->warnings + len, cap - len, "; ");
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->warnings + len, cap - len, fmt, ap);
    va_end(ap);
    if (n < 0 || len + (size_t)n >= cap)
        memcpy(c->warnings + cap - 4, "...", 4);
}

static int in_list(const char *const *l, const char *k)
{
    for (; *l; l++)
        if (strcmp(*l, k) == 0)
            return 1;
    return 0;
}

/* ---- typed field access: absent and null mean "use the default" ---- */

static json_t *field(struct ctx *x, const char *name)
{
    json_t *v = json_object_get(x->root, name);
    return json_is_null(v) ? NULL : v;
}

static enum lg_status get_int(struct ctx *x, const char *name, int required, long long def, long long lo,
                              long long hi, long long *out)
{
    json_t *v = field(x, name);
    if (!v) {
        if (required)
            return lg_fail(LG_ERR_IO, "%s: missing field '%s'", x->path, name);
        *out = def;
        return LG_OK;
    }
    if (!json_is_integer(v))
        return lg_fail(LG_ERR_IO, "%s: '%s' must be an integer", x->path, name);
    long long n = json_integer_value(v);
    if (n < lo || n > hi)
        return lg_fail(LG_ERR_IO, "%s: '%s' = %lld is out of range [%lld, %lld]", x->path, name, n, lo, hi);
    *out = n;
    return LG_OK;
}

static enum lg_status get_num(struct ctx *x, json_t *v, const char *name, double def, double *out)
{
    if (!v || json_is_null(v)) {
        *out = def;
        return LG_OK;
    }
    if (!json_is_number(v))
        return lg_fail(LG_ERR_IO, "%s: '%s' must be a number", x->path, name);
    *out = json_number_value(v);
    return LG_OK;
}

static enum lg_status get_bool(struct ctx *x, const char *name, int def, int *out)
{
    json_t *v = field(x, name);
    if (!v) {
        *out = def;
        return LG_OK;
    }
    if (!json_is_boolean(v))
        return lg_fail(LG_ERR_IO, "%s: '%s' must be true or false", x->path, name);
    *out = json_is_true(v);
    return LG_OK;
}

/* ---- the model's identity ---- */

static int family_of_type(const char *t)
{
    return strcmp(t, "llama") == 0 ? LG_FAMILY_LLAMA : strcmp(t, "qwen2") == 0 ? LG_FAMILY_QWEN2 : 0;
}

static int family_of_arch(const char *a)
{
    return strcmp(a, "LlamaForCausalLM") == 0   ? LG_FAMILY_LLAMA
           : strcmp(a, "Qwen2ForCausalLM") == 0 ? LG_FAMILY_QWEN2
                                                : 0;
}

static enum lg_status parse_family(struct ctx *x)
{
    json_t *mt = field(x, "model_type"), *ar = field(x, "architectures");
    int fam = 0;
    if (mt) {
        if (!json_is_string(mt))
            return lg_fail(LG_ERR_IO, "%s: 'model_type' must be a string", x->path);
        if (!(fam = family_of_type(json_string_value(mt))))
            return lg_fail(LG_ERR_UNSUPPORTED, "%s: model_type '%s' is not supported (llama, qwen2)", x->path,
                           json_string_value(mt));
    }
    if (ar) {
        if (!json_is_array(ar) || json_array_size(ar) == 0)
            return lg_fail(LG_ERR_IO, "%s: 'architectures' must be a non-empty array of strings", x->path);
        for (size_t i = 0; i < json_array_size(ar); i++) {
            const char *a = json_string_value(json_array_get(ar, i));
            int f = a ? family_of_arch(a) : 0;
            if (!f)
                return lg_fail(LG_ERR_UNSUPPORTED, "%s: architectures[%zu] '%s' is not supported "
                               "(LlamaForCausalLM, Qwen2ForCausalLM)", x->path, i, a ? a : "(not a string)");
            if (fam && f != fam)
                return lg_fail(LG_ERR_IO, "%s: architectures[%zu] '%s' contradicts model_type '%s'", x->path, i, a,
                               mt ? json_string_value(mt) : json_string_value(json_array_get(ar, 0)));
            fam = f;
        }
    }
    if (!fam)
        return lg_fail(LG_ERR_IO, "%s: neither 'model_type' nor 'architectures' says what model this is", x->path);
    x->c->family = (enum lg_model_family)fam;
    return LG_OK;
}

/* ---- sizes and switches ---- */

static enum lg_status parse_sizes(struct ctx *x)
{
    struct lg_model_config *c = x->c;
    const long long big = 1ll << 30;
    long long H = 0, F = 0, L = 0, nh = 1, nkv = 1, hd = 0, V = 0, mp = 0;
    enum lg_status s = get_int(x, "hidden_size", 1, 0, 1, big, &H);
    if (s == LG_OK)
        s = get_int(x, "intermediate_size", 1, 0, 1, big, &F);
    if (s == LG_OK)
        s = get_int(x, "num_hidden_layers", 1, 0, 1, 1 << 16, &L);
    if (s == LG_OK)
        s = get_int(x, "num_attention_heads", 1, 0, 1, 1 << 16, &nh);
    if (s == LG_OK)
        s = get_int(x, "num_key_value_heads", 0, nh, 1, 1 << 16, &nkv);
    if (s == LG_OK && !field(x, "head_dim") && H % nh != 0)
        return lg_fail(LG_ERR_IO, "%s: hidden_size %lld is not a multiple of num_attention_heads %lld (and no "
                       "head_dim is given)", x->path, H, nh);
    if (s == LG_OK)
        s = get_int(x, "head_dim", 0, H / nh, 1, 1 << 16, &hd);
    if (s == LG_OK)
        s = get_int(x, "vocab_size", 1, 0, 1, big, &V);
    if (s == LG_OK)
        s = get_int(x, "max_position_embeddings", 0, c->family == LG_FAMILY_QWEN2 ? 32768 : 2048, 1, big, &mp);
    if (s != LG_OK)
        return s;
    c->hidden_size = (int)H;
    c->intermediate_size = (int)F;
    c->num_hidden_layers = (int)L;
    c->num_attention_heads = (int)nh;
    c->num_key_value_heads = (int)nkv;
    c->head_dim = (int)hd;
    c->vocab_size = (int)V;
    c->max_position_embeddings = (int)mp;
    return get_num(x, field(x, "rms_norm_eps"), "rms_norm_eps", 1e-6, &c->rms_norm_eps);
}

static enum lg_status parse_switches(struct ctx *x)
{
    struct lg_model_config *c = x->c;
    int ab = 0, mlp_bias = 0, sliding = 0;
    enum lg_status s = get_bool(x, "tie_word_embeddings", 0, &c->tie_word_embeddings);
    if (s == LG_OK)
        s = get_bool(x, "attention_bias", 0, &ab);
    if (s == LG_OK)
        s = get_bool(x, "mlp_bias", 0, &mlp_bias);
    if (s == LG_OK)
        s = get_bool(x, "use_sliding_window", 0, &sliding);
    if (s != LG_OK)
        return s;
    if (mlp_bias)
        return lg_fail(LG_ERR_UNSUPPORTED, "%s: mlp_bias true is not supported (gate/up/down_proj without bias)",
                       x->path);
    if (sliding)
        return lg_fail(LG_ERR_UNSUPPORTED, "%s: use_sliding_window true is not supported (full attention only)",
                       x->path);
    if (c->family == LG_FAMILY_QWEN2) {
        if (ab)
            warn(c, "%s: attention_bias is not a Qwen2 field (Qwen2 has q/k/v biases and none on o_proj): ignored",
                 x->path);
        c->qkv_bias = 1, c->o_bias = 0;
    } else {
        c->qkv_bias = c->o_bias = ab; /* LlamaAttention puts attention_bias on all four projections */
    }
    const char *acts[] = {"hidden_act", "hidden_activation"};
    for (int i = 0; i < 2; i++) {
        json_t *a = field(x, acts[i]);
        if (a && !json_is_string(a))
            return lg_fail(LG_ERR_IO, "%s: '%s' must be a string", x->path, acts[i]);
        if (a && strcmp(json_string_value(a), "silu") != 0)
            return lg_fail(LG_ERR_UNSUPPORTED, "%s: %s '%s' is not supported (silu only)", x->path, acts[i],
                           json_string_value(a));
    }
    double drop = 0;
    if ((s = get_num(x, field(x, "attention_dropout"), "attention_dropout", 0, &drop)) != LG_OK)
        return s;
    if (drop != 0)
        return lg_fail(LG_ERR_UNSUPPORTED, "%s: attention_dropout %g is not supported (0 only)", x->path, drop);
    json_t *lt = field(x, "layer_types");
    if (lt && !json_is_array(lt))
        return lg_fail(LG_ERR_IO, "%s: 'layer_types' must be an array of strings", x->path);
    for (size_t i = 0; lt && i < json_array_size(lt); i++) {
        const char *t = json_string_value(json_array_get(lt, i));
        if (!t || strcmp(t, "full_attention") != 0)
            return lg_fail(LG_ERR_UNSUPPORTED, "%s: layer_types[%zu] '%s' is not supported (full_attention only)",
                           x->path, i, t ? t : "(not a string)");
    }
    return LG_OK;
}

/* ---- RoPE: 4.x rope_theta + rope_scaling, 5.x rope_parameters ---- */

struct rope {
    int present, llama3, has_theta, has_orig;
    double theta, factor, low, high;
    long long orig;
    char where[64]; /* the field it came from, for messages */
};

static enum lg_status rope_num(struct ctx *x, const struct rope *r, json_t *o, const char *k, int required,
                               double *out)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) {
        if (required)
            return lg_fail(LG_ERR_IO, "%s: %s: rope_type 'llama3' needs '%s'", x->path, r->where, k);
        return LG_OK;
    }
    if (!json_is_number(v))
        return lg_fail(LG_ERR_IO, "%s: %s.%s must be a number", x->path, r->where, k);
    *out = json_number_value(v);
    return LG_OK;
}

static enum lg_status rope_keys(struct ctx *x, const struct rope *r, json_t *o)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        int known = !strcmp(k, "rope_type") || !strcmp(k, "type") || !strcmp(k, "rope_theta") ||
                    !strcmp(k, "partial_rotary_factor") || (r->llama3 && (!strcmp(k, "factor") ||
                    !strcmp(k, "low_freq_factor") || !strcmp(k, "high_freq_factor") ||
                    !strcmp(k, "original_max_position_embeddings")));
        if (!strcmp(k, "partial_rotary_factor") && !json_is_null(v) &&
            (!json_is_number(v) || json_number_value(v) != 1))
            return lg_fail(LG_ERR_UNSUPPORTED, "%s: %s.partial_rotary_factor is not supported (1 only)", x->path,
                           r->where);
        if (!known)
            warn(x->c, "%s: %s.%s is not used by rope_type '%s': ignored", x->path, r->where, k,
                 r->llama3 ? "llama3" : "default");
    }
    return LG_OK;
}

static enum lg_status parse_rope_obj(struct ctx *x, const char *name, struct rope *r)
{
    json_t *o = field(x, name);
    snprintf(r->where, sizeof r->where, "%s", name);
    if (!o)
        return LG_OK;
    if (!json_is_object(o))
        return lg_fail(LG_ERR_IO, "%s: '%s' must be an object or null", x->path, name);
    json_t *full = json_object_get(o, "full_attention");
    if (json_is_object(full)) { /* 5.x per-layer-type form; sliding layers were refused above */
        o = full;
        snprintf(r->where, sizeof r->where, "%s.full_attention", name);
    }
    r->present = 1;
    json_t *t = json_object_get(o, "rope_type");
    if (!t || json_is_null(t))
        t = json_object_get(o, "type");
    const char *type = t && !json_is_null(t) ? json_string_value(t) : "default";
    if (!type)
        return lg_fail(LG_ERR_IO, "%s: %s.rope_type must be a string", x->path, r->where);
    if (strcmp(type, "llama3") == 0)
        r->llama3 = 1;
    else if (strcmp(type, "default") != 0)
        return lg_fail(LG_ERR_UNSUPPORTED, "%s: %s.rope_type '%s' is not supported (default, llama3)", x->path,
                       r->where, type);
    json_t *th = json_object_get(o, "rope_theta");
    if (th && !json_is_null(th)) {
        if (!json_is_number(th))
            return lg_fail(LG_ERR_IO, "%s: %s.rope_theta must be a number", x->path, r->where);
        r->has_theta = 1, r->theta = json_number_value(th);
    }
    enum lg_status s = rope_keys(x, r, o);
    if (s != LG_OK || !r->llama3)
        return s;
    if ((s = rope_num(x, r, o, "factor", 1, &r->factor)) == LG_OK &&
        (s = rope_num(x, r, o, "low_freq_factor", 1, &r->low)) == LG_OK)
        s = rope_num(x, r, o, "high_freq_factor", 1, &r->high);
    json_t *om = json_object_get(o, "original_max_position_embeddings");
    if (s == LG_OK && om && !json_is_null(om)) {
        if (!json_is_integer(om) || json_integer_value(om) < 1 || json_integer_value(om) > 1ll << 30)
            return lg_fail(LG_ERR_IO, "%s: %s.original_max_position_embeddings must be an integer in [1, 2^30] "
                           "(as the top-level one)", x->path, r->where); /* it goes into an int */
        r->has_orig = 1, r->orig = json_integer_value(om);
    }
    return s;
}

static int same_rope(const struct rope *a, const struct rope *b)
{
    return a->llama3 == b->llama3 && (!a->llama3 || (a->factor == b->factor && a->low == b->low &&
                                                     a->high == b->high));
}

/* The values a 4.x and a 5.x reader would both take, or an error when the two layouts disagree. */
static enum lg_status parse_rope(struct ctx *x)
{
    struct lg_model_config *c = x->c;
    struct rope sc = {0}, pa = {0};
    enum lg_status s = parse_rope_obj(x, "rope_scaling", &sc);
    if (s == LG_OK)
        s = parse_rope_obj(x, "rope_parameters", &pa);
    if (s != LG_OK)
        return s;
    if (sc.present && pa.present && !same_rope(&sc, &pa))
        return lg_fail(LG_ERR_IO, "%s: rope_scaling and rope_parameters disagree", x->path);
    const struct rope *r = pa.present ? &pa : &sc;
    double top = 0;
    json_t *tt = field(x, "rope_theta");
    if ((s = get_num(x, tt, "rope_theta", 10000.0, &top)) != LG_OK)
        return s;
    c->rope_theta = pa.has_theta ? pa.theta : sc.has_theta ? sc.theta : top;
    const struct rope *cand[2] = {&sc, &pa};
    for (int i = 0; i < 2; i++) {
        if (cand[i]->has_theta && tt && cand[i]->theta != top)
            return lg_fail(LG_ERR_IO, "%s: rope_theta %g and %s.rope_theta %g disagree", x->path, top,
                           cand[i]->where, cand[i]->theta);
        if (cand[i]->has_theta && cand[i]->theta != c->rope_theta)
            return lg_fail(LG_ERR_IO, "%s: rope_scaling.rope_theta and rope_parameters.rope_theta disagree", x->path);
    }
    if (!(c->rope_theta > 0))
        return lg_fail(LG_ERR_IO, "%s: rope_theta %g must be positive", x->path, c->rope_theta);
    if (!r->llama3)
        return LG_OK;
    long long orig = r->has_orig ? r->orig : 0, top_orig = 0;
    if ((s = get_int(x, "original_max_position_embeddings", 0, 0, 1, 1ll << 30, &top_orig)) != LG_OK)
        return s;
    if (top_orig && orig && top_orig != orig)
        return lg_fail(LG_ERR_IO, "%s: original_max_position_embeddings %lld and %s.original_max_position_embeddings "
                       "%lld disagree", x->path, top_orig, r->where, orig);
    /* 5.x fills a missing value from max_position_embeddings (4.x would fail on it). */
    c->rope_original_max_position = (int)(orig ? orig : top_orig ? top_orig : c->max_position_embeddings);
    c->rope_llama3 = 1;
    c->rope_factor = r->factor;
    c->rope_low_freq_factor = r->low;
    c->rope_high_freq_factor = r->high;
    return LG_OK;
}

/* ---- the rest ---- */

static enum lg_status parse_ids(struct ctx *x)
{
    struct lg_model_config *c = x->c;
    json_t *b = field(x, "bos_token_id"), *e = field(x, "eos_token_id");
    if (b && !json_is_integer(b))
        return lg_fail(LG_ERR_IO, "%s: 'bos_token_id' must be an integer or null", x->path);
    c->bos_token_id = b ? json_integer_value(b) : -1;
    if (e && !json_is_integer(e) && !json_is_array(e))
        return lg_fail(LG_ERR_IO, "%s: 'eos_token_id' must be an integer, a list of integers or null", x->path);
    size_t n = !e ? 0 : json_is_integer(e) ? 1 : json_array_size(e);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_is_integer(e) ? e : json_array_get(e, i);
        if (!json_is_integer(v))
            return lg_fail(LG_ERR_IO, "%s: eos_token_id[%zu] must be an integer", x->path, i);
        if (i < LG_MODEL_MAX_EOS)
            c->eos_token_id[c->n_eos++] = json_integer_value(v);
    }
    if (n > LG_MODEL_MAX_EOS)
        warn(c, "%s: eos_token_id has %zu ids, only the first %d are kept", x->path, n, LG_MODEL_MAX_EOS);
    json_t *d = field(x, "dtype");
    if (!d)
        d = field(x, "torch_dtype"); /* 5.x keeps dtype when both are given */
    const char *dn = d ? json_string_value(d) : NULL;
    static const char *names[] = {"bfloat16", "float16", "float32"};
    for (int i = 0; dn && i < 3; i++)
        if (strcmp(dn, names[i]) == 0)
            c->has_dtype = 1, c->dtype = i == 0 ? LG_BF16 : i == 1 ? LG_FP16 : LG_FP32;
    if (d && !c->has_dtype)
        warn(c, "%s: dtype %s is not bfloat16, float16 or float32: ignored", x->path, dn ? dn : "(not a string)");
    return LG_OK;
}

static int neutral(const struct lg_model_config *c, json_t *v, enum neutral kind)
{
    if (json_is_null(v))
        return 1;
    double d = json_is_number(v) ? json_number_value(v) : NAN;
    switch (kind) {
    case N_FALSE: return json_is_false(v);
    case N_ONE: return d == 1;
    case N_ZERO: return d == 0;
    case N_NULL: return 0;
    case N_INV_SQRT_HEAD_DIM: return fabs(d * sqrt((double)c->head_dim) - 1) < 1e-6;
    case N_HEAD_DIM: return d == c->head_dim;
    }
    return 0;
}

static enum lg_status check_fields(struct ctx *x)
{
    static const char *const parsed[] = {
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "head_dim", "vocab_size", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
        "attention_bias", "mlp_bias", "use_sliding_window", "hidden_act", "hidden_activation", "attention_dropout",
        "layer_types", "rope_scaling", "rope_parameters", "rope_theta", "original_max_position_embeddings", NULL};
    char unknown[512] = "";
    size_t ul = 0;
    const char *k;
    json_t *v;
    json_object_foreach(x->root, k, v) {
        int math = -1;
        for (size_t i = 0; i < sizeof math_fields / sizeof *math_fields; i++)
            if (strcmp(k, math_fields[i].name) == 0)
                math = (int)i;
        if (math >= 0 && !neutral(x->c, v, math_fields[math].kind))
            return lg_fail(LG_ERR_UNSUPPORTED, "%s: '%s' is not supported with a value other than its neutral one "
                           "(it changes the model's math)", x->path, k);
        if (math < 0 && !in_list(parsed, k) && !in_list(harmless, k) && ul + strlen(k) + 8 < sizeof unknown)
            ul += (size_t)snprintf(unknown + ul, sizeof unknown - ul, "%s%s", ul ? ", " : "", k);
    }
    if (ul)
        warn(x->c, "%s: unknown fields ignored: %s", x->path, unknown);
    return LG_OK;
}

enum lg_status lg_model_config_read(const char *path, struct lg_model_config *out)
{
    if (!path || !out)
        return lg_fail(LG_ERR_INVALID, "lg_model_config_read: null argument");
    struct stat sb;
    char *file = NULL, *text = NULL;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        size_t n = strlen(path) + 16;
        if ((file = malloc(n)))
            snprintf(file, n, "%s/config.json", path);
    } else
        file = strdup(path);
    if (!file)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", path);
    struct lg_model_config c;
    lg_model_config_defaults(LG_FAMILY_LLAMA, &c);
    struct ctx x = {.path = file, .c = &c};
    size_t n = 0;
    enum lg_status s = lg_file_read(file, LG_FILE_LIMIT_TEXT, &text, &n);
    json_error_t je;
    /* json_loads stopped at a NUL and took the text before it for the whole file */
    const char *nul = s == LG_OK ? memchr(text, '\0', n) : NULL;
    if (nul)
        s = lg_fail(LG_ERR_IO, "%s: a NUL byte at offset %zu: not a JSON text", file, (size_t)(nul - text));
    if (s == LG_OK && !(x.root = json_loadb(text, n, JSON_REJECT_DUPLICATES, &je)))
        s = lg_fail(LG_ERR_IO, "%s:%d: malformed JSON: %s", file, je.line, je.text);
    if (s == LG_OK && !json_is_object(x.root))
        s = lg_fail(LG_ERR_IO, "%s: not a JSON object", file);
    enum lg_status (*const steps[])(struct ctx *) = {parse_family, parse_sizes, parse_switches, parse_rope,
                                                     parse_ids, check_fields};
    for (size_t i = 0; s == LG_OK && i < sizeof steps / sizeof *steps; i++)
        s = steps[i](&x);
    if (s == LG_OK && lg_model_config_validate(&c) != LG_OK)
        s = lg_fail_wrap(LG_ERR_IO, "%s: ", file); /* a file that fails the checks is malformed */
    if (s == LG_OK)
        *out = c;
    json_decref(x.root);
    free(text);
    free(file);
    return s;
}
