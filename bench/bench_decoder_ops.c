/* bench_decoder_ops.c: the decoder ops (lg_decoder_ops.h) at Llama-3.1-8B shapes (8192 tokens, hidden 4096,
 * intermediate 14336, 32/8 heads of 128, vocab 128,256, bf16, LoRA r = 16 with p = 0.1 on all 7 projections),
 * each against its byte floor at the device-to-device copy bandwidth measured in the same run: the bytes the
 * op must read and write, nothing else, divided by that bandwidth. Then the LM head + cross-entropy
 * (forward + backward, chunked) against the two GEMMs alone (logits = X·Wᵀ, dX = dlogits·W at cuBLASLt speed on
 * a materialised [8192 x 128256] buffer), and AdamW over 64 adapters of r = 16 on all 7 projections of 32 layers.
 *
 * Validates first (S of the fused norm bit for bit FusedLoRA's down kernel on the q projection, the norm
 * against the CPU reference on sampled rows, the LM head's loss against the materialised logits on sampled
 * rows, AdamW's gradient norm), then times with CUDA events: warm-up, median of interleaved rounds. Prints one
 * table: time, floor, floor/time (the fraction of copy bandwidth reached), the target and whether it is met.
 *   usage: bench_decoder_ops [--tokens N] [--reps R] [--adapters A] [--no-adamw] [--no-xent] */
#include "lg_decoder_ops.h"
#include "lg_gpu_util.h"
#include "lg_half.h"
#include "lg_lora.h"
#include "lg_ref_ops.h"
#include "lg_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HID 4096
#define FF 14336
#define HQ 32
#define HKV 8
#define HD 128
#define VOCAB 128256
#define R 16
#define LAYERS 32

static lg_ctx_t *ctx;

struct opts {
    int64_t n;
    int reps, adapters, adamw, xent;
};

/* ---- buffers and ops ---- */

struct bench {
    int64_t n, ldy, lda;
    CUdeviceptr x, res, h, y, rstd, gamma, dy, dres, a3, ds3, cu;
    CUdeviceptr g, u, act, dact, dg, du;
    CUdeviceptr q, k, ids, table, emb;
    CUdeviceptr xf, head, labels, weight, loss, dxf, logits;
    lg_norm_t *norm, *norm3;
    lg_swiglu_t *sw, *sw1;
    lg_rope_t *rope;
    lg_embed_t *embed;
    lg_xent_t *xe, *xev[3]; /* the default chunk, and a sweep */
    lg_adamw_t **aw;
    int naw;
    struct lg_adamw_hyper hy;
    int nseq;
};

static CUdeviceptr alloc_fill(size_t bytes, unsigned pattern)
{
    CUdeviceptr p = lg_dev_alloc(bytes);
    CU_CHECK(cuMemsetD32(p, pattern, bytes / 4));
    return p;
}

/* Random dtype values on the device, through a host buffer of one row repeated with an offset per row. */
static CUdeviceptr alloc_rand(int64_t rows, int64_t ld, int64_t cols, float scale, uint64_t seed)
{
    CUdeviceptr p = lg_dev_alloc((size_t)(rows * ld) * 2);
    const int64_t chunk = rows < 256 ? rows : 256;
    float *v = malloc(sizeof(float) * (size_t)(chunk * cols));
    lg_test_fill(v, (size_t)(chunk * cols), seed, scale);
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        const int64_t nr = rows - r0 < chunk ? rows - r0 : chunk;
        lg_dev_upload(p + (CUdeviceptr)((size_t)(r0 * ld) * 2), ld, v, nr, cols, LG_BF16);
    }
    free(v);
    return p;
}

static struct lg_norm_fwd norm_fwd_args(const struct bench *b, int with_s)
{
    struct lg_norm_fwd f = {.n = b->n, .x = b->x, .ldx = HID, .res = b->res, .ldres = HID, .h = b->h, .ldh = HID,
                            .gamma = b->gamma, .y = b->y, .ldy = b->ldy, .rstd = b->rstd, .with_s = with_s,
                            .seed = 7};
    for (int i = 0; i < 3; i++)
        f.lora[i] = (struct lg_lora_reader_io){.a = b->a3 + (CUdeviceptr)((size_t)(i * R * b->lda) * 2),
                                               .lda = b->lda, .s_col = HID + i * R};
    return f;
}

