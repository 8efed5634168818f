/* lg_tuner.h: the autotuner proper: it tunes the kernels a spec needs on the local GPU and writes the winners
 * into a tuning database (lg_tune.h), which the runtime then consults (docs/tuning.md). `loragen tune` and
 * bench/bench_lora are its callers.
 *
 * FusedLoRA (lg_tuner_lora): one layer shape at one token count, fwd + bwd timed whole on the tuner's own
 * scratch buffers (random inputs; dA and dB overwritten, never accumulated into the caller's), by coordinate
 * descent over groups of the generator's pruned search space (lg_tune_space): the down-projection's tiles,
 * the dY pass's tiles, the dA pass's register bound, then cuBLASLt's heuristic candidates for the forward and
 * the dX GEMM. Each group is one lg_tune_measure: every candidate is checked against the group's reference
 * (the best so far, itself checked against the all-default configuration) on Y and dX (sampled rows) and on
 * all of dA and dB.
 *
 * Ownership: everything the tuner allocates is freed before it returns; the caller's context is borrowed.
 *
 *   struct lg_tuner_opts o = {.max_cands = 16};
 *   struct lg_tuner_outcome r;
 *   lg_tuner_lora(ctx, &lora_params, 8192, &o, &r);   // r.entry: key, winner tiles, times
 *   lg_tune_db_put(db, &r.entry);
 */
#ifndef LG_TUNER_H
#define LG_TUNER_H

#include "lg_attention.h"
#include "lg_ctx.h"
#include "lg_gen.h"
#include "lg_lora.h"
#include "lg_mlora.h"
#include "lg_tune.h"

