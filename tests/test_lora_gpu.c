/* test_lora_gpu.c: FusedLoRA on the GPU against the CPU reference (lg_ref.h): forward and backward of every
 * kernel (S from the down pass, dS and dB from the dY pass, dA and the masked dX from the X pass) and of the
 * whole layer, on fresh random inputs with NaN-poisoned outputs; odd token counts, p = 0 and p > 0, bf16 and
 * fp16, extended-K and separate-buffer layouts, bias, every tile variant of the tunable kernels, determinism,
 * gradient accumulation, dropout reproducibility, and bad calls. The borrowed-base mode (W and bias in the
 * caller's memory, as a PyTorch model holds them) runs the same table rows with A/B set from the host, from
 * fp32 device arrays (converted on the device) or from dtype device arrays, and the caller's workspace.
 * Exits 77 without a GPU. */
#include "lg_gpu_util.h"
#include "lg_lora.h"
#include "lg_ref.h"
#include "lg_half.h"
#include "lg_test.h"

#include <check.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

static lg_ctx_t *ctx;

struct lcase {
    int64_t n, K, M;
    int r;
    float p;
    enum lg_dtype t;
    int ext_x, ext_dy, bias, pad; /* pad: extra elements on every leading dimension */
    int borrow;                   /* base W (ld K+pad) and bias borrowed; adapter source: enum adapter_src */
};

/* How a borrowed layer's A and B get in (0 = not borrowed: lg_lora_set_weights fills [[W,B],[A,0]]). */
enum adapter_src { SRC_OWNED = 0, SRC_HOST, SRC_DEV_F32, SRC_DEV_HALF };

static double tol(enum lg_dtype t) { return t == LG_BF16 ? 1e-2 : 2e-3; }

struct run {
    float *y, *s, *ds, *dx, *da, *db;
};

static void run_free(struct run *r) { free(r->y), free(r->s), free(r->ds), free(r->dx), free(r->da), free(r->db); }

static float *rnd(size_t n, uint64_t seed, float scale, enum lg_dtype t)
{
    float *v = malloc(sizeof(float) * n);
    lg_test_fill(v, n, seed, scale);
    lg_host_round(v, n, t);
    return v;
}

static uint16_t *to_half(const float *v, size_t n, enum lg_dtype t)
{
    uint16_t *h = malloc(sizeof(uint16_t) * n);
    for (size_t i = 0; i < n; i++)
        h[i] = lg_f32_to_half(t, v[i]);
    return h;
}

struct inputs {
    float *x, *w, *a, *b, *bias, *dy;
};

static void make_inputs(const struct lcase *c, uint64_t seed, struct inputs *in)
{
    in->x = rnd((size_t)(c->n * c->K), seed + 1, 1.0f, c->t);
    in->w = rnd((size_t)(c->M * c->K), seed + 2, 1.0f / sqrtf((float)c->K), c->t);
    in->a = rnd((size_t)(c->r * c->K), seed + 3, 1.0f / sqrtf((float)c->K), c->t);
    in->b = rnd((size_t)(c->M * c->r), seed + 4, 0.5f, c->t); /* PEFT starts B at 0; tests need it live */
    in->bias = c->bias ? rnd((size_t)c->M, seed + 5, 0.5f, c->t) : NULL;
    in->dy = rnd((size_t)(c->n * c->M), seed + 6, 1.0f, c->t);
}

static void free_inputs(struct inputs *in) { free(in->x), free(in->w), free(in->a), free(in->b), free(in->bias), free(in->dy); }

/* Runs forward+backward on the GPU and downloads everything. */
/* A layer and, when borrowed, the caller's buffers it reads (freed with it). */
struct layer {
    lg_lora_t *L;
    CUdeviceptr w, bias;
};

static void layer_free(struct layer *ly)
{
    lg_lora_free(ly->L);
    if (ly->w)
        cuMemFree(ly->w);
    if (ly->bias)
        cuMemFree(ly->bias);
}

