/* train_internal.h: the trainer's state, shared by the files of runtime/train/ and nothing else:
 *   train_setup.c    loading the job, the model, the datasets; the backend and the decoder
 *   train_adapter.c  each adapter's tensors, moments, initialisation, optimizer step, PEFT output
 *   train_loop.c     executing the plan: microbatches, global batches, steps, the run as a whole
 *   train_ckpt.c     checkpoints: each rank's shard, written together (temp dir, fsync, rename, manifest)
 *   train_ckpt_load.c  --resume: verify, check the run's shape, load the shared state and this rank's shard
 *   train_report.c   metrics.jsonl, loss.svg and the progress events
 *   train_eval.c     validation losses and lg_eval_run
 *   train_dp.c       data parallelism: the order of the gradient all-reduces, and the all-reduce itself
 *   train_pp.c       pipeline parallelism: the layer split, 1F1B over the stages, the whole-model step
 */
#ifndef LG_TRAIN_INTERNAL_H
#define LG_TRAIN_INTERNAL_H

#include "lg_comm.h"
#include "lg_decoder.h"
#include "lg_hf.h"
#include "lg_io.h"
#include "lg_sched.h"
#include "lg_tokens.h"
#include "lg_train.h"
#include "lg_trainjob.h"

#include <stdio.h>

/* One trainable tensor pair of an adapter: A and B of one (layer, module), with their moments. */
struct lg_ad_tensor {
    int layer;
    enum lg_peft_module mod;
    struct lg_lora_params p;
    lg_addr ma, va, mb, vb; /* AdamW moments of A and B */
};

/* Global batches in a row with a non-finite loss or gradient after which an adapter's run stops. */
#define LG_TRAIN_BAD_STEPS 8

struct lg_point {
    int64_t step;
    double loss, lr, grad_norm;
};

struct lg_ad_state {
    int index;
    const struct lg_train_adapter *cfg;
    lg_tokens_t *train, *val;
    struct lg_ad_tensor *t;
    int nt;
    struct lg_opt_tensor *opt; /* [2 nt]: A then B of each tensor */
    int64_t step;                /* optimizer steps done (skipped ones excluded) */
    int64_t steps;               /* in all */
    int64_t skipped_in_a_row;
    int done;
    /* the global batch in progress */
    double batch_loss;
    /* per epoch: the plan's global batches of this adapter */
    size_t nbatches;
    int64_t *batch_left;     /* [nbatches] samples not yet run */
    double *batch_weight;    /* [nbatches] 1 / loss tokens of the batch */
    int64_t stepped_batches; /* batches of this epoch whose step is done: batch g may run once g == this */
    /* history, for metrics.jsonl and loss.svg */
    struct lg_point *hist;
    size_t nhist, caphist;
    struct lg_point *vhist; /* loss = validation loss */
    size_t nvhist, capvhist;
    char out_dir[1024];
};

/* Data parallel: this rank's microbatches of the epoch's plan, and the all-reduces (each adapter's gradients,
 * then its optimizer step) with the position in `order` before which each happens (train_dp.c). */
struct lg_dp_step {
    int adapter;
    size_t batch;
    size_t at; /* after this many entries of order */
};
struct lg_dp_sched {
    size_t *order; /* plan indices */
    size_t norder;
    struct lg_dp_step *steps;
    size_t nsteps, next;
};

/* A microbatch whose losses are still on their way back (the step did not wait): its own loss array and the
 * segments they belong to (train_loop.c). */
struct lg_pend_loss {
    float *loss; /* [capacity] */
    struct lg_seg *seg;
    int nseg;
};

