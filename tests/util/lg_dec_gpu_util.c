/* lg_dec_gpu_util.c: the helpers of the decoder-op GPU suites (lg_dec_gpu_util.h). */
#include "lg_dec_gpu_util.h"
#include "lg_half.h"
#include "lg_ref.h"
#include "lg_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

lg_ctx_t *dec_ctx;

/* ---- helpers ---- */

float *dec_rnd(size_t n, uint64_t seed, float scale, enum lg_dtype t)
{
    float *v = malloc(sizeof(float) * (n ? n : 1));
    lg_test_fill(v, n, seed, scale);
    if (t != LG_FP32)
        lg_host_round(v, n, t);
    return v;
}

uint16_t *dec_to_half(const float *v, size_t n, enum lg_dtype t)
{
    uint16_t *h = malloc(sizeof(uint16_t) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        h[i] = lg_f32_to_half(t, v[i]);
    return h;
}

/* One unit in the last place of dtype, relative. */
double dec_ulp(enum lg_dtype t) { return t == LG_BF16 ? 1.0 / 128 : t == LG_FP16 ? 1.0 / 1024 : 1.2e-7; }

/* Every element: |got - ref| <= atol + rtol·|ref| with atol = aabs · rms(ref); NaN fails. Prints one line. */
int dec_close_to(const char *what, const float *got, const double *ref, int64_t rows, int64_t cols, double rtol,
             double aabs)
{
    const size_t n = (size_t)(rows * cols);
    double ss = 0, worst = 0;
    for (size_t i = 0; i < n; i++)
        ss += ref[i] * ref[i];
    const double atol = aabs * sqrt(ss / (double)(n ? n : 1)) + 1e-30;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)got[i] - ref[i]);
        const double lim = atol + rtol * fabs(ref[i]);
        if (!(d <= lim)) {
            if (!bad++)
                first = i;
        }
        if (d / lim > worst || isnan(d))
            worst = isnan(d) ? INFINITY : d / lim;
    }
    const double l2 = lg_test_rel_err(got, ref, n);
    if (!bad)
        printf("  PASS %-34s worst %.2f of tolerance, rel L2 %.2e\n", what, worst, l2);
    else
        printf("  FAIL %-34s %zu of %zu outside tolerance, rel L2 %.2e; first at [%lld, %lld]: got %.7g, want %.7g\n",
               what, bad, n, l2, (long long)(first / (size_t)cols), (long long)(first % (size_t)cols),
               (double)got[first], ref[first]);
    return bad == 0;
}

double *dec_dbl(const float *v, size_t n)
{
    double *d = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        d[i] = v[i];
    return d;
}

int dec_close_f(const char *what, const float *got, const float *ref, int64_t rows, int64_t cols, double rtol,
            double aabs)
{
    double *d = dec_dbl(ref, (size_t)(rows * cols));
    int ok = dec_close_to(what, got, d, rows, cols, rtol, aabs);
    free(d);
    return ok;
}

/* Bitwise equality of two dtype matrices read back as floats (NaN fails). */
int dec_same_bits(const char *what, const float *got, const float *want, int64_t rows, int64_t cols)
{
    size_t bad = 0, first = 0, n = (size_t)(rows * cols);
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)) || isnan(got[i]))
            if (!bad++)
                first = i;
    if (!bad)
        printf("  PASS %-34s bit for bit (%zu values)\n", what, n);
    else
        printf("  FAIL %-34s %zu of %zu differ; first at [%lld, %lld]: got %.7g, want %.7g\n", what, bad, n,
               (long long)(first / (size_t)cols), (long long)(first % (size_t)cols), (double)got[first],
               (double)want[first]);
    return bad == 0;
}

float *dec_download(CUdeviceptr p, int64_t ld, int64_t rows, int64_t cols, enum lg_dtype t)
{
    float *h = malloc(sizeof(float) * (size_t)(rows * cols > 0 ? rows * cols : 1));
    lg_dev_download(h, p, ld, rows, cols, t);
    return h;
}

CUdeviceptr dec_upload_new(const float *v, int64_t ld, int64_t rows, int64_t cols, enum lg_dtype t)
{
    CUdeviceptr p = lg_dev_alloc((size_t)(rows * ld) * lg_dtype_size(t));
    lg_dev_poison(p, (size_t)(rows * ld) * lg_dtype_size(t));
    lg_dev_upload(p, ld, v, rows, cols, t);
    return p;
}

/* Copies rows x cols dtype elements between strided device buffers. */
void dec_copy_rows(CUdeviceptr dst, int64_t ldd, CUdeviceptr src, int64_t lds, int64_t rows, int64_t cols, size_t e)
{
    CUDA_MEMCPY2D c;
    memset(&c, 0, sizeof c);
    c.srcMemoryType = c.dstMemoryType = CU_MEMORYTYPE_DEVICE;
    c.srcDevice = src, c.srcPitch = (size_t)lds * e, c.dstDevice = dst, c.dstPitch = (size_t)ldd * e;
    c.WidthInBytes = (size_t)cols * e, c.Height = (size_t)rows;
    CU_CHECK(cuMemcpy2D(&c));
}

uint64_t dec_case_seed(int i) { return lg_test_seed() * 1000003u + (uint64_t)i * 7919u; }

