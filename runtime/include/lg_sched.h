/* lg_sched.h: the multi-adapter scheduler. Turns the samples of several LoRA jobs that share one base model
 * into microbatches for 1F1B pipeline parallelism (S stages) and data parallelism (D ranks), keeps every
 * adapter's optimizer steps correct, and predicts the pipeline's timeline with an event-driven simulator.
 *
 * Pure C: this part reads and writes no files. Loading datasets and job files, and writing plans as JSON and
 * timelines as SVG, are in lg_io.h.
 *
 * Objects and ownership:
 *   lg_dataset_t  the sample lengths (and loss-token counts) of one dataset: from lengths in memory here, or
 *                 read from a JSONL file or length trace by lg_dataset_load (lg_io.h).
 *   lg_job_t      the adapters, their datasets (it owns them once added), the pipeline shape, the capacity
 *                 policy and the cost model. Built in code, or loaded from a Lua job file (lg_job_load,
 *                 lg_io.h).
 *   lg_plan_t     an ordered list of microbatches per DP rank. It refers to the job's samples by index and
 *                 must not outlive the job; after lg_job_reshuffle (a new epoch) it no longer matches it.
 *   lg_sim_t      the simulated 1F1B timeline of one plan: makespan, bubbles, balance, and (on request) every
 *                 forward/backward op. Refers to nothing after it is built.
 * Every object is freed by its own lg_xxx_free (NULL is fine). Views (lg_mb_view, lg_seg_view) point into the
 * plan and stay valid until the plan is freed.
 *
 * The rules every plan obeys (lg_plan_verify checks them with code separate from the planners):
 *   - every sample that the job keeps appears exactly once;
 *   - a microbatch's padded size (tokens rounded up to the pad multiple) never exceeds the capacity;
 *   - a microbatch holds at most one global batch of each adapter;
 *   - adapter a's global batch g+1 enters the pipeline only after batch g's backward has finished and its
 *     optimizer step is done. Under 1F1B that holds by order when each microbatch of g+1 is at least S
 *     positions after the last one of g on the same rank; otherwise the segment carries `wait` (also when
 *     that rank ran none of g), and the runtime must hold that forward, running its pending backwards
 *     meanwhile, until the step is done. With D > 1 ranks the step also needs the adapter's gradient
 *     all-reduce, so the runtime always checks it before g+1's first forward; `wait` marks where that check
 *     can block. lg_plan_build also marks every forward its simulation holds for a step (the step's own time,
 *     or another rank still running batch g): those are where the check is predicted to block, and
 *     lg_plan_summary.wait_forwards counts them.
 *
 * Usage (a job built in code; lg_io.h shows one loaded from a job file):
 *   uint32_t len[1000];
 *   CHECK(lg_trace_generate(LG_TRACE_XSUM, 1000, 1, len));
 *   lg_dataset_t *ds;
 *   lg_job_t *job;
 *   lg_plan_t *plan;
 *   lg_sim_t *sim;
 *   struct lg_job_params jp = lg_job_params_default();          // then jp.stages = 4, ...
 *   CHECK(lg_job_init(&jp, &job));
 *   CHECK(lg_dataset_from_lengths(len, 1000, &ds));
 *   struct lg_adapter_params ap = {.name = "xsum", .global_batch = 8, .rank = 16, .alpha = 32, .lr = 1e-4};
 *   if (lg_job_add_adapter(job, &ap, ds, NULL) != LG_OK) { fprintf(stderr, "%s\n", lg_last_error()); ... }
 *   struct lg_plan_params pp = lg_plan_params_default();        // our planner, capacity from the job
 *   CHECK(lg_plan_build(job, &pp, &plan));
 *   CHECK(lg_plan_verify(job, plan));
 *   struct lg_sim_params sp = {.record_events = 1};
 *   CHECK(lg_sim_run(job, plan, &sp, &sim));
 *   struct lg_sim_stats st;
 *   lg_sim_get_stats(sim, &st);
 *   printf("makespan %.1f ms, bubble %.2f%%\n", st.makespan_us / 1e3, 100 * st.bubble);
 *   lg_sim_free(sim); lg_plan_free(plan); lg_job_free(job);
 */
#ifndef LG_SCHED_H
#define LG_SCHED_H

