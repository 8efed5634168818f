/* test_blas.c: the row-major cuBLASLt GEMM wrapper (lg_blas.h).
 *
 * CPU cases check lg_gemm_validate field by field (every rejection names its field) and run everywhere, forked.
 * GPU cases compare lg_blas_gemm against a CPU double reference on fresh random, half-rounded inputs: both
 * dtypes, all four transpose combinations, ld above the minimum (the extended-K views), alpha != 1, beta = 1,
 * bias, every heuristic candidate, and plan reuse. They run in this process (CK_NOFORK) only when a GPU is
 * present, after the forked CPU cases, so CUDA is never initialised before a fork. */
#include "lg_blas.h"
#include "lg_half.h"
#include "lg_test.h"

#include <check.h>
#include <math.h>
#include <string.h>

/* Fake device addresses: validation only looks at their value. */
#define FAKE_A ((const void *)0x100000)
#define FAKE_B ((const void *)0x200000)
#define FAKE_C ((void *)0x300000)
#define FAKE_BIAS ((const void *)0x400000)

/* ---- CPU: validation ---- */

/* C[64,96] = A[64,128] · B[128,96], every ld at its minimum. */
static struct lg_gemm good(void)
{
    return (struct lg_gemm){.dtype = LG_BF16, .m = 64, .n = 96, .k = 128, .a = FAKE_A, .lda = 128,
                            .b = FAKE_B, .ldb = 96, .c = FAKE_C, .ldc = 96, .alpha = 1};
}

static void expect_fail(const struct lg_gemm *g, enum lg_status want, const char *needle)
{
    lg_clear_error();
    enum lg_status s = lg_gemm_validate(g);
    ck_assert_msg(s == want, "expected %s, got %s (%s)", lg_status_str(want), lg_status_str(s), lg_last_error());
    ck_assert_msg(strstr(lg_last_error(), needle), "error \"%s\" does not mention \"%s\"", lg_last_error(),
                  needle);
}

static void expect_ok(const struct lg_gemm *g)
{
    enum lg_status s = lg_gemm_validate(g);
    ck_assert_msg(s == LG_OK, "rejected: %s", lg_last_error());
}

/* Case i: one field of good() broken; returns the text the error must contain. */
static const char *break_field(int i, struct lg_gemm *g)
{
    switch (i) {
    case 0: g->dtype = (enum lg_dtype)7; return "dtype=7";
    case 1: g->m = 0; return "m=0";
    case 2: g->n = -3; return "n=-3";
    case 3: g->k = 0; return "k=0";
    case 4: g->trans_a = 2; return "trans_a=2";
    case 5: g->trans_b = -1; return "trans_b=-1";
    case 6: g->algo_index = -1; return "algo_index=-1";
    case 7: g->algo_index = 8; return "algo_index=8";
    case 8: g->a = NULL; return "pointer a is NULL";
    case 9: g->b = NULL; return "pointer b is NULL";
    case 10: g->c = NULL; return "pointer c is NULL";
    case 11: g->a = (const char *)FAKE_A + 8; return "pointer a=";
    case 12: g->b = (const char *)FAKE_B + 2; return "pointer b=";
    case 13: g->c = (char *)FAKE_C + 4; return "pointer c=";
    case 14: g->bias = (const char *)FAKE_BIAS + 8; return "pointer bias=";
    case 15: g->lda = 120; return "lda=120"; /* < k */
    case 16: g->ldb = 88; return "ldb=88";   /* < n */
    case 17: g->ldc = 88; return "ldc=88";   /* < n */
    /* Transposed operands: the ld that sufficed as stored [m,k] / [k,n] is too short for [k,m] / [n,k]. */
    case 18: g->trans_a = 1, g->m = 256; return "lda=128";
    case 19: g->trans_b = 1; return "ldb=96";
    /* Long enough but rows not 16-byte aligned. */
    case 20: g->lda = 132; return "lda=132 (264 bytes) is not a multiple of 16 bytes";
    case 21: g->n = 4096, g->ldb = 4100, g->ldc = 4096;
        return "lg_blas_gemm: ldb=4100 (8200 bytes) is not a multiple of 16 bytes";
    case 22: g->dtype = LG_FP16, g->ldc = 100; return "ldc=100 (200 bytes)";
    }
    return NULL;
}
#define N_BAD_FIELDS 23

START_TEST(bad_field_is_named)
{
    struct lg_gemm g = good();
    const char *needle = break_field(_i, &g);
    ck_assert_ptr_nonnull(needle);
    expect_fail(&g, LG_ERR_INVALID, needle);
}
END_TEST

