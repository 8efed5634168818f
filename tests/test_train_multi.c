/* test_train_multi.c: several adapters trained together on one frozen base (the scheduler packs their
 * samples into shared microbatches, each adapter's segment through its own A/B, each stepping when its own
 * global batch completes) give each adapter what training it alone gives: same init (its seed), same
 * batches (dataset order), same token-weighted loss per batch. Only the summation order of the gradient
 * across microbatches differs, so the adapters agree within float tolerance. Dropout is 0 here: masks are
 * drawn per microbatch position, so packing changes them by design. */
#include "lg_hf.h"
#include "lg_test.h"
#include "lg_train.h"

#include <check.h>
#include <math.h>
#include <string.h>

static char *root;

static char *path_in(const char *rel) { return lg_test_path(root, rel); }

static void write_text(const char *rel, const char *text)
{
    char *p = path_in(rel);
    lg_test_write_text(p, text);
    free(p);
}

/* Samples where t is followed by (mul·t + add) mod 48: one task per adapter. */
static void write_dataset(const char *rel, int samples, uint64_t seed, int mul, int add)
{
    char *p = path_in(rel);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    for (int s = 0; s < samples; s++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        int n = 8 + (int)((seed >> 33) % 50), t = (int)((seed >> 20) % 48);
        fprintf(f, "{\"input_ids\": [");
        for (int i = 0; i < n; i++) {
            fprintf(f, "%s%d", i ? ", " : "", t);
            t = (mul * t + add) % 48;
        }
        fprintf(f, "]}\n");
    }
    fclose(f);
    free(p);
}

static const char *ADAPTER_A = "{ name = 'a', dataset = 'a.jsonl', global_batch = 4, rank = 8, alpha = 16, "
                               "dropout = 0, lr = 1e-2, seed = 3 }";
static const char *ADAPTER_B = "{ name = 'b', dataset = 'b.jsonl', global_batch = 6, rank = 4, alpha = 4, "
                               "dropout = 0, lr = 5e-3, seed = 9, targets = { 'q_proj', 'v_proj', 'down_proj' } }";

static void write_job(const char *rel, const char *out, const char *adapters)
{
    char text[2048];
    snprintf(text, sizeof text,
             "return { name = 'multi', model = { path = 'model' }, batching = { capacity = 160 },\n"
             "  training = { backend = 'cpu', output = '%s' },\n  adapters = { %s } }\n",
             out, adapters);
    write_text(rel, text);
}

static void train(const char *rel)
{
    char *p = path_in(rel);
    struct lg_train_opts o = {.job = p};
    struct lg_train_result r;
    CHECK(lg_train_run(&o, &r));
    free(p);
}

/* Largest relative difference between the same tensors of two adapter files (all must be present in both). */
static double compare(const char *rel_a, const char *rel_b)
{
    char *pa = path_in(rel_a), *pb = path_in(rel_b);
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

START_TEST(each_adapter_as_if_alone)
{
    root = lg_test_tmpdir("lg_train_multi");
    struct lg_model_config c;
    lg_model_config_defaults(LG_FAMILY_QWEN2, &c);
    c.hidden_size = 48;
    c.intermediate_size = 96;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 12;
    c.num_hidden_layers = 2;
    c.vocab_size = 64;
    c.max_position_embeddings = 256;
    char *model = path_in("model");
    CHECK(lg_model_write_random(&c, LG_FP32, model, 5));
    free(model);
    write_dataset("a.jsonl", 40, 1, 5, 3);
    write_dataset("b.jsonl", 36, 2, 7, 1);
    char both[1024];
    snprintf(both, sizeof both, "%s, %s", ADAPTER_A, ADAPTER_B);
    write_job("both.lua", "out_both", both);
    write_job("solo_a.lua", "out_a", ADAPTER_A);
    write_job("solo_b.lua", "out_b", ADAPTER_B);
    train("both.lua");
    train("solo_a.lua");
    train("solo_b.lua");
    double ea = compare("out_both/a/adapter_model.safetensors", "out_a/a/adapter_model.safetensors");
    double eb = compare("out_both/b/adapter_model.safetensors", "out_b/b/adapter_model.safetensors");
    fprintf(stderr, "jointly vs alone: adapter a %.2e, adapter b %.2e (relative L2 of the final tensors)\n", ea,
            eb);
    ck_assert_msg(ea < 1e-4 && eb < 1e-4, "adapters trained together differ from trained alone: %.3g, %.3g", ea,
                  eb);
    /* the joint run really shared microbatches: both adapters' tensors changed from their init */
    char *pa = path_in("out_both/b/adapter_model.safetensors");
    lg_st_t *st;
    CHECK(lg_st_open(pa, &st));
    ck_assert_uint_eq(lg_st_count(st), 2 * 2 * 3); /* 2 layers x 3 targeted modules x (A, B) */
    lg_st_close(st);
    free(pa);
    lg_test_rm_rf(root);
    free(root);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("train_multi");
    TCase *tc = tcase_create("train_multi");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, each_adapter_as_if_alone);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 1);
}