#include "lg_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lg_dataset lg_dataset_t;
typedef struct lg_job lg_job_t;
typedef struct lg_plan lg_plan_t;
typedef struct lg_sim lg_sim_t;

#define LG_SCHED_MAX_STAGES 64

/* ---- datasets (files: lg_dataset_load in lg_io.h) ------------------------------------------------------ */

/* A dataset from lengths in memory. Loss tokens follow the causal-LM shift the trainer uses (position t
 * predicts label t+1, so the first position of a sample is never a target): n-1 for a sample of n tokens. */
LG_API enum lg_status lg_dataset_from_lengths(const uint32_t *len, size_t n, lg_dataset_t **out);
LG_API void lg_dataset_free(lg_dataset_t *ds);
LG_API size_t lg_dataset_size(const lg_dataset_t *ds);
LG_API uint32_t lg_dataset_length(const lg_dataset_t *ds, size_t i);
/* Sample i's loss tokens after the shift: positions t >= 1 whose label is not -100 and whose loss_mask is 1
 * (at most length - 1). */
LG_API uint32_t lg_dataset_loss_tokens(const lg_dataset_t *ds, size_t i);

/* ---- synthetic length traces --------------------------------------------------------------------------- */

/* Lognormal fits of summarisation datasets' sample lengths, capped at 4096 tokens (and at least 16). */
enum lg_trace_kind {
    LG_TRACE_XSUM = 0, /* mean ~560 tokens */
    LG_TRACE_CNN,      /* mean ~1000 */
    LG_TRACE_WIKISUM,  /* mean ~2300 */
    LG_TRACE_MIX,      /* each sample drawn from one of the three, uniformly */
    LG_TRACE_KINDS
};
LG_API enum lg_status lg_trace_kind_parse(const char *name, enum lg_trace_kind *out);
LG_API const char *lg_trace_kind_name(enum lg_trace_kind k);
/* Fills out[0..n) with lengths; the same (kind, n, seed) always gives the same trace. */
LG_API enum lg_status lg_trace_generate(enum lg_trace_kind kind, size_t n, uint64_t seed, uint32_t *out);
/* The fitted lognormal (mu, sigma of ln length) and the target capped mean, for documentation. */
LG_API void lg_trace_fit(enum lg_trace_kind kind, double *mu, double *sigma, double *mean);

/* ---- cost model ---------------------------------------------------------------------------------------- */

/* Time of one transformer layer on one microbatch, forward, in microseconds:
 *   fwd = layer_us + token_us * padded + token_rank_us * sum(tokens_i * rank_i) + attn_us * sum(len_i^2)
 * The base is frozen, so a linear layer's backward is dX plus the small LoRA grads (no dW): the backward is
 *   bwd = layer_us + bwd_linear * (token terms) + bwd_attn * attn_us * sum(len_i^2)
 * A stage runs its share of the layers (layers / S, the first stages taking the remainder). */
struct lg_costmodel {
    double layer_us;      /* fixed per microbatch and layer: launches, weight reads not hidden by compute */
    double token_us;      /* per padded token: the frozen linear layers (forward) */
    double token_rank_us; /* per token and unit of LoRA rank: the adapters' own matmuls */
    double attn_us;       /* per len^2 of each sample: causal attention (forward) */
    double bwd_linear;    /* backward/forward of the linear terms (1.05) */
    double bwd_attn;      /* backward/forward of attention (2.5) */
    int layers;           /* transformer layers of the base model */
    double act_bytes;     /* activation bytes kept for backward per token and layer (for "auto" capacity) */
};

struct lg_model_dims {
    int hidden, ffn, layers, heads, kv_heads;
    double tflops;      /* achieved dense bf16 TFLOP/s of the GEMMs */
    double attn_tflops; /* achieved TFLOP/s of the attention kernel */
    double layer_us;    /* fixed cost per microbatch and layer */
};

/* A Llama-3.1-8B-like layer on an H200 (hidden 4096, ffn 14336, 32 layers, GQA 32/8, 400 and 250 TFLOP/s). */
LG_API struct lg_model_dims lg_model_dims_default(void);
/* Coefficients from the FLOPs of the model's layer at the given throughputs. */
LG_API enum lg_status lg_costmodel_from_dims(const struct lg_model_dims *dims, struct lg_costmodel *out);

