/* lg_gen.h: specs and the kernel generator.
 *
 * A spec (a file under specs/) states layer shapes, LoRA settings, dtype and target archs; lg_spec_load runs it in
 * the Lua sandbox, validates it and reports every error as "specs/x.lua:LINE: error: field: message".
 * The generator (the Lua modules under generator/, embedded) turns a kernel configuration into stamped,
 * deterministic CUDA source with #line directives into templates/. It is also the one place that states the
 * kernels' shape rules (lg_gen_limits_get) and which kernels a LoRA layer launches (lg_gen_layer_kernels): the
 * runtime asks it rather than keeping copies.
 *
 * Ownership: lg_spec_load allocates a struct lg_spec freed by lg_spec_free. lg_gen_t owns its Lua state.
 * Sources returned in struct lg_kernel_src belong to the caller (lg_kernel_src_free).
 *
 *   struct lg_spec *spec;
 *   if (lg_spec_load("specs/llama-3.1-8b.lua", &spec) != LG_OK) { puts(lg_last_error()); return 1; }
 *   lg_gen_t *gen;  lg_gen_init(&gen);
 *   struct lg_kernel_cfg cfg = { .op = LG_OP_DOWN, .dtype = spec->dtype, .rank = spec->rank, .drop = 1 };
 *   struct lg_kernel_src src;
 *   lg_gen_kernel(gen, &cfg, "runtime", &src);   // src.name, src.source, src.threads, src.hash
 *   lg_kernel_src_free(&src); lg_gen_free(gen); lg_spec_free(spec);
 */
#ifndef LG_GEN_H
#define LG_GEN_H

#include "lg_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LG_MAX_ARCHS 8
#define LG_NAME_MAX 96

struct lg_linear {
    char name[32];
    int64_t in_features;  /* K */
    int64_t out_features; /* M */
    int bias;
};

/* A spec's decoder (its `model` table), defaults filled in as transformers assumes them for the family. */
struct lg_spec_model {
    int present; /* 0 when the spec gives explicit `linears` instead */
    int qwen2;   /* family "qwen2" (q/k/v biases); else "llama" */
    int hidden_size, intermediate_size, num_attention_heads, num_key_value_heads, head_dim;
    int num_hidden_layers, vocab_size;
    int attention_bias, tie_word_embeddings;
    double rope_theta, rms_norm_eps;
    int rope_llama3;
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_position;
};

struct lg_spec {
    char *name;
    char *path;
    enum lg_dtype dtype;
    int rank;
    double alpha, dropout;
    int tokens; /* token count the benchmarks and tuner use by default */
    int layers;
    int archs[LG_MAX_ARCHS]; /* 80, 89, 90 */
    int narchs;
    struct lg_linear *linears; /* the targeted linear layers, in spec order */
    int nlinears;
    struct lg_spec_model model;
};

LG_API enum lg_status lg_spec_load(const char *path, struct lg_spec **out);
LG_API void lg_spec_free(struct lg_spec *spec);

/* The ops, in the order generator/kernels.lua lists its families' ops (generator/ops/<family>.lua). The names
 * (lg_kernel_op_name) are the generator's; lg_gen_init fails when the two lists differ. */
enum lg_kernel_op {
    LG_OP_DOWN = 0,         /* lora: forward down-projection S = s·D(X)·Aᵀ */
    LG_OP_DY,               /* lora: backward pass over dY (partial dS, dB) */
    LG_OP_DA,               /* lora: backward pass over X (partial dA, masked dX) */
    LG_OP_REDUCE,           /* lora: deterministic second stage of the reductions */
    LG_OP_PEFT_DROPOUT,     /* peft: the unfused baseline's elementwise kernels (bench_lora) */
    LG_OP_PEFT_DROPOUT_BWD,
    LG_OP_PEFT_AXPY,
    LG_OP_PEFT_SCALE,
    LG_OP_MLORA_DOWN,       /* mlora: down-projection of every adapter and merged module (lg_mlora.h) */
    LG_OP_MLORA_DY,         /* mlora: pass over dY (partial dS, dB per segment) */
    LG_OP_MLORA_DA,         /* mlora: pass over X (partial dA per segment and module, masked dX) */
    LG_OP_MLORA_EXPAND,     /* mlora: strategy (b)'s segmented Y += S·Bᵀ */
    LG_OP_MLORA_REDUCE,     /* mlora: second stage of the per-slot reductions */
    LG_OP_ATTN_SCHED,       /* attn: block table (sample, block), longest work first (lg_attention.h) */
    LG_OP_ATTN_FWD,         /* attn: flash-attention forward, O and LSE */
    LG_OP_ATTN_BWD_PRE,     /* attn: D = rowsum(dO ∘ O) */
    LG_OP_ATTN_BWD_DKV,     /* attn: dK, dV per key block (atomic: also dQ) */
    LG_OP_ATTN_BWD_DQ,      /* attn: deterministic dQ per query block */
    LG_OP_ATTN_DQ_CVT,      /* attn: dQ from the atomic pass's fp32 sums */
    LG_OP_NORM_FWD,         /* decoder: fused residual add + RMSNorm, row in registers (lg_decoder_ops.h) */
    LG_OP_NORM_BWD,         /* decoder: its backward (+ residual gradient) */
    LG_OP_NORM_LORA_FWD,    /* decoder: the norm forward with S of the projections reading y (16-row tiles) */
    LG_OP_NORM_LORA_BWD,    /* decoder: the norm backward with their masked dX correction folded in */
    LG_OP_ROPE,             /* decoder: rotary embedding in place, forward and backward */
    LG_OP_SWIGLU_FWD,       /* decoder: silu(g)·u */
    LG_OP_SWIGLU_BWD,       /* decoder: dg, du */
    LG_OP_SWIGLU_LORA_FWD,  /* decoder: silu(g)·u with down_proj's S */
    LG_OP_EMBED,            /* decoder: embedding gather */
    LG_OP_XENT,             /* decoder: softmax + loss + dlogits of an LM-head chunk, in place */
    LG_OP_ADAMW_SQ,         /* decoder: AdamW, per-chunk sums of g² */
    LG_OP_ADAMW_FIN,        /* decoder: AdamW, global norm, clip, step, skip flag */
    LG_OP_ADAMW_UPD,        /* decoder: AdamW, the update of every tensor (and its half copy) */
    LG_OP_COUNT
};
LG_API const char *lg_kernel_op_name(enum lg_kernel_op op);