static struct lg_norm_bwd norm_bwd_args(const struct bench *b, int correct)
{
    struct lg_norm_bwd g = {.n = b->n, .dy = b->dy, .lddy = HID, .h = b->h, .ldh = HID, .rstd = b->rstd,
                            .gamma = b->gamma, .dres = b->dres, .lddres = HID, .accumulate = 1, .correct = correct,
                            .seed = 7};
    for (int i = 0; i < 3; i++)
        g.lora[i] = (struct lg_lora_reader_io){.a = b->a3 + (CUdeviceptr)((size_t)(i * R * b->lda) * 2),
                                               .lda = b->lda, .ds = b->ds3 + (CUdeviceptr)((size_t)(i * R) * 2),
                                               .ldds = 3 * R};
    return g;
}

static void run_norm_fwd(void *p)
{
    struct bench *b = p;
    struct lg_norm_fwd f = norm_fwd_args(b, 0);
    CHECK(lg_norm_forward(b->norm, &f, 0));
}
static void run_norm_fwd_s(void *p)
{
    struct bench *b = p;
    struct lg_norm_fwd f = norm_fwd_args(b, 1);
    CHECK(lg_norm_forward(b->norm3, &f, 0));
}
static void run_norm_bwd(void *p)
{
    struct bench *b = p;
    struct lg_norm_bwd g = norm_bwd_args(b, 0);
    CHECK(lg_norm_backward(b->norm, &g, 0));
}
static void run_norm_bwd_c(void *p)
{
    struct bench *b = p;
    struct lg_norm_bwd g = norm_bwd_args(b, 1);
    CHECK(lg_norm_backward(b->norm3, &g, 0));
}
static void run_swiglu_fwd(void *p)
{
    struct bench *b = p;
    struct lg_swiglu_fwd f = {.n = b->n, .g = b->g, .ldg = 2 * FF, .u = b->u, .ldu = 2 * FF, .a = b->act,
                              .lda = lg_lora_ext_ld(FF, R)};
    CHECK(lg_swiglu_forward(b->sw, &f, 0));
}
static void run_swiglu_fwd_s(void *p)
{
    struct bench *b = p;
    struct lg_swiglu_fwd f = {.n = b->n, .g = b->g, .ldg = 2 * FF, .u = b->u, .ldu = 2 * FF, .a = b->act,
                              .lda = lg_lora_ext_ld(FF, R), .with_s = 1, .seed = 7,
                              .lora = {.a = b->a3, .lda = lg_lora_ext_ld(FF, R), .s_col = FF}};
    CHECK(lg_swiglu_forward(b->sw1, &f, 0));
}
static void run_swiglu_bwd(void *p)
{
    struct bench *b = p;
    struct lg_swiglu_bwd g = {.n = b->n, .g = b->g, .ldg = 2 * FF, .u = b->u, .ldu = 2 * FF, .da = b->dact,
                              .ldda = FF, .dg = b->dg, .lddg = lg_lora_ext_ld(2 * FF, 2 * R), .du = b->du,
                              .lddu = lg_lora_ext_ld(2 * FF, 2 * R)};
    CHECK(lg_swiglu_backward(b->sw, &g, 0));
}
static void rope_dir(struct bench *b, int dir)
{
    struct lg_rope_run r = {.n = b->n, .q = b->q, .ldq = (HQ + 2 * HKV) * HD, .hq = HQ, .k = b->k,
                            .ldk = (HQ + 2 * HKV) * HD, .hk = HKV, .cu_seqlens = b->cu, .nseq = b->nseq,
                            .backward = dir};
    CHECK(lg_rope_apply(b->rope, &r, 0));
}
static void run_rope_fwd(void *p) { rope_dir(p, 0); }
static void run_rope_bwd(void *p) { rope_dir(p, 1); }
static void run_embed(void *p)
{
    struct bench *b = p;
    struct lg_embed_run r = {.n = b->n, .ids = b->ids, .table = b->table, .ldt = HID, .out = b->emb, .ldo = HID};
    CHECK(lg_embed_gather(b->embed, &r, 0));
}
static void run_xent(void *p)
{
    struct bench *b = p;
    struct lg_xent_run r = {.n = b->n, .x = b->xf, .ldx = HID, .w = b->head, .ldw = HID, .labels = b->labels,
                            .weight = b->weight, .loss = b->loss, .dx = b->dxf, .lddx = HID};
    CHECK(lg_xent_apply(b->xe, &r, 0));
}
static int g_xv;
static void run_xent_v(void *p)
{
    struct bench *b = p;
    struct lg_xent_run r = {.n = b->n, .x = b->xf, .ldx = HID, .w = b->head, .ldw = HID, .labels = b->labels,
                            .weight = b->weight, .loss = b->loss, .dx = b->dxf, .lddx = HID};
    CHECK(lg_xent_apply(b->xev[g_xv], &r, 0));
}
static void run_gemms(void *p)
{
    struct bench *b = p;
    struct lg_gemm g1 = {.dtype = LG_BF16, .m = b->n, .n = VOCAB, .k = HID, .trans_b = 1, .a = (const void *)b->xf,
                         .lda = HID, .b = (const void *)b->head, .ldb = HID, .c = (void *)b->logits, .ldc = VOCAB,
                         .alpha = 1.f};
    struct lg_gemm g2 = {.dtype = LG_BF16, .m = b->n, .n = HID, .k = VOCAB, .a = (const void *)b->logits,
                         .lda = VOCAB, .b = (const void *)b->head, .ldb = HID, .c = (void *)b->dxf, .ldc = HID,
                         .alpha = 1.f};
    CHECK(lg_blas_gemm(lg_ctx_blas(ctx), &g1, 0));
    CHECK(lg_blas_gemm(lg_ctx_blas(ctx), &g2, 0));
}
static void run_adamw(void *p)
{
    struct bench *b = p;
    for (int i = 0; i < b->naw; i++)
        CHECK(lg_adamw_step(b->aw[i], &b->hy, 0));
}