START_TEST(fp32_unsupported)
{
    struct lg_gemm g = good();
    g.dtype = LG_FP32;
    expect_fail(&g, LG_ERR_UNSUPPORTED, "fp32");
}
END_TEST

START_TEST(null_problem_and_handle)
{
    ck_assert_int_eq(lg_gemm_validate(NULL), LG_ERR_INVALID);
    struct lg_gemm g = good();
    ck_assert_int_eq(lg_blas_gemm(NULL, &g, NULL), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "handle"));
    ck_assert_int_eq(lg_blas_algo_count(NULL, &g), 0);
    ck_assert_uint_eq(lg_blas_plan_count(NULL), 0);
    lg_blas_free(NULL);
}
END_TEST

START_TEST(good_problems_pass)
{
    struct lg_gemm g = good();
    expect_ok(&g);
    g.dtype = LG_FP16;
    expect_ok(&g);
    g = good(), g.trans_a = 1, g.lda = 64; /* A stored [k,m] */
    expect_ok(&g);
    g = good(), g.trans_b = 1, g.ldb = 128; /* B stored [n,k] */
    expect_ok(&g);
    g = good(), g.trans_a = 1, g.lda = 64, g.trans_b = 1, g.ldb = 128;
    expect_ok(&g);
    g = good(), g.bias = FAKE_BIAS, g.beta = 1, g.alpha = 0.5f, g.algo_index = 7;
    expect_ok(&g);
    /* Odd m never touches an ld unless A is transposed; then lda rounds up to a multiple of 8. */
    g = good(), g.m = 37;
    expect_ok(&g);
    g.trans_a = 1, g.lda = 40;
    expect_ok(&g);
}
END_TEST

/* The LoRA layer's views: Y = X·Wᵀ with X and W inside [N, K+r] / [M, K+r] buffers, and lds far above the
 * minimum. */
START_TEST(extended_k_views_pass)
{
    const int64_t N = 8192, M = 4096, K = 4096, r = 16;
    struct lg_gemm g = {.dtype = LG_BF16, .m = N, .n = M, .k = K, .trans_b = 1, .a = FAKE_A, .lda = K + r,
                        .b = FAKE_B, .ldb = K + r, .c = FAKE_C, .ldc = M, .alpha = 1};
    expect_ok(&g);
    g.k = K + r; /* the fused form: the LoRA up-projection rides in the tail columns */
    expect_ok(&g);
    /* dX = [dY | dS]·[W ; A]: B is the [M+r, K+r] buffer read as [k, n] = [M+r, K] with ldb = K+r */
    g = (struct lg_gemm){.dtype = LG_FP16, .m = N, .n = K, .k = M + r, .a = FAKE_A, .lda = M + r, .b = FAKE_B,
                         .ldb = K + r, .c = FAKE_C, .ldc = K, .alpha = 1};
    expect_ok(&g);
    g.ldc = K + 64;
    expect_ok(&g);
}
END_TEST

static Suite *cpu_suite(void)
{
    Suite *s = suite_create("blas");
    TCase *tc = tcase_create("validate");
    tcase_add_loop_test(tc, bad_field_is_named, 0, N_BAD_FIELDS);
    tcase_add_test(tc, fp32_unsupported);
    tcase_add_test(tc, null_problem_and_handle);
    tcase_add_test(tc, good_problems_pass);
    tcase_add_test(tc, extended_k_views_pass);
    suite_add_tcase(s, tc);
    return s;
}

/* ---- GPU: against a CPU reference ---- */

static lg_blas_t *g_blas;
static CUstream g_stream;
static uint64_t g_seed_counter;

struct gemm_case {
    enum lg_dtype dtype;
    int64_t m, n, k;
    int trans_a, trans_b;
    int64_t pad; /* elements added to every minimum ld (a multiple of 8) */
    float alpha, beta;
    int bias;
    int algo_index;
};

/* A row-major matrix as stored: half bits for the GPU, the same values as floats for the reference. */
struct mat {
    int64_t rows, cols, ld;
    uint16_t *h;
    float *f;
};

static int64_t round8(int64_t x) { return (x + 7) / 8 * 8; }