struct lg_trainer {
    const struct lg_train_opts *opts;
    struct lg_train_config tc;
    lg_job_t *job;
    struct lg_model_config mc;
    lg_st_t *st;
    lg_backend_t *be;
    lg_decoder_t *dec;
    struct lg_decoder_adapter *dad;
    struct lg_ad_state *ad;
    int nad;
    uint32_t capacity;
    uint64_t shuffle_base; /* the job's shuffle seed: epoch 0's order; later epochs reshuffle from it */
    char out_root[1024];
    /* position */
    int epoch;
    size_t mb_index; /* microbatches of this epoch done */
    lg_plan_t *plan;
    /* microbatch buffers (host) */
    int32_t *ids, *target, *cu;
    float *weight, *loss;
    struct lg_pend_loss *pend; /* [maxpend]: the first npend are in flight */
    int npend, maxpend;
    struct lg_seg *seg;
    int maxseg;
    /* progress */
    int64_t tokens;
    double t0, elapsed_before; /* wall clock at start of this process; seconds of earlier runs */
    double t_first;            /* wall clock when the first optimizer step of this process ended (0: none yet) */
    int64_t tokens_first;      /* tokens trained on by then */
    double t_last;             /* the same at the latest optimizer step */
    int64_t tokens_last;
    double rate_tokens, rate_t; /* for tokens/s */
    int64_t ckpt_steps;         /* summed steps at the last checkpoint */
    int ckpt_due;               /* a periodic checkpoint is due once the microbatch in flight is done */
    /* processes: world = data_parallel x stages ranks, rank = dp_rank x stages + stage; world 1: one process
     * runs the whole plan (every data-parallel rank's microbatches, in the plan's order) */
    lg_comm_t *comm;
    int rank, world, local_rank;
    int dp, dp_rank;
    int stages, stage;      /* world > 1: the pipeline stages and this rank's (1 and 0 in one process) */
    struct lg_dp_sched dps; /* world > 1 */
    lg_addr dp_scratch;     /* NCCL: one adapter's gradients packed for one all-reduce */
    size_t dp_scratch_n;
    int pp_drained;         /* stages > 1: training is over, the pipeline is empty (the final validation) */
    int stop_all;           /* world > 1: some rank was asked to stop; all stop after the same step */
    double pp_norm, pp_local_norm; /* stages > 1: the batch's gradient norm over the model, and this stage's */
    size_t pp_fwd;          /* stages > 1: forwards this stage has run in the epoch (positions of its order) */
    size_t pp_fill;         /* stages > 1: at the latest step, the forwards stage 0 of this pipeline had run */
    size_t dp_next_resume;  /* --resume: the shared schedule's next all-reduce in the resumed epoch */
};

/* train_setup.c */
enum lg_status lg_train_setup(struct lg_trainer *tr, const struct lg_train_opts *o, int for_eval);
void lg_train_teardown(struct lg_trainer *tr);
/* train_memory.c: the decoder with its arena, the capacity sized from the device for capacity = "auto" */
enum lg_status lg_train_init_decoder(struct lg_trainer *tr);

/* train_adapter.c */
enum lg_status lg_ad_init(struct lg_trainer *tr, struct lg_ad_state *a);
void lg_ad_free(struct lg_trainer *tr, struct lg_ad_state *a);
enum lg_status lg_ad_init_weights(struct lg_trainer *tr, struct lg_ad_state *a);
enum lg_status lg_ad_load_peft(struct lg_trainer *tr, struct lg_ad_state *a, const char *dir);
enum lg_status lg_ad_zero_grads(struct lg_trainer *tr, struct lg_ad_state *a);
double lg_ad_lr(const struct lg_ad_state *a, int64_t step);
/* One optimizer step; *skipped set when a gradient was not finite. */
enum lg_status lg_ad_step(struct lg_trainer *tr, struct lg_ad_state *a, double *lr, double *norm, int *skipped);
enum lg_status lg_ad_write_peft(struct lg_trainer *tr, struct lg_ad_state *a, const char *dir);

/* train_loop.c */
enum lg_status lg_train_plan_epoch(struct lg_trainer *tr);
/* The epoch's plan as a checkpoint records it (state.safetensors "plan"): the capacity, the microbatch count
 * and a 64-bit hash of every microbatch's rank, position and samples, so a resume that would plan the epoch
 * otherwise (the job's batching or data changed, or capacity = "auto" sized another capacity) is refused. */
#define LG_CKPT_PLAN_N 4
void lg_train_plan_fingerprint(const struct lg_trainer *tr, double out[LG_CKPT_PLAN_N]);
enum lg_status lg_train_fill_mb(struct lg_trainer *tr, size_t i, struct lg_mb *mb, int *empty);
/* Forward + backward of a filled microbatch without waiting for the device; its losses join the adapters'
 * batch_loss at the next lg_train_resolve_losses, which waits for the device (once per optimizer step, before
 * anything reads batch_loss: a step, an all-reduce, a checkpoint). */