/* ---- copy bandwidth ---- */

struct copy_run {
    CUdeviceptr src, dst;
    size_t bytes;
};
static void run_copy(void *arg)
{
    struct copy_run *c = arg;
    CU_CHECK(cuMemcpyDtoDAsync(c->dst, c->src, c->bytes, 0));
}
static double copy_bandwidth(void)
{
    struct copy_run c = {.bytes = (size_t)1 << 30};
    c.src = lg_dev_alloc(c.bytes), c.dst = lg_dev_alloc(c.bytes);
    CU_CHECK(cuMemsetD8(c.src, 1, c.bytes));
    double ms = lg_time_median_ms(run_copy, &c, 0, 3, 20);
    cuMemFree(c.src), cuMemFree(c.dst);
    return 2.0 * (double)c.bytes / (ms * 1e-3);
}

/* ---- setup ---- */

static const struct lg_lora_reader QKV[3] = {{R, 2 * R, 0.1f, 11}, {R, 2 * R, 0.1f, 12}, {R, 2 * R, 0.1f, 13}};

static void setup_acts(struct bench *b)
{
    const int64_t n = b->n;
    b->ldy = lg_lora_ext_ld(HID, 3 * R), b->lda = lg_lora_ext_ld(HID, R);
    b->x = alloc_rand(n, HID, HID, 1.0f, 1), b->res = alloc_rand(n, HID, HID, 1.0f, 2);
    b->h = lg_dev_alloc((size_t)(n * HID) * 2), b->y = lg_dev_alloc((size_t)(n * b->ldy) * 2);
    b->rstd = lg_dev_alloc((size_t)n * 4), b->gamma = alloc_rand(1, HID, HID, 1.0f, 3);
    b->dy = alloc_rand(n, HID, HID, 1.0f, 4), b->dres = alloc_rand(n, HID, HID, 1.0f, 5);
    b->a3 = alloc_rand(3 * R, lg_lora_ext_ld(FF, R), FF, 0.02f, 6); /* serves q/k/v (rows of lda) and down */
    b->ds3 = alloc_rand(n, 3 * R, 3 * R, 0.1f, 7);
    b->g = alloc_rand(n, 2 * FF, 2 * FF, 2.0f, 8), b->u = b->g + (CUdeviceptr)(FF * 2);
    b->act = lg_dev_alloc((size_t)(n * lg_lora_ext_ld(FF, R)) * 2), b->dact = alloc_rand(n, FF, FF, 1.0f, 9);
    b->dg = lg_dev_alloc((size_t)(n * lg_lora_ext_ld(2 * FF, 2 * R)) * 2), b->du = b->dg + (CUdeviceptr)(FF * 2);
    b->q = alloc_rand(n, (HQ + 2 * HKV) * HD, (HQ + 2 * HKV) * HD, 1.0f, 10), b->k = b->q + (CUdeviceptr)(HQ * HD * 2);
    /* 8 packed samples of 1024 tokens (positions up to 1023) */
    b->nseq = (int)((n + 1023) / 1024);
    int32_t *cu = malloc(sizeof(int32_t) * (size_t)(b->nseq + 1));
    for (int i = 0; i <= b->nseq; i++)
        cu[i] = (int32_t)(i * 1024 < n ? i * 1024 : n);
    b->cu = lg_dev_alloc(sizeof(int32_t) * (size_t)(b->nseq + 1));
    CU_CHECK(cuMemcpyHtoD(b->cu, cu, sizeof(int32_t) * (size_t)(b->nseq + 1)));
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        ids[i] = (int32_t)((i * 2654435761u) % VOCAB);
    b->ids = lg_dev_alloc(sizeof(int32_t) * (size_t)n);
    CU_CHECK(cuMemcpyHtoD(b->ids, ids, sizeof(int32_t) * (size_t)n));
    b->emb = lg_dev_alloc((size_t)(n * HID) * 2);
    free(cu), free(ids);
}

