/* test_train.c: `loragen train` end to end on the CPU backend, as CI runs it: a tiny random Llama written by the
 * test (lg_model_write_random), a synthetic task (each token's successor is a fixed function of it), and a job
 * file; 30 steps of 8 samples are two epochs of the 120 samples (the second reshuffled). The training loss must
 * fall by a stated margin and the validation loss be reported; the PEFT output has PEFT's names, shapes, dtypes
 * and config; init_adapter and `eval` read it back to the same loss; `merge` gives a model whose plain loss
 * equals base + adapter; an interrupted run resumed from its checkpoint ends bit-identical to an uninterrupted
 * one; a damaged checkpoint is refused with a clear message. */
#include "lg_ckpt.h"
#include "lg_hf.h"
#include "lg_test.h"
#include "lg_train_test.h"
#include "lg_train.h"

#include <check.h>
#include <jansson.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

static char *root;

static char *path_in(const char *rel) { return lg_test_path(root, rel); }

/* Samples of 16 to 55 tokens where token t is followed by (5t + 3) mod 64: learnable by LoRA on a random
 * base. */
static const struct tt_task TASK = {16, 40, 64, 5, 3};

static void write_job(const char *rel, const char *out, const char *extra_training, const char *extra_adapter)
{
    char text[4096];
    snprintf(text, sizeof text,
             "return {\n  name = \"toy\",\n  model = { path = \"model\" },\n  batching = { capacity = 256 },\n"
             "  training = { backend = \"cpu\", output = \"%s\", eval_every = 10%s },\n"
             "  adapters = {\n    { name = \"map\", dataset = \"train.jsonl\", validation = \"val.jsonl\",\n"
             "      global_batch = 8, rank = 8, alpha = 16, lr = 1e-2, steps = 30, seed = 5%s },\n  },\n}\n",
             out, extra_training, extra_adapter);
    tt_write_text(root, rel, text);
}

static void fixture_once(void)
{
    if (root)
        return;
    root = lg_test_tmpdir("lg_train");
    struct lg_model_config c;
    lg_model_config_defaults(LG_FAMILY_LLAMA, &c);
    c.hidden_size = 64;
    c.intermediate_size = 128;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 16;
    c.num_hidden_layers = 2;
    c.vocab_size = 96;
    c.max_position_embeddings = 256;
    char *model = path_in("model");
    CHECK(lg_model_write_random(&c, LG_FP32, model, 3));
    free(model);
    tt_write_dataset(root, "train.jsonl", 120, 1, &TASK);
    tt_write_dataset(root, "val.jsonl", 16, 99, &TASK);
}

static struct lg_train_result train(const char *job, int resume, volatile int *stop,
                                    lg_train_progress_fn progress)
{
    char *p = path_in(job);
    struct lg_train_opts o = {.job = p, .resume = resume, .stop = stop, .progress = progress, .user = (void *)stop};
    struct lg_train_result r;
    CHECK(lg_train_run(&o, &r));
    free(p);
    return r;
}

START_TEST(loss_falls_and_outputs_are_peft)
{
    fixture_once();
    write_job("job.lua", "out", "", "");
    struct lg_train_result r = train("job.lua", 0, NULL, NULL);
    fprintf(stderr, "toy task: loss %.4f -> %.4f, validation %.4f\n", r.first_loss, r.last_loss, r.val_loss);
    ck_assert_msg(r.first_loss - r.last_loss > 0.5, "loss fell only from %.4f to %.4f", r.first_loss, r.last_loss);
    ck_assert(isfinite(r.val_loss) && r.val_loss < r.first_loss - 0.5);
    /* adapter_model.safetensors: 2 layers x 7 modules x (A, B), F32, PEFT names and shapes */
    char *st_path = path_in("out/map/adapter_model.safetensors");
    lg_st_t *st;
    CHECK(lg_st_open(st_path, &st));
    ck_assert_uint_eq(lg_st_count(st), 28);
    struct lg_st_tensor t;
    CHECK(lg_st_find(st, "base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight", &t));
    ck_assert(t.dtype == LG_ST_F32 && t.ndim == 2 && t.shape[0] == 8 && t.shape[1] == 64);
    CHECK(lg_st_find(st, "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight", &t));
    ck_assert(t.dtype == LG_ST_F32 && t.ndim == 2 && t.shape[0] == 64 && t.shape[1] == 8);
    lg_st_close(st);
    free(st_path);
    /* adapter_config.json as PEFT reads it */
    char *cfg_path = path_in("out/map/adapter_config.json");
    json_error_t err;
    json_t *j = json_load_file(cfg_path, 0, &err);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(json_string_value(json_object_get(j, "peft_type")), "LORA");
    ck_assert_str_eq(json_string_value(json_object_get(j, "task_type")), "CAUSAL_LM");
    ck_assert_str_eq(json_string_value(json_object_get(j, "bias")), "none");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "r")), 8);
    ck_assert(fabs(json_number_value(json_object_get(j, "lora_alpha")) - 16) < 1e-9);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "target_modules")), 7);
    json_decref(j);
    free(cfg_path);
    /* metrics and the loss curve */
    char *m = path_in("out/map/metrics.jsonl"), *svg = path_in("out/map/loss.svg");
    size_t n;
    char *text = lg_test_slurp(m, &n);
    ck_assert_int_eq(lg_test_count_substr(text, "\"loss\""), 30);
    ck_assert_int_ge(lg_test_count_substr(text, "\"val_loss\""), 3);
    free(text);
    struct stat sb;
    ck_assert_int_eq(stat(svg, &sb), 0);
    free(m);
    free(svg);
}
END_TEST

