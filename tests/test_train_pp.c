/* test_train_pp.c: pipeline-parallel training over processes on the CPU backend (`loragen train JOB --procs S`
 * with pipeline.stages = S), against one process running the same plan. Two adapters (one with dropout, both
 * with the default gradient clip) on a tiny 3-layer model: S = 2 (layers 0-1 and 2) and S = 3 (one layer a
 * stage, so a middle stage both receives and sends in each direction), and S = 2 with data_parallel = 2
 * (four processes: two pipelines, each stage's gradients summed over its data-parallel pair). The losses,
 * gradient norms (summed over the stages before the clip) and the adapters rank 0 gathers from all stages
 * match the single process within float tolerance, and so does the final validation loss (run through the
 * pipeline), and rank 0 reports each epoch's per-stage busy time and measured bubble beside
 * the simulator's prediction. Also: activation checkpointing inside a stage (not built yet) and more stages
 * than layers are refused with the field named. */
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

static void write_job(const char *rel, const char *out, int stages, int dp, int ckpt)
{
    char text[2048];
    snprintf(text, sizeof text,
             "return { name = 'pp', model = { path = 'model' }, batching = { capacity = 160 },\n"
             "  pipeline = { stages = %d, data_parallel = %d },\n"
             "  training = { backend = 'cpu', output = '%s', log_every = 1, checkpoint_layers = %d },\n"
             "  adapters = {\n"
             "  { name = 'a', dataset = 'a.jsonl', validation = 'va.jsonl', global_batch = 4, rank = 8, alpha = 16, dropout = 0.1, "
             "lr = 1e-2, seed = 3, epochs = 2 },\n"
             "  { name = 'b', dataset = 'b.jsonl', global_batch = 6, rank = 4, alpha = 4, dropout = 0, lr = 5e-3, "
             "seed = 9, epochs = 2, targets = { 'q_proj', 'v_proj', 'down_proj' } } } }\n",
             stages, dp, out, ckpt);
    write_text(rel, text);
}

static void setup_once(void)
{
    if (root)
        return;
    root = lg_test_tmpdir("lg_train_pp");
    struct lg_model_config c;
    lg_model_config_defaults(LG_FAMILY_LLAMA, &c);
    c.hidden_size = 48;
    c.intermediate_size = 96;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 12;
    c.num_hidden_layers = 3;
    c.vocab_size = 64;
    c.max_position_embeddings = 256;
    char *model = path_in("model");
    CHECK(lg_model_write_random(&c, LG_FP32, model, 5));
    free(model);
    write_dataset("a.jsonl", 40, 11, 5, 3);
    write_dataset("b.jsonl", 36, 23, 7, 1);
    write_dataset("va.jsonl", 12, 77, 5, 3);
    ck_assert_int_eq(chdir(root), 0); /* the job's relative paths */
}

static int run_cli(const char *const *args, char **out, char **err) { return lg_test_loragen_run(root, args, out, err); }

/* The largest relative difference between the same tensors of two adapter files. */
static double compare_adapters(const char *rel_a, const char *rel_b)
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

