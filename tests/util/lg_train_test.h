/* lg_train_test.h: fixtures shared by the training suites (test_train, test_train_multi, test_train_dp,
 * test_train_pp and the two-GPU test_train_dp_gpu / test_train_pp_gpu): synthetic token datasets, tiny random
 * models, and readers that compare two runs' adapters and metrics.jsonl. Paths are (dir, rel) pairs, as
 * lg_test_path joins them. Each helper fails the calling test (a Check assertion, or CHECK's exit) on a
 * file it cannot read or write. The tt_ prefix keeps the names apart in the one lg_testutil archive. */
#ifndef LG_TRAIN_TEST_H
#define LG_TRAIN_TEST_H

#include "lg_hf.h"

#include <stdint.h>

/* A learnable task: each sample has min_len + (r mod len_range) tokens, starts at (r' mod vocab), and each
 * token t is followed by (mul·t + add) mod vocab; r, r' come from a 64-bit LCG on the seed. */
struct tt_task {
    int min_len, len_range, vocab, mul, add;
};

/* Writes `samples` lines of {"input_ids": [...]} of the task to dir/rel. */
void tt_write_dataset(const char *dir, const char *rel, int samples, uint64_t seed, const struct tt_task *task);

/* text to dir/rel. */
void tt_write_text(const char *dir, const char *rel, const char *text);

/* The CPU suites' tiny random model (hidden 48, MLP 96, 4 heads of 12 over 2 KV heads, vocab 64, 256
 * positions, FP32, seed 5) with `layers` layers, to dir/rel. */
void tt_write_tiny_model(const char *dir, const char *rel, enum lg_model_family family, int layers);

/* The largest relative L2 difference between the same tensors of two adapter files: both hold the same
 * tensors, of the same sizes, every value finite (asserted). */
double tt_adapter_diff(const char *dir, const char *rel_a, const char *rel_b);

/* Every line's loss (within 1e-5 relative) and grad_norm (within 1e-4 relative + 1e-7) of two metrics.jsonl
 * files with the same steps in the same order (asserted); *lines is how many lines there were. */
void tt_compare_metrics(const char *dir, const char *rel_a, const char *rel_b, int *lines);

/* The two-task fixture of the multi-process suites (test_train_dp, test_train_pp, test_train_resume_mp): a tiny
 * Llama of `layers` layers in dir/model, a.jsonl (40 samples of TT_TASK_A), b.jsonl (36 of TT_TASK_B) and
 * va.jsonl (12 of task A). */
extern const struct tt_task TT_TASK_A, TT_TASK_B;
void tt_write_two_task_fixture(const char *dir, int layers);

/* Their job, to dir/rel: adapters a (rank 8, dropout 0.1, batch 4; validated on va.jsonl when `validate`) and
 * b (rank 4, batch 6, q/v/down only), `epochs` epochs each, over stages x dp processes on the CPU backend,
 * output under `out`; `training` adds fields to the training table ("checkpoint_every = 2, "), or "". */
struct tt_two_task_job {
    const char *name, *out, *training;
    int stages, dp, epochs, validate;
};
void tt_write_two_task_job(const char *dir, const char *rel, const struct tt_two_task_job *j);

/* The two-GPU suites. */

/* How many GPUs, counted in a forked child so that CUDA is never initialised in this process. */
int tt_count_gpus(void);

/* Their fixture in dir: a 4-layer bf16 Llama with the kernels' shapes (hidden 256, head_dim 64, vocab 128)
 * in dir/model, and the two adapters' datasets a.jsonl and b.jsonl. */
void tt_write_gpu_fixture(const char *dir);

/* Their job (adapters a: rank 16, dropout 0.1, batch 8; b: rank 8, batch 6; 2 epochs, log_every 1) named
 * `name` with the given pipeline shape and output directory, to dir/rel. */
void tt_write_gpu_job(const char *dir, const char *rel, const char *name, int stages, int dp, const char *out);

/* `loragen args...` in dir; on a non-zero exit prints what (the run's description), the status and both
 * outputs. True when it exited 0. */
int tt_loragen_ok(const char *dir, const char *const *args, const char *what);

/* True when adapter ad's training losses in dir/one/ad/metrics.jsonl and dir/two/ad/metrics.jsonl are as
 * many (at least 4), all finite, and within tol of each other (relative); prints the largest difference. */
int tt_losses_agree(const char *dir, const char *ad, const char *one, const char *two, double tol);

#endif
