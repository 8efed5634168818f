/* lg_tune.h: the autotuner's foundations: each kernel family's search space (from the generator) pruned against
 * an arch's limits, the timing harness, and the tuning database the runtime consults (docs/tuning.md).
 *
 * - Search space. lg_tune_space lists the generator's variants of one kernel (lg_gen_variants) that differ from
 *   a base configuration only in the fields the caller lets vary, default first, then by how many fields
 *   differ; each one carries the generator's resource estimate (lg_gen_resources) and, when it cannot run on
 *   the arch (shared memory, registers, threads, the shape's alignment), the reason it was pruned.
 * - Harness. lg_tune_measure times candidates with CUDA events: each is first run once and checked against the
 *   reference (candidate 0, the default configuration); one that fails to build or launch, or whose output
 *   differs, scores +inf and says why; the kept ones get a warm-up and then the median of interleaved rounds.
 * - Database. A JSON file (format "loragen-tune", version LG_TUNE_DB_VERSION) of winners keyed by (op, shape,
 *   token-count bucket, dtype, arch, GPU name, SM count), with the GPU, driver, NVRTC and cuBLASLt versions and
 *   the date. Loading validates everything: a corrupt, truncated, other-format or other-version file is refused
 *   naming the file and the reason. Saving is atomic (temp file, fsync, rename). The process default
 *   (lg_tune_default) is read once from $LORAGEN_TUNE_DB or the default path; a file that fails to load is
 *   reported on stderr once (file and reason) and ignored: the runtime then keeps the arch heuristics (the
 *   generator's defaults) everywhere.
 *
 * Ownership: lg_tune_db_t owns its entries; lg_tune_space's array belongs to the caller (free()). The default
 * database is owned by the library and lives until exit.
 *
 *   lg_tune_db_t *db;
 *   if (lg_tune_db_load("tunedb/h200.json", &db) != LG_OK) puts(lg_last_error());
 *   struct lg_tune_key k = {.op = "lora", .shape = "k4096_m4096_r16_p1", .tokens = lg_tune_bucket(8192),
 *                           .dtype = LG_BF16, .arch = 90, .gpu = "NVIDIA H200", .sm_count = 132};
 *   const struct lg_tune_entry *e = lg_tune_db_find(db, &k);   // NULL: use the defaults
 *   int wm = e ? lg_tune_entry_param(e, "down_wm", 0) : 0;
 *   lg_tune_db_free(db);
 */
#ifndef LG_TUNE_H
#define LG_TUNE_H

#include "lg_common.h"
#include "lg_gen.h"

#include <cuda.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- arch limits and pruning ---- */

/* What one SM of an arch offers (the CUDA programming guide's table of compute capabilities). */
struct lg_arch_limits {
    int arch;              /* 80, 86, 89, 90 */
    int smem_block;        /* bytes of shared memory one block may use (opt-in maximum) */
    int smem_sm;           /* bytes of shared memory per SM */
    int regs_sm;           /* 32-bit registers per SM */
    int regs_thread;       /* registers one thread may use */
    int threads_block;     /* threads per block */
    int threads_sm;        /* resident threads per SM */
    int blocks_sm;         /* resident blocks per SM */
};
/* LG_ERR_UNSUPPORTED for an arch loragen has no table for (the message lists the known ones). */
LG_API enum lg_status lg_arch_limits_get(int arch, struct lg_arch_limits *out);

/* The shape a kernel will run on, for the rules that depend on it; zero fields are not checked. */
struct lg_tune_shape {
    int64_t k;     /* in features (norm: the row length) */
    int64_t m;     /* out features */
    int head_dim;  /* attention */
};

/* 1 when a configuration (normalised, with its resource estimate) can run on the arch and shape; 0 with the
 * reason in why (at most n bytes) when it cannot. */
LG_API int lg_tune_prune_ok(const struct lg_kernel_cfg *cfg, const struct lg_kernel_res *res,
                            const struct lg_arch_limits *a, const struct lg_tune_shape *shape, char *why, size_t n);

struct lg_tune_cand {
    struct lg_kernel_cfg cfg; /* normalised: defaults filled in */
    struct lg_kernel_res res;
    int differs;              /* fields that differ from the base configuration */
    int pruned;               /* 1: cannot run on the arch; why says so */
    char why[160];
};