enum lg_status lg_train_step_mb(struct lg_trainer *tr, const struct lg_mb *mb);
enum lg_status lg_train_resolve_losses(struct lg_trainer *tr);
void lg_train_free_pending(struct lg_trainer *tr);

/* train_run.c */
double lg_train_stop_wanted(const struct lg_trainer *tr); /* 1 when this process was asked to stop */

/* train_dp.c */
enum lg_status lg_dp_build(struct lg_trainer *tr);
void lg_dp_free(struct lg_trainer *tr);
enum lg_status lg_dp_reduce(struct lg_trainer *tr, struct lg_ad_state *a);

/* train_pp.c */
typedef enum lg_status (*lg_pp_done_fn)(struct lg_trainer *tr, struct lg_ad_state *a);
void lg_pp_split(int layers, int stages, int stage, int *from, int *to);
/* Refuses a plan the 1F1B loop would deadlock on (a batch's microbatch before the previous batch is complete),
 * before anything runs; lg_pp_epoch checks it too. */
enum lg_status lg_pp_check(struct lg_trainer *tr);
/* One epoch of this stage; `done` runs when an adapter's global batch is complete on it (the step). */
enum lg_status lg_pp_epoch(struct lg_trainer *tr, lg_pp_done_fn done);
enum lg_status lg_pp_step(struct lg_trainer *tr, struct lg_ad_state *a, double *lr, double *norm, int *skipped);
/* A forward-only microbatch through the pipeline (validation, after training has drained). */
enum lg_status lg_pp_eval_mb(struct lg_trainer *tr, const struct lg_decoder_batch *b);
/* Rank 0: every stage's tensors of adapter a, written as one PEFT adapter; other ranks send theirs. */
enum lg_status lg_pp_write_peft(struct lg_trainer *tr, struct lg_ad_state *a, const char *dir);

/* train_ckpt.c, train_ckpt_load.c */
#define LG_TRAIN_CKPT_FORMAT 2
#define LG_CKPT_JOB_N 7 /* state.safetensors "job": format, epoch, seconds, processes, data_parallel, stages, adapters */
#define LG_CKPT_AD_N 6  /* "a<i>.state": step, steps, done, 0 (the batch loss is per rank), skipped in a row, format */
#define LG_CKPT_POS_N 3 /* rank-<r>.safetensors "position": microbatch of the order, next all-reduce, tokens */
extern const char *const lg_ckpt_parts[8]; /* A, B, their moments, their gradients */
void lg_ckpt_root(const struct lg_trainer *tr, char *buf, size_t n);
/* The capacity the latest checkpoint's run planned with (0: none recorded, or no checkpoint to resume). */
uint32_t lg_ckpt_capacity(const struct lg_trainer *tr);
/* The file of adapter i's weights and moments of this rank's stage. */
void lg_ckpt_weights_file(const struct lg_trainer *tr, int adapter, char *buf, size_t n);
/* The address and shape of part k (lg_ckpt_parts) of an adapter tensor. */
void lg_ckpt_part(const struct lg_ad_tensor *t, int k, lg_addr *addr, int64_t *rows, int64_t *cols);
void lg_ckpt_remove_stale_outputs(const struct lg_trainer *tr);
/* Collective (world > 1): every rank's outcome s of a phase, agreed; LG_OK when all succeeded, else this
 * rank's own error or one naming the first rank that failed. */
enum lg_status lg_train_agree(struct lg_trainer *tr, enum lg_status s, const char *what);
/* Collective: every rank calls it at the same point (after the same step; a pipeline drained). */
enum lg_status lg_ckpt_write(struct lg_trainer *tr);
/* Collective: every rank resumes from `latest`, or all fail. */
enum lg_status lg_ckpt_resume(struct lg_trainer *tr);

/* train_report.c */
double lg_train_now(void); /* monotonic seconds */
void lg_report(struct lg_trainer *tr, const struct lg_train_progress *p);
void lg_report_info(struct lg_trainer *tr, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
enum lg_status lg_report_point(struct lg_trainer *tr, struct lg_ad_state *a, const struct lg_point *p, int val);
enum lg_status lg_report_write(struct lg_trainer *tr, struct lg_ad_state *a);

/* train_eval.c */
enum lg_status lg_eval_tokens(struct lg_trainer *tr, int adapter, const lg_tokens_t *tk, double *loss,
                              int64_t *tokens);

#endif
