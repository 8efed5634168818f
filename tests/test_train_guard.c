/* test_train_guard.c: the trainer's numerical guard, through the public API (lg_train_run). Two adapters train
 * together on the tiny model; one starts from an adapter whose B is 1e30 (as a diverged or damaged adapter
 * would be), so its forward overflows and its loss and gradients are NaN. Each of its global batches is
 * skipped and reported (LG_EV_SKIP), its weights never change, and after LG_TRAIN_BAD_STEPS (8) in a row the
 * run stops naming the adapter, step, epoch and microbatch; the other adapter meanwhile steps with finite
 * losses, the same as when it trains alone. */
#include "lg_hf.h"
#include "lg_test.h"
#include "lg_train.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *tmp;

struct events {
    int skips[2], steps[2];
    double loss[2][64];
    char last_skip[512];
};

static void on_progress(const struct lg_train_progress *p, void *user)
{
    struct events *e = user;
    if (p->adapter < 0 || p->adapter > 1)
        return;
    if (p->event == LG_EV_SKIP) {
        e->skips[p->adapter]++;
        snprintf(e->last_skip, sizeof e->last_skip, "%s", p->message);
    } else if (p->event == LG_EV_STEP && e->steps[p->adapter] < 64) {
        e->loss[p->adapter][e->steps[p->adapter]++] = p->loss;
    }
}

/* The tiny model (specs/tiny.lua's dimensions), fp32. */
static void write_model(const char *dir)
{
    struct lg_model_config c;
    lg_model_config_defaults(LG_FAMILY_LLAMA, &c);
    c.hidden_size = 128, c.intermediate_size = 320, c.num_hidden_layers = 2, c.num_attention_heads = 4;
    c.num_key_value_heads = 2, c.head_dim = 32, c.vocab_size = 512, c.max_position_embeddings = 2048;
    c.rms_norm_eps = 1e-5;
    CHECK(lg_model_write_random(&c, LG_FP32, dir, 1));
}

/* A PEFT adapter for the tiny model on every projection, rank 8: A small, B = 1e30 (finite, but whatever it
 * touches overflows). */
static void write_huge_adapter(const char *dir)
{
    struct lg_peft_config pc = {.r = 8, .lora_alpha = 16, .lora_dropout = 0, .target_modules = LG_PEFT_ALL_MODULES};
    CHECK(lg_peft_config_write(dir, &pc));
    static const int in[7] = {128, 128, 128, 128, 128, 128, 320}, out[7] = {128, 64, 64, 128, 320, 320, 128};
    struct lg_st_write_tensor t[2 * 2 * 7];
    char names[2 * 2 * 7][LG_PEFT_NAME_MAX];
    float *a = malloc(8 * 320 * sizeof *a), *b = malloc(320 * 8 * sizeof *b);
    lg_test_fill(a, 8 * 320, 3, 0.05f);
    for (int i = 0; i < 320 * 8; i++)
        b[i] = 1e30f;
    int n = 0;
    for (int l = 0; l < 2; l++)
        for (int m = 0; m < 7; m++)
            for (int ab = 0; ab < 2; ab++) {
                CHECK(lg_peft_tensor_name(l, lg_peft_module_name((enum lg_peft_module)m), ab ? 'B' : 'A', names[n],
                                          sizeof names[n]));
                t[n] = (struct lg_st_write_tensor){.name = names[n], .dtype = LG_ST_F32, .ndim = 2,
                                                   .shape = {ab ? out[m] : 8, ab ? 8 : in[m]}, .data = ab ? b : a};
                n++;
            }
    char path[1200];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    CHECK(lg_st_write(path, t, (size_t)n, NULL));
    free(a);
    free(b);
}

