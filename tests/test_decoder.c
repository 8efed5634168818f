/* test_decoder.c: the decoder on the CPU backend, checked as a whole: the LoRA gradients of a whole model (all
 * seven projections of every layer, two adapters with different ranks and dropouts, packed samples of odd
 * lengths including one of a single token) against central finite differences of the loss; samples packed
 * side by side never see each other (perturbing one sample leaves every other sample's losses and the other
 * adapter's gradients bit-identical); and activation checkpointing gives the same bits as keeping everything.
 * Two families: Llama (untied head, Llama-3 RoPE scaling) and Qwen2 (q/k/v biases, tied embeddings). */
#include "lg_decoder.h"
#include "lg_hf.h"
#include "lg_test.h"
#include "lg_train.h"

#include <check.h>
#include <math.h>
#include <string.h>

#define NSEQ 3
static const int32_t CU[NSEQ + 1] = {0, 5, 6, 13}; /* lengths 5, 1, 7 */
#define N 13

struct fixture {
    char *dir;
    struct lg_model_config cfg;
    lg_st_t *st;
    lg_backend_t *be;
    lg_decoder_t *dec;
    struct lg_decoder_adapter ad[2];
    int32_t ids[N], target[N];
    float weight[N], loss[N];
    struct lg_seg seg[2];
    struct lg_mb mb;
};

static void make_config(struct lg_model_config *c, int qwen)
{
    lg_model_config_defaults(qwen ? LG_FAMILY_QWEN2 : LG_FAMILY_LLAMA, c);
    c->hidden_size = 32;
    c->intermediate_size = 48;
    c->num_attention_heads = 4;
    c->num_key_value_heads = 2;
    c->head_dim = 8;
    c->num_hidden_layers = 3;
    c->vocab_size = 40;
    c->max_position_embeddings = 64;
    c->rms_norm_eps = 1e-5;
    c->tie_word_embeddings = qwen;
    if (!qwen) {
        c->rope_theta = 500000;
        c->rope_llama3 = 1;
        c->rope_factor = 8;
        c->rope_low_freq_factor = 1;
        c->rope_high_freq_factor = 4;
        c->rope_original_max_position = 16;
    }
}

/* Random A and B (B non-zero, unlike a fresh adapter, so every gradient path carries signal). */
static void randomise_lora(struct fixture *f, uint64_t seed)
{
    for (int a = 0; a < 2; a++)
        for (int l = 0; l < f->cfg.num_hidden_layers; l++)
            for (int m = 0; m < LG_PEFT_MODULE_COUNT; m++) {
                struct lg_lora_params p;
                CHECK(lg_decoder_lora(f->dec, l, (enum lg_peft_module)m, a, &p));
                if (!p.rank)
                    continue;
                size_t na = (size_t)(p.rank * p.in), nb = (size_t)(p.rank * p.out);
                float *buf = malloc((na > nb ? na : nb) * sizeof *buf);
                lg_test_fill(buf, na, seed++, 0.3f);
                CHECK(f->be->ops->upload(f->be, p.a, buf, na * sizeof *buf));
                lg_test_fill(buf, nb, seed++, 0.3f);
                CHECK(f->be->ops->upload(f->be, p.b, buf, nb * sizeof *buf));
                CHECK(f->be->ops->zero(f->be, p.da, na * sizeof *buf));
                CHECK(f->be->ops->zero(f->be, p.db, nb * sizeof *buf));
                free(buf);
            }
}