static void setup_ops(struct bench *b, const struct opts *o)
{
    struct lg_norm_params np = {.hidden = HID, .eps = 1e-5f, .dtype = LG_BF16};
    CHECK(lg_norm_init(ctx, &np, &b->norm));
    np.nlora = 3;
    memcpy(np.lora, QKV, sizeof QKV);
    CHECK(lg_norm_init(ctx, &np, &b->norm3));
    struct lg_swiglu_params sp = {.inter = FF, .dtype = LG_BF16};
    CHECK(lg_swiglu_init(ctx, &sp, &b->sw));
    sp.with_lora = 1, sp.lora = QKV[0];
    CHECK(lg_swiglu_init(ctx, &sp, &b->sw1));
    struct lg_ref_rope rr = {.d = HD, .theta = 500000.0, .scaling = LG_ROPE_LLAMA3, .factor = 8.0,
                             .low_freq_factor = 1.0, .high_freq_factor = 4.0, .original_max_pos = 8192};
    float inv[HD / 2];
    CHECK(lg_ref_rope_inv_freq(&rr, inv));
    struct lg_rope_params rp = {.head_dim = HD, .dtype = LG_BF16, .inv_freq = inv};
    CHECK(lg_rope_init(ctx, &rp, &b->rope));
    struct lg_embed_params ep = {.hidden = HID, .vocab = VOCAB, .dtype = LG_BF16};
    CHECK(lg_embed_init(ctx, &ep, &b->embed));
    if (o->xent) {
        struct lg_xent_params xp = {.hidden = HID, .vocab = VOCAB, .dtype = LG_BF16};
        CHECK(lg_xent_init(ctx, &xp, &b->xe));
        b->xf = alloc_rand(b->n, HID, HID, 1.0f, 11), b->head = alloc_rand(VOCAB, HID, HID, 0.05f, 12);
        b->table = b->head; /* tied: the gather reads the head */
        b->labels = lg_dev_alloc((size_t)b->n * 4), b->weight = alloc_fill((size_t)b->n * 4, 0x39000000u); /* 2^-13 */
        int32_t *lab = malloc(sizeof(int32_t) * (size_t)b->n);
        for (int64_t i = 0; i < b->n; i++)
            lab[i] = i % 1024 == 1023 ? -100 : (int32_t)((i * 40503u) % VOCAB);
        CU_CHECK(cuMemcpyHtoD(b->labels, lab, sizeof(int32_t) * (size_t)b->n));
        free(lab);
        b->loss = lg_dev_alloc((size_t)b->n * 4), b->dxf = lg_dev_alloc((size_t)(b->n * HID) * 2);
        b->logits = lg_dev_alloc((size_t)(b->n * VOCAB) * 2);
    } else {
        b->table = alloc_rand(VOCAB, HID, HID, 0.05f, 12);
    }
}

/* AdamW: per adapter, A [16, K] and B [M, 16] of the 7 projections of 32 layers, fp32 masters, gradients and
 * moments in one allocation; the bf16 copies in buffers laid out as FusedLoRA's (A: rows of ldw; B: 16 of
 * each 128-byte row). Returns the elements per adapter. */