/* Fresh random values everywhere, padding included, so a kernel that reads past a row gets a wrong answer. */
static void mat_random(struct mat *x, enum lg_dtype t, int64_t rows, int64_t cols, int64_t pad)
{
    x->rows = rows, x->cols = cols, x->ld = round8(cols) + pad;
    size_t n = (size_t)(rows * x->ld);
    x->h = malloc(n * sizeof *x->h);
    x->f = malloc(n * sizeof *x->f);
    ck_assert(x->h && x->f);
    lg_test_fill(x->f, n, lg_test_seed() + 0x9e37 * ++g_seed_counter, 1.0f);
    for (size_t i = 0; i < n; i++) {
        x->h[i] = lg_f32_to_half(t, x->f[i]);
        x->f[i] = lg_half_to_f32(t, x->h[i]);
    }
}

static void mat_free(struct mat *x)
{
    free(x->h);
    free(x->f);
}

static uint16_t nan_bits(enum lg_dtype t) { return t == LG_BF16 ? 0x7fc0 : 0x7e00; }
#define PAD_SENTINEL 0x1234 /* a finite value in both dtypes; must survive in C's padding */

/* C: random when it is read (beta != 0), NaN when it must only be written; the padding holds a sentinel. */
static void c_prepare(struct mat *c, const struct gemm_case *tc)
{
    mat_random(c, tc->dtype, tc->m, tc->n, tc->pad);
    for (int64_t i = 0; i < c->rows; i++)
        for (int64_t j = 0; j < c->ld; j++) {
            if (j >= c->cols)
                c->h[i * c->ld + j] = PAD_SENTINEL;
            else if (tc->beta == 0)
                c->h[i * c->ld + j] = nan_bits(tc->dtype);
        }
}

static void reference(const struct gemm_case *tc, const struct mat *a, const struct mat *b, const struct mat *c0,
                      const float *bias, double *ref)
{
    for (int64_t i = 0; i < tc->m; i++)
        for (int64_t j = 0; j < tc->n; j++) {
            double acc = 0;
            for (int64_t p = 0; p < tc->k; p++) {
                double av = tc->trans_a ? a->f[p * a->ld + i] : a->f[i * a->ld + p];
                double bv = tc->trans_b ? b->f[j * b->ld + p] : b->f[p * b->ld + j];
                acc += av * bv;
            }
            double v = tc->alpha * acc;
            if (tc->beta != 0)
                v += tc->beta * (double)c0->f[i * c0->ld + j];
            if (bias)
                v += bias[j];
            ref[i * tc->n + j] = v;
        }
}

static CUdeviceptr upload(const uint16_t *h, size_t n)
{
    CUdeviceptr d;
    CU_CHECK(cuMemAlloc(&d, n * sizeof *h));
    CU_CHECK(cuMemcpyHtoD(d, h, n * sizeof *h));
    return d;
}

/* Runs one GEMM on the GPU and returns C (row-major [m,n], as floats); checks the padding was not touched. */
static float *gpu_gemm(const struct gemm_case *tc, const struct mat *a, const struct mat *b, struct mat *c,
                       const struct mat *bias)
{
    CUdeviceptr da = upload(a->h, a->rows * a->ld), db = upload(b->h, b->rows * b->ld);
    CUdeviceptr dc = upload(c->h, c->rows * c->ld), dbias = bias ? upload(bias->h, bias->cols) : 0;
    struct lg_gemm g = {.dtype = tc->dtype, .m = tc->m, .n = tc->n, .k = tc->k, .trans_a = tc->trans_a,
                        .trans_b = tc->trans_b, .alpha = tc->alpha, .beta = tc->beta, .algo_index = tc->algo_index,
                        .a = (const void *)(uintptr_t)da, .lda = a->ld,
                        .b = (const void *)(uintptr_t)db, .ldb = b->ld,
                        .c = (void *)(uintptr_t)dc, .ldc = c->ld,
                        .bias = (const void *)(uintptr_t)dbias};
    enum lg_status s = lg_blas_gemm(g_blas, &g, g_stream);
    ck_assert_msg(s == LG_OK, "lg_blas_gemm: %s: %s", lg_status_str(s), lg_last_error());
    CU_CHECK(cuStreamSynchronize(g_stream));
    CU_CHECK(cuMemcpyDtoH(c->h, dc, (size_t)(c->rows * c->ld) * sizeof *c->h));
    CU_CHECK(cuMemFree(da));
    CU_CHECK(cuMemFree(db));
    CU_CHECK(cuMemFree(dc));
    if (dbias)
        CU_CHECK(cuMemFree(dbias));
    float *out = malloc((size_t)(tc->m * tc->n) * sizeof *out);
    ck_assert_ptr_nonnull(out);
    for (int64_t i = 0; i < tc->m; i++) {
        for (int64_t j = 0; j < tc->n; j++)
            out[i * tc->n + j] = lg_half_to_f32(tc->dtype, c->h[i * c->ld + j]);
        for (int64_t j = tc->n; j < c->ld; j++)
            ck_assert_msg(c->h[i * c->ld + j] == PAD_SENTINEL, "C padding written at row %lld col %lld",
                          (long long)i, (long long)j);
    }
    return out;
}