/* Every line's loss and grad_norm of two metrics.jsonl files (same steps, same order). */
static void compare_metrics(const char *rel_a, const char *rel_b, int *lines)
{
    char *pa = path_in(rel_a), *pb = path_in(rel_b);
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

/* The last val_loss of a metrics.jsonl (NaN when none). */
static double val_loss(const char *rel)
{
    char *p = path_in(rel), *t = lg_test_slurp(p, NULL), *at = t, *last = NULL;
    while ((at = strstr(at, "\"val_loss\": ")))
        last = at++;
    double v = last ? strtod(last + 12, NULL) : NAN;
    free(t);
    free(p);
    return v;
}

static void pp_matches(int S, int D)
{
    setup_once();
    char one[32], many[32], rone[40], rmany[40], procs[8];
    snprintf(one, sizeof one, "one%d_%d", S, D);
    snprintf(many, sizeof many, "pp%d_%d", S, D);
    snprintf(rone, sizeof rone, "%s.lua", one);
    snprintf(rmany, sizeof rmany, "%s.lua", many);
    snprintf(procs, sizeof procs, "%d", S * D);
    write_job(rone, one, S, D, 0);
    write_job(rmany, many, S, D, 0);
    char *job = path_in(rone);
    struct lg_train_opts o = {.job = job};
    struct lg_train_result r;
    CHECK(lg_train_run(&o, &r)); /* one process: the whole plan, every layer */
    free(job);
    char *out, *err;
    int rc = run_cli((const char *[]){"train", rmany, "--procs", procs, NULL}, &out, &err);
    ck_assert_msg(rc == 0, "train --procs %d: %d\n%s\n%s", S, rc, out, err);
    ck_assert_msg(strstr(out, "pipeline stage 0 of "), "%s", out);
    /* per epoch: every stage's busy time and the measured bubble beside the simulator's */
    ck_assert_int_eq(lg_test_count_substr(out, "measured bubble "), 2);
    ck_assert_msg(strstr(out, "(simulator: ") && strstr(out, "stage 1 busy "), "%s", out);
    ck_assert_int_eq(lg_test_count_substr(out, "done: "), 1);
    int la, lb;
    char ma[64], mb[64], aa[80], ab[80];
    snprintf(ma, sizeof ma, "%s/a/metrics.jsonl", one);
    snprintf(mb, sizeof mb, "%s/a/metrics.jsonl", many);
    compare_metrics(ma, mb, &la);
    snprintf(ma, sizeof ma, "%s/b/metrics.jsonl", one);
    snprintf(mb, sizeof mb, "%s/b/metrics.jsonl", many);
    compare_metrics(ma, mb, &lb);
    ck_assert_int_eq(la, 20);
    ck_assert_int_eq(lb, 12);
    /* the final validation, run through the pipeline once training has drained */
    snprintf(ma, sizeof ma, "%s/a/metrics.jsonl", one);
    snprintf(mb, sizeof mb, "%s/a/metrics.jsonl", many);
    double va = val_loss(ma), vb = val_loss(mb);
    ck_assert_msg(isfinite(va) && fabs(va - vb) <= 1e-5 * fabs(va), "validation loss %.9g vs %.9g", va, vb);
    for (int k = 0; k < 2; k++) {
        snprintf(aa, sizeof aa, "%s/%c/adapter_model.safetensors", one, "ab"[k]);
        snprintf(ab, sizeof ab, "%s/%c/adapter_model.safetensors", many, "ab"[k]);
        double d = compare_adapters(aa, ab);
        ck_assert_msg(d < 1e-4, "S = %d: adapter %c differs by %.3g", S, "ab"[k], d);
    }
    free(out);
    free(err);
}

START_TEST(pp2_matches_one_process) { pp_matches(2, 1); }
END_TEST

START_TEST(pp3_matches_one_process) { pp_matches(3, 1); }
END_TEST

/* 4 processes: two pipelines of two stages, each stage's gradients summed over its pair */
START_TEST(pp2_dp2_matches_one_process) { pp_matches(2, 2); }
END_TEST

static void refused(int stages, int dp, int ckpt, const char *needle)
{
    write_job("bad.lua", "bad", stages, dp, ckpt);
    char procs[8], *out, *err;
    snprintf(procs, sizeof procs, "%d", stages * dp);
    int rc = run_cli((const char *[]){"train", "bad.lua", "--procs", procs, NULL}, &out, &err);
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(strstr(err, needle), "%s", err);
    free(out);
    free(err);
}

START_TEST(shapes_not_built_are_refused)
{
    setup_once();
    refused(2, 1, 1, "training.checkpoint_layers = 1: activation checkpointing inside a pipeline stage");
    refused(4, 1, 0, "pipeline.stages = 4, but the model has 3 layers");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("train_pp");
    TCase *tc = tcase_create("cpu");
    tcase_add_test(tc, pp2_matches_one_process);
    tcase_add_test(tc, pp3_matches_one_process);
    tcase_add_test(tc, pp2_dp2_matches_one_process);
    tcase_add_test(tc, shapes_not_built_are_refused);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0);
}