static int64_t setup_adamw(struct bench *b, int adapters)
{
    static const int64_t K7[7] = {HID, HID, HID, HID, HID, HID, FF}, M7[7] = {HID, 1024, 1024, HID, FF, FF, HID};
    const int nt = LAYERS * 7 * 2;
    int64_t per = 0, half = 0;
    for (int j = 0; j < 7; j++)
        per += R * K7[j] + M7[j] * R, half += R * lg_lora_ext_ld(K7[j], R) + M7[j] * 64;
    per *= LAYERS, half *= LAYERS;
    b->aw = calloc((size_t)adapters, sizeof *b->aw);
    b->hy = (struct lg_adamw_hyper){.lr = 2e-4, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01,
                                    .max_grad_norm = 1.0};
    struct lg_adamw_tensor *tt = calloc((size_t)nt, sizeof *tt);
    for (int a = 0; a < adapters; a++) {
        CUdeviceptr pg = alloc_fill((size_t)per * 16, 0), hb = lg_dev_alloc((size_t)half * 2);
        CU_CHECK(cuMemsetD32(pg, 0x3c23d70au, (size_t)per * 2)); /* p and g: 0.01 (m, v: 0) */
        int64_t off = 0, hoff = 0;
        for (int l = 0, i = 0; l < LAYERS; l++)
            for (int j = 0; j < 7; j++)
                for (int ab = 0; ab < 2; ab++, i++) {
                    const int64_t cnt = ab ? M7[j] * R : R * K7[j];
                    tt[i] = (struct lg_adamw_tensor){.p = pg + (CUdeviceptr)(off * 4),
                                                     .g = pg + (CUdeviceptr)((per + off) * 4),
                                                     .m = pg + (CUdeviceptr)((2 * per + off) * 4),
                                                     .v = pg + (CUdeviceptr)((3 * per + off) * 4), .count = cnt,
                                                     .half = hb + (CUdeviceptr)(hoff * 2),
                                                     .half_ld = ab ? 64 : lg_lora_ext_ld(K7[j], R),
                                                     .half_cols = ab ? R : K7[j]};
                    off += cnt, hoff += ab ? M7[j] * 64 : R * lg_lora_ext_ld(K7[j], R);
                }
        struct lg_adamw_params ap = {.dtype = LG_BF16, .ntensors = nt, .tensors = tt};
        CHECK(lg_adamw_init(ctx, &ap, &b->aw[a]));
    }
    b->naw = adapters;
    free(tt);
    return per;
}

/* ---- validation ---- */

