/* peft.c: PEFT LoRA adapter directories (lg_hf.h): adapter_config.json both ways and the tensor names of
 * adapter_model.safetensors. The config written is the field set of PEFT's LoraConfig as of 0.10 (what
 * every PEFT from 0.10 on loads without a TypeError: before 0.14 PEFT refuses unknown keys, so fields added
 * later, such as lora_bias or exclude_modules, are left at their default by omission). Reading refuses, by
 * name, every option that would make the adapter compute something other than plain LoRA here. */
#include "lg_hf.h"
#include "lg_base.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The seven projections and the submodule each lives in (the one table of target names in io). */
static const struct {
    const char *name;
    const char *parent;
} modules[LG_PEFT_MODULE_COUNT] = {
    [LG_PEFT_Q_PROJ] = {"q_proj", "self_attn"},  [LG_PEFT_K_PROJ] = {"k_proj", "self_attn"},
    [LG_PEFT_V_PROJ] = {"v_proj", "self_attn"},  [LG_PEFT_O_PROJ] = {"o_proj", "self_attn"},
    [LG_PEFT_GATE_PROJ] = {"gate_proj", "mlp"}, [LG_PEFT_UP_PROJ] = {"up_proj", "mlp"},
    [LG_PEFT_DOWN_PROJ] = {"down_proj", "mlp"},
};

const char *lg_peft_module_name(enum lg_peft_module m)
{
    return (unsigned)m < LG_PEFT_MODULE_COUNT ? modules[m].name : NULL;
}

int lg_peft_module_parse(const char *name)
{
    for (int i = 0; name && i < LG_PEFT_MODULE_COUNT; i++)
        if (strcmp(name, modules[i].name) == 0)
            return i;
    return -1;
}

enum lg_status lg_peft_tensor_name(int layer, const char *module, char ab, char *buf, size_t n)
{
    int m = lg_peft_module_parse(module);
    if (m < 0)
        return lg_fail(LG_ERR_INVALID, "lg_peft_tensor_name: unknown module '%s' (q_proj, k_proj, v_proj, o_proj, "
                       "gate_proj, up_proj, down_proj)", module ? module : "(null)");
    if (ab != 'A' && ab != 'B')
        return lg_fail(LG_ERR_INVALID, "lg_peft_tensor_name: ab must be 'A' or 'B', not '%c'", ab);
    if (layer < 0 || !buf)
        return lg_fail(LG_ERR_INVALID, "lg_peft_tensor_name: bad layer %d or null buffer", layer);
    int k = snprintf(buf, n, "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", layer, modules[m].parent,
                     modules[m].name, ab);
    if (k < 0 || (size_t)k >= n)
        return lg_fail(LG_ERR_INVALID, "lg_peft_tensor_name: buffer of %zu bytes is too small (%d needed)", n,
                       k + 1);
    return LG_OK;
}

/* ---- writing ---- */

static enum lg_status check_config(const struct lg_peft_config *c)
{
    if (c->r < 1)
        return lg_fail(LG_ERR_INVALID, "r = %d must be at least 1", c->r);
    if (!(c->lora_alpha > 0) || !isfinite(c->lora_alpha))
        return lg_fail(LG_ERR_INVALID, "lora_alpha %g must be positive", c->lora_alpha);
    if (!(c->lora_dropout >= 0 && c->lora_dropout < 1))
        return lg_fail(LG_ERR_INVALID, "lora_dropout %g must be in [0, 1)", c->lora_dropout);
    if (!c->target_modules || (c->target_modules & ~LG_PEFT_ALL_MODULES))
        return lg_fail(LG_ERR_INVALID, "target_modules mask 0x%x must name at least one of the seven projections",
                       c->target_modules);
    if (!memchr(c->base_model_name_or_path, '\0', sizeof c->base_model_name_or_path))
        return lg_fail(LG_ERR_INVALID, "base_model_name_or_path is not NUL-terminated");
    return LG_OK;
}

/* The fewest significant digits (15..17) that print v back exactly: 0.05 stays 0.05. */
static int real_precision(double v)
{
    char buf[64];
    for (int p = 15; p < 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, v);
        if (strtod(buf, NULL) == v)
            return p;
    }
    return 17;
}