static void setup(struct fixture *f, int qwen, int ckpt_every)
{
    memset(f, 0, sizeof *f);
    f->dir = lg_test_tmpdir("lg_decoder");
    make_config(&f->cfg, qwen);
    CHECK(lg_model_write_random(&f->cfg, LG_FP32, f->dir, 11));
    CHECK(lg_st_open_model(f->dir, &f->st));
    CHECK(lg_backend_cpu_init(&f->be));
    f->ad[0] = (struct lg_decoder_adapter){.rank = 4, .alpha = 8, .dropout = 0.1f, .targets = LG_PEFT_ALL_MODULES};
    f->ad[1] = (struct lg_decoder_adapter){.rank = 8, .alpha = 4, .dropout = 0.0f,
                                           .targets = (1u << LG_PEFT_Q_PROJ) | (1u << LG_PEFT_V_PROJ) |
                                                      (1u << LG_PEFT_DOWN_PROJ)};
    struct lg_decoder_params dp = {.cfg = &f->cfg, .nadapters = 2, .adapters = f->ad, .ckpt_every = ckpt_every,
                                   .max_tokens = 16, .max_seqs = 4};
    CHECK(lg_decoder_init(f->be, &dp, f->st, &f->dec));
    randomise_lora(f, 100);
    for (int t = 0; t < N; t++) {
        f->ids[t] = (int32_t)((t * 7 + 3) % f->cfg.vocab_size);
        f->target[t] = (int32_t)((t * 11 + 5) % f->cfg.vocab_size);
        f->weight[t] = 1.0f;
    }
    for (int s = 0; s < NSEQ; s++) { /* the last position of a sample predicts nothing */
        f->target[CU[s + 1] - 1] = -100;
        f->weight[CU[s + 1] - 1] = 0.0f;
    }
    f->seg[0] = (struct lg_seg){.adapter = 0, .start = 0, .len = 6};
    f->seg[1] = (struct lg_seg){.adapter = 1, .start = 6, .len = 7};
    f->mb = (struct lg_mb){.n = N, .nseq = NSEQ, .cu = CU, .max_len = 7, .nseg = 2, .seg = f->seg, .seed = 77,
                           .train = 1};
}

static void teardown(struct fixture *f)
{
    lg_decoder_free(f->dec);
    f->be->ops->destroy(f->be);
    lg_st_close(f->st);
    lg_test_rm_rf(f->dir);
    free(f->dir);
}

static double step(struct fixture *f, int backward)
{
    struct lg_decoder_batch b = {.mb = &f->mb, .ids = f->ids, .target = f->target, .weight = f->weight,
                                 .loss = f->loss};
    CHECK(lg_decoder_step(f->dec, &b, backward));
    double s = 0;
    for (int t = 0; t < N; t++)
        s += f->loss[t];
    return s;
}

static float *addr(lg_addr a) { return (float *)(uintptr_t)a; }

/* Central differences of the loss along direction v of one tensor, against the analytic gradient's g·v. */
static double directional(struct fixture *f, float *param, const float *g, int64_t count, uint64_t seed, double *fd)
{
    float *v = malloc((size_t)count * sizeof *v), *keep = malloc((size_t)count * sizeof *keep);
    lg_test_fill(v, (size_t)count, seed, 1.0f);
    memcpy(keep, param, (size_t)count * sizeof *keep);
    double gv = 0;
    for (int64_t i = 0; i < count; i++)
        gv += (double)g[i] * v[i];
    const double h = 3e-3;
    for (int64_t i = 0; i < count; i++)
        param[i] = keep[i] + (float)(h * v[i]);
    double lp = step(f, 0);
    for (int64_t i = 0; i < count; i++)
        param[i] = keep[i] - (float)(h * v[i]);
    double lm = step(f, 0);
    memcpy(param, keep, (size_t)count * sizeof *keep);
    *fd = (lp - lm) / (2 * h);
    free(v);
    free(keep);
    return gv;
}

/* dLoss/dA and dLoss/dB of several (layer, module, adapter) against central differences: along a random
 * direction of the whole tensor (robust to fp32 rounding of the loss), and for the tensor's largest entry. */
