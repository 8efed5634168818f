/* test_lora_ref.c: the CPU reference of the LoRA layer against independent math: the merged weight
 * W + s·B·A for the forward, central finite differences for every gradient, and the dropout mask's keep
 * rate and reproducibility. The GPU tests trust this reference, so it must be right on its own. */
#include "lg_half.h"
#include "common/lg_philox.h"
#include "lg_ref.h"
#include "lg_test.h"

#include <check.h>
#include <math.h>
#include <string.h>

struct fixture {
    int64_t n, K, M;
    int r;
    float *x, *w, *a, *b, *bias, *dy;
};

static void fx_init(struct fixture *f, int64_t n, int64_t K, int64_t M, int r, uint64_t seed)
{
    f->n = n, f->K = K, f->M = M, f->r = r;
    f->x = malloc(sizeof(float) * n * K);
    f->w = malloc(sizeof(float) * M * K);
    f->a = malloc(sizeof(float) * r * K);
    f->b = malloc(sizeof(float) * M * r);
    f->bias = malloc(sizeof(float) * M);
    f->dy = malloc(sizeof(float) * n * M);
    lg_test_fill(f->x, n * K, seed + 1, 1.0f);
    lg_test_fill(f->w, M * K, seed + 2, 0.5f);
    lg_test_fill(f->a, r * K, seed + 3, 0.5f);
    lg_test_fill(f->b, M * r, seed + 4, 0.5f);
    lg_test_fill(f->bias, M, seed + 5, 0.5f);
    lg_test_fill(f->dy, n * M, seed + 6, 1.0f);
}

static void fx_free(struct fixture *f)
{
    free(f->x), free(f->w), free(f->a), free(f->b), free(f->bias), free(f->dy);
}

static struct lg_ref_lora layer(const struct fixture *f, float p)
{
    struct lg_ref_lora L = {.K = f->K, .M = f->M, .r = f->r, .alpha = 2.0f * f->r, .dropout = p,
                            .round = LG_FP32, .seed = 42, .layer = 3, .w = f->w, .a = f->a, .b = f->b,
                            .bias = f->bias};
    return L;
}

START_TEST(forward_matches_merged_weight)
{
    struct fixture f;
    fx_init(&f, 9, 24, 16, 8, lg_test_seed());
    struct lg_ref_lora L = layer(&f, 0.0f);
    double *y = malloc(sizeof(double) * f.n * f.M);
    float *s = malloc(sizeof(float) * f.n * f.r);
    lg_ref_lora_forward(&L, f.n, f.x, y, s);
    double sc = (double)L.alpha / f.r, maxerr = 0;
    for (int64_t i = 0; i < f.n; i++)
        for (int64_t o = 0; o < f.M; o++) {
            double acc = f.bias[o];
            for (int64_t k = 0; k < f.K; k++) {
                double weff = f.w[o * f.K + k];
                for (int j = 0; j < f.r; j++)
                    weff += sc * f.b[o * f.r + j] * f.a[j * f.K + k];
                acc += weff * f.x[i * f.K + k];
            }
            maxerr = fmax(maxerr, fabs(acc - y[i * f.M + o]));
        }
    ck_assert_msg(maxerr < 1e-4, "forward differs from X·(W + s·B·A)ᵀ by %g", maxerr);
    free(y), free(s);
    fx_free(&f);
}
END_TEST

/* loss = Σ dY ⊙ Y, evaluated by the reference forward with fixed mask */
static double loss(const struct lg_ref_lora *L, const struct fixture *f)
{
    double *y = malloc(sizeof(double) * f->n * f->M);
    float *s = malloc(sizeof(float) * f->n * f->r);
    lg_ref_lora_forward(L, f->n, f->x, y, s);
    double acc = 0;
    for (int64_t i = 0; i < f->n * f->M; i++)
        acc += y[i] * f->dy[i];
    free(y), free(s);
    return acc;
}

