/* lg_train_test.c: the training suites' shared fixtures and comparisons (see lg_train_test.h). */
#include "lg_train_test.h"

#include "lg_test.h"
#include "lg_train.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

void tt_write_dataset(const char *dir, const char *rel, int samples, uint64_t seed, const struct tt_task *task)
{
    char *p = lg_test_path(dir, rel);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    for (int s = 0; s < samples; s++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        int n = task->min_len + (int)((seed >> 33) % (uint64_t)task->len_range);
        int t = (int)((seed >> 20) % (uint64_t)task->vocab);
        fprintf(f, "{\"input_ids\": [");
        for (int i = 0; i < n; i++) {
            fprintf(f, "%s%d", i ? ", " : "", t);
            t = (task->mul * t + task->add) % task->vocab;
        }
        fprintf(f, "]}\n");
    }
    fclose(f);
    free(p);
}

void tt_write_text(const char *dir, const char *rel, const char *text)
{
    char *p = lg_test_path(dir, rel);
    lg_test_write_text(p, text);
    free(p);
}

/* Samples of 8 to 57 tokens where t is followed by (mul·t + add) mod 48: one task per adapter. */
const struct tt_task TT_TASK_A = {8, 50, 48, 5, 3}, TT_TASK_B = {8, 50, 48, 7, 1};

void tt_write_two_task_fixture(const char *dir, int layers)
{
    tt_write_tiny_model(dir, "model", LG_FAMILY_LLAMA, layers);
    tt_write_dataset(dir, "a.jsonl", 40, 11, &TT_TASK_A);
    tt_write_dataset(dir, "b.jsonl", 36, 23, &TT_TASK_B);
    tt_write_dataset(dir, "va.jsonl", 12, 77, &TT_TASK_A);
}

void tt_write_two_task_job(const char *dir, const char *rel, const struct tt_two_task_job *j)
{
    char text[2048];
    snprintf(text, sizeof text,
             "return { name = '%s', model = { path = 'model' }, batching = { capacity = 160 },\n"
             "  pipeline = { stages = %d, data_parallel = %d },\n"
             "  training = { backend = 'cpu', output = '%s', %slog_every = 1 },\n"
             "  adapters = {\n"
             "  { name = 'a', dataset = 'a.jsonl', %sglobal_batch = 4, rank = 8, alpha = 16, dropout = 0.1, "
             "lr = 1e-2, seed = 3, epochs = %d },\n"
             "  { name = 'b', dataset = 'b.jsonl', global_batch = 6, rank = 4, alpha = 4, dropout = 0, lr = 5e-3, "
             "seed = 9, epochs = %d, targets = { 'q_proj', 'v_proj', 'down_proj' } } } }\n",
             j->name, j->stages, j->dp, j->out, j->training ? j->training : "",
             j->validate ? "validation = 'va.jsonl', " : "", j->epochs, j->epochs);
    tt_write_text(dir, rel, text);
}

void tt_write_tiny_model(const char *dir, const char *rel, enum lg_model_family family, int layers)
{
    struct lg_model_config c;
    lg_model_config_defaults(family, &c);
    c.hidden_size = 48;
    c.intermediate_size = 96;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 12;
    c.num_hidden_layers = layers;
    c.vocab_size = 64;
    c.max_position_embeddings = 256;
    char *model = lg_test_path(dir, rel);
    CHECK(lg_model_write_random(&c, LG_FP32, model, 5));
    free(model);
}

double tt_adapter_diff(const char *dir, const char *rel_a, const char *rel_b)
{
    char *pa = lg_test_path(dir, rel_a), *pb = lg_test_path(dir, rel_b);
    lg_st_t *a, *b;
    CHECK(lg_st_open(pa, &a));
    CHECK(lg_st_open(pb, &b));
    ck_assert_uint_eq(lg_st_count(a), lg_st_count(b));
    double worst = 0;
    for (size_t i = 0; i < lg_st_count(a); i++) {
        struct lg_st_tensor ta, tb;
        CHECK(lg_st_tensor(a, i, &ta));
        CHECK(lg_st_find(b, ta.name, &tb));
        ck_assert_int_eq(ta.numel, tb.numel);
        float *x = malloc((size_t)ta.numel * sizeof *x), *y = malloc((size_t)ta.numel * sizeof *y);
        CHECK(lg_st_read_f32(a, ta.name, ta.ndim, ta.shape, x));
        CHECK(lg_st_read_f32(b, ta.name, ta.ndim, ta.shape, y));
        double num = 0, den = 0;
        for (int64_t k = 0; k < ta.numel; k++) {
            ck_assert(isfinite(x[k]) && isfinite(y[k]));
            num += ((double)x[k] - y[k]) * ((double)x[k] - y[k]);
            den += (double)y[k] * y[k];
        }
        double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        if (rel > worst)
            worst = rel;
        free(x);
        free(y);
    }
    lg_st_close(a);
    lg_st_close(b);
    free(pa);
    free(pb);
    return worst;
}

