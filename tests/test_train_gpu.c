/* test_train_gpu.c: the CUDA training backend against the CPU backend: a tiny Llama and a tiny Qwen2 (head_dim
 * 64, the kernels' shapes) trained from the same initial adapter on the same data, dropout 0 and then 0.1: the
 * loss of every step agrees within bf16 tolerance, and the same GPU run twice gives bit-identical losses
 * (deterministic attention, fixed-order reductions). Exits 77 (skipped) without a GPU. */
#include "lg_hf.h"
#include "lg_test.h"
#include "lg_train.h"

#include <check.h>
#include <math.h>
#include <string.h>

static char *root;

static char *path_in(const char *rel) { return lg_test_path(root, rel); }

static void write_data(const char *rel, int samples, uint64_t seed)
{
    char *p = path_in(rel);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    for (int s = 0; s < samples; s++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        int n = 1 + (int)((seed >> 33) % 300), t = (int)((seed >> 20) % 64);
        fprintf(f, "{\"input_ids\": [");
        for (int i = 0; i < n; i++) {
            fprintf(f, "%s%d", i ? ", " : "", t);
            t = (5 * t + 3) % 64;
        }
        fprintf(f, "]}\n");
    }
    fclose(f);
    free(p);
}

static void write_model(const char *rel, int qwen)
{
    struct lg_model_config c;
    lg_model_config_defaults(qwen ? LG_FAMILY_QWEN2 : LG_FAMILY_LLAMA, &c);
    c.hidden_size = 256;
    c.intermediate_size = 512;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 64;
    c.num_hidden_layers = 2;
    c.vocab_size = 128;
    c.max_position_embeddings = 1024;
    c.tie_word_embeddings = qwen;
    char *p = path_in(rel);
    CHECK(lg_model_write_random(&c, LG_BF16, p, 7));
    free(p);
}

/* Trains `model` on `backend`; returns the per-step losses read from metrics.jsonl (n of them). */
static double *train(const char *model, const char *backend, const char *out, double dropout, int *n)
{
    char text[2048], rel[64];
    snprintf(text, sizeof text,
             "return { name = 'gpu', model = { path = '%s' }, batching = { capacity = 1024 },\n"
             "  training = { backend = '%s', output = '%s' },\n"
             "  adapters = { { name = 'a', dataset = 'train.jsonl', global_batch = 8, rank = 16, alpha = 32,\n"
             "    dropout = %g, lr = 3e-3, steps = 8, seed = 2 } } }\n",
             model, backend, out, dropout);
    snprintf(rel, sizeof rel, "%s.lua", out);
    char *job = path_in(rel);
    lg_test_write_text(job, text);
    struct lg_train_opts o = {.job = job, .backend = backend};
    struct lg_train_result r;
    CHECK(lg_train_run(&o, &r));
    free(job);
    snprintf(rel, sizeof rel, "%s/a/metrics.jsonl", out);
    char *m = path_in(rel);
    char *t = lg_test_slurp(m, NULL);
    double *loss = calloc(64, sizeof *loss);
    *n = 0;
    for (char *p = t; (p = strstr(p, "\"loss\": ")) && *n < 64; p += 8)
        loss[(*n)++] = strtod(p + 8, NULL);
    free(t);
    free(m);
    return loss;
}

static void compare(const char *model, double dropout)
{
    int nc, ng, ng2;
    char oc[64], og[64], og2[64];
    snprintf(oc, sizeof oc, "out_%s_cpu_%g", model, dropout);
    snprintf(og, sizeof og, "out_%s_gpu_%g", model, dropout);
    snprintf(og2, sizeof og2, "out_%s_gpu2_%g", model, dropout);
    double *c = train(model, "cpu", oc, dropout, &nc);
    double *g = train(model, "cuda", og, dropout, &ng);
    double *g2 = train(model, "cuda", og2, dropout, &ng2);
    ck_assert_int_eq(nc, 8);
    ck_assert_int_eq(ng, 8);
    for (int i = 0; i < 8; i++) {
        double rel = fabs(g[i] - c[i]) / fabs(c[i]);
        fprintf(stderr, "%s p=%g step %d: cpu %.6f cuda %.6f (rel %.2e)\n", model, dropout, i + 1, c[i], g[i], rel);
        ck_assert_msg(isfinite(g[i]) && rel < 3e-2, "%s p=%g step %d: cpu %.6f, cuda %.6f", model, dropout, i + 1,
                      c[i], g[i]);
        ck_assert_msg(g[i] == g2[i], "%s: two CUDA runs differ at step %d: %.9g vs %.9g", model, i + 1, g[i], g2[i]);
    }
    ck_assert_msg(g[7] < g[0], "%s: the loss did not fall on the GPU", model);
    free(c);
    free(g);
    free(g2);
}

START_TEST(cuda_matches_cpu)
{
    root = lg_test_tmpdir("lg_train_gpu");
    write_model("llama", 0);
    write_model("qwen2", 1);
    write_data("train.jsonl", 64, 3);
    compare("llama", 0.0);
    compare("qwen2", 0.0);
    compare("llama", 0.1);
    lg_test_rm_rf(root);
    free(root);
}
END_TEST

int main(void)
{
    lg_test_require_gpu();
    Suite *s = suite_create("train_gpu");
    TCase *tc = tcase_create("train_gpu");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, cuda_matches_cpu);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 1);
}