/* central difference of loss w.r.t. *v (a float of the fixture) */
static double numgrad(const struct lg_ref_lora *L, const struct fixture *f, float *v)
{
    const float h = 1.0f / 64; /* exact in binary: the perturbed values stay representable */
    float keep = *v;
    *v = keep + h;
    double lp = loss(L, f);
    *v = keep - h;
    double lm = loss(L, f);
    *v = keep;
    return (lp - lm) / (2.0 * h);
}

static void check_grads(float p)
{
    struct fixture f;
    fx_init(&f, 7, 32, 16, 8, lg_test_seed() + (uint64_t)(p * 1000));
    struct lg_ref_lora L = layer(&f, p);
    double *y = malloc(sizeof(double) * f.n * f.M);
    float *s = malloc(sizeof(float) * f.n * f.r), *ds = malloc(sizeof(float) * f.n * f.r);
    double *dx = malloc(sizeof(double) * f.n * f.K), *da = malloc(sizeof(double) * f.r * f.K);
    double *db = malloc(sizeof(double) * f.M * f.r);
    lg_ref_lora_forward(&L, f.n, f.x, y, s);
    lg_ref_lora_backward(&L, f.n, f.x, s, f.dy, dx, da, db, ds);
    /* loss is linear in each single variable (A, B and X enter bilinearly), so the central difference is exact
     * but for S being stored as float (relative 1e-7, amplified by 1/h): 1e-4 still catches any real error */
    for (int t = 0; t < 12; t++) {
        int64_t i = (t * 7) % (f.r * f.K);
        double g = numgrad(&L, &f, &f.a[i]);
        ck_assert_msg(fabs(g - da[i]) < 1e-4 * (1 + fabs(g)), "dA[%lld]: numeric %g analytic %g (p=%g)",
                      (long long)i, g, da[i], p);
        int64_t jb = (t * 5) % (f.M * f.r);
        g = numgrad(&L, &f, &f.b[jb]);
        ck_assert_msg(fabs(g - db[jb]) < 1e-4 * (1 + fabs(g)), "dB[%lld]: numeric %g analytic %g", (long long)jb,
                      g, db[jb]);
        int64_t ix = (t * 11) % (f.n * f.K);
        g = numgrad(&L, &f, &f.x[ix]);
        ck_assert_msg(fabs(g - dx[ix]) < 1e-4 * (1 + fabs(g)), "dX[%lld]: numeric %g analytic %g",
                      (long long)ix, g, dx[ix]);
    }
    free(y), free(s), free(ds), free(dx), free(da), free(db);
    fx_free(&f);
}

START_TEST(gradients_match_finite_differences_p0) { check_grads(0.0f); }
END_TEST

START_TEST(gradients_match_finite_differences_dropout) { check_grads(0.25f); }
END_TEST

START_TEST(mask_keep_rate)
{
    const float ps[] = {0.05f, 0.1f, 0.5f, 0.9f};
    const int64_t n = 1000, k = 1024;
    uint8_t *m = malloc((size_t)(n * k));
    for (int i = 0; i < 4; i++) {
        lg_ref_dropout_mask(lg_test_seed(), 7, ps[i], n, k, m);
        double kept = 0;
        for (int64_t e = 0; e < n * k; e++)
            kept += m[e];
        double rate = kept / (double)(n * k), want = 1.0 - ps[i];
        double sigma = sqrt(want * (1 - want) / (double)(n * k));
        ck_assert_msg(fabs(rate - want) < 5 * sigma, "p=%g: keep rate %g, want %g ± %g", ps[i], rate, want,
                      5 * sigma);
    }
    lg_ref_dropout_mask(1, 1, 0.0f, n, k, m);
    for (int64_t e = 0; e < n * k; e++)
        ck_assert(m[e] == 1);
    free(m);
}
END_TEST