static json_t *adapter_json(const struct lg_peft_config *c)
{
    json_t *o = json_object(), *tm = json_array();
    for (int m = 0; m < LG_PEFT_MODULE_COUNT; m++)
        if (c->target_modules & (1u << m))
            json_array_append_new(tm, json_string(modules[m].name));
    json_object_set_new(o, "alpha_pattern", json_object());
    json_object_set_new(o, "auto_mapping", json_null());
    json_object_set_new(o, "bias", json_string("none"));
    json_object_set_new(o, "fan_in_fan_out", json_false());
    json_object_set_new(o, "inference_mode", json_true());
    json_object_set_new(o, "init_lora_weights", json_true());
    json_object_set_new(o, "layer_replication", json_null());
    json_object_set_new(o, "layers_pattern", json_null());
    json_object_set_new(o, "layers_to_transform", json_null());
    json_object_set_new(o, "loftq_config", json_object());
    double a = c->lora_alpha;
    json_object_set_new(o, "lora_alpha", a == floor(a) && a < 1e15 ? json_integer((json_int_t)a) : json_real(a));
    json_object_set_new(o, "lora_dropout", json_real(c->lora_dropout));
    json_object_set_new(o, "megatron_config", json_null());
    json_object_set_new(o, "megatron_core", json_string("megatron.core"));
    json_object_set_new(o, "modules_to_save", json_null());
    json_object_set_new(o, "peft_type", json_string("LORA"));
    json_object_set_new(o, "r", json_integer(c->r));
    json_object_set_new(o, "rank_pattern", json_object());
    json_object_set_new(o, "revision", json_null());
    json_object_set_new(o, "target_modules", tm);
    json_object_set_new(o, "task_type", json_string("CAUSAL_LM"));
    json_object_set_new(o, "use_dora", json_false());
    json_object_set_new(o, "use_rslora", json_false());
    return o;
}

enum lg_status lg_peft_config_write(const char *dir, const struct lg_peft_config *cfg)
{
    if (!dir || !cfg)
        return lg_fail(LG_ERR_INVALID, "lg_peft_config_write: null argument");
    enum lg_status s = check_config(cfg);
    if (s != LG_OK)
        return lg_fail_wrap(s, "%s: cannot write this adapter config: ", dir);
    if ((s = lg_dir_create(dir)) != LG_OK)
        return s;
    json_t *o = adapter_json(cfg);
    if (json_object_set_new(o, "base_model_name_or_path", cfg->base_model_name_or_path[0]
                                                              ? json_string(cfg->base_model_name_or_path)
                                                              : json_null()) != 0) {
        json_decref(o);
        return lg_fail(LG_ERR_INVALID, "%s: base_model_name_or_path is not valid UTF-8", dir);
    }
    int prec = real_precision(cfg->lora_dropout);
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(prec));
    json_decref(o);
    size_t n = strlen(dir) + 32;
    char *path = malloc(n);
    if (!text || !path) {
        free(text);
        free(path);
        return lg_fail(LG_ERR_OOM, "%s: out of memory", dir);
    }
    snprintf(path, n, "%s/adapter_config.json", dir);
    s = lg_file_write_atomic(path, text, strlen(text)); /* PEFT writes no trailing newline */
    free(text);
    free(path);
    return s;
}

/* ---- reading ---- */

