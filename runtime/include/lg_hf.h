/* lg_hf.h: the Hugging Face files a LoRA trainer reads and writes: safetensors weights (one file or a sharded
 * model directory), a model's config.json (Llama and Qwen2), and PEFT adapter directories
 * (adapter_config.json + adapter_model.safetensors), so that what loragen trains loads unchanged in
 * transformers and PEFT, and what they wrote loads here.
 *
 * Everything read is checked before use, and every error names the file and the tensor or field at fault:
 *   LG_ERR_IO           a file is missing, unreadable or malformed (bad header, offsets, JSON, shapes);
 *   LG_ERR_UNSUPPORTED  a valid file asks for what loragen does not implement (a rope type, an activation,
 *                       sliding-window attention, a DoRA adapter, a dtype read_f32 cannot convert);
 *   LG_ERR_INVALID      a bad argument (NULL, a struct that cannot be written, a tensor name too long);
 *   LG_ERR_OOM          an allocation failed.
 *
 * Objects and ownership:
 *   lg_st_t   an open safetensors file or model directory: every file is memory-mapped read-only until
 *             lg_st_close. struct lg_st_tensor views (name, file, data) point into the handle and stay valid
 *             until it is closed. The data pointer is not necessarily aligned for its dtype.
 *   struct lg_model_config, struct lg_peft_config: plain values with no pointers (warnings and names are
 *             inline arrays); nothing to free.
 *   Writers borrow their inputs for the duration of the call.
 *
 * Usage (loading a base model):
 *   struct lg_model_config cfg;
 *   lg_st_t *st;
 *   if (lg_model_config_read("models/llama", &cfg) != LG_OK ||
 *       lg_st_open_model("models/llama", &st) != LG_OK ||
 *       lg_model_config_check_weights(&cfg, st) != LG_OK)
 *       fprintf(stderr, "%s\n", lg_last_error());
 *   if (cfg.warnings[0]) fprintf(stderr, "warning: %s\n", cfg.warnings);
 *   int64_t shape[2] = {cfg.vocab_size, cfg.hidden_size};
 *   float *emb = malloc(sizeof(float) * shape[0] * shape[1]);
 *   lg_st_read_f32(st, "model.embed_tokens.weight", 2, shape, emb);   // bf16/fp16/fp32 -> fp32
 *   lg_st_close(st);
 *
 * Usage (saving an adapter PEFT loads with PeftModel.from_pretrained(base, "out/adapter")):
 *   struct lg_peft_config pc = {.r = 16, .lora_alpha = 32, .lora_dropout = 0.05,
 *                               .target_modules = LG_PEFT_ALL_MODULES};
 *   snprintf(pc.base_model_name_or_path, sizeof pc.base_model_name_or_path, "meta-llama/Llama-3.1-8B");
 *   lg_peft_config_write("out/adapter", &pc);
 *   char name[LG_PEFT_NAME_MAX];
 *   lg_peft_tensor_name(0, "q_proj", 'A', name, sizeof name);  // base_model.model.model.layers.0....lora_A.weight
 *   struct lg_st_write_tensor t = {.name = name, .dtype = LG_ST_F32, .ndim = 2, .shape = {16, 4096}, .data = a};
 *   lg_st_write("out/adapter/adapter_model.safetensors", &t, 1, NULL);
 */
#ifndef LG_HF_H
#define LG_HF_H

#include "lg_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- safetensors ---- */

/* The element types of the format, in the Rust library's order (ascending alignment): the writer lays tensors
 * out by descending dtype, then by name, exactly as safetensors.serialize does. */
enum lg_st_dtype {
    LG_ST_BOOL = 0,
    LG_ST_U8,
    LG_ST_I8,
    LG_ST_F8_E5M2,
    LG_ST_F8_E4M3,
    LG_ST_F8_E8M0,
    LG_ST_I16,
    LG_ST_U16,
    LG_ST_F16,
    LG_ST_BF16,
    LG_ST_I32,
    LG_ST_U32,
    LG_ST_F32,
    LG_ST_F64,
    LG_ST_I64,
    LG_ST_U64,
    LG_ST_DTYPE_COUNT
};

#define LG_ST_MAX_DIMS 8
#define LG_ST_HEADER_MAX (100ull * 1000 * 1000) /* the Rust library's MAX_HEADER_SIZE */

struct lg_st_tensor {
    const char *name; /* owned by the handle */
    const char *file; /* the path of the file holding it; owned by the handle */
    enum lg_st_dtype dtype;
    int ndim;
    int64_t shape[LG_ST_MAX_DIMS];
    int64_t numel;
    uint64_t nbytes;
    const void *data; /* into the read-only map; may be unaligned */
};

typedef struct lg_st lg_st_t;

/* Opens one .safetensors file: a regular file, the header length and header checked (valid JSON object, no
 * duplicate keys, known dtypes, shapes, offsets that tile the data exactly as the Rust library demands). */
LG_API enum lg_status lg_st_open(const char *path, lg_st_t **out);
/* Opens a model directory as transformers does: model.safetensors if present, else every shard that
 * model.safetensors.index.json names (a shard that is missing, or a weight_map tensor its shard lacks, is an
 * error naming both). The tensors of all shards form one namespace; a name in two shards is an error. A path
 * to a .safetensors file is opened as lg_st_open does. */