static char *write_job(const char *name, int with_bad)
{
    char cwd[1024], text[2048];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    char *job = lg_test_path(tmp, name);
    snprintf(text, sizeof text,
             "return { name = 'guard', model = { path = 'model' }, batching = { capacity = 512 },\n"
             "  training = { backend = 'cpu', output = 'out-%s' },\n"
             "  adapters = {\n"
             "    { name = 'good', dataset = '%s/specs/jobs/data/toy-train.jsonl', global_batch = 4, rank = 8,\n"
             "      dropout = 0, steps = 12, seed = 2 },\n"
             "%s  } }\n",
             name, cwd,
             with_bad ? "    { name = 'bad', dataset = 'data.jsonl', global_batch = 4, rank = 8, alpha = 16,\n"
                        "      dropout = 0, steps = 12, seed = 3, init_adapter = 'huge' },\n"
                      : "");
    lg_test_write_text(job, text);
    return job;
}

START_TEST(non_finite_batches_are_skipped_per_adapter_and_stop_the_run)
{
    char *model = lg_test_path(tmp, "model"), *huge = lg_test_path(tmp, "huge"), *data = lg_test_path(tmp, "data.jsonl");
    write_model(model);
    write_huge_adapter(huge);
    char *toy = lg_test_slurp("specs/jobs/data/toy-train.jsonl", NULL);
    lg_test_write_text(data, toy);
    free(toy);

    char *alone = write_job("alone.lua", 0), *both = write_job("both.lua", 1);
    struct events solo = {0}, ev = {0};
    struct lg_train_opts o = {.job = alone, .progress = on_progress, .user = &solo};
    struct lg_train_result r;
    CHECK(lg_train_run(&o, &r));
    ck_assert_int_eq(solo.steps[0], 12);
    ck_assert_int_eq(solo.skips[0], 0);

    o.job = both;
    o.user = &ev;
    enum lg_status s = lg_train_run(&o, &r);
    const char *msg = lg_last_error();
    ck_assert_msg(s == LG_ERR_INVALID, "status %s: %s", lg_status_str(s), msg);
    ck_assert_msg(strstr(msg, "adapter 'bad': 8 steps in a row were skipped, the last (step 1, epoch 1, microbatch "),
                  "%s", msg);
    ck_assert_msg(strstr(msg, "is not finite") && strstr(msg, "lower lr"), "%s", msg);
    /* the bad adapter: skipped 8 times, never stepped; each skip reported with its reason */
    ck_assert_int_eq(ev.skips[1], 8);
    ck_assert_int_eq(ev.steps[1], 0);
    ck_assert_msg(strstr(ev.last_skip, "adapter 'bad': step 1 skipped: the loss is not finite (loss nan") ||
                      strstr(ev.last_skip, "adapter 'bad': step 1 skipped: a gradient is not finite"),
                  "%s", ev.last_skip);
    /* the good adapter: no skip, finite losses, the same as when it trains alone (up to the summation order of
     * a shared microbatch) */
    ck_assert_int_eq(ev.skips[0], 0);
    ck_assert_int_ge(ev.steps[0], 6);
    for (int i = 0; i < ev.steps[0]; i++) {
        ck_assert_msg(isfinite(ev.loss[0][i]), "good adapter, step %d: loss %g", i + 1, ev.loss[0][i]);
        ck_assert_msg(fabs(ev.loss[0][i] - solo.loss[0][i]) <= 1e-5 * fabs(solo.loss[0][i]),
                      "good adapter, step %d: loss %.9g beside the bad one, %.9g alone", i + 1, ev.loss[0][i],
                      solo.loss[0][i]);
    }
    free(alone);
    free(both);
    free(model);
    free(huge);
    free(data);
}
END_TEST

int main(void)
{
    static char dir[] = "/tmp/lg_train_guard.XXXXXX";
    if (!(tmp = mkdtemp(dir)) || chdir(".") != 0)
        return 1;
    Suite *s = suite_create("train_guard");
    TCase *tc = tcase_create("train_guard");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, non_finite_batches_are_skipped_per_adapter_and_stop_the_run);
    suite_add_tcase(s, tc);
    int rc = lg_test_run(s, 0);
    lg_test_rm_rf(tmp);
    return rc;
}
