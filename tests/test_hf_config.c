/* test_hf_config.c: config.json and PEFT adapter configs (lg_hf.h): the transformers 4.x and 5.x RoPE layouts,
 * defaults, every field that changes the math refused by name, malformed files, warnings for unknown fields,
 * the writer's round trip, weights checked against a config (missing tensor, wrong shape, wrong dtype, tied
 * head); adapter_config.json round trip, the refused PEFT options, and the adapter tensor names. Fixtures are
 * written into a temp dir. */
#include "lg_hf.h"
#include "lg_test.h"

#include <check.h>
#include <stdarg.h>
#include <string.h>

static char *dir; /* per test (each runs in its own process) */

static void setup(void) { dir = lg_test_tmpdir("lg_hf_config"); }
static void teardown(void) { lg_test_rm_rf(dir), free(dir); }

static const char *at(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void put_text(const char *path, const char *text) { lg_test_write_text(path, text); }

/* The call must fail with `want` and the message hold every fragment (NULL-terminated). */
static void expect_fail(enum lg_status got, enum lg_status want, ...)
{
    const char *msg = lg_last_error();
    ck_assert_msg(got == want, "status %s, wanted %s (%s)", lg_status_str(got), lg_status_str(want), msg);
    va_list ap;
    va_start(ap, want);
    for (const char *f; (f = va_arg(ap, const char *));)
        ck_assert_msg(strstr(msg, f), "message lacks '%s':\n%s", f, msg);
    va_end(ap);
}

/* ---- config.json ---- */

static const char *llama31_v4 =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0, "
    "\"bos_token_id\": 128000, \"eos_token_id\": [128001, 128008, 128009], \"hidden_act\": \"silu\", "
    "\"hidden_size\": 4096, \"initializer_range\": 0.02, \"intermediate_size\": 14336, "
    "\"max_position_embeddings\": 131072, \"mlp_bias\": false, \"model_type\": \"llama\", "
    "\"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 8, \"pretraining_tp\": 1, "
    "\"rms_norm_eps\": 1e-05, \"rope_scaling\": {\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": "
    "4.0, \"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"}, \"rope_theta\": 500000.0, "
    "\"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.43.0.dev0\", "
    "\"use_cache\": true, \"vocab_size\": 128256}";

static const char *llama31_v5 =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"bos_token_id\": 128000, \"eos_token_id\": [128001, 128008, "
    "128009], \"dtype\": \"bfloat16\", \"hidden_size\": 4096, \"intermediate_size\": 14336, "
    "\"max_position_embeddings\": 131072, \"model_type\": \"llama\", \"num_attention_heads\": 32, "
    "\"num_hidden_layers\": 32, \"num_key_value_heads\": 8, \"head_dim\": 128, \"rms_norm_eps\": 1e-05, "
    "\"rope_parameters\": {\"factor\": 8.0, \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0, %s"
    "\"rope_theta\": 500000.0, \"rope_type\": \"llama3\"}, \"transformers_version\": \"5.0.0\", "
    "\"vocab_size\": 128256}";

static void expect_llama31(const struct lg_model_config *c, int orig)
{
    ck_assert_int_eq(c->family, LG_FAMILY_LLAMA);
    ck_assert_int_eq(c->hidden_size, 4096);
    ck_assert_int_eq(c->intermediate_size, 14336);
    ck_assert_int_eq(c->num_hidden_layers, 32);
    ck_assert_int_eq(c->num_attention_heads, 32);
    ck_assert_int_eq(c->num_key_value_heads, 8);
    ck_assert_int_eq(c->head_dim, 128);
    ck_assert_int_eq(c->vocab_size, 128256);
    ck_assert_int_eq(c->max_position_embeddings, 131072);
    ck_assert(c->rms_norm_eps == 1e-5 && c->rope_theta == 500000.0);
    ck_assert(c->rope_llama3 && c->rope_factor == 8 && c->rope_low_freq_factor == 1 && c->rope_high_freq_factor == 4);
    ck_assert_int_eq(c->rope_original_max_position, orig);
    ck_assert(!c->tie_word_embeddings && !c->qkv_bias && !c->o_bias);
    ck_assert(c->has_dtype && c->dtype == LG_BF16);
    ck_assert_int_eq(c->bos_token_id, 128000);
    ck_assert_int_eq(c->n_eos, 3);
    ck_assert_int_eq(c->eos_token_id[2], 128009);
    ck_assert_msg(c->warnings[0] == '\0', "warnings: %s", c->warnings);
}