static void gpu_run(const struct layer *ly, const struct lcase *c, const struct inputs *in, uint64_t seed,
                    struct run *o)
{
    lg_lora_t *L = ly->L;
    const int64_t n = c->n, K = c->K, M = c->M, r = c->r;
    const size_t e = lg_dtype_size(c->t);
    const int64_t ldx = (c->ext_x ? K + r : K) + c->pad, lddy = (c->ext_dy ? M + r : M) + c->pad;
    const int64_t ldy = M + c->pad, lddx = K + c->pad, lds = r + c->pad;
    CUdeviceptr x = lg_dev_alloc((size_t)(n * ldx) * e), y = lg_dev_alloc((size_t)(n * ldy) * e);
    CUdeviceptr s = lg_dev_alloc((size_t)(n * lds) * e), dy = lg_dev_alloc((size_t)(n * lddy) * e);
    CUdeviceptr dx = lg_dev_alloc((size_t)(n * lddx) * e);
    CUdeviceptr da = lg_dev_alloc((size_t)(r * K) * 4), db = lg_dev_alloc((size_t)(M * r) * 4);
    lg_dev_poison(x, (size_t)(n * ldx) * e), lg_dev_poison(y, (size_t)(n * ldy) * e);
    lg_dev_poison(s, (size_t)(n * lds) * e), lg_dev_poison(dy, (size_t)(n * lddy) * e);
    lg_dev_poison(dx, (size_t)(n * lddx) * e), lg_dev_poison(da, (size_t)(r * K) * 4);
    lg_dev_poison(db, (size_t)(M * r) * 4);
    lg_dev_upload(x, ldx, in->x, n, K, c->t);
    lg_dev_upload(dy, lddy, in->dy, n, M, c->t);

    struct lg_lora_fwd f = {.n = n, .x = x, .ldx = ldx, .s = c->ext_x ? 0 : s, .lds = lds, .y = y, .ldy = ldy,
                            .seed = seed};
    CHECK(lg_lora_forward(L, &f, 0));
    struct lg_lora_bwd b = {.n = n, .x = x, .ldx = ldx, .s = c->ext_x ? 0 : s, .lds = lds, .dy = dy,
                            .lddy = lddy, .dx = dx, .lddx = lddx, .da = da, .db = db, .seed = seed};
    CUdeviceptr ws = 0;
    if (c->borrow >= SRC_DEV_F32) { /* the caller's workspace, poisoned, exactly as large as asked */
        CHECK(lg_lora_backward_workspace(L, &b, &b.ws_size));
        ws = b.ws = lg_dev_alloc(b.ws_size);
        lg_dev_poison(ws, b.ws_size);
    }
    CHECK(lg_lora_backward(L, &b, 0));
    CU_CHECK(cuCtxSynchronize());

    o->y = malloc(sizeof(float) * n * M), o->s = malloc(sizeof(float) * n * r);
    o->ds = malloc(sizeof(float) * n * r), o->dx = malloc(sizeof(float) * n * K);
    o->da = malloc(sizeof(float) * r * K), o->db = malloc(sizeof(float) * M * r);
    lg_dev_download(o->y, y, ldy, n, M, c->t);
    if (c->ext_x)
        lg_dev_download(o->s, x + (CUdeviceptr)(K * e), ldx, n, r, c->t);
    else
        lg_dev_download(o->s, s, lds, n, r, c->t);
    if (c->ext_dy)
        lg_dev_download(o->ds, dy + (CUdeviceptr)(M * e), lddy, n, r, c->t);
    else
        lg_dev_download(o->ds, lg_lora_ds_buffer(L), r, n, r, c->t);
    lg_dev_download(o->dx, dx, lddx, n, K, c->t);
    lg_dev_download(o->da, da, K, r, K, LG_FP32);
    lg_dev_download(o->db, db, r, M, r, LG_FP32);
    if (ws)
        cuMemFree(ws);
    /* poisoned padding of X beyond S, and of Y beyond M, must stay untouched (no stray writes) */
    if (c->pad) {
        float *tail = malloc(sizeof(float) * n * c->pad);
        lg_dev_download(tail, y + (CUdeviceptr)(M * e), ldy, n, c->pad, c->t);
        for (int64_t i = 0; i < n * c->pad; i++)
            ck_assert_msg(isnan(tail[i]), "Y padding written at %lld", (long long)i);
        free(tail);
    }
    cuMemFree(x), cuMemFree(y), cuMemFree(s), cuMemFree(dy), cuMemFree(dx), cuMemFree(da), cuMemFree(db);
}

