/* lg_gen.h: specs and the kernel generator.
 *
 * A spec (a file under specs/) states layer shapes, LoRA settings, dtype and target archs; lg_spec_load runs it in
 * the Lua sandbox, validates it and reports every error as "specs/x.lua:LINE: error: field: message".
 * The generator (the Lua modules under generator/, embedded) turns a kernel configuration into stamped, deterministic CUDA
 * source with #line directives into templates/.
 *
 * Ownership: lg_spec_load allocates a struct lg_spec freed by lg_spec_free. lg_gen_t owns its Lua state.
 * Sources returned in struct lg_kernel_src belong to the caller (lg_kernel_src_free).
 *
 *   struct lg_spec *spec;
 *   if (lg_spec_load("specs/llama-3.1-8b.lua", &spec) != LG_OK) { puts(lg_last_error()); return 1; }
 *   lg_gen_t *gen;  lg_gen_init(&gen);
 *   struct lg_kernel_cfg cfg = { .op = LG_OP_DOWN, .dtype = spec->dtype, .rank = spec->rank, .drop = 1 };
 *   struct lg_kernel_src src;
 *   lg_gen_kernel(gen, &cfg, "runtime", &src);   // src.name, src.source, src.threads
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
};

LG_API enum lg_status lg_spec_load(const char *path, struct lg_spec **out);
LG_API void lg_spec_free(struct lg_spec *spec);

enum lg_kernel_op { LG_OP_DOWN = 0, LG_OP_DY, LG_OP_DA, LG_OP_REDUCE, LG_OP_COUNT };
LG_API const char *lg_kernel_op_name(enum lg_kernel_op op);

/* A kernel configuration. Zero tile fields take the generator's defaults. */
struct lg_kernel_cfg {
    enum lg_kernel_op op;
    enum lg_dtype dtype;
    int rank;           /* unused by LG_OP_REDUCE */
    int drop;           /* DOWN, DA: apply the dropout mask */
    int fuse;           /* DA: add the masked dX correction */
    int out_half;       /* REDUCE: dtype rows instead of fp32 */
    int wm, wk, mt, u;  /* DOWN tiles */
    int nct;            /* DY: 64-column tiles per block */
    int st;             /* DY: cp.async pipeline stages */
    int minb;           /* DOWN, DY, DA: blocks per SM the register allocation must allow (1: no bound) */
};

struct lg_kernel_src {
    char name[LG_NAME_MAX];
    char *source;
    int threads;
    struct lg_kernel_cfg cfg; /* with defaults filled in */
};
LG_API void lg_kernel_src_free(struct lg_kernel_src *src);

typedef struct lg_gen lg_gen_t;
LG_API enum lg_status lg_gen_init(lg_gen_t **out);
LG_API void lg_gen_free(lg_gen_t *gen);

/* Source for one configuration; `origin` is stamped into its first line (a spec path, or "runtime"). */
LG_API enum lg_status lg_gen_kernel(lg_gen_t *gen, const struct lg_kernel_cfg *cfg, const char *origin,
                             struct lg_kernel_src *out);

/* Every kernel a spec needs (generator/plan.lua), deduplicated, in a fixed order. *out is an array of *count
 * entries; free each with lg_kernel_src_free, then free(*out). */
LG_API enum lg_status lg_gen_spec_kernels(lg_gen_t *gen, const struct lg_spec *spec, struct lg_kernel_src **out,
                                   int *count);

/* Every valid configuration of `op` for (dtype, rank): all switch values and tile variants. For the tuner and
 * the compile-every-switch tests. *out is malloc'd. */
LG_API enum lg_status lg_gen_variants(lg_gen_t *gen, enum lg_kernel_op op, enum lg_dtype dtype, int rank,
                               struct lg_kernel_cfg **out, int *count);

/* The text of a shipped source file ("templates/lg_philox.h"), from the copy embedded at build time; NULL if
 * there is none. For benchmarks and tools that build kernels of their own on the same helpers. */
LG_API const char *lg_gen_template_source(const char *path);

#ifdef __cplusplus
}
#endif
#endif