START_TEST(cfg_llama_v4_v5)
{
    struct lg_model_config c;
    put_text(at("config.json"), llama31_v4);
    CHECK(lg_model_config_read(dir, &c)); /* a directory means its config.json */
    expect_llama31(&c, 8192);
    char text[4096];
    snprintf(text, sizeof text, llama31_v5, "\"original_max_position_embeddings\": 8192, ");
    put_text(at("config.json"), text);
    CHECK(lg_model_config_read(at("config.json"), &c));
    expect_llama31(&c, 8192);
    snprintf(text, sizeof text, llama31_v5, ""); /* 5.x fills it from max_position_embeddings */
    put_text(at("config.json"), text);
    CHECK(lg_model_config_read(at("config.json"), &c));
    expect_llama31(&c, 131072);
}
END_TEST

START_TEST(cfg_qwen2_and_defaults)
{
    put_text(at("config.json"),
             "{\"architectures\": [\"Qwen2ForCausalLM\"], \"attention_dropout\": 0.0, \"bos_token_id\": 151643, "
             "\"eos_token_id\": 151643, \"hidden_act\": \"silu\", \"hidden_size\": 896, \"initializer_range\": 0.02, "
             "\"intermediate_size\": 4864, \"max_position_embeddings\": 32768, \"max_window_layers\": 24, "
             "\"model_type\": \"qwen2\", \"num_attention_heads\": 14, \"num_hidden_layers\": 24, "
             "\"num_key_value_heads\": 2, \"rms_norm_eps\": 1e-06, \"rope_scaling\": null, \"rope_theta\": 1000000.0, "
             "\"sliding_window\": 32768, \"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\", "
             "\"transformers_version\": \"4.43.1\", \"use_cache\": true, \"use_sliding_window\": false, "
             "\"vocab_size\": 151936}");
    struct lg_model_config c;
    CHECK(lg_model_config_read(dir, &c));
    ck_assert_int_eq(c.family, LG_FAMILY_QWEN2);
    ck_assert_int_eq(c.head_dim, 64);
    ck_assert(c.qkv_bias && !c.o_bias && c.tie_word_embeddings && !c.rope_llama3 && c.rope_theta == 1e6);
    ck_assert(c.n_eos == 1 && c.eos_token_id[0] == 151643 && c.warnings[0] == '\0');
    put_text(at("config.json"), "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 128, "
                                "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 100}");
    CHECK(lg_model_config_read(dir, &c));
    ck_assert(c.num_key_value_heads == 4 && c.head_dim == 16 && c.max_position_embeddings == 2048);
    ck_assert(c.rms_norm_eps == 1e-6 && c.rope_theta == 10000 && !c.rope_llama3 && !c.tie_word_embeddings);
    ck_assert(c.bos_token_id == -1 && c.n_eos == 0 && !c.has_dtype && !c.qkv_bias);
}
END_TEST

#define TINY "\"model_type\": \"%s\", \"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, " \
             "\"num_attention_heads\": 4, \"vocab_size\": 100"

static enum lg_status read_tiny(const char *family, const char *extra, struct lg_model_config *c)
{
    char text[2048];
    snprintf(text, sizeof text, "{" TINY "%s%s}", family, extra[0] ? ", " : "", extra);
    put_text(at("config.json"), text);
    return lg_model_config_read(dir, c);
}