static int validate(struct bench *b, const struct opts *o, int64_t aw_per)
{
    int ok = 1;
    const int64_t n = b->n;
    /* S of the fused norm = FusedLoRA's down kernel on the same y (q projection, its A block) */
    struct lg_lora_params lp = {.in_features = HID, .out_features = HID, .rank = R, .alpha = 2 * R, .dropout = 0.1f,
                                .dtype = LG_BF16, .layer_id = 11};
    lg_lora_t *L;
    CHECK(lg_lora_init(ctx, &lp, &L));
    const int64_t ldw = lg_lora_ext_ld(HID, R);
    CUdeviceptr qa = lg_lora_weights(L) + (CUdeviceptr)((size_t)(HID * ldw) * 2);
    CU_CHECK(cuMemcpyDtoD(qa, b->a3, (size_t)(R * ldw) * 2)); /* the bench's A_q, same row stride */
    run_norm_fwd_s(b);
    CUdeviceptr xl = lg_dev_alloc((size_t)(n * ldw) * 2), yl = lg_dev_alloc((size_t)(n * HID) * 2);
    CUDA_MEMCPY2D c;
    memset(&c, 0, sizeof c);
    c.srcMemoryType = c.dstMemoryType = CU_MEMORYTYPE_DEVICE;
    c.srcDevice = b->y, c.srcPitch = (size_t)b->ldy * 2, c.dstDevice = xl, c.dstPitch = (size_t)ldw * 2;
    c.WidthInBytes = HID * 2, c.Height = (size_t)n;
    CU_CHECK(cuMemcpy2D(&c));
    struct lg_lora_fwd lf = {.n = n, .x = xl, .ldx = ldw, .y = yl, .ldy = HID, .seed = 7};
    CHECK(lg_lora_forward(L, &lf, 0));
    CU_CHECK(cuCtxSynchronize());
    uint16_t *s1 = malloc((size_t)(n * R) * 2), *s2 = malloc((size_t)(n * R) * 2);
    c.srcDevice = b->y + HID * 2, c.dstMemoryType = CU_MEMORYTYPE_HOST, c.dstHost = s1, c.dstPitch = R * 2;
    c.WidthInBytes = R * 2;
    CU_CHECK(cuMemcpy2D(&c));
    c.srcDevice = xl + HID * 2, c.srcPitch = (size_t)ldw * 2, c.dstHost = s2;
    CU_CHECK(cuMemcpy2D(&c));
    size_t diff = 0;
    for (int64_t i = 0; i < n * R; i++)
        diff += s1[i] != s2[i];
    printf("validate: fused norm S_q vs FusedLoRA down kernel: %zu of %lld differ %s\n", diff, (long long)(n * R),
           diff ? "MISMATCH" : "(bit for bit)");
    ok &= diff == 0;
    free(s1), free(s2);
    cuMemFree(xl), cuMemFree(yl);
    lg_lora_free(L);

    /* the plain norm on 8 rows against the reference */
    run_norm_fwd(b);
    CU_CHECK(cuCtxSynchronize());
    const int64_t rows = 8;
    float *h = malloc(sizeof(float) * rows * HID), *y = malloc(sizeof(float) * rows * HID), *gam = malloc(sizeof(float) * HID);
    float *yr = malloc(sizeof(float) * rows * HID);
    lg_dev_download(h, b->h, HID, rows, HID, LG_BF16);
    lg_dev_download(y, b->y, b->ldy, rows, HID, LG_BF16);
    lg_dev_download(gam, b->gamma, HID, 1, HID, LG_BF16);
    struct lg_ref_rmsnorm rn = {.H = HID, .eps = 1e-5f, .w = gam};
    lg_ref_rmsnorm_forward(&rn, rows, h, yr, NULL);
    double *yd = malloc(sizeof(double) * rows * HID);
    for (int64_t i = 0; i < rows * HID; i++)
        yd[i] = yr[i];
    double e = lg_test_rel_err(y, yd, (size_t)(rows * HID));
    printf("validate: norm forward vs reference (8 rows): rel err %.2e %s\n", e, e < 1e-2 ? "" : "MISMATCH");
    ok &= e < 1e-2;
    free(h), free(y), free(gam), free(yr), free(yd);

    if (o->xent) { /* the chunked loss against the materialised logits on 4 rows */
        run_gemms(b);
        run_xent(b);
        CU_CHECK(cuCtxSynchronize());
        float *z = malloc(sizeof(float) * VOCAB), loss[4];
        int32_t lab[4];
        CU_CHECK(cuMemcpyDtoH(loss, b->loss, sizeof loss));
        CU_CHECK(cuMemcpyDtoH(lab, b->labels, sizeof lab));
        double worst = 0;
        for (int r = 0; r < 4; r++) {
            lg_dev_download(z, b->logits + (CUdeviceptr)((size_t)(r * VOCAB) * 2), VOCAB, 1, VOCAB, LG_BF16);
            double mx = -INFINITY, s = 0;
            for (int v = 0; v < VOCAB; v++)
                mx = z[v] > mx ? z[v] : mx;
            for (int v = 0; v < VOCAB; v++)
                s += exp(z[v] - mx);
            const double want = ldexp(1.0, -13) * (mx + log(s) - z[lab[r]]);
            worst = fmax(worst, fabs(loss[r] - want) / fabs(want));
        }
        /* the two GEMMs may sum in different orders: a label logit may round to the next bf16 (~0.5%) */
        printf("validate: LM head loss vs materialised logits (4 rows): worst rel err %.2e %s\n", worst,
               worst < 1e-2 ? "" : "MISMATCH");
        ok &= worst < 1e-2;
        free(z);
    }
    if (b->naw) { /* every gradient is 0.01: the norm is 0.01·sqrt(elements) */
        CHECK(lg_adamw_step(b->aw[0], &b->hy, 0));
        struct lg_adamw_status st;
        CHECK(lg_adamw_read_status(b->aw[0], 0, &st));
        const double want = 0.01f * sqrt((double)aw_per);
        const double e2 = fabs(st.norm - want) / want;
        printf("validate: AdamW gradient norm %.9g (want %.9g), clip %.6g, step %lld %s\n", st.norm, want, st.clip,
               (long long)st.step, e2 < 1e-6 && st.step == 1 ? "" : "MISMATCH");
        ok &= e2 < 1e-6 && st.step == 1;
    }
    return ok;
}

/* ---- timing and the table ---- */

struct row {
    const char *name;
    double ms, bytes; /* bytes the op must move */
    double target;    /* minimum floor/time (fraction of copy bandwidth); 0: none */
    const char *note;
};

static void print_row(const struct row *r, double bw)
{
    const double floor_ms = r->bytes / bw * 1e3, frac = floor_ms / r->ms;
    char tgt[32] = "-";
    if (r->target > 0)
        snprintf(tgt, sizeof tgt, ">= %.0f%%  %s", 100 * r->target, frac >= r->target ? "met" : "SHORT");
    printf("%-34s %10.1f %10.1f %10.1f %7.1f%%   %-14s %s\n", r->name, r->ms * 1e3, r->bytes / 1e6, floor_ms * 1e3,
           100 * frac, tgt, r->note ? r->note : "");
}