/* A borrowed layer: W [M, K+pad] and the bias in buffers of the test's, A and B from the source the case names. */
static void borrow_layer(const struct lcase *c, const struct inputs *in, struct layer *ly)
{
    const int64_t K = c->K, M = c->M, r = c->r, ldw = K + c->pad;
    const size_t e = lg_dtype_size(c->t);
    ly->w = lg_dev_alloc((size_t)(M * ldw) * e);
    lg_dev_poison(ly->w, (size_t)(M * ldw) * e);
    lg_dev_upload(ly->w, ldw, in->w, M, K, c->t);
    if (in->bias) {
        ly->bias = lg_dev_alloc((size_t)M * e);
        lg_dev_upload(ly->bias, M, in->bias, 1, M, c->t);
    }
    CHECK(lg_lora_set_base(ly->L, ly->w, ldw, ly->bias));
    int64_t got_ld = 0;
    ck_assert_msg(lg_lora_base_weight(ly->L, &got_ld) == ly->w && got_ld == ldw, "borrowed W was not used in place");
    ck_assert_msg(lg_lora_weights(ly->L) == 0, "a borrowed layer reports an owned [[W,B],[A,0]] buffer");
    if (c->borrow == SRC_HOST) {
        uint16_t *a = to_half(in->a, (size_t)(r * K), c->t), *b = to_half(in->b, (size_t)(M * r), c->t);
        CHECK(lg_lora_set_weights(ly->L, NULL, a, b, NULL));
        free(a), free(b);
        return;
    }
    /* device sources: fp32 packed, or dtype with padded rows (the copy path) */
    const int f32 = c->borrow == SRC_DEV_F32;
    const int64_t lda = f32 ? K : K + c->pad, ldb = f32 ? r : r + c->pad;
    const enum lg_dtype st = f32 ? LG_FP32 : c->t;
    const size_t se = f32 ? 4 : e;
    CUdeviceptr a = lg_dev_alloc((size_t)(r * lda) * se), b = lg_dev_alloc((size_t)(M * ldb) * se);
    lg_dev_upload(a, lda, in->a, r, K, st);
    lg_dev_upload(b, ldb, in->b, M, r, st);
    struct lg_lora_adapter_src src = {.dtype = st, .a = a, .lda = lda, .b = b, .ldb = ldb};
    CHECK(lg_lora_set_adapter_device(ly->L, &src, 0));
    CU_CHECK(cuCtxSynchronize());
    cuMemFree(a), cuMemFree(b);
}

static struct layer make_layer(const struct lcase *c, const struct inputs *in, uint32_t layer_id)
{
    struct lg_lora_params lp = {.in_features = c->K, .out_features = c->M, .rank = c->r, .alpha = 2.0f * c->r,
                                .dropout = c->p, .dtype = c->t, .has_bias = c->bias, .layer_id = layer_id,
                                .base = c->borrow ? LG_LORA_BASE_BORROWED : LG_LORA_BASE_OWNED};
    struct layer ly = {0};
    CHECK(lg_lora_init(ctx, &lp, &ly.L));
    if (c->borrow) {
        borrow_layer(c, in, &ly);
        return ly;
    }
    size_t nw = (size_t)(c->M * c->K), na = (size_t)(c->r * c->K), nb = (size_t)(c->M * c->r);
    uint16_t *w = to_half(in->w, nw, c->t), *a = to_half(in->a, na, c->t), *b = to_half(in->b, nb, c->t);
    uint16_t *bias = in->bias ? to_half(in->bias, (size_t)c->M, c->t) : NULL;
    CHECK(lg_lora_set_weights(ly.L, w, a, b, bias));
    free(w), free(a), free(b), free(bias);
    return ly;
}

static void expect_close(const char *what, const struct lcase *c, const float *got, const double *ref, size_t n)
{
    double err = lg_test_rel_err(got, ref, n);
    ck_assert_msg(err <= tol(c->t), "%s: rel err %.3g > %.3g (n=%lld K=%lld M=%lld r=%d p=%g %s ext=%d/%d borrow=%d)",
                  what, err, tol(c->t), (long long)c->n, (long long)c->K, (long long)c->M, c->r, c->p,
                  lg_dtype_name(c->t), c->ext_x, c->ext_dy, c->borrow);
}

static double *to_double(const float *v, size_t n)
{
    double *d = malloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++)
        d[i] = v[i];
    return d;
}

/* Whole layer and each kernel's output against the reference. */
static void check_case(const struct lcase *c, const struct lg_lora_tiles *tiles)
{
    const uint64_t seed = lg_test_seed() ^ (uint64_t)(c->n * 1315423911u + c->K * 2654435761u + c->M + c->r);
    struct inputs in;
    make_inputs(c, seed, &in);
    struct layer ly = make_layer(c, &in, 11);
    if (tiles)
        CHECK(lg_lora_set_tiles(ly.L, tiles));
    struct run g;
    gpu_run(&ly, c, &in, seed, &g);

    const int64_t n = c->n, K = c->K, M = c->M, r = c->r;
    struct lg_ref_lora R = {.K = K, .M = M, .r = c->r, .alpha = 2.0f * c->r, .dropout = c->p, .round = c->t,
                            .seed = seed, .layer = 11, .w = in.w, .a = in.a, .b = in.b, .bias = in.bias};
    double *y = malloc(sizeof(double) * n * M), *dx = malloc(sizeof(double) * n * K);
    double *da = malloc(sizeof(double) * r * K), *db = malloc(sizeof(double) * M * r);
    float *s = malloc(sizeof(float) * n * r), *ds = malloc(sizeof(float) * n * r);
    lg_ref_lora_forward(&R, n, in.x, y, s);
    lg_ref_lora_backward(&R, n, in.x, s, in.dy, dx, da, db, ds);
    double *sd = to_double(s, (size_t)(n * r)), *dsd = to_double(ds, (size_t)(n * r));
    expect_close("S (down kernel)", c, g.s, sd, (size_t)(n * r));
    expect_close("Y (layer forward)", c, g.y, y, (size_t)(n * M));
    expect_close("dS (dy kernel + reduce)", c, g.ds, dsd, (size_t)(n * r));
    expect_close("dB (dy kernel + reduce)", c, g.db, db, (size_t)(M * r));
    expect_close("dA (da kernel + reduce)", c, g.da, da, (size_t)(r * K));
    expect_close("dX (GEMM + masked correction)", c, g.dx, dx, (size_t)(n * K));
    free(y), free(dx), free(da), free(db), free(s), free(ds), free(sd), free(dsd);
    run_free(&g);
    layer_free(&ly);
    free_inputs(&in);
}