/* eval of the trained output, and a run that continues from it with init_adapter, see the same adapter. */
START_TEST(eval_and_init_adapter_read_it_back)
{
    fixture_once();
    write_job("job_a.lua", "out_a", "", "");
    struct lg_train_result r = train("job_a.lua", 0, NULL, NULL);
    char *job = path_in("job_a.lua");
    struct lg_eval_opts eo = {.job = job};
    struct lg_eval_result er;
    CHECK(lg_eval_run(&eo, &er));
    ck_assert_msg(er.loss == r.val_loss, "eval %.9g, final validation %.9g", er.loss, r.val_loss);
    ck_assert_int_eq(er.adapters, 1);
    eo.base_only = 1;
    struct lg_eval_result base;
    CHECK(lg_eval_run(&eo, &base));
    ck_assert(base.loss > er.loss + 0.5);
    free(job);
    /* a job that starts from the trained adapter evaluates the same before its first step */
    write_job("job_b.lua", "out_b", "", ", init_adapter = \"out_a/map\"");
    char *jb = path_in("job_b.lua"), *ad = path_in("out_a/map");
    struct lg_eval_opts eb = {.job = jb, .adapter_dir = ad};
    struct lg_eval_result rb;
    CHECK(lg_eval_run(&eb, &rb));
    ck_assert(rb.loss == er.loss);
    free(jb);
    free(ad);
}
END_TEST

START_TEST(merge_equals_base_plus_adapter)
{
    fixture_once();
    write_job("job_m.lua", "out_m", "", "");
    struct lg_train_result r = train("job_m.lua", 0, NULL, NULL);
    char *model = path_in("model"), *ad = path_in("out_m/map"), *merged = path_in("merged");
    CHECK(lg_merge_run(model, ad, merged));
    /* the merged model alone, through a job that names it */
    char text[1024];
    snprintf(text, sizeof text,
             "return { name = \"m\", model = { path = \"merged\" }, batching = { capacity = 256 },\n"
             "  training = { backend = \"cpu\", output = \"out_mm\" },\n"
             "  adapters = { { name = \"map\", dataset = \"train.jsonl\", validation = \"val.jsonl\", global_batch = 4,"
             " rank = 8 } } }\n");
    tt_write_text(root, "job_merged.lua", text);
    char *jm = path_in("job_merged.lua");
    struct lg_eval_opts eo = {.job = jm, .base_only = 1};
    struct lg_eval_result em;
    CHECK(lg_eval_run(&eo, &em));
    ck_assert_msg(fabs(em.loss - r.val_loss) < 1e-4 * fabs(r.val_loss), "merged %.7g, base + adapter %.7g", em.loss,
                  r.val_loss);
    free(jm);
    free(model);
    free(ad);
    free(merged);
}
END_TEST

static void stop_at_step_7(const struct lg_train_progress *p, void *user)
{
    if (p->event == LG_EV_STEP && p->step == 7)
        *(volatile int *)user = 1;
}

