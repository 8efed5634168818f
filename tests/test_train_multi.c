/* test_train_multi.c: several adapters trained together on one frozen base (the scheduler packs their
 * samples into shared microbatches, each adapter's segment through its own A/B, each stepping when its own
 * global batch completes) give each adapter what training it alone gives: same init (its seed), same
 * batches (dataset order), same token-weighted loss per batch. Only the summation order of the gradient
 * across microbatches differs, so the adapters agree within float tolerance. Dropout is 0 here: masks are
 * drawn per microbatch position, so packing changes them by design. */
#include "lg_hf.h"
#include "lg_test.h"
#include "lg_train_test.h"
#include "lg_train.h"

#include <check.h>
#include <string.h>

static char *root;

static char *path_in(const char *rel) { return lg_test_path(root, rel); }

static const char *ADAPTER_A = "{ name = 'a', dataset = 'a.jsonl', global_batch = 4, rank = 8, alpha = 16, "
                               "dropout = 0, lr = 1e-2, seed = 3 }";
static const char *ADAPTER_B = "{ name = 'b', dataset = 'b.jsonl', global_batch = 6, rank = 4, alpha = 4, "
                               "dropout = 0, lr = 5e-3, seed = 9, targets = { 'q_proj', 'v_proj', 'down_proj' } }";

/* Samples of 8 to 57 tokens where t is followed by (mul·t + add) mod 48: one task per adapter. */
static const struct tt_task TASK_A = {8, 50, 48, 5, 3}, TASK_B = {8, 50, 48, 7, 1};

static void write_job(const char *rel, const char *out, const char *adapters)
{
    char text[2048];
    snprintf(text, sizeof text,
             "return { name = 'multi', model = { path = 'model' }, batching = { capacity = 160 },\n"
             "  training = { backend = 'cpu', output = '%s' },\n  adapters = { %s } }\n",
             out, adapters);
    tt_write_text(root, rel, text);
}

static void train(const char *rel)
{
    char *p = path_in(rel);
    struct lg_train_opts o = {.job = p};
    struct lg_train_result r;
    CHECK(lg_train_run(&o, &r));
    free(p);
}

START_TEST(each_adapter_as_if_alone)
{
    root = lg_test_tmpdir("lg_train_multi");
    tt_write_tiny_model(root, "model", LG_FAMILY_QWEN2, 2);
    tt_write_dataset(root, "a.jsonl", 40, 1, &TASK_A);
    tt_write_dataset(root, "b.jsonl", 36, 2, &TASK_B);
    char both[1024];
    snprintf(both, sizeof both, "%s, %s", ADAPTER_A, ADAPTER_B);
    write_job("both.lua", "out_both", both);
    write_job("solo_a.lua", "out_a", ADAPTER_A);
    write_job("solo_b.lua", "out_b", ADAPTER_B);
    train("both.lua");
    train("solo_a.lua");
    train("solo_b.lua");
    double ea = tt_adapter_diff(root, "out_both/a/adapter_model.safetensors", "out_a/a/adapter_model.safetensors");
    double eb = tt_adapter_diff(root, "out_both/b/adapter_model.safetensors", "out_b/b/adapter_model.safetensors");
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