LG_API enum lg_status lg_st_open_model(const char *dir, lg_st_t **out);
LG_API void lg_st_close(lg_st_t *st);

/* The file or directory the handle was opened from. */
LG_API const char *lg_st_path(const lg_st_t *st);
LG_API size_t lg_st_count(const lg_st_t *st);
/* The i-th tensor in name order (strcmp). */
LG_API enum lg_status lg_st_tensor(const lg_st_t *st, size_t i, struct lg_st_tensor *out);
/* LG_ERR_IO "<path>: no tensor '<name>'" when absent. */
LG_API enum lg_status lg_st_find(const lg_st_t *st, const char *name, struct lg_st_tensor *out);
/* 1 when present, 0 otherwise; records no error (for optional tensors). */
LG_API int lg_st_contains(const lg_st_t *st, const char *name);
/* A __metadata__ value of the file (of the first shard for a sharded model); NULL when absent. */
LG_API const char *lg_st_metadata(const lg_st_t *st, const char *key);
/* Finds the tensor and checks that its shape is exactly shape[0..ndim): LG_ERR_IO "<path>: no tensor
 * '<name>'" or "<file>: tensor <name>: shape [a, b], expected [c, d]". out may be NULL. */
LG_API enum lg_status lg_st_check(const lg_st_t *st, const char *name, int ndim, const int64_t *shape,
                                  struct lg_st_tensor *out);
/* lg_st_check, then converts the BF16/F16/F32 elements to fp32 in out (numel floats). Other dtypes are
 * LG_ERR_UNSUPPORTED. */
LG_API enum lg_status lg_st_read_f32(const lg_st_t *st, const char *name, int ndim, const int64_t *shape,
                                     float *out);

/* "BF16", "F32", ...; and bytes per element. */
LG_API const char *lg_st_dtype_name(enum lg_st_dtype t);
LG_API size_t lg_st_dtype_size(enum lg_st_dtype t);
/* LG_BF16/LG_FP16/LG_FP32 to LG_ST_BF16/LG_ST_F16/LG_ST_F32. */
LG_API enum lg_st_dtype lg_st_dtype_of(enum lg_dtype t);

/* One tensor to write: its bytes come from `data` (nbytes = numel * dtype size, C order, little endian), or,
 * when data is NULL, from read(user, offset, buf, n) called for consecutive chunks (so a multi-GB merged
 * model never has to sit in host memory at once). */
struct lg_st_write_tensor {
    const char *name;
    enum lg_st_dtype dtype;
    int ndim;
    int64_t shape[LG_ST_MAX_DIMS];
    const void *data;
    enum lg_status (*read)(void *user, uint64_t offset, void *buf, size_t n);
    void *user;
};

/* Writes a .safetensors file as the Python library does: tensors by descending dtype then name, compact JSON
 * header padded with spaces to a multiple of 8, __metadata__ {"format": "pt"} plus metadata_kv (NULL, or
 * key, value, key, value, ..., NULL). Streams into a temp file in the same directory, fsyncs, renames: a
 * reader sees the old file or the whole new one. */
LG_API enum lg_status lg_st_write(const char *path, const struct lg_st_write_tensor *t, size_t n,
                                  const char *const *metadata_kv);
/* Writes a model directory as transformers' save_pretrained does: model.safetensors when the tensors fit in
 * max_shard_bytes (0: no limit), else model-00001-of-0000N.safetensors shards (split as huggingface_hub does:
 * filled in the given order, a tensor larger than the limit alone in its shard) and model.safetensors.index.json
 * (metadata.total_size and total_parameters, weight_map). The index is written last, and a stale single file,
 * index or shard of an earlier save is removed, so the directory never names a mix of old and new files. */
LG_API enum lg_status lg_st_write_model(const char *dir, const struct lg_st_write_tensor *t, size_t n,
                                        uint64_t max_shard_bytes, const char *const *metadata_kv);

/* ---- config.json ---- */

enum lg_model_family { LG_FAMILY_LLAMA = 1, LG_FAMILY_QWEN2 = 2 };

#define LG_MODEL_MAX_EOS 8
#define LG_MODEL_WARNINGS_MAX 1024