static char *slurp_rel(const char *rel, size_t *n)
{
    char *p = path_in(rel);
    char *t = lg_test_slurp(p, n);
    free(p);
    return t;
}

/* Interrupted after step 7 (inside the next global batch), then resumed: the same adapter and the same loss
 * history, bit for bit, as a run that never stopped. */
START_TEST(resume_is_bit_exact)
{
    fixture_once();
    write_job("job_full.lua", "out_full", ", checkpoint_every = 5", ", dropout = 0.1");
    write_job("job_cut.lua", "out_cut", ", checkpoint_every = 5", ", dropout = 0.1");
    train("job_full.lua", 0, NULL, NULL);
    volatile int stop = 0;
    struct lg_train_result cut = train("job_cut.lua", 0, &stop, stop_at_step_7);
    ck_assert_int_eq(cut.interrupted, 1);
    train("job_cut.lua", 1, NULL, NULL);
    size_t na, nb;
    char *a = slurp_rel("out_full/map/adapter_model.safetensors", &na);
    char *b = slurp_rel("out_cut/map/adapter_model.safetensors", &nb);
    ck_assert_uint_eq(na, nb);
    ck_assert_msg(memcmp(a, b, na) == 0, "the resumed adapter differs from the uninterrupted one");
    free(a);
    free(b);
    a = slurp_rel("out_full/map/metrics.jsonl", &na);
    b = slurp_rel("out_cut/map/metrics.jsonl", &nb);
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
}
END_TEST

START_TEST(damaged_checkpoint_is_refused)
{
    fixture_once();
    write_job("job_dmg.lua", "out_dmg", ", checkpoint_every = 5", "");
    volatile int stop = 0;
    train("job_dmg.lua", 0, &stop, stop_at_step_7);
    char *ck = path_in("out_dmg/checkpoints"), dir[2048];
    CHECK(lg_ckpt_latest(ck, dir, sizeof dir));
    char file[2100];
    snprintf(file, sizeof file, "%s/adapter-0.safetensors", dir);
    FILE *f = fopen(file, "r+b");
    ck_assert_ptr_nonnull(f);
    fseek(f, -5, SEEK_END);
    fputc('x', f);
    fclose(f);
    char *job = path_in("job_dmg.lua");
    struct lg_train_opts o = {.job = job, .resume = 1};
    struct lg_train_result r;
    ck_assert_int_eq(lg_train_run(&o, &r), LG_ERR_IO);
    ck_assert_msg(strstr(lg_last_error(), "adapter-0.safetensors does not match its checksum"), "%s",
                  lg_last_error());
    free(job);
    free(ck);
}
END_TEST

START_TEST(bad_jobs_name_the_field)
{
    fixture_once();
    tt_write_text(root, "bad_model.lua", "return { name = 'x', model = { path = 'nowhere' },\n"
                                "  adapters = { { name = 'a', dataset = 'train.jsonl', global_batch = 2 } } }\n");
    char *p = path_in("bad_model.lua");
    struct lg_train_opts o = {.job = p};
    struct lg_train_result r;
    ck_assert_int_eq(lg_train_run(&o, &r), LG_ERR_SPEC);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "model.path"));
    free(p);
    tt_write_text(root, "bad_field.lua", "return { name = 'x', model = { path = 'model' },\n"
                                "  adapters = { { name = 'a', dataset = 'train.jsonl', global_batch = 2,\n"
                                "    schedule = 'sometimes' } } }\n");
    p = path_in("bad_field.lua");
    o.job = p;
    ck_assert_int_eq(lg_train_run(&o, &r), LG_ERR_SPEC);
    ck_assert_msg(strstr(lg_last_error(), "bad_field.lua:3:") && strstr(lg_last_error(), "schedule"), "%s",
                  lg_last_error());
    free(p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("train");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, loss_falls_and_outputs_are_peft);
    tcase_add_test(tc, eval_and_init_adapter_read_it_back);
    tcase_add_test(tc, merge_equals_base_plus_adapter);
    tcase_add_test(tc, resume_is_bit_exact);
    tcase_add_test(tc, damaged_checkpoint_is_refused);
    tcase_add_test(tc, bad_jobs_name_the_field);
    suite_add_tcase(s, tc);
    int rc = lg_test_run(s, 1);
    if (root) {
        lg_test_rm_rf(root);
        free(root);
    }
    return rc;
}