/* Fields that change the math: each must be refused, by name. */
static const struct {
    const char *family, *extra, *frag;
    enum lg_status want;
} refused_cfg[] = {
    {"llama", "\"hidden_act\": \"gelu\"", "hidden_act 'gelu' is not supported", LG_ERR_UNSUPPORTED},
    {"llama", "\"mlp_bias\": true", "mlp_bias true", LG_ERR_UNSUPPORTED},
    {"llama", "\"attention_dropout\": 0.1", "attention_dropout 0.1", LG_ERR_UNSUPPORTED},
    {"qwen2", "\"use_sliding_window\": true", "use_sliding_window true", LG_ERR_UNSUPPORTED},
    {"qwen2", "\"layer_types\": [\"full_attention\", \"sliding_attention\"]", "layer_types[1] 'sliding_attention'",
     LG_ERR_UNSUPPORTED},
    {"llama", "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}", "rope_scaling.rope_type 'yarn'",
     LG_ERR_UNSUPPORTED},
    {"llama", "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}", "rope_scaling.rope_type 'linear'",
     LG_ERR_UNSUPPORTED},
    {"llama", "\"rope_parameters\": {\"rope_type\": \"dynamic\", \"factor\": 2.0}", "rope_parameters.rope_type "
     "'dynamic'", LG_ERR_UNSUPPORTED},
    {"llama", "\"rope_parameters\": {\"rope_type\": \"default\", \"partial_rotary_factor\": 0.5}",
     "rope_parameters.partial_rotary_factor", LG_ERR_UNSUPPORTED},
    {"llama", "\"partial_rotary_factor\": 0.5", "'partial_rotary_factor'", LG_ERR_UNSUPPORTED},
    {"llama", "\"qk_norm\": true", "'qk_norm'", LG_ERR_UNSUPPORTED},
    {"llama", "\"use_qk_norm\": true", "'use_qk_norm'", LG_ERR_UNSUPPORTED},
    {"llama", "\"attn_logit_softcapping\": 50.0", "'attn_logit_softcapping'", LG_ERR_UNSUPPORTED},
    {"llama", "\"final_logit_softcapping\": 30.0", "'final_logit_softcapping'", LG_ERR_UNSUPPORTED},
    {"llama", "\"logits_scaling\": 8.0", "'logits_scaling'", LG_ERR_UNSUPPORTED},
    {"llama", "\"embedding_multiplier\": 12.0", "'embedding_multiplier'", LG_ERR_UNSUPPORTED},
    {"llama", "\"residual_multiplier\": 0.22", "'residual_multiplier'", LG_ERR_UNSUPPORTED},
    {"llama", "\"attention_multiplier\": 0.0078125", "'attention_multiplier'", LG_ERR_UNSUPPORTED},
    {"llama", "\"num_experts\": 8", "'num_experts'", LG_ERR_UNSUPPORTED},
    {"llama", "\"num_local_experts\": 8", "'num_local_experts'", LG_ERR_UNSUPPORTED},
    {"llama", "\"quantization_config\": {\"quant_method\": \"gptq\"}", "'quantization_config'", LG_ERR_UNSUPPORTED},
    {"mistral", "", "model_type 'mistral' is not supported", LG_ERR_UNSUPPORTED},
    {"llama", "\"architectures\": [\"LlamaForSequenceClassification\"]", "architectures[0] "
     "'LlamaForSequenceClassification'", LG_ERR_UNSUPPORTED},
    /* malformed */
    {"llama", "\"architectures\": [\"Qwen2ForCausalLM\"]", "contradicts model_type 'llama'", LG_ERR_IO},
    {"llama", "\"num_key_value_heads\": 3", "num_attention_heads 4 is not a multiple of num_key_value_heads 3",
     LG_ERR_IO},
    {"llama", "\"head_dim\": 15", "head_dim 15 must be even", LG_ERR_IO},
    {"llama", "\"vocab_size\": 5", "duplicate object key", LG_ERR_IO},
    {"llama", "\"rms_norm_eps\": \"small\"", "'rms_norm_eps' must be a number", LG_ERR_IO},
    {"llama", "\"tie_word_embeddings\": 1", "'tie_word_embeddings' must be true or false", LG_ERR_IO},
    {"llama", "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"high_freq_factor\": 4.0}",
     "rope_scaling: rope_type 'llama3' needs 'low_freq_factor'", LG_ERR_IO},
    {"llama", "\"rope_theta\": 500000.0, \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 10000.0}",
     "rope_theta 500000 and rope_parameters.rope_theta 10000 disagree", LG_ERR_IO},
    {"llama", "\"rope_scaling\": {\"rope_type\": \"default\"}, \"rope_parameters\": {\"rope_type\": \"llama3\", "
     "\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0}", "rope_scaling and rope_parameters "
     "disagree", LG_ERR_IO},
    {"llama", "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 4.0, "
     "\"high_freq_factor\": 1.0}", "high_freq_factor 1 must be above low_freq_factor 4", LG_ERR_IO},
};