struct lg_model_config {
    enum lg_model_family family; /* model_type "llama"/"qwen2", architectures *ForCausalLM */
    int hidden_size;
    int intermediate_size;
    int num_hidden_layers;
    int num_attention_heads;
    int num_key_value_heads; /* default: num_attention_heads */
    int head_dim;            /* default: hidden_size / num_attention_heads */
    int vocab_size;
    int max_position_embeddings;
    double rms_norm_eps;
    double rope_theta;                     /* default 10000 */
    int rope_llama3;                       /* rope_type "llama3"; 0: plain RoPE */
    double rope_factor;                    /* the llama3 parameters (0 when rope_llama3 is 0) */
    double rope_low_freq_factor;
    double rope_high_freq_factor;
    int rope_original_max_position;        /* original_max_position_embeddings */
    int tie_word_embeddings;               /* lm_head shares model.embed_tokens.weight */
    int qkv_bias;                          /* q/k/v_proj have biases: always for Qwen2, attention_bias for Llama */
    int o_bias;                            /* o_proj has a bias: Llama with attention_bias */
    int has_dtype;                         /* torch_dtype / dtype given and one of bf16, fp16, fp32 */
    enum lg_dtype dtype;                   /* informational: the dtype the weights were saved in */
    int64_t bos_token_id;                  /* informational; -1 when absent */
    int n_eos;                             /* informational: eos_token_id, an int or a list */
    int64_t eos_token_id[LG_MODEL_MAX_EOS];
    char warnings[LG_MODEL_WARNINGS_MAX];  /* unknown fields that were ignored ("" when none) */
};

/* Defaults for a family (what transformers assumes for absent fields): eps 1e-6, theta 10000, no rope
 * scaling, no ids, no dtype, Qwen2's q/k/v biases; the sizes are 0 and must be set before lg_model_config_write. */
LG_API void lg_model_config_defaults(enum lg_model_family family, struct lg_model_config *out);
/* Checks a config as the reader does after parsing (sizes positive, heads a multiple of the KV heads, an even
 * head_dim, positive eps and theta, sane llama3 factors, the biases a family can express); LG_ERR_INVALID
 * naming the field. */
LG_API enum lg_status lg_model_config_validate(const struct lg_model_config *c);
/* Reads config.json (path is the file or the directory holding it), in the transformers 4.x layout (rope_theta,
 * rope_scaling {"rope_type" or "type", ...}, torch_dtype) or the 5.x one (rope_parameters {"rope_type",
 * "rope_theta", ...}, dtype). Fields that change the math and are not implemented are LG_ERR_UNSUPPORTED
 * naming the file and the field; unknown fields are listed in out->warnings. */
LG_API enum lg_status lg_model_config_read(const char *path, struct lg_model_config *out);
/* Writes config.json in the 4.x layout, which transformers 4.x and 5.x both load. Atomic. */
LG_API enum lg_status lg_model_config_write(const char *path, const struct lg_model_config *c);
/* Checks that every tensor the decoder reads is in st with its shape and a float dtype (F32/F16/BF16), and
 * reports the first one missing or wrong, naming the model path and the tensor. */
LG_API enum lg_status lg_model_config_check_weights(const struct lg_model_config *c, const lg_st_t *st);

/* ---- PEFT adapters ---- */

/* The projections LoRA can target, in PEFT's names; bit (1u << m) of a target mask. */
enum lg_peft_module {
    LG_PEFT_Q_PROJ = 0,
    LG_PEFT_K_PROJ,
    LG_PEFT_V_PROJ,
    LG_PEFT_O_PROJ,
    LG_PEFT_GATE_PROJ,
    LG_PEFT_UP_PROJ,
    LG_PEFT_DOWN_PROJ,
    LG_PEFT_MODULE_COUNT
};
#define LG_PEFT_ALL_MODULES ((1u << LG_PEFT_MODULE_COUNT) - 1)
#define LG_PEFT_NAME_MAX 128

struct lg_peft_config {
    int r;
    double lora_alpha;
    double lora_dropout;
    unsigned target_modules;               /* mask over enum lg_peft_module */
    char base_model_name_or_path[1024];    /* "" writes null */
    /* Always bias "none", task_type "CAUSAL_LM", peft_type "LORA": what loragen trains and reads. */
};

/* "q_proj" ... "down_proj" (NULL out of range); the module for a name, or -1. */
LG_API const char *lg_peft_module_name(enum lg_peft_module m);
LG_API int lg_peft_module_parse(const char *name);
/* Writes dir/adapter_config.json as PEFT's save_pretrained does (sorted keys, indent 2) with exactly the
 * LoraConfig fields of PEFT 0.10, which every PEFT from 0.10 on loads unchanged (PEFT before 0.14 refuses unknown
 * keys; later fields keep their defaults). Creates dir. Atomic. */
LG_API enum lg_status lg_peft_config_write(const char *dir, const struct lg_peft_config *cfg);
/* Reads adapter_config.json (path is the file or its directory) to continue from an adapter. Refuses, naming
 * the field, what would change the math here: use_dora, use_rslora, non-empty rank_pattern/alpha_pattern,
 * fan_in_fan_out, bias other than "none", lora_bias, modules_to_save, layers_to_transform, a target_modules
 * regex or a module other than the seven, an init that rewrites the base weights (pissa, olora, corda, loftq),
 * and the like. */
LG_API enum lg_status lg_peft_config_read(const char *path, struct lg_peft_config *out);
/* "base_model.model.model.layers.{layer}.{self_attn|mlp}.{module}.lora_{A|B}.weight". lora_A is [r, in],
 * lora_B is [out, r]. LG_ERR_INVALID for an unknown module, ab other than 'A'/'B', or a buffer too small. */
LG_API enum lg_status lg_peft_tensor_name(int layer, const char *module, char ab, char *buf, size_t n);

#ifdef __cplusplus
}
#endif
#endif