static const struct lcase cases[] = {
    /*  n     K     M    r   p      dtype  ext_x ext_dy bias pad borrow */
    {77, 128, 320, 8, 0.1f, LG_BF16, 1, 1, 0, 0, SRC_OWNED},
    {1000, 512, 192, 16, 0.0f, LG_BF16, 1, 1, 1, 0, SRC_OWNED},
    {1000, 512, 192, 16, 0.1f, LG_FP16, 1, 1, 0, 0, SRC_OWNED},
    {513, 1024, 1024, 32, 0.1f, LG_BF16, 0, 0, 0, 0, SRC_OWNED},
    {513, 1024, 1024, 32, 0.0f, LG_FP16, 0, 0, 1, 0, SRC_OWNED},
    {1, 256, 128, 16, 0.1f, LG_BF16, 1, 1, 0, 0, SRC_OWNED},
    {257, 768, 512, 64, 0.05f, LG_BF16, 1, 0, 0, 8, SRC_OWNED},
    {300, 512, 256, 128, 0.1f, LG_BF16, 1, 1, 0, 0, SRC_OWNED},
    {333, 256, 448, 24, 0.2f, LG_FP16, 0, 1, 1, 16, SRC_OWNED},
    {4096, 1024, 2048, 16, 0.1f, LG_BF16, 1, 1, 0, 0, SRC_OWNED},
    {2049, 2048, 512, 16, 0.0f, LG_BF16, 1, 1, 0, 0, SRC_OWNED},
    /* borrowed base: PyTorch's layout (X, Y, dY, dX packed, S apart), then the tails and padded W */
    {77, 128, 320, 8, 0.1f, LG_BF16, 0, 0, 0, 0, SRC_DEV_F32},
    {1000, 512, 192, 16, 0.0f, LG_BF16, 0, 0, 1, 0, SRC_DEV_F32},
    {1000, 512, 192, 16, 0.1f, LG_FP16, 0, 0, 1, 0, SRC_DEV_HALF},
    {513, 1024, 1024, 32, 0.0f, LG_BF16, 1, 1, 0, 0, SRC_HOST},
    {513, 1024, 1024, 32, 0.1f, LG_BF16, 1, 1, 0, 0, SRC_DEV_F32},
    {257, 768, 512, 64, 0.05f, LG_BF16, 0, 1, 0, 8, SRC_DEV_HALF},
    {333, 256, 448, 24, 0.2f, LG_FP16, 1, 0, 1, 16, SRC_HOST},
    {1, 256, 128, 16, 0.1f, LG_BF16, 0, 0, 0, 0, SRC_DEV_F32},
    {300, 512, 256, 128, 0.1f, LG_BF16, 0, 0, 0, 8, SRC_DEV_F32},
    {4096, 1024, 2048, 16, 0.1f, LG_BF16, 0, 0, 0, 0, SRC_DEV_F32},
};

START_TEST(layer_matches_reference) { check_case(&cases[_i], NULL); }
END_TEST

/* Every tile variant of the tunable kernels, one parameter at a time, on one mid-size case. */
START_TEST(tile_variants_match_reference)
{
    const struct lcase c = {611, 512, 384, 16, 0.1f, LG_BF16, 1, 1, 0, 0, SRC_OWNED};
    const struct lg_lora_tiles v[] = {
        {.down_wm = 1, .down_wk = 1, .down_mt = 1, .down_u = 1}, {.down_wm = 2, .down_wk = 1, .down_mt = 2, .down_u = 2},
        {.down_wm = 8, .down_wk = 2, .down_mt = 1, .down_u = 4}, {.down_wm = 4, .down_wk = 4, .down_mt = 1, .down_u = 1},
        {.down_wm = 4, .down_wk = 2, .down_mt = 2, .down_u = 2}, {.down_wm = 1, .down_wk = 8, .down_mt = 1, .down_u = 2},
        {.down_wm = 2, .down_wk = 8, .down_mt = 2, .down_u = 1}, {.down_wm = 1, .down_wk = 4, .down_mt = 1, .down_u = 2},
        {.dy_nct = 1}, {.dy_nct = 2, .dy_st = 2}, {.dy_nct = 8}, {.dy_nct = 4, .dy_st = 4},
        {.fwd_algo = 1, .dx_algo = 1}, {.down_minb = 2, .dy_minb = 4},
        {.down_minb = 3, .dy_minb = 5, .da_minb = 5}, {.dy_minb = 6, .dy_st = 2, .da_minb = 6},
    };

    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        check_case(&c, &v[i]);
}
END_TEST