/* One measured layer time: a forward over `tokens` tokens (sum of len^2 `sum_len2`, sum of tokens*rank
 * `rank_tokens`) took fwd_us. */
struct lg_cost_sample {
    double tokens, sum_len2, rank_tokens, fwd_us;
};
/* Least-squares fit of layer_us, token_us, token_rank_us and attn_us to measured layer times (at least 4
 * samples that are not collinear; token_rank_us is kept when every sample has rank_tokens == 0). Keeps the
 * other fields of *cm. */
LG_API enum lg_status lg_costmodel_fit(struct lg_costmodel *cm, const struct lg_cost_sample *s, size_t n);
LG_API double lg_costmodel_fwd_us(const struct lg_costmodel *cm, double padded, double rank_tokens, double sum_len2);
LG_API double lg_costmodel_bwd_us(const struct lg_costmodel *cm, double padded, double rank_tokens, double sum_len2);

/* ---- jobs ---------------------------------------------------------------------------------------------- */

enum lg_capacity_policy {
    LG_CAPACITY_FIXED = 0, /* params.capacity tokens per microbatch at most */
    LG_CAPACITY_AUTO,      /* the most tokens whose activations fit the memory budget under 1F1B; the planner
                              then picks its fill target by simulation */
};

enum lg_oversize_policy {
    LG_OVERSIZE_ERROR = 0, /* a sample longer than the capacity is an error naming it */
    LG_OVERSIZE_TRUNCATE,  /* cut to the capacity (the count is reported) */
    LG_OVERSIZE_SKIP,      /* drop it (the count is reported) */
};

struct lg_job_params {
    int stages;        /* S: pipeline stages (1F1B) */
    int data_parallel; /* D: data-parallel ranks */
    int pad_multiple;  /* a microbatch's token count is padded up to a multiple of this */
    enum lg_capacity_policy capacity_policy;
    uint32_t capacity;          /* LG_CAPACITY_FIXED: tokens (a multiple of pad_multiple) */
    double memory_budget_bytes; /* LG_CAPACITY_AUTO: activation memory of one GPU */
    enum lg_oversize_policy oversize;
    uint64_t shuffle_seed; /* 0: samples form global batches in dataset order; else a seeded shuffle */
    struct lg_costmodel cost;
    double p2p_us;       /* activation send between stages */
    double optimizer_us; /* an adapter's optimizer step (and its DP all-reduce) between global batches */
    uint32_t fill_target; /* the packed planner's fill target in tokens when the request gives none (the job
                           * file's batching.target); 0: chosen by simulating candidates */
};

/* S=1, D=1, pad 16, fixed capacity 4096, error on oversize, dataset order, the default cost model. */
LG_API struct lg_job_params lg_job_params_default(void);

struct lg_adapter_params {
    const char *name; /* copied */
    int global_batch; /* samples per optimizer step (over all DP ranks) */
    int rank;         /* LoRA rank: enters the cost model */
    double alpha, dropout, lr;
    int drop_last; /* drop a last partial global batch (else it is a smaller final step) */
};

struct lg_adapter_info {
    const char *name;
    int global_batch, rank;
    double alpha, dropout, lr;
    size_t samples;           /* kept samples */
    size_t batches;           /* global batches */
    size_t truncated, skipped, dropped; /* by the oversize policy and drop_last */
    uint64_t tokens, loss_tokens;
    uint32_t max_len;
};

LG_API enum lg_status lg_job_init(const struct lg_job_params *p, lg_job_t **out);
/* Adds an adapter and takes ownership of ds (also on failure). Applies the oversize policy against the
 * job's capacity limit; fails when the dataset is empty, a sample is too long (LG_OVERSIZE_ERROR) or the
 * global batch is larger than the dataset. `where` prefixes error messages ("job.lua:12: adapters[2]"). */
LG_API enum lg_status lg_job_add_adapter(lg_job_t *job, const struct lg_adapter_params *ap, lg_dataset_t *ds,
                                  const char *where);
LG_API void lg_job_free(lg_job_t *job);