/* bf16 keeps 8 significant bits, fp16 11: the output rounding alone is ~1e-3 and ~1.3e-4 relative. */
static double tolerance(enum lg_dtype t) { return t == LG_BF16 ? 1e-2 : 2e-3; }

static void run_case(const struct gemm_case *tc)
{
    struct mat a, b, c, bias = {0};
    mat_random(&a, tc->dtype, tc->trans_a ? tc->k : tc->m, tc->trans_a ? tc->m : tc->k, tc->pad);
    mat_random(&b, tc->dtype, tc->trans_b ? tc->n : tc->k, tc->trans_b ? tc->k : tc->n, tc->pad);
    c_prepare(&c, tc);
    if (tc->bias)
        mat_random(&bias, tc->dtype, 1, tc->n, 0);
    double *ref = malloc((size_t)(tc->m * tc->n) * sizeof *ref);
    ck_assert_ptr_nonnull(ref);
    reference(tc, &a, &b, &c, tc->bias ? bias.f : NULL, ref); /* before the GPU result overwrites c */
    float *out = gpu_gemm(tc, &a, &b, &c, tc->bias ? &bias : NULL);
    double err = lg_test_rel_err(out, ref, (size_t)(tc->m * tc->n));
    printf("%s %c%c m=%lld n=%lld k=%lld pad=%lld alpha=%g beta=%g%s algo=%d: rel err %.3g\n",
           lg_dtype_name(tc->dtype), tc->trans_a ? 'T' : 'N', tc->trans_b ? 'T' : 'N', (long long)tc->m,
           (long long)tc->n, (long long)tc->k, (long long)tc->pad, tc->alpha, tc->beta, tc->bias ? " +bias" : "",
           tc->algo_index, err);
    ck_assert_msg(err <= tolerance(tc->dtype), "rel err %g > %g (NaN/inf means an element was not written)", err,
                  tolerance(tc->dtype));
    free(out);
    free(ref);
    mat_free(&a), mat_free(&b), mat_free(&c);
    if (tc->bias)
        mat_free(&bias);
}

/* _i: bit 0 trans_a, bit 1 trans_b, bit 2 fp16. */
START_TEST(gpu_transposes)
{
    struct gemm_case tc = {.dtype = (_i & 4) ? LG_FP16 : LG_BF16, .m = 37, .n = 72, .k = 96,
                           .trans_a = _i & 1, .trans_b = (_i >> 1) & 1, .pad = 8, .alpha = 1.5f};
    run_case(&tc);
}
END_TEST

START_TEST(gpu_accumulate_bias)
{
    struct gemm_case tc = {.dtype = (_i & 4) ? LG_FP16 : LG_BF16, .m = 1000, .n = 136, .k = 200,
                           .trans_a = _i & 1, .trans_b = (_i >> 1) & 1, .pad = 24, .alpha = 0.75f, .beta = 1,
                           .bias = 1};
    run_case(&tc);
}
END_TEST

/* Y = X·Wᵀ on [N, K+16] buffers read with k = K: the tail columns must be skipped. */
START_TEST(gpu_extended_k)
{
    struct gemm_case tc = {.dtype = _i ? LG_FP16 : LG_BF16, .m = 256, .n = 192, .k = 512, .trans_b = 1,
                           .pad = 16, .alpha = 1};
    run_case(&tc);
    tc.m = 1000, tc.n = 520, tc.bias = 1, tc.beta = 1, tc.alpha = 0.5f;
    run_case(&tc);
}
END_TEST

START_TEST(gpu_plan_reuse)
{
    struct gemm_case tc = {.dtype = LG_BF16, .m = 48, .n = 40, .k = 24, .pad = 8, .alpha = 1};
    unsigned p0 = lg_blas_plan_count(g_blas);
    run_case(&tc);
    ck_assert_uint_eq(lg_blas_plan_count(g_blas), p0 + 1);
    run_case(&tc); /* fresh buffers, same shape and alignment class */
    ck_assert_uint_eq(lg_blas_plan_count(g_blas), p0 + 1);
    tc.beta = 1; /* C is now read: a separate plan */
    run_case(&tc);
    ck_assert_uint_eq(lg_blas_plan_count(g_blas), p0 + 2);
}
END_TEST