/* Same inputs and seed: bit-identical gradients (no float atomics); grad_beta = 1 doubles them exactly;
 * a new seed changes the mask. */
START_TEST(deterministic_accumulating_reproducible)
{
    const struct lcase c = {1500, 1024, 768, 16, 0.1f, LG_BF16, 1, 1, 0, 0, SRC_OWNED};
    struct inputs in;
    make_inputs(&c, lg_test_seed() + 77, &in);
    struct layer ly = make_layer(&c, &in, 3);
    lg_lora_t *L = ly.L;
    const int64_t n = c.n, K = c.K, M = c.M, r = c.r, ldx = K + r, lddy = M + r;
    CUdeviceptr x = lg_dev_alloc(n * ldx * 2), y = lg_dev_alloc(n * M * 2), dy = lg_dev_alloc(n * lddy * 2);
    CUdeviceptr dx = lg_dev_alloc(n * K * 2), da = lg_dev_alloc(r * K * 4), db = lg_dev_alloc(M * r * 4);
    lg_dev_upload(x, ldx, in.x, n, K, c.t);
    lg_dev_upload(dy, lddy, in.dy, n, M, c.t);
    struct lg_lora_fwd f = {.n = n, .x = x, .ldx = ldx, .y = y, .ldy = M, .seed = 5};
    struct lg_lora_bwd b = {.n = n, .x = x, .ldx = ldx, .dy = dy, .lddy = lddy, .dx = dx, .lddx = K, .da = da,
                            .db = db, .seed = 5};
    size_t nda = (size_t)(r * K), ndb = (size_t)(M * r), ndx = (size_t)(n * K) / 2, ns = (size_t)(n * ldx) / 2;
    float *da1 = malloc(nda * 4), *da2 = malloc(nda * 4), *db1 = malloc(ndb * 4), *db2 = malloc(ndb * 4);
    uint32_t *dx1 = malloc(ndx * 4), *dx2 = malloc(ndx * 4), *x1 = malloc(ns * 4), *x2 = malloc(ns * 4);
    CHECK(lg_lora_forward(L, &f, 0));
    CHECK(lg_lora_backward(L, &b, 0));
    CU_CHECK(cuMemcpyDtoH(da1, da, nda * 4));
    CU_CHECK(cuMemcpyDtoH(db1, db, ndb * 4));
    CU_CHECK(cuMemcpyDtoH(dx1, dx, ndx * 4));
    CU_CHECK(cuMemcpyDtoH(x1, x, ns * 4));
    CHECK(lg_lora_forward(L, &f, 0));
    CHECK(lg_lora_backward(L, &b, 0));
    CU_CHECK(cuMemcpyDtoH(da2, da, nda * 4));
    CU_CHECK(cuMemcpyDtoH(db2, db, ndb * 4));
    CU_CHECK(cuMemcpyDtoH(dx2, dx, ndx * 4));
    CU_CHECK(cuMemcpyDtoH(x2, x, ns * 4));
    ck_assert_msg(memcmp(x1, x2, ns * 4) == 0, "S differs between identical forwards");
    ck_assert_msg(memcmp(da1, da2, nda * 4) == 0, "dA not bitwise reproducible");
    ck_assert_msg(memcmp(db1, db2, ndb * 4) == 0, "dB not bitwise reproducible");
    ck_assert_msg(memcmp(dx1, dx2, ndx * 4) == 0, "dX not bitwise reproducible");
    b.grad_beta = 1.0f;
    CHECK(lg_lora_backward(L, &b, 0));
    CU_CHECK(cuMemcpyDtoH(da2, da, nda * 4));
    CU_CHECK(cuMemcpyDtoH(db2, db, ndb * 4));
    for (size_t i = 0; i < nda; i++)
        ck_assert_msg(da2[i] == 2 * da1[i], "dA accumulate: %g vs 2*%g", da2[i], da1[i]);
    for (size_t i = 0; i < ndb; i++)
        ck_assert_msg(db2[i] == 2 * db1[i], "dB accumulate: %g vs 2*%g", db2[i], db1[i]);
    f.seed = 6;
    CHECK(lg_lora_forward(L, &f, 0));
    CU_CHECK(cuMemcpyDtoH(x2, x, ns * 4));
    ck_assert_msg(memcmp(x1, x2, ns * 4) != 0, "a new dropout seed left S unchanged");
    free(da1), free(da2), free(db1), free(db2), free(dx1), free(dx2), free(x1), free(x2);
    cuMemFree(x), cuMemFree(y), cuMemFree(dy), cuMemFree(dx), cuMemFree(da), cuMemFree(db);
    layer_free(&ly);
    free_inputs(&in);
}
END_TEST