START_TEST(cfg_refused)
{
    struct lg_model_config c;
    for (size_t i = 0; i < sizeof refused_cfg / sizeof *refused_cfg; i++)
        expect_fail(read_tiny(refused_cfg[i].family, refused_cfg[i].extra, &c), refused_cfg[i].want,
                    at("config.json"), refused_cfg[i].frag, NULL);
    /* Neutral values of the same fields are accepted. */
    CHECK(read_tiny("llama",
                    "\"partial_rotary_factor\": 1.0, \"num_experts\": 0, \"qk_norm\": false, \"attention_multiplier\": "
                    "0.25, \"final_logit_softcapping\": null, \"use_sliding_window\": false, \"layer_types\": "
                    "[\"full_attention\", \"full_attention\"], \"mlp_bias\": false",
                    &c));
    put_text(at("config.json"), "{\"model_type\": \"llama\", \"hidden_size\": 64,");
    expect_fail(lg_model_config_read(dir, &c), LG_ERR_IO, "config.json:1: malformed JSON", NULL);
    put_text(at("config.json"), "{\"model_type\": \"llama\", \"hidden_size\": 64}");
    expect_fail(lg_model_config_read(dir, &c), LG_ERR_IO, "missing field 'intermediate_size'", NULL);
    expect_fail(lg_model_config_read(at("nope.json"), &c), LG_ERR_IO, "nope.json: cannot open", NULL);
}
END_TEST

START_TEST(cfg_warnings)
{
    struct lg_model_config c;
    CHECK(read_tiny("llama", "\"foo_bar\": 1, \"transformers_version\": \"4.40\", \"unsloth_version\": \"x\", "
                             "\"use_cache\": false, \"rope_scaling\": {\"rope_type\": \"default\", \"factor\": 2.0}",
                    &c));
    ck_assert_msg(strstr(c.warnings, "unknown fields ignored: foo_bar, unsloth_version"), "%s", c.warnings);
    ck_assert_msg(strstr(c.warnings, "rope_scaling.factor is not used by rope_type 'default'"), "%s", c.warnings);
    ck_assert(!strstr(c.warnings, "transformers_version") && !strstr(c.warnings, "use_cache"));
}
END_TEST

static void expect_same_config(const struct lg_model_config *a, const struct lg_model_config *b)
{
    ck_assert(a->family == b->family && a->hidden_size == b->hidden_size &&
              a->intermediate_size == b->intermediate_size && a->num_hidden_layers == b->num_hidden_layers);
    ck_assert(a->num_attention_heads == b->num_attention_heads && a->num_key_value_heads == b->num_key_value_heads &&
              a->head_dim == b->head_dim && a->vocab_size == b->vocab_size);
    ck_assert(a->max_position_embeddings == b->max_position_embeddings && a->rms_norm_eps == b->rms_norm_eps &&
              a->rope_theta == b->rope_theta && a->rope_llama3 == b->rope_llama3);
    ck_assert(a->rope_factor == b->rope_factor && a->rope_low_freq_factor == b->rope_low_freq_factor &&
              a->rope_high_freq_factor == b->rope_high_freq_factor &&
              a->rope_original_max_position == b->rope_original_max_position);
    ck_assert(a->tie_word_embeddings == b->tie_word_embeddings && a->qkv_bias == b->qkv_bias &&
              a->o_bias == b->o_bias && a->has_dtype == b->has_dtype && (!a->has_dtype || a->dtype == b->dtype));
    ck_assert(a->bos_token_id == b->bos_token_id && a->n_eos == b->n_eos);
    for (int i = 0; i < a->n_eos; i++)
        ck_assert_int_eq(a->eos_token_id[i], b->eos_token_id[i]);
}

