/* test_train_pp_gpu.c: pipeline-parallel training on two GPUs (`loragen train JOB --gpus 2` with
 * pipeline.stages = 2: layers 0-1 on GPU 0, 2-3 on GPU 1) against one GPU running the same plan
 * (`loragen train JOB --backend cuda`): two adapters on a tiny bf16 Llama with the kernels' shapes (head_dim
 * 64). Activations cross between the stages in bf16 exactly as they lie in the one-GPU arena, so every step's
 * loss must agree closely (the whole-model gradient norm is summed in another order). Exits 77 with fewer than
 * two GPUs. CUDA is never initialised in this process: a probe child counts the GPUs and the runs are loragen
 * processes. */
#include "lg_test.h"
#include "lg_train_test.h"

#include <check.h>
#include <stdlib.h>
#include <unistd.h>

static char *root;

START_TEST(pp2_matches_one_gpu)
{
    root = lg_test_tmpdir("lg_train_pp_gpu");
    ck_assert_int_eq(chdir(root), 0);
    tt_write_gpu_fixture(root);
    tt_write_gpu_job(root, "one.lua", "ppgpu", 2, 1, "one");
    tt_write_gpu_job(root, "two.lua", "ppgpu", 2, 1, "two");
    ck_assert(tt_loragen_ok(root, (const char *[]){"train", "one.lua", "--backend", "cuda", NULL}, "one GPU"));
    ck_assert(tt_loragen_ok(root, (const char *[]){"train", "two.lua", "--gpus", "2", NULL}, "two GPUs, two stages"));
    ck_assert(tt_losses_agree(root, "a", "one", "two", 2e-3));
    ck_assert(tt_losses_agree(root, "b", "one", "two", 2e-3));
    lg_test_rm_rf(root);
}
END_TEST

int main(void)
{
    int n = tt_count_gpus();
    if (n < 2) {
        printf("test_train_pp_gpu: %d GPU(s); needs 2: skipped\n", n);
        return 77;
    }
    Suite *s = suite_create("train_pp_gpu");
    TCase *tc = tcase_create("gpu");
    tcase_add_test(tc, pp2_matches_one_gpu);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0);
}