static void parse(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.n = 8192, .reps = 20, .adapters = 64, .adamw = 1, .xent = 1};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
            o->n = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            o->reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--adapters") && i + 1 < argc)
            o->adapters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-adamw"))
            o->adamw = 0;
        else if (!strcmp(argv[i], "--no-xent"))
            o->xent = 0;
        else {
            fprintf(stderr, "usage: %s [--tokens N] [--reps R] [--adapters A] [--no-adamw] [--no-xent]\n", argv[0]);
            exit(2);
        }
    }
}

int main(int argc, char **argv)
{
    struct opts o;
    parse(argc, argv, &o);
    lg_test_require_gpu();
    struct lg_ctx_params cp = {.device = 0};
    CHECK(lg_ctx_init(&cp, &ctx));
    printf("device: %s (sm_%d, %d SMs); %lld tokens, bf16, r = %d, p = 0.1\n", lg_ctx_device_name(ctx),
           lg_ctx_arch(ctx), lg_ctx_sm_count(ctx), (long long)o.n, R);
    const double bw = copy_bandwidth();
    printf("device-to-device copy bandwidth: %.0f GB/s (read + write)\n", bw / 1e9);
    struct bench b = {.n = o.n};
    setup_acts(&b);
    setup_ops(&b, &o);
    const int64_t aw_per = o.adamw ? setup_adamw(&b, o.adapters) : 0;
    const int valid = validate(&b, &o, aw_per);
    if (!valid)
        printf("validation FAILED (MISMATCH above): timing anyway, the numbers below are suspect\n");
    const double n = (double)o.n, ah = n * HID * 2, af = n * FF * 2, s3 = n * 3 * R * 2, a3 = 3.0 * R * HID * 2;
    const double rope = 2.0 * n * (HQ + HKV) * HD * 2;

    double m1[4], m2[3], m3[3];
    void (*const g1[4])(void *) = {run_norm_fwd, run_norm_fwd_s, run_norm_bwd, run_norm_bwd_c};
    lg_time_interleaved(g1, &b, 4, 0, 3, o.reps, m1);
    void (*const g2[3])(void *) = {run_swiglu_fwd, run_swiglu_fwd_s, run_swiglu_bwd};
    lg_time_interleaved(g2, &b, 3, 0, 3, o.reps, m2);
    void (*const g3[3])(void *) = {run_rope_fwd, run_rope_bwd, run_embed};
    lg_time_interleaved(g3, &b, 3, 0, 3, o.reps, m3);
    const struct row rows[] = {
        {"rmsnorm+residual fwd", m1[0], 4 * ah + 4 * n, 0.85, "x, res in; h, y out"},
        {"rmsnorm+residual fwd + S (q/k/v)", m1[1], 4 * ah + 4 * n + s3 + a3, 0, "and 3 x S = s·D(y)·Aᵀ"},
        {"rmsnorm bwd (+ residual grad)", m1[2], 4 * ah + 4 * n, 0.85, "dy, h, dres in; dres out"},
        {"rmsnorm bwd + dX corr (q/k/v)", m1[3], 4 * ah + 4 * n + s3 + a3, 0, "and keep·mask ⊙ dS·A, 3x"},
        {"swiglu fwd", m2[0], 3 * af, 0.85, "g, u in; a out"},
        {"swiglu fwd + S (down_proj)", m2[1], 3 * af + n * R * 2, 0, "and S = s·D(a)·Aᵀ"},
        {"swiglu bwd", m2[2], 5 * af, 0.85, "g, u, da in; dg, du out"},
        {"rope fwd (q 32 + k 8 heads)", m3[0], rope, 0.85, "in place"},
        {"rope bwd", m3[1], rope, 0.85, "in place"},
        {"embedding gather", m3[2], 2 * ah + 4 * n, 0, ""},
    };
    printf("\n%-34s %10s %10s %10s %8s   %-14s %s\n", "op (8B shapes)", "time us", "MB moved", "floor us",
           "of BW", "target", "what moves");
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        print_row(&rows[i], bw);
    printf("%-34s %10.3f  (target <= 1.10: %s)\n", "fused norm + S / plain fused norm", m1[1] / m1[0],
           m1[1] / m1[0] <= 1.10 ? "met" : "SHORT");
    printf("%-34s %10.3f\n", "norm bwd + correction / plain", m1[3] / m1[2]);

    /* the tile kernels' blocks per SM (0: from the L2 size), for the tuner */
    printf("\nnorm tile kernels by blocks per SM (us):      auto");
    static const int bps[] = {1, 2, 3, 4, 6, 8};
    for (int i = 0; i < 6; i++)
        printf("%8d", bps[i]);
    double tf[7], tb[7];
    for (int i = 0; i < 7; i++) {
        struct lg_norm_tiles t = {.fwd_bps = i ? bps[i - 1] : 0, .bwd_bps = i ? bps[i - 1] : 0};
        CHECK(lg_norm_set_tiles(b.norm3, &t));
        void (*const gt[2])(void *) = {run_norm_fwd_s, run_norm_bwd_c};
        double mt[2];
        lg_time_interleaved(gt, &b, 2, 0, 2, o.reps / 2 > 3 ? o.reps / 2 : 3, mt);
        tf[i] = mt[0], tb[i] = mt[1];
    }
    printf("\n%-44s", "  fwd + S");
    for (int i = 0; i < 7; i++)
        printf("%8.1f", tf[i] * 1e3);
    printf("\n%-44s", "  bwd + correction");
    for (int i = 0; i < 7; i++)
        printf("%8.1f", tb[i] * 1e3);
    printf("\n");
    struct lg_norm_tiles t0 = {0};
    CHECK(lg_norm_set_tiles(b.norm3, &t0));

    if (o.xent) {
        double mx[2];
        void (*const gx[2])(void *) = {run_xent, run_gemms};
        lg_time_interleaved(gx, &b, 2, 0, 2, o.reps / 4 > 3 ? o.reps / 4 : 3, mx);
        const double flops = 2.0 * 2.0 * n * VOCAB * HID;
        printf("\nLM head + cross-entropy, %lld x %d, fwd+bwd: %.2f ms (chunk %lld tokens, working memory %.0f MiB)\n",
               (long long)o.n, VOCAB, mx[0], (long long)lg_xent_chunk(b.xe),
               (double)lg_xent_workspace_bytes(b.xe) / (1 << 20));
        printf("  the two GEMMs alone (materialised logits, %.0f MiB): %.2f ms = %.0f TFLOP/s\n",
               n * VOCAB * 2 / (1 << 20), mx[1], flops / (mx[1] * 1e-3) / 1e12);
        printf("  ratio %.3f (target <= 1.08: %s); working memory < 1 GiB: %s\n", mx[0] / mx[1],
               mx[0] / mx[1] <= 1.08 ? "met" : "SHORT",
               lg_xent_workspace_bytes(b.xe) < ((size_t)1 << 30) ? "met" : "SHORT");
        static const int64_t chunks[3] = {1024, 2752, 3968}; /* 3968 rows: the most under 1 GiB with cuBLASLt's 32 MiB */
        printf("  by chunk size:");
        for (int i = 0; i < 3; i++) {
            struct lg_xent_params xp = {.hidden = HID, .vocab = VOCAB, .dtype = LG_BF16, .chunk = chunks[i]};
            CHECK(lg_xent_init(ctx, &xp, &b.xev[i]));
            g_xv = i;
            double mv = lg_time_median_ms(run_xent_v, &b, 0, 1, 3);
            printf("  %lld rows %.2f ms (%.3f, %.0f MiB)", (long long)chunks[i], mv, mv / mx[1],
                   (double)lg_xent_workspace_bytes(b.xev[i]) / (1 << 20));
            lg_xent_free(b.xev[i]);
        }
        printf("\n");
    }
    if (o.adamw) {
        const double ma = lg_time_median_ms(run_adamw, &b, 0, 1, o.reps / 4 > 3 ? o.reps / 4 : 3);
        const double el = (double)aw_per * o.adapters;
        struct row ra = {"AdamW, all adapters", ma, el * 34, 0.80,
                         "p, m, v rw; g read twice (norm, update); bf16 copy"};
        printf("\nAdamW: %d adapters x %lld LoRA parameters (r = %d, 7 projections x %d layers), %d launches each\n",
               o.adapters, (long long)aw_per, R, LAYERS, 3);
        print_row(&ra, bw);
        printf("  (one pass without the norm's read of g would be 30 B/element: %.1f%% of copy bandwidth)\n",
               100 * (el * 30 / bw * 1e3) / ma);
    }
    return valid ? 0 : 1;
}