/* The integer fields of a kernel configuration, one X(name) each. struct lg_kernel_cfg is built from this list
 * and so is runtime/gen's {name, offset} table (lg_kernel_fields), through which a configuration goes to the
 * generator, comes back, and is written to `loragen gen`'s manifest. The ops' parameters in
 * generator/ops/<family>.lua carry these names; lg_gen_init fails (and tests/test_gen_truth.c) when one has no
 * field here. So a new tile parameter is one entry in the op's Lua table plus one line here. */
#define LG_KERNEL_CFG_FIELDS(X)                                                                                \
    X(rank)     /* LoRA rank; 0 for the rankless ops (reduce, peft_*) */                                       \
    X(fuse)     /* DA: add the masked dX correction */                                                         \
    X(drop)     /* DOWN, DA: apply the dropout mask */                                                         \
    X(out_half) /* REDUCE: dtype rows instead of fp32 */                                                       \
    X(wm)       /* DOWN: warps over tokens */                                                                  \
    X(wk)       /* DOWN: warps over K */                                                                       \
    X(mt)       /* DOWN: 16-row MMA tiles per warp */                                                          \
    X(u)        /* DOWN: K-loop unroll */                                                                      \
    X(nct)      /* DY: 64-column tiles per block */                                                            \
    X(st)       /* DY: cp.async pipeline stages */                                                             \
    X(minb)     /* DOWN, DY, DA: blocks per SM the register allocation must allow (1: no bound) */          \
    X(nmod)     /* MLORA_DOWN, MLORA_DA: modules (merged projections) sharing one input */                 \
    X(hd)       /* ATTN_*: head dim (the tiled ATTN ops also take st) */                                       \
    X(bm)       /* ATTN_FWD, ATTN_BWD_DKV, ATTN_BWD_DQ: query rows per block */                                \
    X(bn)       /* ATTN_FWD, ATTN_BWD_DQ: keys per block (ATTN_BWD_DKV: 16 per warp) */                        \
    X(nw)       /* ATTN_FWD, ATTN_BWD_DKV, ATTN_BWD_DQ: warps per block */                                     \
    X(atomic)   /* ATTN_BWD_DKV: also accumulate dQ with fp32 atomics (fast, not bitwise reproducible) */ \
    X(vpt)      /* NORM_FWD, NORM_BWD: 8-value vectors per thread (row length <= 1024 vpt) */                 \
    X(nlora)    /* NORM_LORA_*: adapted projections reading the norm's output (1..3) */

/* A kernel configuration. Fields the op does not take are ignored; zero tile and switch fields take the
 * generator's defaults (rank has none). */
struct lg_kernel_cfg {
    enum lg_kernel_op op;
    enum lg_dtype dtype;
#define LG_KERNEL_CFG_INT(name) int name;
    LG_KERNEL_CFG_FIELDS(LG_KERNEL_CFG_INT)
#undef LG_KERNEL_CFG_INT
};

/* One integer field of struct lg_kernel_cfg: its name (the generator's parameter name) and offset. */
struct lg_kernel_field {
    const char *name;
    size_t offset;
};
/* The fields in LG_KERNEL_CFG_FIELDS order; *count of them (at most 32). Static storage. */
LG_API const struct lg_kernel_field *lg_kernel_fields(int *count);
/* The value of field f (an entry of lg_kernel_fields) in c. */
LG_API int lg_kernel_cfg_get(const struct lg_kernel_cfg *c, const struct lg_kernel_field *f);

struct lg_kernel_src {
    char name[LG_NAME_MAX];
    char *source;
    char hash[33];            /* lg_hash128 of source, 32 hex digits: its fingerprint in manifests */
    int threads;
    struct lg_kernel_cfg cfg; /* with defaults filled in */
    unsigned fields;          /* bit i: the op takes lg_kernel_fields()[i] (what a manifest lists) */
};
LG_API void lg_kernel_src_free(struct lg_kernel_src *src);