START_TEST(cfg_write_roundtrip)
{
    struct lg_model_config c, back;
    put_text(at("config.json"), llama31_v4);
    CHECK(lg_model_config_read(dir, &c));
    CHECK(lg_model_config_write(at("out.json"), &c));
    char *text = lg_test_slurp(at("out.json"), NULL);
    ck_assert_msg(strstr(text, "\"rms_norm_eps\": 1e-5,") && strstr(text, "\"rope_theta\": 500000.0,") &&
                      strstr(text, "\"rope_type\": \"llama3\"") && strstr(text, "\"torch_dtype\": \"bfloat16\"") &&
                      text[strlen(text) - 1] == '\n',
                  "%s", text);
    free(text);
    CHECK(lg_model_config_read(at("out.json"), &back));
    expect_same_config(&c, &back);
    ck_assert_msg(back.warnings[0] == '\0', "%s", back.warnings);
    lg_model_config_defaults(LG_FAMILY_QWEN2, &c); /* the tiny test model's shape */
    c.hidden_size = 64, c.intermediate_size = 96, c.num_hidden_layers = 2, c.num_attention_heads = 4;
    c.num_key_value_heads = 2, c.head_dim = 24, c.vocab_size = 300, c.max_position_embeddings = 512;
    c.rms_norm_eps = 1e-6, c.tie_word_embeddings = 1, c.n_eos = 1, c.eos_token_id[0] = 2;
    CHECK(lg_model_config_write(at("q.json"), &c));
    CHECK(lg_model_config_read(at("q.json"), &back));
    expect_same_config(&c, &back);
    c.num_key_value_heads = 3;
    expect_fail(lg_model_config_write(at("q.json"), &c), LG_ERR_INVALID, "q.json: cannot write this config",
                "not a multiple of num_key_value_heads 3", NULL);
    c.num_key_value_heads = 2, c.o_bias = 1;
    expect_fail(lg_model_config_write(at("q.json"), &c), LG_ERR_INVALID, "Qwen2 always has q/k/v biases", NULL);
}
END_TEST

/* Every tensor the decoder reads for config c, F32 zeros except as `bad` says. */
static size_t decoder_tensors(const struct lg_model_config *c, struct lg_st_write_tensor *t, char (*names)[96],
                              const float *zeros)
{
    int64_t H = c->hidden_size, F = c->intermediate_size, Q = c->num_attention_heads * c->head_dim;
    int64_t KV = c->num_key_value_heads * c->head_dim, V = c->vocab_size;
    size_t n = 0;
#define ADD(nd, d0, d1, ...)                                                                                      \
    (snprintf(names[n], 96, __VA_ARGS__),                                                                       \
     t[n] = (struct lg_st_write_tensor){.name = names[n], .dtype = LG_ST_F32, .ndim = nd, .shape = {d0, d1},   \
                                        .data = zeros},                                                         \
     n++)
    ADD(2, V, H, "model.embed_tokens.weight");
    ADD(1, H, 0, "model.norm.weight");
    ADD(2, V, H, "lm_head.weight");
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const char *p[] = {"q", "k", "v"};
        int64_t out[] = {Q, KV, KV};
        for (int i = 0; i < 3; i++) {
            ADD(2, out[i], H, "model.layers.%d.self_attn.%s_proj.weight", l, p[i]);
            ADD(1, out[i], 0, "model.layers.%d.self_attn.%s_proj.bias", l, p[i]);
        }
        ADD(2, H, Q, "model.layers.%d.self_attn.o_proj.weight", l);
        ADD(1, H, 0, "model.layers.%d.input_layernorm.weight", l);
        ADD(1, H, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        ADD(2, F, H, "model.layers.%d.mlp.gate_proj.weight", l);
        ADD(2, F, H, "model.layers.%d.mlp.up_proj.weight", l);
        ADD(2, H, F, "model.layers.%d.mlp.down_proj.weight", l);
    }
#undef ADD
    return n;
}

START_TEST(cfg_check_weights)
{
    struct lg_model_config c;
    CHECK(read_tiny("qwen2", "\"num_key_value_heads\": 2", &c));
    static float zeros[100 * 128];
    struct lg_st_write_tensor t[64];
    char names[64][96];
    size_t n = decoder_tensors(&c, t, names, zeros);
    lg_st_t *st;
    CHECK(lg_st_write_model(at("m"), t, n, 20000, NULL)); /* sharded */
    CHECK(lg_st_open_model(at("m"), &st));
    CHECK(lg_model_config_check_weights(&c, st));
    lg_st_close(st);
    struct {
        const char *name;
        int what; /* 0: drop, 1: wrong shape, 2: int dtype */
        const char *frag;
    } cases[] = {
        {"model.layers.1.mlp.down_proj.weight", 0, "no tensor 'model.layers.1.mlp.down_proj.weight'"},
        {"model.layers.0.self_attn.k_proj.bias", 0, "no tensor 'model.layers.0.self_attn.k_proj.bias'"},
        {"model.layers.0.self_attn.o_proj.weight", 1, "tensor model.layers.0.self_attn.o_proj.weight: shape [64, 63], "
                                                      "expected [64, 64]"},
        {"model.norm.weight", 2, "tensor model.norm.weight: dtype I32, expected a float type"},
        {"lm_head.weight", 0, "no tensor 'lm_head.weight'"}, /* last: the tied check below reuses it */
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        struct lg_st_write_tensor u[64];
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(t[i].name, cases[k].name) == 0 && cases[k].what == 0)
                continue;
            u[m] = t[i];
            if (strcmp(t[i].name, cases[k].name) == 0 && cases[k].what == 1)
                u[m].shape[1]--;
            if (strcmp(t[i].name, cases[k].name) == 0 && cases[k].what == 2)
                u[m].dtype = LG_ST_I32;
            m++;
        }
        CHECK(lg_st_write_model(at("m"), u, m, 0, NULL));
        CHECK(lg_st_open_model(at("m"), &st));
        expect_fail(lg_model_config_check_weights(&c, st), LG_ERR_IO, at("m"), cases[k].frag, NULL);
        lg_st_close(st);
    }
    c.tie_word_embeddings = 1; /* then lm_head.weight may be absent */
    CHECK(lg_st_open_model(at("m"), &st));
    CHECK(lg_model_config_check_weights(&c, st));
    lg_st_close(st);
}
END_TEST