/* Options whose non-default value changes what the adapter computes, or what it holds beyond A and B. */
enum refuse { R_TRUE, R_NONEMPTY, R_NONNULL };
static const struct {
    const char *name;
    enum refuse kind;
    const char *why;
} refused[] = {
    {"use_dora", R_TRUE, "DoRA adds a magnitude vector"},
    {"use_rslora", R_TRUE, "rsLoRA scales by alpha/sqrt(r), not alpha/r"},
    {"fan_in_fan_out", R_TRUE, "transposed (Conv1D) weights"},
    {"lora_bias", R_TRUE, "a trained bias on lora_B"},
    {"use_qalora", R_TRUE, "QALoRA pools the input"},
    {"rank_pattern", R_NONEMPTY, "per-module ranks"},
    {"alpha_pattern", R_NONEMPTY, "per-module alphas"},
    {"modules_to_save", R_NONEMPTY, "fully trained extra modules"},
    {"layers_to_transform", R_NONEMPTY, "adapters on only some layers"},
    {"exclude_modules", R_NONEMPTY, "modules excluded from the targets"},
    {"layer_replication", R_NONEMPTY, "replicated layers"},
    {"target_parameters", R_NONEMPTY, "adapters on raw parameters"},
    {"trainable_token_indices", R_NONEMPTY, "trained embedding rows"},
    {"alora_invocation_tokens", R_NONEMPTY, "activated LoRA"},
    {"use_bdlora", R_NONNULL, "block-diagonal LoRA"},
    {"arrow_config", R_NONNULL, "Arrow routing"},
    {"monteclora_config", R_NONNULL, "MonteCLoRA"},
    {"velora_config", R_NONNULL, "VeLoRA"},
    {"kasa_config", R_NONNULL, "KaSA"},
};

static int is_default(json_t *v, enum refuse kind)
{
    if (!v || json_is_null(v))
        return 1;
    switch (kind) {
    case R_TRUE: return json_is_false(v);
    case R_NONEMPTY:
        return (json_is_array(v) && json_array_size(v) == 0) || (json_is_object(v) && json_object_size(v) == 0);
    case R_NONNULL: return 0;
    }
    return 0;
}

static enum lg_status read_targets(const char *path, json_t *t, unsigned *mask)
{
    *mask = 0;
    if (json_is_string(t) && strcmp(json_string_value(t), "all-linear") == 0) {
        *mask = LG_PEFT_ALL_MODULES; /* every linear layer but lm_head: the seven, for Llama and Qwen2 */
        return LG_OK;
    }
    if (json_is_string(t))
        return lg_fail(LG_ERR_UNSUPPORTED, "%s: target_modules '%s' is a regex, which is not supported (give a list "
                       "of module names)", path, json_string_value(t));
    if (!json_is_array(t) || json_array_size(t) == 0)
        return lg_fail(LG_ERR_IO, "%s: target_modules must be a non-empty list of module names", path);
    for (size_t i = 0; i < json_array_size(t); i++) {
        const char *n = json_string_value(json_array_get(t, i));
        int m = lg_peft_module_parse(n);
        if (m < 0)
            return lg_fail(LG_ERR_UNSUPPORTED, "%s: target_modules[%zu] '%s' is not supported (q_proj, k_proj, "
                           "v_proj, o_proj, gate_proj, up_proj, down_proj)", path, i, n ? n : "(not a string)");
        *mask |= 1u << m;
    }
    return LG_OK;
}

static enum lg_status read_kind(const char *path, json_t *root)
{
    json_t *pt = json_object_get(root, "peft_type"), *tt = json_object_get(root, "task_type");
    if (!json_is_string(pt))
        return lg_fail(LG_ERR_IO, "%s: missing or non-string 'peft_type'", path);
    if (strcmp(json_string_value(pt), "LORA") != 0)
        return lg_fail(LG_ERR_UNSUPPORTED, "%s: peft_type '%s' is not supported (LORA only)", path,
                       json_string_value(pt));
    if (tt && !json_is_null(tt) && (!json_is_string(tt) || strcmp(json_string_value(tt), "CAUSAL_LM") != 0))
        return lg_fail(LG_ERR_UNSUPPORTED, "%s: task_type '%s' is not supported (CAUSAL_LM)", path,
                       json_is_string(tt) ? json_string_value(tt) : "(not a string)");
    json_t *b = json_object_get(root, "bias");
    if (b && !json_is_null(b) && (!json_is_string(b) || strcmp(json_string_value(b), "none") != 0))
        return lg_fail(LG_ERR_UNSUPPORTED, "%s: bias '%s' is not supported (none: no trained biases)", path,
                       json_is_string(b) ? json_string_value(b) : "(not a string)");
    /* PiSSA, OLoRA, CorDA and LoftQ rewrite the base weights at init: their adapters only fit that residual base
     * (unless converted, which saves init_lora_weights as true). The other inits only choose A and B. */
    json_t *init = json_object_get(root, "init_lora_weights");
    const char *iv = json_string_value(init);
    if (iv && strcmp(iv, "gaussian") != 0 && strcmp(iv, "eva") != 0 && strcmp(iv, "orthogonal") != 0)
        return lg_fail(LG_ERR_UNSUPPORTED, "%s: init_lora_weights '%s' is not supported (it changes the base "
                       "weights the adapter was trained against; convert the adapter to plain LoRA first)", path, iv);
    if (init && !iv && !json_is_boolean(init))
        return lg_fail(LG_ERR_IO, "%s: 'init_lora_weights' must be a boolean or a string", path);
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++)
        if (!is_default(json_object_get(root, refused[i].name), refused[i].kind))
            return lg_fail(LG_ERR_UNSUPPORTED, "%s: %s is not supported (%s)", path, refused[i].name, refused[i].why);
    return LG_OK;
}