/* The kernels' shape rules, from the generator (generator/limits.lua), which also checks specs against them.
 * Read once per process; the first call runs the generator. */
struct lg_gen_limits {
    int rank_min, rank_max, rank_multiple; /* rank: a multiple of rank_multiple in rank_min..rank_max */
    int feature_multiple;                  /* in_features and out_features: multiples of this */
    unsigned dtypes;                       /* bit (1u << enum lg_dtype): the dtypes the kernels take */
    int mlora_rank_min, mlora_rank_max, mlora_rank_multiple; /* a FusedMultiLoRA slot's rank (lg_mlora.h) */
};
LG_API enum lg_status lg_gen_limits_get(struct lg_gen_limits *out);
/* 1 when rank satisfies the rule in l. */
LG_API int lg_gen_limits_rank_ok(const struct lg_gen_limits *l, int rank);

typedef struct lg_gen lg_gen_t;
LG_API enum lg_status lg_gen_init(lg_gen_t **out);
LG_API void lg_gen_free(lg_gen_t *gen);

/* Source for one configuration; `origin` is stamped into its first line (a spec path, or "runtime"). */
LG_API enum lg_status lg_gen_kernel(lg_gen_t *gen, const struct lg_kernel_cfg *cfg, const char *origin,
                             struct lg_kernel_src *out);

/* The kernels one LoRA layer launches, one per situation of runtime/ops/lora.c. generator/ops/lora.lua
 * (layer_slots) chooses the configuration for each; the runtime adds only its tuned tiles. */
enum lg_layer_slot {
    LG_SLOT_DOWN = 0,      /* forward: S */
    LG_SLOT_DY,            /* backward pass over dY */
    LG_SLOT_REDUCE_DA,     /* dA = sum of partials (fp32) */
    LG_SLOT_REDUCE_DS_DB,  /* dS (dtype rows) and dB (fp32) in one launch */
    LG_SLOT_DA_DX_TAIL,    /* pass over X, dX wanted and dS in dY's tail (extended-K dX GEMM possible) */
    LG_SLOT_DA_DX,         /* pass over X, dX wanted and dS apart */
    LG_SLOT_DA_NO_DX,      /* pass over X, no dX */
    LG_SLOT_COUNT
};
LG_API const char *lg_layer_slot_name(enum lg_layer_slot slot);

/* out[slot]: the configuration (defaults not yet filled in) each slot of a layer of (dtype, rank, dropout)
 * launches. */
LG_API enum lg_status lg_gen_layer_kernels(lg_gen_t *gen, enum lg_dtype dtype, int rank, double dropout,
                                    struct lg_kernel_cfg out[LG_SLOT_COUNT]);

/* Every kernel a spec needs (generator/plan.lua), deduplicated, in a fixed order. *out is an array of *count
 * entries; free each with lg_kernel_src_free, then free(*out). */
LG_API enum lg_status lg_gen_spec_kernels(lg_gen_t *gen, const struct lg_spec *spec, struct lg_kernel_src **out,
                                   int *count);

/* Every valid configuration of `op` for (dtype, rank): all switch values and tile variants. For the tuner and
 * the compile-every-switch tests. *out is malloc'd. */
LG_API enum lg_status lg_gen_variants(lg_gen_t *gen, enum lg_kernel_op op, enum lg_dtype dtype, int rank,
                               struct lg_kernel_cfg **out, int *count);

/* What one configuration asks of an SM, estimated by the generator without compiling (generator/resources.lua):
 * for the tuner's pruning against each arch's limits (lg_tune.h). regs is a lower bound on the registers per
 * thread the kernel needs without spilling; minb the blocks per SM its __launch_bounds__ asks for (1: none). */
struct lg_kernel_res {
    int threads;
    int smem; /* bytes per block, static + dynamic */
    int regs;
    int minb;
};
LG_API enum lg_status lg_gen_resources(lg_gen_t *gen, const struct lg_kernel_cfg *cfg, struct lg_kernel_res *out);

/* The text of a shipped source file ("templates/common/lg_philox.h"), from the copy embedded at build time; NULL if
 * there is none. For benchmarks and tools that build kernels of their own on the same helpers. */
LG_API const char *lg_gen_template_source(const char *path);

/* Where the masked LoRA dX correction keep·mask ⊙ (dS·A) of a projection goes (generator/ops/decoder.lua,
 * dx_correction): in the extended-K dX GEMM (no dropout, dS in dY's tail), folded into the norm backward that
 * reads dX next (lg_norm_backward's correct = 1), or in FusedLoRA's dA pass. dropout: the effective rate (0
 * when it rounds to no mask). */
enum lg_dx_placement { LG_DX_IN_GEMM = 0, LG_DX_IN_NORM = 1, LG_DX_IN_DA = 2 };
LG_API enum lg_status lg_gen_dx_correction(lg_gen_t *gen, double dropout, int ds_in_tail, int norm_follows,
                                           enum lg_dx_placement *out);

#ifdef __cplusplus
}
#endif
#endif