static void check_gradients(int qwen)
{
    struct fixture f;
    setup(&f, qwen, 0);
    step(&f, 1);
    const struct { int layer, mod, adapter; } which[] = {
        {0, LG_PEFT_Q_PROJ, 0}, {0, LG_PEFT_K_PROJ, 0}, {1, LG_PEFT_O_PROJ, 0}, {2, LG_PEFT_GATE_PROJ, 0},
        {1, LG_PEFT_UP_PROJ, 0}, {2, LG_PEFT_DOWN_PROJ, 0}, {0, LG_PEFT_V_PROJ, 1}, {2, LG_PEFT_DOWN_PROJ, 1},
    };
    double worst = 0;
    for (size_t w = 0; w < sizeof which / sizeof which[0]; w++) {
        struct lg_lora_params p;
        CHECK(lg_decoder_lora(f.dec, which[w].layer, (enum lg_peft_module)which[w].mod, which[w].adapter, &p));
        ck_assert_int_gt(p.rank, 0);
        for (int ab = 0; ab < 2; ab++) {
            int64_t count = ab ? p.rank * p.out : p.rank * p.in;
            float *param = addr(ab ? p.b : p.a), *g = addr(ab ? p.db : p.da);
            double fd, gv = directional(&f, param, g, count, 1000 + w * 2 + (uint64_t)ab, &fd);
            double err = fabs(fd - gv) / fmax(fabs(fd), 1e-6);
            int64_t big = 0;
            for (int64_t i = 1; i < count; i++)
                if (fabs(g[i]) > fabs(g[big]))
                    big = i;
            float keep = param[big];
            const double h = 1e-2;
            param[big] = keep + (float)h;
            double lp = step(&f, 0);
            param[big] = keep - (float)h;
            double lm = step(&f, 0);
            param[big] = keep;
            double fd1 = (lp - lm) / (2 * h), err1 = fabs(fd1 - g[big]) / fmax(fabs(fd1), 1e-6);
            worst = fmax(worst, fmax(err, err1));
            ck_assert_msg(err < 1e-2 && err1 < 2e-2,
                          "%s layer %d %s adapter %d %c: along a direction analytic %.6g, finite differences %.6g;"
                          " entry %lld analytic %.6g, finite differences %.6g",
                          qwen ? "qwen2" : "llama", which[w].layer,
                          lg_peft_module_name((enum lg_peft_module)which[w].mod), which[w].adapter, ab ? 'B' : 'A',
                          gv, fd, (long long)big, (double)g[big], fd1);
        }
    }
    fprintf(stderr, "%s: worst relative error of 16 directional and 16 entry derivatives: %.2e\n",
            qwen ? "qwen2" : "llama", worst);
    teardown(&f);
}

START_TEST(gradients_llama) { check_gradients(0); }
END_TEST

START_TEST(gradients_qwen2) { check_gradients(1); }
END_TEST

static void grads_of(struct fixture *f, int adapter, float **out, size_t *n)
{
    size_t cap = 1 << 16, k = 0;
    float *g = malloc(cap * sizeof *g);
    for (int l = 0; l < f->cfg.num_hidden_layers; l++)
        for (int m = 0; m < LG_PEFT_MODULE_COUNT; m++) {
            struct lg_lora_params p;
            CHECK(lg_decoder_lora(f->dec, l, (enum lg_peft_module)m, adapter, &p));
            for (int64_t i = 0; p.rank && i < p.rank * p.in; i++)
                g[k++] = addr(p.da)[i];
            for (int64_t i = 0; p.rank && i < p.rank * p.out; i++)
                g[k++] = addr(p.db)[i];
            ck_assert_uint_lt(k, cap);
        }
    *out = g;
    *n = k;
}

/* Perturbing the tokens of the first sample must leave samples 2 and 3 (and adapter 1, which only sees sample 3)
 * exactly as they were: a test that fails if attention, RoPE positions or anything else crossed a boundary. */