static enum lg_status read_values(const char *path, json_t *root, struct lg_peft_config *c)
{
    json_t *r = json_object_get(root, "r"), *a = json_object_get(root, "lora_alpha");
    json_t *d = json_object_get(root, "lora_dropout"), *b = json_object_get(root, "base_model_name_or_path");
    if (!json_is_integer(r) || json_integer_value(r) < 1 || json_integer_value(r) > 1 << 20)
        return lg_fail(LG_ERR_IO, "%s: 'r' must be a positive integer", path);
    c->r = (int)json_integer_value(r);
    if (a && !json_is_number(a))
        return lg_fail(LG_ERR_IO, "%s: 'lora_alpha' must be a number", path);
    c->lora_alpha = a ? json_number_value(a) : 8; /* PEFT's default */
    if (d && !json_is_null(d) && !json_is_number(d))
        return lg_fail(LG_ERR_IO, "%s: 'lora_dropout' must be a number", path);
    c->lora_dropout = d && !json_is_null(d) ? json_number_value(d) : 0;
    if (b && !json_is_null(b)) {
        if (!json_is_string(b) || strlen(json_string_value(b)) >= sizeof c->base_model_name_or_path)
            return lg_fail(LG_ERR_IO, "%s: 'base_model_name_or_path' must be a string under %zu bytes", path,
                           sizeof c->base_model_name_or_path);
        snprintf(c->base_model_name_or_path, sizeof c->base_model_name_or_path, "%s", json_string_value(b));
    }
    enum lg_status s = read_targets(path, json_object_get(root, "target_modules"), &c->target_modules);
    if (s == LG_OK && (s = check_config(c)) != LG_OK)
        lg_fail_wrap(s, "%s: ", path);
    return s;
}

enum lg_status lg_peft_config_read(const char *path, struct lg_peft_config *out)
{
    if (!path || !out)
        return lg_fail(LG_ERR_INVALID, "lg_peft_config_read: null argument");
    struct stat sb;
    size_t n = strlen(path) + 32;
    char *file = malloc(n), *text = NULL;
    if (!file)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", path);
    int dir = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
    snprintf(file, n, dir ? "%s/adapter_config.json" : "%s", path);
    size_t len = 0;
    enum lg_status s = lg_file_read(file, LG_FILE_LIMIT_TEXT, &text, &len);
    json_error_t je;
    json_t *root = NULL;
    /* json_loads stopped at a NUL and took the text before it for the whole file */
    const char *nul = s == LG_OK ? memchr(text, '\0', len) : NULL;
    if (nul)
        s = lg_fail(LG_ERR_IO, "%s: a NUL byte at offset %zu: not a JSON text", file, (size_t)(nul - text));
    if (s == LG_OK && !(root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je)))
        s = lg_fail(LG_ERR_IO, "%s:%d: malformed JSON: %s", file, je.line, je.text);
    if (s == LG_OK && !json_is_object(root))
        s = lg_fail(LG_ERR_IO, "%s: not a JSON object", file);
    struct lg_peft_config c;
    memset(&c, 0, sizeof c);
    if (s == LG_OK)
        s = read_kind(file, root);
    if (s == LG_OK)
        s = read_values(file, root, &c);
    if (s == LG_OK)
        *out = c;
    json_decref(root);
    free(text);
    free(file);
    return s;
}
