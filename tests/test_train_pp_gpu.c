/* test_train_pp_gpu.c: pipeline-parallel training on two GPUs (`loragen train JOB --gpus 2` with
 * pipeline.stages = 2: layers 0-1 on GPU 0, 2-3 on GPU 1) against one GPU running the same plan
 * (`loragen train JOB --backend cuda`): two adapters on a tiny bf16 Llama with the kernels' shapes (head_dim
 * 64). Activations cross between the stages in bf16 exactly as they lie in the one-GPU arena, so every step's
 * loss must agree closely (the whole-model gradient norm is summed in another order). Exits 77 with fewer than
 * two GPUs. CUDA is never initialised in this process: a probe child counts the GPUs and the runs are loragen
 * processes. */
#include "lg_hf.h"
#include "lg_test.h"
#include "lg_train.h"

#include <check.h>
#include <math.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *root;

static char *path_in(const char *rel) { return lg_test_path(root, rel); }

static int count_gpus(void)
{
    pid_t p = fork();
    if (p == 0) {
        int n = 0;
        if (cuInit(0) != CUDA_SUCCESS || cuDeviceGetCount(&n) != CUDA_SUCCESS)
            n = 0;
        _exit(n > 100 ? 100 : n);
    }
    int st;
    waitpid(p, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 0;
}

static void write_data(const char *rel, int samples, uint64_t seed, int mul)
{
    char *p = path_in(rel);
    FILE *f = fopen(p, "w");
    if (!f)
        exit(1);
    for (int s = 0; s < samples; s++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        int n = 2 + (int)((seed >> 33) % 300), t = (int)((seed >> 20) % 64);
        fprintf(f, "{\"input_ids\": [");
        for (int i = 0; i < n; i++) {
            fprintf(f, "%s%d", i ? ", " : "", t);
            t = (mul * t + 3) % 64;
        }
        fprintf(f, "]}\n");
    }
    fclose(f);
    free(p);
}

static void write_job(const char *rel, const char *out)
{
    char *p = path_in(rel);
    FILE *f = fopen(p, "w");
    if (!f)
        exit(1);
    fprintf(f, "return { name = 'ppgpu', model = { path = 'model' }, batching = { capacity = 1024 },\n"
               "  pipeline = { stages = 2, data_parallel = 1 },\n"
               "  training = { output = '%s', log_every = 1 },\n  adapters = {\n"
               "  { name = 'a', dataset = 'a.jsonl', global_batch = 8, rank = 16, alpha = 32, dropout = 0.1, "
               "lr = 1e-3, seed = 3, epochs = 2 },\n"
               "  { name = 'b', dataset = 'b.jsonl', global_batch = 6, rank = 8, alpha = 8, dropout = 0, lr = 2e-3, "
               "seed = 9, epochs = 2 } } }\n", out);
    fclose(f);
    free(p);
}

/* The losses of an adapter's metrics.jsonl (training lines: those with grad_norm). */
static int losses(const char *rel, double *out, int max)
{
    char *p = path_in(rel);
    char *t = lg_test_slurp(p, NULL);
    int n = 0;
    for (char *s = t; n < max && (s = strstr(s, "\"loss\": ")); s += 8)
        out[n++] = strtod(s + 8, NULL);
    free(t);
    free(p);
    return n;
}

static int compare(const char *ad, const char *one, const char *two)
{
    double x[512], y[512];
    char ra[128], rb[128];
    snprintf(ra, sizeof ra, "%s/%s/metrics.jsonl", one, ad);
    snprintf(rb, sizeof rb, "%s/%s/metrics.jsonl", two, ad);
    int n = losses(ra, x, 512), m = losses(rb, y, 512);
    if (n != m || n < 4) {
        fprintf(stderr, "%s: %d losses in %s, %d in %s\n", ad, n, ra, m, rb);
        return 0;
    }
    double worst = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(x[i]) || !isfinite(y[i]))
            return 0;
        double d = fabs(x[i] - y[i]) / fabs(x[i]);
        if (d > worst)
            worst = d;
    }
    printf("adapter %s: %d steps, largest relative loss difference %.2e (%s vs %s)\n", ad, n, worst, one, two);
    return worst < 2e-3;
}

static int run(const char *const *args, const char *what)
{
    char *out, *err;
    int rc = lg_test_loragen_run(root, args, &out, &err);
    if (rc)
        fprintf(stderr, "%s: exit %d\n%s\n%s\n", what, rc, out, err);
    free(out);
    free(err);
    return rc == 0;
}

START_TEST(pp2_matches_one_gpu)
{
    root = lg_test_tmpdir("lg_train_pp_gpu");
    ck_assert_int_eq(chdir(root), 0);
    struct lg_model_config c;
    lg_model_config_defaults(LG_FAMILY_LLAMA, &c);
    c.hidden_size = 256;
    c.intermediate_size = 512;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 64;
    c.num_hidden_layers = 4;
    c.vocab_size = 128;
    c.max_position_embeddings = 1024;
    char *model = path_in("model");
    CHECK(lg_model_write_random(&c, LG_BF16, model, 7));
    free(model);
    write_data("a.jsonl", 64, 11, 5);
    write_data("b.jsonl", 48, 23, 7);
    write_job("one.lua", "one");
    write_job("two.lua", "two");
    ck_assert(run((const char *[]){"train", "one.lua", "--backend", "cuda", NULL}, "one GPU"));
    ck_assert(run((const char *[]){"train", "two.lua", "--gpus", "2", NULL}, "two GPUs, two stages"));
    ck_assert(compare("a", "one", "two"));
    ck_assert(compare("b", "one", "two"));
    lg_test_rm_rf(root);
}
END_TEST

int main(void)
{
    int n = count_gpus();
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