START_TEST(mask_reproducible_and_keyed)
{
    const int64_t n = 64, k = 256;
    uint8_t *a = malloc(n * k), *b = malloc(n * k), *c = malloc(n * k), *d = malloc(n * k);
    lg_ref_dropout_mask(99, 5, 0.3f, n, k, a);
    lg_ref_dropout_mask(99, 5, 0.3f, n, k, b);
    lg_ref_dropout_mask(100, 5, 0.3f, n, k, c);
    lg_ref_dropout_mask(99, 6, 0.3f, n, k, d);
    ck_assert(memcmp(a, b, n * k) == 0);
    ck_assert(memcmp(a, c, n * k) != 0);
    ck_assert(memcmp(a, d, n * k) != 0);
    /* adjacent elements are not correlated in an obvious way: both-kept pairs near (1-p)^2 */
    double both = 0;
    for (int64_t e = 0; e + 1 < n * k; e++)
        both += a[e] && a[e + 1];
    double rate = both / (double)(n * k - 1);
    ck_assert_msg(fabs(rate - 0.49) < 0.03, "adjacent both-kept rate %g", rate);
    free(a), free(b), free(c), free(d);
}
END_TEST

/* The kernels apply the mask as word AND-masks (lg_dropout_mask4); the reference uses the bit form. */
START_TEST(mask_forms_agree)
{
    const uint32_t th[] = {0, 1, 6554, 32768, 65535};
    for (int t = 0; t < 5; t++)
        for (uint64_t g = 0; g < 20000; g++) {
            uint32_t bits = lg_dropout_keep8(lg_test_seed(), 9, g * 7919, th[t]), m[4];
            lg_dropout_mask4(lg_test_seed(), 9, g * 7919, th[t], m);
            for (int i = 0; i < 8; i++) {
                uint32_t half = (m[i / 2] >> (16 * (i % 2))) & 0xffffu;
                ck_assert_msg(half == (((bits >> i) & 1u) ? 0xffffu : 0u), "thresh %u group %llu element %d",
                              th[t], (unsigned long long)g, i);
            }
        }
}
END_TEST

START_TEST(thresholds)
{
    ck_assert_uint_eq(lg_ref_dropout_thresh16(0.0f), 0);
    ck_assert_uint_eq(lg_ref_dropout_thresh16(0.5f), 32768);
    ck_assert_uint_eq(lg_ref_dropout_thresh16(0.1f), 6554);
    ck_assert(fabs(lg_ref_keep_scale(0.1f) - 65536.0 / (65536 - 6554)) < 1e-6);
    ck_assert(lg_ref_keep_scale(0.0f) == 1.0f);
}
END_TEST

START_TEST(rounding_mirrors_storage)
{
    struct fixture f;
    fx_init(&f, 5, 64, 8, 8, lg_test_seed() + 9);
    struct lg_ref_lora L = layer(&f, 0.1f);
    L.round = LG_BF16;
    double *y = malloc(sizeof(double) * f.n * f.M);
    float *s = malloc(sizeof(float) * f.n * f.r);
    lg_ref_lora_forward(&L, f.n, f.x, y, s);
    for (int64_t i = 0; i < f.n * f.r; i++)
        ck_assert(lg_round_to(LG_BF16, s[i]) == s[i]);
    free(y), free(s);
    fx_free(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("lora_ref");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, forward_matches_merged_weight);
    tcase_add_test(tc, gradients_match_finite_differences_p0);
    tcase_add_test(tc, gradients_match_finite_differences_dropout);
    tcase_add_test(tc, mask_keep_rate);
    tcase_add_test(tc, mask_reproducible_and_keyed);
    tcase_add_test(tc, mask_forms_agree);
    tcase_add_test(tc, thresholds);
    tcase_add_test(tc, rounding_mirrors_storage);
    suite_add_tcase(s, tc);
    int failed = lg_test_run(s, 0);
    return failed ? 1 : 0;
}