START_TEST(bad_calls_are_errors)
{
    struct lg_lora_params lp = {.in_features = 512, .out_features = 256, .rank = 16, .alpha = 32,
                                .dtype = LG_BF16};
    lg_lora_t *L;
    struct lg_lora_params bad = lp;
    bad.rank = 12;
    ck_assert_int_eq(lg_lora_init(ctx, &bad, &L), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "rank"));
    bad = lp, bad.in_features = 500;
    ck_assert_int_eq(lg_lora_init(ctx, &bad, &L), LG_ERR_INVALID);
    bad = lp, bad.dtype = LG_FP32;
    ck_assert_int_eq(lg_lora_init(ctx, &bad, &L), LG_ERR_UNSUPPORTED);
    bad = lp, bad.dropout = 1.0f;
    ck_assert_int_eq(lg_lora_init(ctx, &bad, &L), LG_ERR_INVALID);
    CHECK(lg_lora_init(ctx, &lp, &L));
    CUdeviceptr x = lg_dev_alloc(64 * 528 * 2), y = lg_dev_alloc(64 * 256 * 2);
    struct lg_lora_fwd f = {.n = 64, .x = x, .ldx = 500, .y = y, .ldy = 256};
    ck_assert_int_eq(lg_lora_forward(L, &f, 0), LG_ERR_INVALID); /* ldx < K */
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "x"));
    f.ldx = 515;
    ck_assert_int_eq(lg_lora_forward(L, &f, 0), LG_ERR_INVALID); /* ldx not 16-byte rows */
    f.ldx = 520;
    ck_assert_int_eq(lg_lora_forward(L, &f, 0), LG_ERR_INVALID); /* no room for S and no s buffer */
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "s (needed"));
    f.ldx = 528, f.n = 0;
    ck_assert_int_eq(lg_lora_forward(L, &f, 0), LG_ERR_INVALID);
    f.n = 64, f.y = 0;
    ck_assert_int_eq(lg_lora_forward(L, &f, 0), LG_ERR_INVALID);
    struct lg_lora_bwd b = {.n = 64, .x = x, .ldx = 528, .dy = y, .lddy = 256};
    ck_assert_int_eq(lg_lora_backward(L, &b, 0), LG_ERR_INVALID); /* no gradient buffers */
    ck_assert_int_eq(lg_lora_set_base(L, x, 512, 0), LG_ERR_INVALID); /* an owned layer borrows nothing */
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "owns"));
    lg_lora_free(L);

    /* borrowed base */
    struct lg_lora_params bp = lp;
    bp.base = LG_LORA_BASE_BORROWED;
    CHECK(lg_lora_init(ctx, &bp, &L));
    CUdeviceptr w = lg_dev_alloc(256 * 520 * 2), da = lg_dev_alloc(16 * 512 * 4), db = lg_dev_alloc(256 * 16 * 4);
    f = (struct lg_lora_fwd){.n = 64, .x = x, .ldx = 528, .y = y, .ldy = 256};
    ck_assert_int_eq(lg_lora_forward(L, &f, 0), LG_ERR_INVALID); /* W not given yet */
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "lg_lora_set_base"));
    ck_assert_int_eq(lg_lora_set_base(L, w, 500, 0), LG_ERR_INVALID); /* ld below K */
    ck_assert_int_eq(lg_lora_set_base(L, w, 516, 0), LG_ERR_INVALID); /* ld not 16-byte rows */
    ck_assert_int_eq(lg_lora_set_base(L, w + 8, 520, 0), LG_ERR_INVALID); /* misaligned */
    ck_assert_int_eq(lg_lora_set_base(L, 0, 520, 0), LG_ERR_INVALID);
    ck_assert_int_eq(lg_lora_set_base(L, w, 520, y), LG_ERR_INVALID); /* bias on a layer without one */
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "has_bias"));
    CHECK(lg_lora_set_base(L, w, 520, 0));
    uint16_t wh[512] = {0};
    ck_assert_int_eq(lg_lora_set_weights(L, wh, NULL, NULL, NULL), LG_ERR_INVALID); /* W is not the layer's */
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "borrowed"));
    struct lg_lora_adapter_src src = {.dtype = LG_FP32, .a = da, .lda = 520, .b = db, .ldb = 16};
    ck_assert_int_eq(lg_lora_set_adapter_device(L, &src, 0), LG_ERR_INVALID); /* fp32 must be packed */
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "packed"));
    src.lda = 512, src.dtype = LG_FP16;
    ck_assert_int_eq(lg_lora_set_adapter_device(L, &src, 0), LG_ERR_UNSUPPORTED); /* neither fp32 nor bf16 */
    src.dtype = LG_FP32, src.a = da + 4;
    ck_assert_int_eq(lg_lora_set_adapter_device(L, &src, 0), LG_ERR_INVALID); /* misaligned */
    b = (struct lg_lora_bwd){.n = 64, .x = x, .ldx = 528, .dy = y, .lddy = 256, .dx = 0, .da = da, .db = db};
    size_t need = 0;
    CHECK(lg_lora_backward_workspace(L, &b, &need));
    ck_assert(need > 0);
    b.ws = da, b.ws_size = need - 1; /* too small */
    ck_assert_int_eq(lg_lora_backward(L, &b, 0), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "ws_size"));
    cuMemFree(x), cuMemFree(y), cuMemFree(w), cuMemFree(da), cuMemFree(db);
    lg_lora_free(L);
}
END_TEST