/* The variants of base.op for (base.dtype, base.rank) whose fields outside `vary` (bit i: lg_kernel_fields()[i]
 * may vary) equal base's (normalised), pruned for arch and shape. Entry 0 is base itself, never pruned: it is
 * the reference and what runs without a tuned entry (its why holds what the rules found, if anything).
 * LG_ERR_UNSUPPORTED for an arch without a limits table. *out is malloc'd. */
LG_API enum lg_status lg_tune_space(lg_gen_t *gen, const struct lg_kernel_cfg *base, unsigned vary, int arch,
                                    const struct lg_tune_shape *shape, struct lg_tune_cand **out, int *count);
/* The mask bit of the field called name (0 when no field has that name). */
LG_API unsigned lg_tune_field_bit(const char *name);

/* ---- timing harness ---- */

enum lg_tune_outcome { LG_TUNE_KEPT = 0, LG_TUNE_FAILED = 1, LG_TUNE_MISMATCH = 2 };

/* The candidates of one measurement, as callbacks on the caller's state u. The harness calls select(i) before
 * every run of candidate i, so the caller may keep just one candidate live at a time. */
struct lg_tune_bench {
    int ncand;
    void *u;
    /* makes candidate i current (generate, compile, set tiles); a failure scores +inf */
    enum lg_status (*select)(void *u, int i);
    /* one run of the current candidate on `stream`, on the caller's scratch buffers */
    enum lg_status (*run)(void *u, CUstream stream);
    /* after one run of candidate i (synchronised): i = 0 keeps the reference output; others compare with it and
     * return their error in *err and whether it is within tolerance in *ok */
    enum lg_status (*check)(void *u, int i, double *err, int *ok);
    CUstream stream;
    int warmup; /* runs of each kept candidate before timing; 0: 2 */
    int rounds; /* interleaved rounds, the median taken; 0: 9 */
    int warm_l2; /* 1: time with whatever the last run left in L2; 0: every sample starts from a flushed L2
                    (twice its size written first, outside the timed events), as a layer inside a training step
                    finds it, its weights and inputs evicted by the layers before */
};

struct lg_tune_result {
    enum lg_tune_outcome outcome;
    double ms;       /* median per run; +inf unless kept */
    double err;      /* check's error against the reference */
    char why[256];   /* failed or mismatched: the reason */
};

/* Measures every candidate (res has ncand entries) and gives the index of the fastest kept one in *best
 * (0 when no other beats the reference). Fails only when the reference itself fails. */
LG_API enum lg_status lg_tune_measure(const struct lg_tune_bench *b, struct lg_tune_result *res, int *best);

/* ---- the tuning database ---- */

#define LG_TUNE_DB_VERSION 1
#define LG_TUNE_MAX_PARAMS 16

struct lg_tune_key {
    char op[32];     /* "lora", "norm_fwd", ...: what was tuned */
    char shape[64];  /* the shape as the op's tuner spells it, e.g. "k4096_m4096_r16_p1" */
    int tokens;      /* token-count bucket (lg_tune_bucket); 0 for ops that do not depend on it */
    enum lg_dtype dtype;
    int arch;
    char gpu[64];
    int sm_count;
};

struct lg_tune_param {
    char name[24];
    int value;
};

struct lg_tune_entry {
    struct lg_tune_key key;
    int nparams;
    struct lg_tune_param params[LG_TUNE_MAX_PARAMS]; /* the winner; a parameter not listed keeps its default */
    double time_ms, default_ms;                      /* the winner's and the default's median */
    int candidates, failed;                          /* timed, and scored +inf */
};

/* Where a database was measured. */
struct lg_tune_info {
    char gpu[64];
    int sm_count, arch;
    int driver;    /* cuDriverGetVersion */
    int nvrtc;     /* lg_nvrtc_version */
    int cublaslt;  /* cublasLtGetVersion */
    char date[32]; /* ISO 8601, UTC */
};

typedef struct lg_tune_db lg_tune_db_t;