START_TEST(samples_never_see_each_other)
{
    struct fixture f;
    setup(&f, 0, 0);
    step(&f, 1);
    float before[N];
    memcpy(before, f.loss, sizeof before);
    float *g1;
    size_t n1;
    grads_of(&f, 1, &g1, &n1);
    randomise_lora(&f, 100); /* same values, gradients zeroed */
    for (int t = CU[0]; t < CU[1]; t++)
        f.ids[t] = (f.ids[t] + 17) % f.cfg.vocab_size;
    step(&f, 1);
    for (int t = CU[1]; t < N; t++)
        ck_assert_msg(memcmp(&before[t], &f.loss[t], sizeof(float)) == 0, "token %d changed: %.9g -> %.9g", t,
                      before[t], f.loss[t]);
    int changed = 0;
    for (int t = CU[0]; t < CU[1] - 1; t++)
        changed |= before[t] != f.loss[t];
    ck_assert_msg(changed, "perturbing sample 1 did not change its own losses");
    float *g2;
    size_t n2;
    grads_of(&f, 1, &g2, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert_msg(memcmp(g1, g2, n1 * sizeof *g1) == 0, "adapter 1's gradients changed");
    free(g1);
    free(g2);
    teardown(&f);
}
END_TEST

/* Checkpointing every layer recomputes the forward in the backward: the same losses and gradients, bit for
 * bit, as keeping every activation. */
START_TEST(checkpointing_is_exact)
{
    struct fixture a, b;
    setup(&a, 1, 0);
    setup(&b, 1, 1);
    step(&a, 1);
    step(&b, 1);
    ck_assert(memcmp(a.loss, b.loss, sizeof a.loss) == 0);
    for (int ad = 0; ad < 2; ad++) {
        float *ga, *gb;
        size_t na, nb;
        grads_of(&a, ad, &ga, &na);
        grads_of(&b, ad, &gb, &nb);
        ck_assert_uint_eq(na, nb);
        ck_assert_msg(memcmp(ga, gb, na * sizeof *ga) == 0, "adapter %d: gradients differ with checkpointing", ad);
        free(ga);
        free(gb);
    }
    teardown(&a);
    teardown(&b);
}
END_TEST

START_TEST(bad_batches_are_refused)
{
    struct fixture f;
    setup(&f, 0, 0);
    struct lg_decoder_batch b = {.mb = &f.mb, .ids = f.ids, .target = f.target, .weight = f.weight, .loss = f.loss};
    f.seg[1].len = 6; /* segments no longer cover the microbatch */
    ck_assert_int_eq(lg_decoder_step(f.dec, &b, 1), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "segments cover 12 of 13"));
    f.seg[1].len = 7;
    f.seg[1].adapter = 2;
    ck_assert_int_eq(lg_decoder_step(f.dec, &b, 1), LG_ERR_INVALID);
    f.seg[1].adapter = 1;
    f.ids[3] = 40; /* outside the vocabulary */
    ck_assert_int_eq(lg_decoder_step(f.dec, &b, 0), LG_ERR_INVALID);
    /* a shape to prepare must be one the arena holds (16 tokens, 4 samples) */
    CHECK(lg_decoder_prepare(f.dec, &f.mb));
    struct lg_mb big = f.mb;
    big.n = 17;
    ck_assert_int_eq(lg_decoder_prepare(f.dec, &big), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "17 tokens in 3 samples"));
    big = f.mb, big.nseq = 5;
    ck_assert_int_eq(lg_decoder_prepare(f.dec, &big), LG_ERR_INVALID);
    big = f.mb, big.max_len = 14;
    ck_assert_int_eq(lg_decoder_prepare(f.dec, &big), LG_ERR_INVALID);
    teardown(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("decoder");
    TCase *tc = tcase_create("decoder");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, gradients_llama);
    tcase_add_test(tc, gradients_qwen2);
    tcase_add_test(tc, samples_never_see_each_other);
    tcase_add_test(tc, checkpointing_is_exact);
    tcase_add_test(tc, bad_batches_are_refused);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0);
}