#ifdef __cplusplus
extern "C" {
#endif

struct lg_tuner_opts {
    int max_cands;   /* candidates timed per group besides the reference (0: 16); pruned ones do not count */
    int warmup;      /* 0: 2 */
    int rounds;      /* 0: 9 */
    void (*log)(void *u, const char *line); /* each candidate that scored +inf and why; NULL: quiet */
    void *log_u;
    int verbose; /* also log each group's variants, pruning and timed count */
};

struct lg_tuner_outcome {
    struct lg_tune_entry entry; /* key, winner (as named parameters), its time and the default's */
    int pruned;                 /* candidates the arch limits removed before timing */
    int failed;                 /* failed to build or launch */
    int mismatched;             /* ran but differed from the reference */
    double max_err;             /* the largest error of a kept candidate against the reference */
};

/* Tunes one FusedLoRA layer of parameters p (owned base, extended-K buffers as the CUDA backend lays them out)
 * at n tokens. */
LG_API enum lg_status lg_tuner_lora(lg_ctx_t *ctx, const struct lg_lora_params *p, int64_t n,
                                    const struct lg_tuner_opts *o, struct lg_tuner_outcome *out);

/* Tunes the generated attention backend's tiles for parameters p (backend LG_ATTN_GENERATED; its flags decide
 * whether the deterministic dQ pass is tuned too) over `tokens` tokens packed as causal samples of sample_len
 * (the last one shorter). Its key has token bucket 0: one entry per GPU and model shape. */
LG_API enum lg_status lg_tuner_attn(lg_ctx_t *ctx, const struct lg_attn_params *p, int64_t tokens, int sample_len,
                                    const struct lg_tuner_opts *o, struct lg_tuner_outcome *out);

/* ---- the groups of the descents, without a GPU (what `loragen tune --dry-run` lists) ---- */

struct lg_tuner_space_info {
    int variants; /* the generator's variants of the group's fields */
    int pruned;   /* of them, what the arch or shape cannot run */
    int timed;    /* candidates besides the reference (at most max) */
};

#define LG_TUNER_LORA_GROUPS 3 /* down (wm wk mt u minb), dy (nct st minb), da (minb) */
#define LG_TUNER_ATTN_GROUPS 3 /* fwd (bm bn nw st), dkv (bm nw st), dq (bm bn nw st; deterministic only) */
#define LG_TUNER_MLORA_GROUPS 4 /* down (wm wk mt u minb), dy (nct st minb), da (minb), expand (nct) */
struct lg_tuner_mlora_shape;
LG_API const char *lg_tuner_mlora_group_name(int g);
LG_API enum lg_status lg_tuner_mlora_group(lg_gen_t *gen, int arch, const struct lg_tuner_mlora_shape *s, int g,
                                           const struct lg_mlora_tiles *cur, int max, struct lg_mlora_tiles *cand,
                                           int *n, struct lg_tuner_space_info *info);
LG_API const char *lg_tuner_lora_group_name(int g);
LG_API const char *lg_tuner_attn_group_name(int g);
/* FusedLoRA group g's candidates on arch: cand[0] = *cur, then cur with the group's tiles set to each variant the
 * arch and shape allow, nearest first, at most max (cand holds max + 1); *n of them. */
LG_API enum lg_status lg_tuner_lora_group(lg_gen_t *gen, int arch, const struct lg_lora_params *p, int g,
                                          const struct lg_lora_tiles *cur, int max, struct lg_lora_tiles *cand,
                                          int *n, struct lg_tuner_space_info *info);
/* Attention's groups: 3 with the deterministic backward, 2 without (no dQ pass). */
LG_API int lg_tuner_attn_groups(const struct lg_attn_params *p);
LG_API enum lg_status lg_tuner_attn_group(lg_gen_t *gen, int arch, const struct lg_attn_params *p, int g,
                                          const struct lg_attn_tiles *cur, int max, struct lg_attn_tiles *cand,
                                          int *n, struct lg_tuner_space_info *info);

/* A FusedMultiLoRA layer to tune: nmod modules reading one input (q/k/v: 3, gate/up: 2), nadapters adapters of
 * one rank, alpha and dropout. */
struct lg_tuner_mlora_shape {
    int64_t in_features;
    int nmod;
    int64_t out_features[3];
    int nadapters;
    int rank;
    float alpha, dropout;
    enum lg_dtype dtype;
};
/* Tunes FusedMultiLoRA's tiles for shape s at n tokens (>= one per adapter), as the CUDA training backend runs
 * the layer (strategy (b), S apart, uneven segments). */
LG_API enum lg_status lg_tuner_mlora(lg_ctx_t *ctx, const struct lg_tuner_mlora_shape *s, int64_t n,
                                     const struct lg_tuner_opts *o, struct lg_tuner_outcome *out);

/* Where a database is measured: the GPU's name, SMs and arch, the driver, NVRTC and cuBLASLt versions, now. */
LG_API void lg_tuner_info(lg_ctx_t *ctx, struct lg_tune_info *out);

/* ---- a spec's sweep ---- */

struct lg_tuner_progress {
    const char *what; /* "lora q_proj,o_proj k4096_m4096_r16_p1 @ 8192" */
    int done, total;  /* jobs finished (this one not yet), of total */
    double elapsed_s;
    double eta_s;     /* < 0 until one job has finished */
};

/* What a sweep tunes. FusedMultiLoRA and attention need a model spec (its `model` table). */
enum lg_tuner_family { LG_TUNER_LORA = 1, LG_TUNER_MLORA = 2, LG_TUNER_ATTN = 4, LG_TUNER_ALL = 7 };

struct lg_tuner_sweep {
    const struct lg_spec *spec;
    const int *tokens; /* token counts to tune at; NULL: the spec's own */
    int ntokens;
    const char *only;  /* one linear layer by name (FusedLoRA only); NULL: all */
    unsigned families; /* LG_TUNER_LORA | LG_TUNER_MLORA | LG_TUNER_ATTN; 0: all */
    int mlora_adapters;  /* adapters of the FusedMultiLoRA layers (0: 1) */
    int attn_sample_len; /* attention's samples (0: 2048 tokens; the deterministic backward is tuned) */
    struct lg_tuner_opts opts;
    void (*progress)(void *u, const struct lg_tuner_progress *p);
    void *progress_u;
};

/* One result of a sweep: the layers sharing a shape are tuned once. */
struct lg_tuner_result {
    char label[96];   /* the layers' names */
    int64_t tokens;
    enum lg_status status; /* LG_OK, or why this job could not be tuned (error says more) */
    char error[512];
    struct lg_tuner_outcome outcome;
};

/* Tunes the spec's kernels (tuner_spec.c lists the jobs: FusedLoRA shapes and FusedMultiLoRA layers at every
 * token count, attention once), putting each winner into db (which the caller saves). A job that fails (its reference configuration does not run) is recorded in its result and
 * the sweep goes on. *out: malloc'd array of *count results, in sweep order. */
LG_API enum lg_status lg_tuner_spec(lg_ctx_t *ctx, const struct lg_tuner_sweep *s, lg_tune_db_t *db,
                                    struct lg_tuner_result **out, int *count);
/* The number of jobs lg_tuner_spec would run (for a dry run or a time estimate). */
LG_API int lg_tuner_spec_jobs(const struct lg_tuner_sweep *s);

/* ---- online tuning (off by default; docs/tuning.md) ----
 * With it on, a layer whose key the process database lacks is tuned on first use, on its own context and at
 * that call's token count (the call waits; a line on stderr says what and the result), and the winner is kept
 * in the process database and saved to its file (lg_tune_lookup_at). Candidates per group and rounds come from
 * o (NULL: 8 and 5, candidates scoring +inf reported on stderr). */
LG_API void lg_tuner_online_enable(const struct lg_tuner_opts *o);
LG_API void lg_tuner_online_disable(void);
/* $LORAGEN_TUNE_ONLINE: "1", "on" or "yes" enable it (returns 1), unset, "", "0", "off" or "no" do not (0); any
 * other value is refused with an error naming the variable (-1). */
LG_API int lg_tuner_online_from_env(void);

/* What a database key asks to tune, read back from its shape string (the spelling of lg_lora_tune_key,
 * lg_mlora_tune_key and lg_attn_tune_key; alpha is 2r and a dropout 0.1 where the key says p1, neither
 * changing the kernels' speed). LG_ERR_UNSUPPORTED for an op no tuner handles, LG_ERR_INVALID for a shape it
 * cannot read. */
struct lg_tuner_key_job {
    enum lg_tuner_family family;
    struct lg_lora_params lora;         /* LG_TUNER_LORA */
    struct lg_tuner_mlora_shape mlora;  /* LG_TUNER_MLORA */
    struct lg_attn_params attn;         /* LG_TUNER_ATTN: the generated backend */
};
LG_API enum lg_status lg_tuner_key_job(const struct lg_tune_key *k, struct lg_tuner_key_job *out);

#ifdef __cplusplus
}
#endif
#endif