/* ---- PEFT ---- */

START_TEST(peft_roundtrip)
{
    struct lg_peft_config p = {.r = 16, .lora_alpha = 32, .lora_dropout = 0.05,
                               .target_modules = 1u << LG_PEFT_Q_PROJ | 1u << LG_PEFT_V_PROJ | 1u << LG_PEFT_DOWN_PROJ};
    snprintf(p.base_model_name_or_path, sizeof p.base_model_name_or_path, "meta-llama/Llama-3.1-8B");
    CHECK(lg_peft_config_write(at("ad"), &p));
    char *text = lg_test_slurp(at("ad/adapter_config.json"), NULL);
    const char *frags[] = {"\"lora_dropout\": 0.05,", "\"r\": 16,", "\"lora_alpha\": 32,", "\"peft_type\": \"LORA\"",
                           "\"task_type\": \"CAUSAL_LM\"", "\"use_dora\": false", "\"use_rslora\": false",
                           "\"rank_pattern\": {}", "\"modules_to_save\": null", "\"fan_in_fan_out\": false",
                           "\"inference_mode\": true", "\"bias\": \"none\"", "\"init_lora_weights\": true",
                           "\"base_model_name_or_path\": \"meta-llama/Llama-3.1-8B\"", "\"q_proj\"", "\"down_proj\""};
    for (size_t i = 0; i < sizeof frags / sizeof *frags; i++)
        ck_assert_msg(strstr(text, frags[i]), "lacks %s:\n%s", frags[i], text);
    ck_assert(!strstr(text, "\"k_proj\"") && text[strlen(text) - 1] == '}');
    free(text);
    struct lg_peft_config q;
    CHECK(lg_peft_config_read(at("ad"), &q));
    ck_assert(q.r == 16 && q.lora_alpha == 32 && q.lora_dropout == 0.05 && q.target_modules == p.target_modules);
    ck_assert_str_eq(q.base_model_name_or_path, p.base_model_name_or_path);
    p.lora_alpha = 16.5, p.base_model_name_or_path[0] = '\0', p.target_modules = LG_PEFT_ALL_MODULES;
    CHECK(lg_peft_config_write(at("ad"), &p));
    CHECK(lg_peft_config_read(at("ad/adapter_config.json"), &q));
    ck_assert(q.lora_alpha == 16.5 && q.base_model_name_or_path[0] == '\0' && q.target_modules == LG_PEFT_ALL_MODULES);
    p.r = 0;
    expect_fail(lg_peft_config_write(at("ad"), &p), LG_ERR_INVALID, "r = 0", NULL);
}
END_TEST