LG_API const struct lg_job_params *lg_job_get_params(const lg_job_t *job);
LG_API const char *lg_job_name(const lg_job_t *job);
/* Renames the job ("job" until then; name is copied). */
LG_API enum lg_status lg_job_set_name(lg_job_t *job, const char *name);
LG_API int lg_job_adapter_count(const lg_job_t *job);
LG_API enum lg_status lg_job_adapter(const lg_job_t *job, int a, struct lg_adapter_info *out);
/* The largest padded microbatch the job allows: the fixed capacity, or the memory-derived one. */
LG_API uint32_t lg_job_capacity_limit(const lg_job_t *job);
/* Sample i of adapter a (dataset order): its length after the oversize policy (0 when skipped). */
LG_API uint32_t lg_job_sample_length(const lg_job_t *job, int a, size_t i);
/* The global batch sample i of adapter a belongs to; -1 when skipped or dropped. */
LG_API long lg_job_sample_batch(const lg_job_t *job, int a, size_t i);
LG_API size_t lg_job_dataset_size(const lg_job_t *job, int a);
/* Re-forms every adapter's global batches from a new sample order, for the next epoch: seed 0 is dataset
 * order, any other seed a shuffle, by the same rule as shuffle_seed (so lg_job_reshuffle(job, s) with the
 * job's own shuffle_seed s gives back the batches the job was built with). The oversize policy's results
 * (truncated and skipped samples) and the number of batches stay; with drop_last, which samples are dropped
 * may change. shuffle_seed then reads `seed`. Plans built before no longer match the job (lg_plan_verify
 * rejects them): build a new plan for the epoch. */
LG_API enum lg_status lg_job_reshuffle(lg_job_t *job, uint64_t seed);
/* Loss tokens (after the causal shift, as lg_dataset_loss_tokens) of global batch g: the runtime divides each microbatch's summed loss by this, so
 * the step equals the mean over the whole batch however it was split. */
LG_API uint64_t lg_job_batch_loss_tokens(const lg_job_t *job, int a, size_t g);

/* ---- plans --------------------------------------------------------------------------------------------- */

enum lg_plan_algo {
    LG_PLAN_PACKED = 0, /* ours: paced packing, then merge and cost smoothing over the whole window
                           (docs/scheduler.md) */
    LG_PLAN_MEGATRON,   /* baseline: fixed sample-count microbatches, one adapter after another */
    LG_PLAN_MLORA,      /* baseline: mLoRA-style round-robin of single-adapter microbatches */
};

enum lg_plan_flags {
    LG_PLAN_TOKENS_ONLY = 1 << 0, /* ours: count tokens only in the bin limit and the smoothing (ablation) */
    LG_PLAN_NO_PACING = 1 << 1,   /* ours: start each global batch as soon as it may (ablation) */
    LG_PLAN_NO_MERGE = 1 << 2,    /* ours: skip the window-wide merge pass (ablation) */
    LG_PLAN_NO_SMOOTH = 1 << 3,   /* ours: skip the cost-smoothing local search (ablation) */
    LG_PLAN_NO_REFINE = 1 << 4,   /* ours: the slot pass alone, no refinement (ablation; the search uses it) */
    LG_PLAN_NO_RANK_SEARCH = 1 << 5, /* ours, D > 1: skip the simulated choice of each slot's ranks (ablation) */
};

struct lg_plan_params {
    enum lg_plan_algo algo;
    uint32_t capacity;    /* 0: lg_job_capacity_limit(job) */
    uint32_t target;      /* ours: fill target in tokens; 0: choose it by simulating candidates */
    int samples_per_mb;   /* baselines: 0: capacity / longest sample (at least 1) */
    unsigned flags;       /* enum lg_plan_flags */
};
LG_API struct lg_plan_params lg_plan_params_default(void);

LG_API enum lg_status lg_plan_build(const lg_job_t *job, const struct lg_plan_params *pp, lg_plan_t **out);
LG_API void lg_plan_free(lg_plan_t *plan);