/* Every heuristic candidate the tuner may pick must compute the same product. */
START_TEST(gpu_every_algo)
{
    struct gemm_case tc = {.dtype = _i ? LG_FP16 : LG_BF16, .m = 512, .n = 384, .k = 1024, .trans_b = 1,
                           .alpha = 1, .bias = 1};
    CUdeviceptr buf;
    CU_CHECK(cuMemAlloc(&buf, 4 << 20));
    /* Real, 256-byte aligned addresses so the plans match run_case's; nothing here is launched. */
    struct lg_gemm g = {.dtype = tc.dtype, .m = tc.m, .n = tc.n, .k = tc.k, .trans_b = 1, .alpha = 1,
                        .a = (const void *)(uintptr_t)buf, .lda = tc.k,
                        .b = (const void *)(uintptr_t)(buf + (1 << 20)), .ldb = tc.k,
                        .c = (void *)(uintptr_t)(buf + (2 << 20)), .ldc = tc.n,
                        .bias = (const void *)(uintptr_t)(buf + (3 << 20))};
    int n = lg_blas_algo_count(g_blas, &g);
    ck_assert_msg(n >= 1 && n <= 8, "algo count %d: %s", n, lg_last_error());
    printf("%s %dx%dx%d: %d heuristic candidates\n", lg_dtype_name(tc.dtype), (int)tc.m, (int)tc.n, (int)tc.k, n);
    for (tc.algo_index = 0; tc.algo_index < n; tc.algo_index++)
        run_case(&tc);
    if (n < 8) { /* one past the candidates: rejected when the plan is built, nothing launched */
        g.algo_index = n;
        ck_assert_int_eq(lg_blas_gemm(g_blas, &g, g_stream), LG_ERR_INVALID);
        ck_assert_ptr_nonnull(strstr(lg_last_error(), "algo_index"));
    }
    CU_CHECK(cuCtxSynchronize());
    CU_CHECK(cuMemFree(buf));
}
END_TEST

START_TEST(gpu_rejects_before_planning)
{
    struct lg_gemm g = good();
    g.ldb = 100;
    unsigned p0 = lg_blas_plan_count(g_blas);
    ck_assert_int_eq(lg_blas_gemm(g_blas, &g, g_stream), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "ldb=100"));
    ck_assert_uint_eq(lg_blas_plan_count(g_blas), p0);
}
END_TEST

static Suite *gpu_suite(void)
{
    Suite *s = suite_create("blas-gpu");
    TCase *tc = tcase_create("gpu");
    tcase_set_timeout(tc, 0); /* no time limits in tests */
    tcase_add_loop_test(tc, gpu_transposes, 0, 8);
    tcase_add_loop_test(tc, gpu_accumulate_bias, 0, 8);
    tcase_add_loop_test(tc, gpu_extended_k, 0, 2);
    tcase_add_test(tc, gpu_plan_reuse);
    tcase_add_loop_test(tc, gpu_every_algo, 0, 2);
    tcase_add_test(tc, gpu_rejects_before_planning);
    suite_add_tcase(s, tc);
    return s;
}

static int run_suite(Suite *s, int nofork)
{
    int failed = lg_test_run(s, nofork);
    return failed;
}

/* CUDA comes up only here, after the forked CPU suite, and the GPU suite runs in this process. */
static int run_gpu_suite(void)
{
    lg_test_require_gpu();
    CUdevice dev;
    CUcontext ctx;
    CU_CHECK(cuDeviceGet(&dev, lg_test_device()));
    CU_CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CU_CHECK(cuCtxSetCurrent(ctx));
    CU_CHECK(cuStreamCreate(&g_stream, CU_STREAM_NON_BLOCKING));
    CHECK(lg_blas_init(32 << 20, &g_blas));
    int failed = run_suite(gpu_suite(), 1);
    printf("%u cuBLASLt plans built\n", lg_blas_plan_count(g_blas));
    lg_blas_free(g_blas);
    CU_CHECK(cuStreamDestroy(g_stream));
    CU_CHECK(cuDevicePrimaryCtxRelease(dev));
    return failed;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (run_suite(cpu_suite(), 0))
        return 1;
    if (!lg_test_have_gpu()) {
        printf("no GPU present: skipping GPU cases\n");
        return 0;
    }
    return run_gpu_suite() ? 1 : 0;
}
