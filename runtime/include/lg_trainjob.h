/* lg_trainjob.h: the training settings of a job file, as `loragen train` and `loragen eval` read them.
 *
 * A training job is a scheduler job file (schema: generator/job.lua) with a `model` path, a `training` table
 * and training fields per adapter; one adapter is a list of one. Defaults follow common LoRA practice: r = 16,
 * alpha = 32, dropout 0.05, all seven projections, lr 2e-4, cosine decay after a 3% linear warm-up, AdamW
 * betas (0.9, 0.999), eps 1e-8, no weight decay, gradient clip 1.0, one epoch. `loragen train --help` lists
 * them. Paths in the file are relative to the job file; the default output directory is out/<job name> under
 * the current directory. Every error reads "job.lua:LINE: error: field: message".
 *
 * Ownership: lg_train_config_load fills *out with malloc'd strings and arrays; lg_train_config_free releases
 * them. The scheduler job (lg_job_load on the same file) is loaded separately by the trainer.
 *
 *   struct lg_train_config tc;
 *   if (lg_train_config_load("specs/jobs/tiny-train.lua", &tc) != LG_OK) puts(lg_last_error());
 *   printf("%s: %d adapter(s) on %s\n", tc.name, tc.nadapters, tc.model_dir);
 *   lg_train_config_free(&tc);
 */
#ifndef LG_TRAINJOB_H
#define LG_TRAINJOB_H

#include "lg_common.h"

#ifdef __cplusplus
extern "C" {
#endif

enum lg_lr_schedule { LG_LR_CONSTANT = 0, LG_LR_COSINE, LG_LR_LINEAR };

struct lg_train_adapter {
    char *name;
    char *dataset;      /* JSONL with input_ids (and labels or loss_mask) */
    char *validation;   /* JSONL or NULL */
    char *output_dir;   /* where the PEFT adapter, checkpoints, metrics and loss curve go */
    char *init_adapter; /* a PEFT adapter directory to continue from, or NULL */
    int rank;
    double alpha, dropout;
    unsigned targets; /* bit i = module i of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj */
    double lr, warmup;  /* warm-up: a fraction of the steps when < 1, else a step count */
    enum lg_lr_schedule schedule;
    double beta1, beta2, eps, weight_decay, grad_clip; /* grad_clip 0: off */
    int global_batch;   /* samples per optimizer step */
    int epochs;         /* passes over the dataset (when steps is 0) */
    int64_t steps;      /* optimizer steps; 0: from epochs */
    uint64_t seed;      /* LoRA init, dropout masks and the data order */
    int line;           /* the adapter's line in the job file */
};

struct lg_train_config {
    char *path, *name;
    char *model_dir;         /* Hugging Face model directory */
    char *output_dir;        /* checkpoints; adapters' outputs default to output_dir/<adapter name> */
    char *backend;           /* "auto", "cpu" or "cuda" */
    int deterministic;       /* GPU: attention's backward without atomics (bitwise-reproducible runs) */
    int checkpoint_every;    /* optimizer steps between checkpoints; 0: only at the end */
    int checkpoint_layers;   /* activation checkpointing every N layers; 0: off */
    int eval_every;          /* steps between validation losses; 0: only at the end */
    int log_every;           /* steps between progress lines when the output is not a terminal */
    int capacity_auto;       /* batching.capacity = "auto" without memory_budget_gb: sized from the device */
    double memory_gb;        /* training.memory_gb: device memory the run may use, GiB; 0: what is free */
    int nadapters;
    struct lg_train_adapter *adapters;
};

LG_API enum lg_status lg_train_config_load(const char *path, struct lg_train_config *out);
LG_API void lg_train_config_free(struct lg_train_config *tc);
/* Every training field with its default and meaning, one per line, from the job schema (generator/job.lua). */
LG_API const char *lg_train_config_defaults(void);

#ifdef __cplusplus
}
#endif
#endif
