/* test_train_dp_gpu.c: data-parallel training on two GPUs (`loragen train JOB --gpus 2`) against one GPU
 * running the same plan (`loragen train JOB --backend cuda`): two adapters on a tiny bf16 Llama with the
 * kernels' shapes (head_dim 64), pipeline.data_parallel = 2. Each microbatch's forward is the same kernels on
 * the same inputs on either GPU; only the order of the fp32 gradient sums differs, so every step's loss must
 * agree closely. Run with NCCL between the GPUs (the default) and again with LORAGEN_COMM=tcp (host copies
 * over sockets). Exits 77 with fewer than two GPUs. CUDA is never initialised in this process: a probe child
 * counts the GPUs and the runs are loragen processes. */
#include "lg_test.h"
#include "lg_train_test.h"

#include <check.h>
#include <stdlib.h>
#include <unistd.h>

static char *root;

START_TEST(dp2_matches_one_gpu)
{
    root = lg_test_tmpdir("lg_train_dp_gpu");
    ck_assert_int_eq(chdir(root), 0);
    tt_write_gpu_fixture(root);
    tt_write_gpu_job(root, "one.lua", "dpgpu", 1, 2, "one");
    tt_write_gpu_job(root, "nccl.lua", "dpgpu", 1, 2, "nccl");
    tt_write_gpu_job(root, "tcp.lua", "dpgpu", 1, 2, "tcp");
    ck_assert(tt_loragen_ok(root, (const char *[]){"train", "one.lua", "--backend", "cuda", NULL}, "one GPU"));
    ck_assert(tt_loragen_ok(root, (const char *[]){"train", "nccl.lua", "--gpus", "2", NULL}, "two GPUs, NCCL"));
    setenv("LORAGEN_COMM", "tcp", 1);
    ck_assert(tt_loragen_ok(root, (const char *[]){"train", "tcp.lua", "--gpus", "2", NULL}, "two GPUs, TCP"));
    unsetenv("LORAGEN_COMM");
    ck_assert(tt_losses_agree(root, "a", "one", "nccl", 2e-3));
    ck_assert(tt_losses_agree(root, "b", "one", "nccl", 2e-3));
    ck_assert(tt_losses_agree(root, "a", "one", "tcp", 2e-3));
    ck_assert(tt_losses_agree(root, "b", "one", "tcp", 2e-3));
    lg_test_rm_rf(root);
}
END_TEST

int main(void)
{
    int n = tt_count_gpus();
    if (n < 2) {
        printf("test_train_dp_gpu: %d GPU(s); needs 2: skipped\n", n);
        return 77;
    }
    Suite *s = suite_create("train_dp_gpu");
    TCase *tc = tcase_create("gpu");
    tcase_add_test(tc, dp2_matches_one_gpu);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0);
}