void tt_compare_metrics(const char *dir, const char *rel_a, const char *rel_b, int *lines)
{
    char *pa = lg_test_path(dir, rel_a), *pb = lg_test_path(dir, rel_b);
    char *ta = lg_test_slurp(pa, NULL), *tb = lg_test_slurp(pb, NULL);
    char *sa = ta, *sb = tb;
    *lines = 0;
    for (;;) {
        char *la = strstr(sa, "\"loss\": "), *lb = strstr(sb, "\"loss\": ");
        ck_assert_msg(!la == !lb, "%s and %s have different numbers of lines", rel_a, rel_b);
        if (!la)
            break;
        double x = strtod(la + 8, NULL), y = strtod(lb + 8, NULL);
        ck_assert_msg(fabs(x - y) <= 1e-5 * fabs(y), "%s line %d: loss %.9g vs %.9g", rel_a, *lines + 1, x, y);
        char *ga = strstr(la, "\"grad_norm\": "), *gb = strstr(lb, "\"grad_norm\": ");
        if (ga && gb) {
            x = strtod(ga + 13, NULL);
            y = strtod(gb + 13, NULL);
            ck_assert_msg(fabs(x - y) <= 1e-4 * fabs(y) + 1e-7, "%s line %d: grad_norm %.9g vs %.9g", rel_a,
                          *lines + 1, x, y);
        }
        sa = la + 8;
        sb = lb + 8;
        (*lines)++;
    }
    free(ta);
    free(tb);
    free(pa);
    free(pb);
}

int tt_count_gpus(void)
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

void tt_write_gpu_fixture(const char *dir)
{
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
    char *model = lg_test_path(dir, "model");
    CHECK(lg_model_write_random(&c, LG_BF16, model, 7));
    free(model);
    tt_write_dataset(dir, "a.jsonl", 64, 11, &(struct tt_task){2, 300, 64, 5, 3});
    tt_write_dataset(dir, "b.jsonl", 48, 23, &(struct tt_task){2, 300, 64, 7, 3});
}

void tt_write_gpu_job(const char *dir, const char *rel, const char *name, int stages, int dp, const char *out)
{
    char text[2048];
    snprintf(text, sizeof text,
             "return { name = '%s', model = { path = 'model' }, batching = { capacity = 1024 },\n"
             "  pipeline = { stages = %d, data_parallel = %d },\n"
             "  training = { output = '%s', log_every = 1 },\n  adapters = {\n"
             "  { name = 'a', dataset = 'a.jsonl', global_batch = 8, rank = 16, alpha = 32, dropout = 0.1, "
             "lr = 1e-3, seed = 3, epochs = 2 },\n"
             "  { name = 'b', dataset = 'b.jsonl', global_batch = 6, rank = 8, alpha = 8, dropout = 0, lr = 2e-3, "
             "seed = 9, epochs = 2 } } }\n",
             name, stages, dp, out);
    tt_write_text(dir, rel, text);
}

int tt_loragen_ok(const char *dir, const char *const *args, const char *what)
{
    char *out, *err;
    int rc = lg_test_loragen_run(dir, args, &out, &err);
    if (rc)
        fprintf(stderr, "%s: exit %d\n%s\n%s\n", what, rc, out, err);
    free(out);
    free(err);
    return rc == 0;
}

/* The losses of a metrics.jsonl, in order (at most max). */
static int losses(const char *dir, const char *rel, double *out, int max)
{
    char *p = lg_test_path(dir, rel);
    char *t = lg_test_slurp(p, NULL);
    int n = 0;
    for (char *s = t; n < max && (s = strstr(s, "\"loss\": ")); s += 8)
        out[n++] = strtod(s + 8, NULL);
    free(t);
    free(p);
    return n;
}

int tt_losses_agree(const char *dir, const char *ad, const char *one, const char *two, double tol)
{
    double x[512], y[512];
    char ra[128], rb[128];
    snprintf(ra, sizeof ra, "%s/%s/metrics.jsonl", one, ad);
    snprintf(rb, sizeof rb, "%s/%s/metrics.jsonl", two, ad);
    int n = losses(dir, ra, x, 512), m = losses(dir, rb, y, 512);
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
    return worst < tol;
}