/* A and B set from device memory land bit-exactly where the kernels read them, for an owned layer (strided
 * destination inside [[W,B],[A,0]]) and a borrowed one (packed), from fp32 (converted) and dtype (copied)
 * sources; a 0 source leaves that matrix alone. */
START_TEST(adapter_from_device)
{
    const int64_t K = 256, M = 192, r = 24;
    for (int borrowed = 0; borrowed < 2; borrowed++)
        for (int f32 = 0; f32 < 2; f32++) {
            struct lg_lora_params lp = {.in_features = K, .out_features = M, .rank = (int)r, .alpha = 8,
                                        .dtype = LG_BF16, .base = borrowed ? LG_LORA_BASE_BORROWED : 0};
            lg_lora_t *L;
            CHECK(lg_lora_init(ctx, &lp, &L));
            float *a = rnd((size_t)(r * K), 91, 1.0f, LG_BF16), *b = rnd((size_t)(M * r), 92, 1.0f, LG_BF16);
            const int64_t lda = f32 ? K : K + 8, ldb = f32 ? r : r + 16;
            const enum lg_dtype t = f32 ? LG_FP32 : LG_BF16;
            const size_t se = lg_dtype_size(t);
            CUdeviceptr da = lg_dev_alloc((size_t)(r * lda) * se), db = lg_dev_alloc((size_t)(M * ldb) * se);
            lg_dev_upload(da, lda, a, r, K, t);
            lg_dev_upload(db, ldb, b, M, r, t);
            struct lg_lora_adapter_src src = {.dtype = t, .a = da, .lda = lda, .b = 0, .ldb = ldb};
            CHECK(lg_lora_set_adapter_device(L, &src, 0)); /* A only */
            uint16_t *ga = malloc((size_t)(r * K) * 2), *gb = malloc((size_t)(M * r) * 2);
            uint16_t *wa = to_half(a, (size_t)(r * K), LG_BF16), *wb = to_half(b, (size_t)(M * r), LG_BF16);
            CHECK(lg_lora_get_adapter(L, ga, gb));
            ck_assert_msg(!memcmp(ga, wa, (size_t)(r * K) * 2), "A differs (borrowed=%d f32=%d)", borrowed, f32);
            for (int64_t i = 0; i < M * r; i++)
                ck_assert_msg(gb[i] == 0, "B written although its source was 0");
            src.b = db;
            CHECK(lg_lora_set_adapter_device(L, &src, 0));
            CHECK(lg_lora_get_adapter(L, ga, gb));
            ck_assert_msg(!memcmp(gb, wb, (size_t)(M * r) * 2), "B differs (borrowed=%d f32=%d)", borrowed, f32);
            free(a), free(b), free(ga), free(gb), free(wa), free(wb);
            cuMemFree(da), cuMemFree(db);
            lg_lora_free(L);
        }
}
END_TEST

struct thread_job {
    lg_lora_t *L;
    const struct lg_lora_fwd *f;
    const struct lg_lora_bwd *b;
    int had_ctx;
    enum lg_status st;
};

static void *thread_run(void *arg)
{
    struct thread_job *j = arg;
    CUcontext cur = NULL;
    cuCtxGetCurrent(&cur);
    j->had_ctx = cur != NULL;
    j->st = lg_lora_forward(j->L, j->f, 0);
    if (j->st == LG_OK)
        j->st = lg_lora_backward(j->L, j->b, 0);
    if (j->st == LG_OK)
        j->st = lg_cu_check(cuCtxSynchronize(), "cuCtxSynchronize");
    return NULL;
}