const char *const dec_op_name[] = {"norm_fwd", "norm_bwd", "place", "rope", "swiglu", "embed", "xent", "adamw"};

/* The readers of a case: ranks from the table, alpha = 2r, layer ids 11, 12, 13. */
struct lg_lora_reader dec_reader(const struct tcase *c, int i)
{
    return (struct lg_lora_reader){.rank = c->rank[i], .alpha = 2.0f * c->rank[i], .dropout = c->p,
                                   .layer_id = 11u + (unsigned)i};
}

/* ---- norm ---- */

/* A FusedLoRA layer for reader i of a case (in = K, out = 64): its A block is where the norm reads A. */
lg_lora_t *dec_reader_layer(const struct tcase *c, int i, int64_t K, uint64_t seed, float **a_host)
{
    const struct lg_lora_reader r = dec_reader(c, i);
    const int64_t M = 64;
    struct lg_lora_params lp = {.in_features = K, .out_features = M, .rank = r.rank, .alpha = r.alpha,
                                .dropout = r.dropout, .dtype = c->t, .layer_id = r.layer_id};
    lg_lora_t *L;
    CHECK(lg_lora_init(dec_ctx, &lp, &L));
    float *w = dec_rnd((size_t)(M * K), seed + 1, 1.0f / sqrtf((float)K), c->t);
    float *a = dec_rnd((size_t)(r.rank * K), seed + 2, 1.0f / sqrtf((float)K), c->t);
    float *b = dec_rnd((size_t)(M * r.rank), seed + 3, 0.5f, c->t);
    uint16_t *wh = dec_to_half(w, (size_t)(M * K), c->t), *ah = dec_to_half(a, (size_t)(r.rank * K), c->t);
    uint16_t *bh = dec_to_half(b, (size_t)(M * r.rank), c->t);
    CHECK(lg_lora_set_weights(L, wh, ah, bh, NULL));
    free(w), free(b), free(wh), free(ah), free(bh);
    *a_host = a;
    return L;
}

CUdeviceptr dec_reader_a(lg_lora_t *L, int64_t K, int r, enum lg_dtype t)
{
    return lg_lora_weights(L) + (CUdeviceptr)((size_t)(64 * lg_lora_ext_ld(K, r)) * lg_dtype_size(t));
}

/* S = s·keep·(y ⊙ mask)·Aᵀ in double from the GPU's y. */
double *dec_ref_s(const struct tcase *c, int i, const float *y, int64_t n, int64_t K, const float *a, uint64_t seed)
{
    const struct lg_lora_reader r = dec_reader(c, i);
    uint8_t *mask = malloc((size_t)(n * K));
    lg_ref_dropout_mask(seed, r.layer_id, r.dropout, n, K, mask);
    const double scale = (double)((r.alpha / (float)r.rank) * lg_ref_keep_scale(r.dropout));
    double *s = calloc((size_t)(n * r.rank), sizeof(double));
    for (int64_t t = 0; t < n; t++)
        for (int j = 0; j < r.rank; j++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++)
                acc += mask[t * K + k] ? (double)y[t * K + k] * a[j * K + k] : 0.0;
            s[t * r.rank + j] = scale * acc;
        }
    free(mask);
    return s;
}

/* ---- the suite ---- */

static const struct tcase *suite_cases;
static int (*suite_run)(const struct tcase *c, uint64_t seed);

START_TEST(op_matches_reference)
{
    const struct tcase *c = &suite_cases[_i];
    const uint64_t seed = dec_case_seed(_i);
    printf("case %d: %s %s n=%lld k=%lld nlora=%d ranks=%d/%d/%d p=%g flags=%#x (%d, %d, %d) seed %llu\n", _i,
           dec_op_name[c->op], lg_dtype_name(c->t), (long long)c->n, (long long)c->k, c->nlora, c->rank[0], c->rank[1],
           c->rank[2], c->p, c->flags, c->a, c->b, c->c, (unsigned long long)seed);
    const int ok = suite_run(c, seed);
    printf("%s case %d (%s)\n", ok ? "PASS" : "FAIL", _i, dec_op_name[c->op]);
    fflush(stdout);
    ck_assert_msg(ok, "case %d (%s) failed: see the lines above", _i, dec_op_name[c->op]);
}
END_TEST

int lg_dec_gpu_main(const char *suite, const struct tcase *cases, int ncases,
                    int (*run)(const struct tcase *c, uint64_t seed), void (*extra)(TCase *tc))
{
    lg_test_require_gpu();
    struct lg_ctx_params cp = {.device = 0};
    CHECK(lg_ctx_init(&cp, &dec_ctx));
    printf("device: %s (sm_%d, %d SMs)\n", lg_ctx_device_name(dec_ctx), lg_ctx_arch(dec_ctx), lg_ctx_sm_count(dec_ctx));
    Suite *s = suite_create(suite);
    TCase *tc = tcase_create("gpu");
    tcase_set_timeout(tc, 0);
    suite_cases = cases, suite_run = run;
    if (ncases > 0)
        tcase_add_loop_test(tc, op_matches_reference, 0, ncases);
    if (extra)
        extra(tc);
    suite_add_tcase(s, tc);
    int failed = lg_test_run(s, 1);
    lg_ctx_free(dec_ctx);
    return failed ? 1 : 0;
}