struct lg_plan_summary {
    size_t microbatches;  /* over all ranks */
    size_t slots;         /* microbatches per rank (the longest rank) */
    uint64_t tokens;      /* real tokens */
    uint64_t padded;      /* sum of padded microbatch sizes */
    double waste;         /* (padded - tokens) / padded */
    size_t lower_bound;   /* ceil(tokens / capacity): no plan has fewer microbatches */
    size_t padded_bound;  /* ceil(padded / capacity): this plan's packing, its padding aside */
    uint32_t capacity;    /* the hard limit used */
    uint32_t target;      /* ours: the fill target chosen */
    size_t waits;         /* segments marked `wait` */
    size_t wait_forwards; /* microbatches with a segment marked `wait`: the forwards the runtime holds for an
                             optimizer step (lg_plan_build: equal to the simulation's lg_sim_stats.waits) */
    size_t candidates;    /* fill targets simulated to choose `target` */
    double plan_ms;       /* wall time of lg_plan_build */
};
LG_API void lg_plan_get_summary(const lg_plan_t *plan, struct lg_plan_summary *out);

struct lg_mb_view {
    int rank;          /* data-parallel rank */
    size_t pos;        /* position in that rank's sequence */
    uint32_t tokens;   /* real tokens */
    uint32_t padded;   /* tokens rounded up to the pad multiple */
    double sum_len2;   /* sum of len^2: the attention term */
    double rank_tokens; /* sum of tokens * LoRA rank */
    size_t nseg;
};
struct lg_seg_view {
    int adapter;
    size_t batch;            /* global batch index */
    size_t nsamples;
    const uint32_t *samples; /* indices into the adapter's dataset */
    int wait;                /* the runtime must wait for batch-1's optimizer step before this forward: the
                                order does not guarantee it, or (lg_plan_build) the simulated timeline holds it */
};
LG_API size_t lg_plan_mb_count(const lg_plan_t *plan);
LG_API enum lg_status lg_plan_mb(const lg_plan_t *plan, size_t i, struct lg_mb_view *out);
LG_API enum lg_status lg_plan_seg(const lg_plan_t *plan, size_t i, size_t j, struct lg_seg_view *out);
LG_API int lg_plan_ranks(const lg_plan_t *plan);
/* The planner that made the plan. */
LG_API enum lg_plan_algo lg_plan_get_algo(const lg_plan_t *plan);
LG_API const char *lg_plan_algo_name(enum lg_plan_algo a);

/* Checks every rule above against the job, independently of the planner. LG_ERR_INVALID names the first
 * broken rule, the microbatch and the sample. */
LG_API enum lg_status lg_plan_verify(const lg_job_t *job, const lg_plan_t *plan);

/* ---- simulator ----------------------------------------------------------------------------------------- */

struct lg_sim_params {
    int record_events; /* keep every op for lg_sim_events and the SVG */
};

struct lg_sim_stats {
    int stages, ranks;
    size_t microbatches;
    double makespan_us;
    double bubble;              /* 1 - busy / (stages * ranks * makespan) */
    const double *stage_bubble; /* [stages]: averaged over ranks */
    const double *rank_busy_us; /* [ranks]: summed over stages */
    double dp_imbalance;        /* max over ranks of busy / mean busy - 1 */
    size_t waits;               /* stage-0 forwards held for an optimizer step: the step was not done when stage
                                   0 could have run them, or the plan marks them `wait` (the runtime holds those
                                   until their step is done, even when it already is) */
    double wait_us;             /* summed time from when each was first found held to its start */
    double work_us;             /* sum of all op durations */
};

struct lg_sim_event {
    int rank, stage;
    uint32_t mb;   /* index into the plan (lg_plan_mb) */
    char kind;     /* 'F' or 'B' */
    double start_us, end_us;
};

LG_API enum lg_status lg_sim_run(const lg_job_t *job, const lg_plan_t *plan, const struct lg_sim_params *sp,
                          lg_sim_t **out);
LG_API void lg_sim_free(lg_sim_t *sim);
LG_API void lg_sim_get_stats(const lg_sim_t *sim, struct lg_sim_stats *out);
LG_API size_t lg_sim_events(const lg_sim_t *sim, const struct lg_sim_event **ev);

/* Checks a recorded timeline against the plan: every op ran once, stages never overlap, forwards follow
 * forwards upstream and backwards follow backwards downstream, and no forward of batch g+1 starts before
 * every backward of batch g has ended on stage 0 of every rank. */
LG_API enum lg_status lg_sim_verify(const lg_job_t *job, const lg_plan_t *plan, const lg_sim_t *sim);

#ifdef __cplusplus
}
#endif
#endif