/* A thread with no current context (PyTorch's autograd runs backward on its own) gets the layer's context:
 * its results equal the creating thread's, bit for bit. */
START_TEST(calls_from_another_thread)
{
    const struct lcase c = {300, 512, 256, 16, 0.1f, LG_BF16, 0, 0, 0, 0, SRC_DEV_F32};
    struct inputs in;
    make_inputs(&c, lg_test_seed() + 5, &in);
    struct layer ly = make_layer(&c, &in, 4);
    const int64_t n = c.n, K = c.K, M = c.M, r = c.r;
    CUdeviceptr x = lg_dev_alloc(n * K * 2), y = lg_dev_alloc(n * M * 2), s = lg_dev_alloc(n * r * 2);
    CUdeviceptr dy = lg_dev_alloc(n * M * 2), dx = lg_dev_alloc(n * K * 2);
    CUdeviceptr da = lg_dev_alloc(r * K * 4), db = lg_dev_alloc(M * r * 4);
    lg_dev_upload(x, K, in.x, n, K, c.t);
    lg_dev_upload(dy, M, in.dy, n, M, c.t);
    struct lg_lora_fwd f = {.n = n, .x = x, .ldx = K, .s = s, .lds = r, .y = y, .ldy = M, .seed = 9};
    struct lg_lora_bwd b = {.n = n, .x = x, .ldx = K, .s = s, .lds = r, .dy = dy, .lddy = M, .dx = dx,
                            .lddx = K, .da = da, .db = db, .seed = 9};
    const size_t ny = (size_t)(n * M) * 2, ndx = (size_t)(n * K) * 2, nda = (size_t)(r * K) * 4;
    char *y1 = malloc(ny), *y2 = malloc(ny), *dx1 = malloc(ndx), *dx2 = malloc(ndx), *da1 = malloc(nda),
         *da2 = malloc(nda);
    CHECK(lg_lora_forward(ly.L, &f, 0));
    CHECK(lg_lora_backward(ly.L, &b, 0));
    CU_CHECK(cuMemcpyDtoH(y1, y, ny));
    CU_CHECK(cuMemcpyDtoH(dx1, dx, ndx));
    CU_CHECK(cuMemcpyDtoH(da1, da, nda));
    lg_dev_poison(y, ny), lg_dev_poison(dx, ndx), lg_dev_poison(da, nda);
    struct thread_job j = {.L = ly.L, .f = &f, .b = &b};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, thread_run, &j), 0);
    pthread_join(th, NULL);
    ck_assert_msg(!j.had_ctx, "the new thread already had a context: the test proves nothing");
    ck_assert_msg(j.st == LG_OK, "calls from another thread: %s", lg_last_error());
    CU_CHECK(cuMemcpyDtoH(y2, y, ny));
    CU_CHECK(cuMemcpyDtoH(dx2, dx, ndx));
    CU_CHECK(cuMemcpyDtoH(da2, da, nda));
    ck_assert_msg(!memcmp(y1, y2, ny) && !memcmp(dx1, dx2, ndx) && !memcmp(da1, da2, nda),
                  "results differ between threads");
    free(y1), free(y2), free(dx1), free(dx2), free(da1), free(da2);
    cuMemFree(x), cuMemFree(y), cuMemFree(s), cuMemFree(dy), cuMemFree(dx), cuMemFree(da), cuMemFree(db);
    layer_free(&ly);
    free_inputs(&in);
}
END_TEST

int main(void)
{
    lg_test_require_gpu();
    struct lg_ctx_params cp = {.device = 0};
    CHECK(lg_ctx_init(&cp, &ctx));
    printf("device: %s (sm_%d, %d SMs)\n", lg_ctx_device_name(ctx), lg_ctx_arch(ctx), lg_ctx_sm_count(ctx));
    Suite *s = suite_create("lora_gpu");
    TCase *tc = tcase_create("gpu");
    tcase_set_timeout(tc, 0);
    tcase_add_loop_test(tc, layer_matches_reference, 0, (int)(sizeof cases / sizeof cases[0]));
    tcase_add_test(tc, tile_variants_match_reference);
    tcase_add_test(tc, deterministic_accumulating_reproducible);
    tcase_add_test(tc, bad_calls_are_errors);
    tcase_add_test(tc, adapter_from_device);
    tcase_add_test(tc, calls_from_another_thread);
    suite_add_tcase(s, tc);
    int failed = lg_test_run(s, 1);
    lg_ctx_free(ctx);
    return failed ? 1 : 0;
}
