/* test_train_resume_mp_gpu.c: checkpoints and --resume of a run over two GPUs (`loragen train JOB --gpus 2`),
 * data_parallel = 2 (NCCL between the GPUs) and pipeline stages = 2: each run is stopped with SIGTERM once it
 * has printed its second step (every rank writes its shard of a checkpoint at the agreed step; the pipeline
 * drains first) and resumed with --resume; its adapters and metrics.jsonl must be byte for byte those of an
 * uninterrupted run of the same job (training.deterministic = true: the kernels and NCCL's sum are the same on
 * the same inputs). The tiny bf16 Llama with the kernels' shapes of the other two-GPU suites. Exits 77 with
 * fewer than two GPUs; CUDA is never initialised in this process. */
#include "lg_test.h"
#include "lg_train_test.h"

#include <check.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *root;

static void write_job(const char *rel, const char *out, int stages, int dp)
{
    char text[2048];
    snprintf(text, sizeof text,
             "return { name = 'mpgpu', model = { path = 'model' }, batching = { capacity = 1024 },\n"
             "  pipeline = { stages = %d, data_parallel = %d },\n"
             "  training = { output = '%s', log_every = 1, deterministic = true },\n  adapters = {\n"
             "  { name = 'a', dataset = 'a.jsonl', global_batch = 8, rank = 16, alpha = 32, dropout = 0.1, "
             "lr = 1e-3, seed = 3, epochs = 20 },\n"
             "  { name = 'b', dataset = 'b.jsonl', global_batch = 6, rank = 8, alpha = 8, dropout = 0, lr = 2e-3, "
             "seed = 9, epochs = 20 } } }\n",
             stages, dp, out);
    tt_write_text(root, rel, text);
}

static void wait_for_step_2(pid_t launcher)
{
    char *fo = lg_test_path(root, "stdout.txt");
    for (;;) {
        char *text = access(fo, R_OK) == 0 ? lg_test_slurp(fo, NULL) : NULL;
        int seen = text && strstr(text, "step 2/") != NULL;
        free(text);
        if (seen)
            break;
        ck_assert_msg(waitpid(launcher, NULL, WNOHANG) == 0, "the run ended before its second step");
        usleep(5000);
    }
    free(fo);
}

static void same_file(const char *x, const char *y)
{
    char *px = lg_test_path(root, x), *py = lg_test_path(root, y);
    size_t nx, ny;
    char *a = lg_test_slurp(px, &nx), *b = lg_test_slurp(py, &ny);
    ck_assert_msg(nx == ny && !memcmp(a, b, nx), "%s differs from the uninterrupted run's %s", y, x);
    free(a);
    free(b);
    free(px);
    free(py);
}

static void stop_and_resume(int stages, int dp)
{
    char ref[32], cut[32], jref[40], jcut[40];
    snprintf(ref, sizeof ref, "ref%d_%d", stages, dp);
    snprintf(cut, sizeof cut, "cut%d_%d", stages, dp);
    snprintf(jref, sizeof jref, "%s.lua", ref);
    snprintf(jcut, sizeof jcut, "%s.lua", cut);
    write_job(jref, ref, stages, dp);
    write_job(jcut, cut, stages, dp);
    ck_assert(tt_loragen_ok(root, (const char *[]){"train", jref, "--gpus", "2", NULL}, "uninterrupted"));
    pid_t launcher = lg_test_spawn(root, (const char *[]){"train", jcut, "--gpus", "2", NULL});
    wait_for_step_2(launcher);
    ck_assert_int_eq(kill(launcher, SIGTERM), 0);
    char *out, *err;
    int rc = lg_test_wait(root, launcher, &out, &err);
    ck_assert_msg(rc == 130 && strstr(out, "interrupted: checkpoint written"), "stopped run: %d\n%s\n%s", rc, out,
                  err);
    free(out);
    free(err);
    ck_assert(tt_loragen_ok(root, (const char *[]){"train", jcut, "--gpus", "2", "--resume", NULL}, "resumed"));
    for (int k = 0; k < 2; k++) {
        char x[96], y[96];
        snprintf(x, sizeof x, "%s/%c/adapter_model.safetensors", ref, "ab"[k]);
        snprintf(y, sizeof y, "%s/%c/adapter_model.safetensors", cut, "ab"[k]);
        same_file(x, y);
        snprintf(x, sizeof x, "%s/%c/metrics.jsonl", ref, "ab"[k]);
        snprintf(y, sizeof y, "%s/%c/metrics.jsonl", cut, "ab"[k]);
        same_file(x, y);
    }
}

START_TEST(dp2_stop_resume_is_bit_exact) { stop_and_resume(1, 2); }
END_TEST

START_TEST(pp2_stop_resume_is_bit_exact) { stop_and_resume(2, 1); }
END_TEST

int main(void)
{
    int n = tt_count_gpus();
    if (n < 2) {
        printf("test_train_resume_mp_gpu: %d GPU(s); needs 2: skipped\n", n);
        return 77;
    }
    root = lg_test_tmpdir("lg_train_resume_mp_gpu");
    if (chdir(root) != 0)
        return 1;
    tt_write_gpu_fixture(root);
    Suite *s = suite_create("train_resume_mp_gpu");
    TCase *tc = tcase_create("gpu");
    tcase_add_test(tc, dp2_stop_resume_is_bit_exact);
    tcase_add_test(tc, pp2_stop_resume_is_bit_exact);
    suite_add_tcase(s, tc);
    int rc = lg_test_run(s, 0);
    lg_test_rm_rf(root);
    return rc;
}
