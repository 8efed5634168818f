/* cmd_init_model.c: `loragen init-model SPEC OUT`: a Hugging Face model directory with random weights for
 * the spec's decoder (its `model` table): the tiny model the README's first command trains on the CPU, and
 * the 8B- and 70B-shaped models the benchmarks train. The same seed writes the same bytes. */
#include "cli.h"
#include "lg_gen.h"
#include "lg_hf.h"
#include "lg_train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: loragen init-model SPEC OUT_DIR [--seed N] [--dtype bf16|fp16|fp32] [--layers N]\n\n"
               "Writes OUT_DIR/config.json and model.safetensors with random weights (normal, std 0.02; norms 1)\n"
               "for the decoder SPEC describes (e.g. specs/tiny.lua). Default seed 1, dtype: the spec's;\n"
               "--layers N writes N decoder layers instead of the spec's count (benchmarks: bench/bench_layer.sh).\n");
}

static struct lg_model_config config_of(const struct lg_spec_model *m)
{
    struct lg_model_config c;
    lg_model_config_defaults(m->qwen2 ? LG_FAMILY_QWEN2 : LG_FAMILY_LLAMA, &c);
    c.hidden_size = m->hidden_size;
    c.intermediate_size = m->intermediate_size;
    c.num_attention_heads = m->num_attention_heads;
    c.num_key_value_heads = m->num_key_value_heads;
    c.head_dim = m->head_dim;
    c.num_hidden_layers = m->num_hidden_layers;
    c.vocab_size = m->vocab_size;
    c.rms_norm_eps = m->rms_norm_eps;
    c.rope_theta = m->rope_theta;
    c.rope_llama3 = m->rope_llama3;
    c.rope_factor = m->rope_factor;
    c.rope_low_freq_factor = m->rope_low_freq_factor;
    c.rope_high_freq_factor = m->rope_high_freq_factor;
    c.rope_original_max_position = m->rope_original_max_position;
    c.tie_word_embeddings = m->tie_word_embeddings;
    if (!m->qwen2)
        c.qkv_bias = c.o_bias = m->attention_bias;
    if (c.max_position_embeddings <= 0)
        c.max_position_embeddings = m->rope_llama3 ? 131072 : 32768;
    return c;
}

int lg_cmd_init_model(int argc, char **argv)
{
    const char *spec_path = NULL, *out = NULL, *dtype = NULL;
    unsigned long long seed = 1;
    long layers = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--seed") && i + 1 < argc) {
            char *end;
            seed = strtoull(argv[++i], &end, 10);
            if (*end) {
                lg_cli_error("init-model", "--seed needs an integer, not '%s'", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--layers") && i + 1 < argc) {
            char *end;
            layers = strtol(argv[++i], &end, 10);
            if (*end || layers < 1 || layers > 1024) {
                lg_cli_error("init-model", "--layers needs an integer in 1..1024, not '%s'", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--dtype") && i + 1 < argc) {
            dtype = argv[++i];
        } else if (a[0] == '-' || (spec_path && out)) {
            lg_cli_error("init-model", "unexpected argument '%s' (see loragen init-model --help)", a);
            return 2;
        } else if (!spec_path) {
            spec_path = a;
        } else {
            out = a;
        }
    }
    if (!spec_path || !out) {
        usage(stderr);
        return 2;
    }
    struct lg_spec *spec;
    if (lg_spec_load(spec_path, &spec) != LG_OK) {
        lg_cli_error("init-model", "%s", lg_last_error());
        return 1;
    }
    enum lg_dtype dt = spec->dtype;
    if (dtype && lg_dtype_parse(dtype, &dt) != LG_OK) {
        lg_spec_free(spec);
        lg_cli_error("init-model", "--dtype %s: expected bf16, fp16 or fp32", dtype);
        return 2;
    }
    if (!spec->model.present) {
        lg_spec_free(spec);
        lg_cli_error("init-model", "%s gives explicit linears, not a model: a model needs a `model` table", spec_path);
        return 1;
    }
    struct lg_model_config c = config_of(&spec->model);
    lg_spec_free(spec);
    if (layers)
        c.num_hidden_layers = (int)layers;
    if (lg_model_write_random(&c, dt, out, seed) != LG_OK) {
        lg_cli_error("init-model", "%s", lg_last_error());
        return 1;
    }
    printf("wrote %s: %d layers, hidden %d, vocab %d, %s, seed %llu\n", out, c.num_hidden_layers, c.hidden_size,
           c.vocab_size, lg_dtype_name(dt), seed);
    return 0;
}