START_TEST(peft_refused)
{
    static const struct {
        const char *extra, *frag;
    } cases[] = {
        {"\"use_dora\": true", "use_dora is not supported"},
        {"\"use_rslora\": true", "use_rslora is not supported"},
        {"\"rank_pattern\": {\"q_proj\": 8}", "rank_pattern is not supported"},
        {"\"alpha_pattern\": {\"q_proj\": 8}", "alpha_pattern is not supported"},
        {"\"fan_in_fan_out\": true", "fan_in_fan_out is not supported"},
        {"\"bias\": \"all\"", "bias 'all' is not supported"},
        {"\"lora_bias\": true", "lora_bias is not supported"},
        {"\"modules_to_save\": [\"lm_head\"]", "modules_to_save is not supported"},
        {"\"layers_to_transform\": [0, 1]", "layers_to_transform is not supported"},
        {"\"target_modules\": \"q_proj|v_proj\"", "target_modules 'q_proj|v_proj' is a regex"},
        {"\"target_modules\": [\"q_proj\", \"lm_head\"]", "target_modules[1] 'lm_head' is not supported"},
        {"\"peft_type\": \"IA3\"", "peft_type 'IA3' is not supported"},
        {"\"task_type\": \"SEQ_CLS\"", "task_type 'SEQ_CLS' is not supported"},
        {"\"init_lora_weights\": \"pissa_niter_4\"", "init_lora_weights 'pissa_niter_4' is not supported"},
    };
    struct lg_peft_config q;
    char text[1024];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        /* the override comes first; jansson would refuse a duplicate, so the base omits that key */
        const char *key = strtok(strcpy(text, cases[i].extra), ":"), *base[] = {
            "\"peft_type\": \"LORA\"", "\"task_type\": \"CAUSAL_LM\"", "\"r\": 8", "\"target_modules\": [\"q_proj\"]"};
        char json[1024];
        size_t k = (size_t)snprintf(json, sizeof json, "{%s", cases[i].extra);
        for (int b = 0; b < 4; b++)
            if (strncmp(base[b], key, strlen(key)) != 0)
                k += (size_t)snprintf(json + k, sizeof json - k, ", %s", base[b]);
        snprintf(json + k, sizeof json - k, "}");
        put_text(at("adapter_config.json"), json);
        expect_fail(lg_peft_config_read(dir, &q), LG_ERR_UNSUPPORTED, at("adapter_config.json"), cases[i].frag, NULL);
    }
    put_text(at("adapter_config.json"), "{\"peft_type\": \"LORA\", \"task_type\": null, \"r\": 4, \"rank_pattern\": "
                                        "{}, \"modules_to_save\": null, \"target_modules\": \"all-linear\", "
                                        "\"init_lora_weights\": \"gaussian\"}");
    CHECK(lg_peft_config_read(dir, &q));
    ck_assert(q.r == 4 && q.lora_alpha == 8 && q.target_modules == LG_PEFT_ALL_MODULES);
    put_text(at("adapter_config.json"), "{\"peft_type\": \"LORA\", \"r\": 0, \"target_modules\": [\"q_proj\"]}");
    expect_fail(lg_peft_config_read(dir, &q), LG_ERR_IO, "'r' must be a positive integer", NULL);
}
END_TEST

START_TEST(peft_names)
{
    char b[LG_PEFT_NAME_MAX];
    CHECK(lg_peft_tensor_name(3, "q_proj", 'A', b, sizeof b));
    ck_assert_str_eq(b, "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight");
    CHECK(lg_peft_tensor_name(0, "down_proj", 'B', b, sizeof b));
    ck_assert_str_eq(b, "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight");
    for (int m = 0; m < LG_PEFT_MODULE_COUNT; m++)
        ck_assert_int_eq(lg_peft_module_parse(lg_peft_module_name((enum lg_peft_module)m)), m);
    expect_fail(lg_peft_tensor_name(0, "lm_head", 'A', b, sizeof b), LG_ERR_INVALID, "unknown module 'lm_head'",
                NULL);
    expect_fail(lg_peft_tensor_name(0, "q_proj", 'C', b, sizeof b), LG_ERR_INVALID, "'A' or 'B'", NULL);
    expect_fail(lg_peft_tensor_name(0, "q_proj", 'A', b, 20), LG_ERR_INVALID, "too small", NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hf_config");
    TCase *tc = tcase_create("config");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, cfg_llama_v4_v5);
    tcase_add_test(tc, cfg_qwen2_and_defaults);
    tcase_add_test(tc, cfg_refused);
    tcase_add_test(tc, cfg_warnings);
    tcase_add_test(tc, cfg_write_roundtrip);
    tcase_add_test(tc, cfg_check_weights);
    tcase_add_test(tc, peft_roundtrip);
    tcase_add_test(tc, peft_refused);
    tcase_add_test(tc, peft_names);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0);
}