LG_API enum lg_status lg_tune_db_init(lg_tune_db_t **out);
LG_API void lg_tune_db_free(lg_tune_db_t *db);
LG_API void lg_tune_db_set_info(lg_tune_db_t *db, const struct lg_tune_info *info);
LG_API const struct lg_tune_info *lg_tune_db_info(const lg_tune_db_t *db);
/* Adds e, replacing an entry with the same key. */
LG_API enum lg_status lg_tune_db_put(lg_tune_db_t *db, const struct lg_tune_entry *e);
/* The entry whose key equals k in every field, or NULL. */
LG_API const struct lg_tune_entry *lg_tune_db_find(const lg_tune_db_t *db, const struct lg_tune_key *k);
LG_API int lg_tune_db_count(const lg_tune_db_t *db);
LG_API const struct lg_tune_entry *lg_tune_db_entry(const lg_tune_db_t *db, int i);

/* Reads and validates a database file; on any problem (missing, corrupt or truncated JSON, another format or
 * version, a bad entry) LG_ERR_IO or LG_ERR_INVALID with "FILE: reason" and *out untouched. */
LG_API enum lg_status lg_tune_db_load(const char *path, lg_tune_db_t **out);
/* Writes db to path atomically (entries sorted by key, so equal databases give equal bytes). */
LG_API enum lg_status lg_tune_db_save(const lg_tune_db_t *db, const char *path);

/* The bucket of a token count: the smallest power of two >= n (at least 256). */
LG_API int lg_tune_bucket(int64_t n);
/* The value of parameter name in e, or dflt when e does not list it. */
LG_API int lg_tune_entry_param(const struct lg_tune_entry *e, const char *name, int dflt);
/* Key equality (all fields). */
LG_API int lg_tune_key_eq(const struct lg_tune_key *a, const struct lg_tune_key *b);

/* ---- the process's database ---- */

/* The file the runtime reads: $LORAGEN_TUNE_DB when set ("" or "off": none), else
 * $XDG_CACHE_HOME/loragen/tune.json, else $HOME/.cache/loragen/tune.json. Static storage. */
LG_API const char *lg_tune_default_path(void);
/* Replaces the path the process reads (before the first lg_tune_default; NULL: back to the default path, "":
 * none). */
LG_API enum lg_status lg_tune_set_path(const char *path);
/* The database the runtime consults, loaded on first call (thread-safe). Never NULL: empty when no file exists
 * or the file was refused (then reported once on stderr, and lg_tune_default_problem says why). */
LG_API const lg_tune_db_t *lg_tune_default(void);
LG_API const char *lg_tune_default_problem(void);
/* Looks k up in the process database (lg_tune_default). */
LG_API const struct lg_tune_entry *lg_tune_lookup(const struct lg_tune_key *k);

/* ---- online tuning (off by default) ----
 * A function that measures the winner for a key the process database lacks, on the caller's context ctx
 * (opaque here: an lg_ctx_t) at `tokens` tokens (the first use's count; 0: the op does not depend on it), and
 * says where it measured (info). The tuner registers one (lg_tuner_online_enable in lg_tuner.h): tune sits below
 * the kernels it would time, so it only calls it. */
typedef enum lg_status (*lg_tune_online_fn)(void *u, void *ctx, const struct lg_tune_key *k, int64_t tokens,
                                            struct lg_tune_entry *out, struct lg_tune_info *info);
/* Turns online tuning on (fn) or off (NULL). */
LG_API void lg_tune_set_online(lg_tune_online_fn fn, void *u);
/* lg_tune_lookup for a call about to run at `tokens` tokens on ctx. With online tuning on and k new, fn tunes it
 * there and then (once per key and process; the caller waits), the winner goes into the process database under
 * k and into the database file (merged with what the file holds now, under a lock on FILE.lock, written
 * atomically; not when the process refused the file, or its path is "off"). A key whose tuning fails is
 * reported once on stderr and keeps the defaults. Lookups made by fn's own layers never tune. The pointer is
 * valid until the next online tuning. */
LG_API const struct lg_tune_entry *lg_tune_lookup_at(const struct lg_tune_key *k, int64_t tokens, void *ctx);
/* Keys tuned online by this process. */
LG_API int lg_tune_online_count(void);

#ifdef __cplusplus
}
#endif
#endif
