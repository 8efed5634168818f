/* lg_train.h: training, evaluation and merging, as the `loragen train`, `eval`, `merge` and `init-model` verbs
 * run them.
 *
 * lg_train_run executes a training job file (lg_trainjob.h): it loads the Hugging Face model directory once,
 * plans every adapter's samples into microbatches with the scheduler (its plan is what runs), trains the
 * adapters with AdamW on the chosen backend, validates every N steps and at the end, writes checkpoints that
 * resume bit-exactly, and writes each adapter in PEFT's format with its metrics and loss curve. It prints
 * nothing: progress goes to the caller's callback.
 *
 * Interruption: set *stop (e.g. from a SIGINT or SIGTERM handler) and the run writes a checkpoint after the
 * microbatch in flight and returns LG_OK with result.interrupted = 1; `--resume` continues from it.
 *
 *   static volatile int stop;
 *   struct lg_train_opts o = { .job = "specs/jobs/tiny-train.lua", .stop = &stop, .progress = print_line };
 *   struct lg_train_result r;
 *   if (lg_train_run(&o, &r) != LG_OK) fprintf(stderr, "%s\n", lg_last_error());
 */
#ifndef LG_TRAIN_H
#define LG_TRAIN_H

#include "lg_common.h"

#ifdef __cplusplus
extern "C" {
#endif

enum lg_train_event {
    LG_EV_INFO = 0, /* a line of setup information (message) */
    LG_EV_STEP,     /* an optimizer step of one adapter finished */
    LG_EV_EVAL,     /* a validation loss of one adapter */
    LG_EV_SKIP,     /* a step skipped: the loss or a gradient was not finite (message says which, and where) */
    LG_EV_CKPT,     /* a checkpoint was written (message: its directory) */
    LG_EV_DONE,     /* an adapter finished and its PEFT output was written (message: the directory) */
};

struct lg_train_progress {
    enum lg_train_event event;
    int adapter;              /* index in the job; -1 for job-wide events */
    const char *name;         /* the adapter's name, or the job's */
    int64_t step, steps;      /* this adapter's optimizer steps done, and in all */
    int epoch;
    double loss;              /* the step's token-weighted training loss */
    double val_loss;          /* LG_EV_EVAL */
    double lr, grad_norm;
    double tokens_per_s;      /* over the whole job, recent */
    double elapsed_s, eta_s;
    size_t mem_bytes;         /* peak memory of the process so far (host; the GPU's on the CUDA backend) */
    int log_every;            /* the job's training.log_every: how often a non-terminal view prints a step */
    const char *message;
};
typedef void (*lg_train_progress_fn)(const struct lg_train_progress *p, void *user);

struct lg_train_opts {
    const char *job;         /* the job file */
    int resume;              /* continue from the job's latest checkpoint */
    const char *backend;     /* "auto", "cpu", "cuda"; NULL: the job's training.backend */
    int64_t max_steps;       /* > 0: stop every adapter after this many steps (a smoke-test override) */
    int profile;             /* time every op per op family (CUDA backend); reported as info lines at the end */
    int distributed;         /* one rank of several processes: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
                                MASTER_PORT (lg_comm.h) say which; WORLD_SIZE must be the job's data_parallel x
                                stages. Rank 0 alone reports progress and writes outputs and checkpoints.
                                0: this process runs the whole plan */
    volatile int *stop;      /* set to non-zero to checkpoint and stop */
    lg_train_progress_fn progress;
    void *user;
};

struct lg_train_result {
    int interrupted;
    int64_t tokens;          /* tokens trained on (all adapters) */
    double seconds;
    double first_loss, last_loss; /* adapter 0: the first and the last step's training loss */
    double val_loss;         /* adapter 0: the final validation loss (NaN without a validation set) */
    /* from the end of the first optimizer step of this run to the end of the last (compiles, first-touch
     * allocations and the final writes excluded): tokens trained on and seconds; 0 with fewer than 2 steps */
    int64_t steady_tokens;
    double steady_seconds;
};

LG_API enum lg_status lg_train_run(const struct lg_train_opts *o, struct lg_train_result *r);

struct lg_eval_opts {
    const char *job;
    int adapter;           /* which adapter of the job (0-based) */
    const char *adapter_dir; /* a PEFT adapter to evaluate instead of the job's output; NULL: the output */
    const char *dataset;   /* a JSONL dataset; NULL: the adapter's validation set, else its training set */
    const char *backend;
    int base_only;         /* evaluate the base model without any adapter */
};
struct lg_eval_result {
    double loss, perplexity;
    int64_t tokens, samples;
    int adapters; /* adapters in the job */
};
LG_API enum lg_status lg_eval_run(const struct lg_eval_opts *o, struct lg_eval_result *r);

/* W + (alpha / r)·B·A for every adapted projection, written as a Hugging Face model directory sharded like the
 * input (other tensors copied unchanged, in their dtype). */
LG_API enum lg_status lg_merge_run(const char *model_dir, const char *adapter_dir, const char *out_dir);

struct lg_model_config;
/* A model directory (config.json + model.safetensors) with random weights for the config's dimensions, the
 * same bytes for the same seed: the tiny model of the README's first command, and the benchmarks' 8B-shaped
 * one. Weights ~ N(0, 0.02) as transformers initialises them, norms 1, in `dtype` (bf16, fp16 or fp32). */
LG_API enum lg_status lg_model_write_random(const struct lg_model_config *c, enum lg_dtype dtype, const char *out_dir,
                                            uint64_t seed);

#ifdef __cplusplus
}
#endif
#endif
