/* bench_lora.c: forward+backward of one LoRA linear layer, three ways, side by side in one run:
 *   floor  the frozen GEMMs alone: Y = X·Wᵀ and dX = dY·W (cuBLASLt)
 *   peft   unfused LoRA as PEFT runs it: dropout kernel, separate skinny GEMMs, scale/add kernels
 *   fused  FusedLoRA (lg_lora_forward + lg_lora_backward, extended-K layout)
 * plus the device-to-device copy bandwidth BW, which gives the bandwidth floor
 *   T_min = T_floor + B_min / BW,  B_min = X read (S) + dY read (dS, dB) + X read (dA) [+ dX read+write, p > 0]
 * Every variant is validated against the fused one before timing.
 *
 * usage: bench_lora [SPEC] [--tokens N] [--dropout P] [--reps N] [--csv FILE]
 *   defaults: specs/llama-3.1-8b.lua, its token count (8192), runs p = 0.1 and p = 0
 *   --only LAYER   one linear layer;  --breakdown   FusedLoRA's forward, backward and GEMMs apart
 *   Before timing, each shape is tuned: FusedLoRA by the library's tuner (lg_tuner_lora: tiles and GEMM
 *   algorithms), the floor's GEMMs over cuBLASLt's top candidates. --no-tune tunes nothing: FusedLoRA then
 *   takes what the tuning database gives (LORAGEN_TUNE_DB=FILE: a `loragen tune` database; docs/tuning.md)
 *   or its defaults, the floor cuBLASLt's first candidates. */
#include "lg_gen.h"
#include "lg_gpu_util.h"
#include "lg_lora.h"
#include "lg_test.h"
#include "lg_tuner.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* PEFT-style elementwise kernels (templates/peft/peft_ref.cuh, the generator's peft ops); dropout draws the
 * same Philox mask as FusedLoRA so outputs compare. */
struct peft_fns {
    const struct lg_kernel *dropout, *dropout_bwd, *axpy, *scale;
};

struct shape_run {
    lg_ctx_t *ctx;
    lg_blas_t *blas;
    struct peft_fns pf;
    lg_lora_t *L;
    enum lg_dtype t;
    int64_t n, K, M;
    int r;
    float p, s, ks;
    unsigned th;
    /* fused: xe [n,K+r] (X, S in the tail), dye [n,M+r]; floor and PEFT: contiguous xc [n,K], dyc [n,M];
     * w is W alone [M,K]; every variant has its own outputs */
    CUdeviceptr xe, dye, xc, dyc, w, a, b;
    CUdeviceptr yf, dxf, da, db; /* fused */
    CUdeviceptr yp, dxp, dab, dbb; /* floor and PEFT */
    CUdeviceptr xd, mask, t1, y2, g2, dt, dxd; /* PEFT temporaries */
    int floor_algo[2];                        /* cuBLASLt candidates for the floor's two GEMMs */
    struct lg_lora_tiles tiles;               /* FusedLoRA's current choice */
};

/* One thread per item; the peft kernels take their arguments one by one, not as one block. */
static void launch1d(const struct lg_kernel *k, int64_t items, void **params)
{
    unsigned blocks = (unsigned)((items + k->threads - 1) / k->threads);
    CU_CHECK(cuLaunchKernel(k->fn, blocks, 1, 1, (unsigned)k->threads, 1, 1, k->smem, 0, params, NULL));
}

static struct lg_gemm gemm_desc(struct shape_run *R, int64_t m, int64_t n, int64_t k, int ta, int tb,
                                CUdeviceptr a, int64_t lda, CUdeviceptr b, int64_t ldb, CUdeviceptr c, int64_t ldc)
{
    struct lg_gemm g = {.dtype = R->t, .m = m, .n = n, .k = k, .trans_a = ta, .trans_b = tb, .a = (void *)a,
                        .lda = lda, .b = (void *)b, .ldb = ldb, .c = (void *)c, .ldc = ldc, .alpha = 1.f};
    return g;
}

static void gemm_algo(struct shape_run *R, int64_t m, int64_t n, int64_t k, int ta, int tb, CUdeviceptr a,
                      int64_t lda, CUdeviceptr b, int64_t ldb, CUdeviceptr c, int64_t ldc, float beta, int algo)
{
    struct lg_gemm g = gemm_desc(R, m, n, k, ta, tb, a, lda, b, ldb, c, ldc);
    g.beta = beta;
    g.algo_index = algo;
    CHECK(lg_blas_gemm(R->blas, &g, 0));
}

static void gemm(struct shape_run *R, int64_t m, int64_t n, int64_t k, int ta, int tb, CUdeviceptr a, int64_t lda,
                 CUdeviceptr b, int64_t ldb, CUdeviceptr c, int64_t ldc, float beta)
{
    gemm_algo(R, m, n, k, ta, tb, a, lda, b, ldb, c, ldc, beta, 0);
}

static void run_floor(void *arg)
{
    struct shape_run *R = arg;
    gemm_algo(R, R->n, R->M, R->K, 0, 1, R->xc, R->K, R->w, R->K, R->yp, R->M, 0.f, R->floor_algo[0]);
    gemm_algo(R, R->n, R->K, R->M, 0, 0, R->dyc, R->M, R->w, R->K, R->dxp, R->K, 0.f, R->floor_algo[1]);
}

static void run_peft(void *arg)
{
    struct shape_run *R = arg;
    const int64_t n = R->n, K = R->K, M = R->M, r = R->r;
    long long nk = n * K, nm = n * M;
    unsigned long long seed = 1;
    unsigned layer = 0;
    /* forward: Y = X·Wᵀ; Xd = dropout(X); T = Xd·Aᵀ; Y2 = T·Bᵀ; Y += s·Y2 */
    gemm(R, n, M, K, 0, 1, R->xc, K, R->w, K, R->yp, M, 0.f);
    if (R->p > 0) {
        void *pd[] = {&R->xc, &R->xd, &R->mask, &nk, &seed, &layer, &R->th, &R->ks};
        launch1d(R->pf.dropout, nk / 8, pd);
    }
    CUdeviceptr xin = R->p > 0 ? R->xd : R->xc;
    gemm(R, n, r, K, 0, 1, xin, K, R->a, K, R->t1, r, 0.f);
    gemm(R, n, M, r, 0, 1, R->t1, r, R->b, r, R->y2, M, 0.f);
    void *pa[] = {&R->yp, &R->y2, &R->s, &nm};
    launch1d(R->pf.axpy, nm / 8, pa);
    /* backward: G2 = s·dY; dT = G2·B; dB = G2ᵀ·T; dXd = dT·A; dA = dTᵀ·Xd; dXd = dropout'(dXd);
     * dX = dY·W; dX += dXd */
    void *ps[] = {&R->dyc, &R->g2, &R->s, &nm};
    launch1d(R->pf.scale, nm / 8, ps);
    gemm(R, n, r, M, 0, 0, R->g2, M, R->b, r, R->dt, r, 0.f);
    gemm(R, M, r, n, 1, 0, R->g2, M, R->t1, r, R->dbb, r, 0.f);
    gemm(R, n, K, r, 0, 0, R->dt, r, R->a, K, R->dxd, K, 0.f);
    gemm(R, r, K, n, 1, 0, R->dt, r, xin, K, R->dab, K, 0.f);
    gemm(R, n, K, M, 0, 0, R->dyc, M, R->w, K, R->dxp, K, 0.f);
    if (R->p > 0) {
        void *pb[] = {&R->dxd, &R->mask, &R->dxd, &nk, &R->ks};
        launch1d(R->pf.dropout_bwd, nk / 8, pb);
    }
    float one = 1.f;
    void *px[] = {&R->dxp, &R->dxd, &one, &nk};
    launch1d(R->pf.axpy, nk / 8, px);
}

static void run_fused_fwd(void *arg)
{
    struct shape_run *R = arg;
    struct lg_lora_fwd f = {.n = R->n, .x = R->xe, .ldx = lg_lora_ext_ld(R->K, R->r), .y = R->yf, .ldy = R->M,
                            .seed = 1};
    CHECK(lg_lora_forward(R->L, &f, 0));
}

static void run_fused_bwd(void *arg)
{
    struct shape_run *R = arg;
    const int64_t ldx = lg_lora_ext_ld(R->K, R->r), lddy = lg_lora_ext_ld(R->M, R->r);
    struct lg_lora_bwd b = {.n = R->n, .x = R->xe, .ldx = ldx, .dy = R->dye, .lddy = lddy, .dx = R->dxf,
                            .lddx = R->K, .da = R->da, .db = R->db, .seed = 1};
    CHECK(lg_lora_backward(R->L, &b, 0));
}

static void run_fused(void *arg)
{
    run_fused_fwd(arg);
    run_fused_bwd(arg);
}

/* the GEMMs inside FusedLoRA alone: Y = [X|S]·[W|B]ᵀ and dX = dY·W (k = M, as for p > 0) or [dY|dS]·[W;A] */
static void run_fused_gemms(void *arg)
{
    struct shape_run *R = arg;
    const int64_t r = R->r, K = R->K, M = R->M;
    CUdeviceptr w = lg_lora_weights(R->L);
    const int64_t ldx = lg_lora_ext_ld(K, (int)r), lddy = lg_lora_ext_ld(M, (int)r);
    gemm_algo(R, R->n, M, K + r, 0, 1, R->xe, ldx, w, ldx, R->yf, M, 0.f, R->tiles.fwd_algo);
    gemm_algo(R, R->n, K, R->p > 0 ? M : M + r, 0, 0, R->dye, lddy, w, ldx, R->dxf, K, 0.f, R->tiles.dx_algo);
}

struct copy_run {
    CUdeviceptr src, dst;
    size_t bytes;
};

static void run_copy(void *arg)
{
    struct copy_run *c = arg;
    CU_CHECK(cuMemcpyDtoDAsync(c->dst, c->src, c->bytes, 0));
}

/* Device-to-device copy bandwidth (bytes read + written per second) on buffers far larger than L2. */
static double copy_bandwidth(void)
{
    struct copy_run c = {.bytes = (size_t)1 << 30};
    c.src = lg_dev_alloc(c.bytes), c.dst = lg_dev_alloc(c.bytes);
    CU_CHECK(cuMemsetD8(c.src, 1, c.bytes));
    double ms = lg_time_median_ms(run_copy, &c, 0, 3, 20);
    cuMemFree(c.src), cuMemFree(c.dst);
    return 2.0 * (double)c.bytes / (ms * 1e-3);
}

/* ---- setup, validation, timing ---- */

struct opts {
    const char *spec;
    int tokens, reps;
    float dropout; /* < 0: run 0.1 and 0 */
    const char *csv;
    const char *only; /* run just this linear layer */
    int breakdown;    /* also time forward, backward and the GEMMs of FusedLoRA apart */
    int no_tune;      /* default tiles and the first cuBLASLt candidate everywhere */
};

static void load_peft(lg_ctx_t *ctx, enum lg_dtype t, struct peft_fns *pf)
{
    struct {
        enum lg_kernel_op op;
        const struct lg_kernel **k;
    } want[] = {{LG_OP_PEFT_DROPOUT, &pf->dropout},
                {LG_OP_PEFT_DROPOUT_BWD, &pf->dropout_bwd},
                {LG_OP_PEFT_AXPY, &pf->axpy},
                {LG_OP_PEFT_SCALE, &pf->scale}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        struct lg_kernel_cfg c = {.op = want[i].op, .dtype = t};
        CHECK(lg_ctx_kernel(ctx, &c, want[i].k));
    }
}

static CUdeviceptr dev_random(int64_t rows, int64_t cols, int64_t ld, float scale, uint64_t seed, enum lg_dtype t)
{
    CUdeviceptr p = lg_dev_alloc((size_t)(rows * ld) * 2);
    float *h = malloc(sizeof(float) * (size_t)(rows * cols));
    lg_test_fill(h, (size_t)(rows * cols), seed, scale);
    lg_dev_upload(p, ld, h, rows, cols, t);
    free(h);
    return p;
}

static void setup(struct shape_run *R, const struct lg_linear *lin, const struct lg_spec *sp, int64_t n, float p)
{
    const int64_t K = lin->in_features, M = lin->out_features, r = sp->rank;
    R->n = n, R->K = K, R->M = M, R->r = (int)r, R->p = p, R->t = sp->dtype;
    R->s = (float)(sp->alpha / sp->rank);
    R->th = (unsigned)lround(p * 65536.0);
    R->ks = 65536.0f / (float)(65536 - R->th);
    struct lg_lora_params lp = {.in_features = K, .out_features = M, .rank = (int)r, .alpha = (float)sp->alpha,
                                .dropout = p, .dtype = sp->dtype, .layer_id = 0};
    CHECK(lg_lora_init(R->ctx, &lp, &R->L));
    float sw = 1.0f / sqrtf((float)K);
    R->w = dev_random(M, K, K, sw, 11, R->t);
    R->a = dev_random(r, K, K, sw, 12, R->t);
    R->b = dev_random(M, r, r, 0.5f, 13, R->t);
    /* the layer's [[W,B],[A,0]] gets the same values */
    uint16_t *hw = malloc(2 * (size_t)(M * K)), *ha = malloc(2 * (size_t)(r * K)), *hb = malloc(2 * (size_t)(M * r));
    CU_CHECK(cuMemcpyDtoH(hw, R->w, 2 * (size_t)(M * K)));
    CU_CHECK(cuMemcpyDtoH(ha, R->a, 2 * (size_t)(r * K)));
    CU_CHECK(cuMemcpyDtoH(hb, R->b, 2 * (size_t)(M * r)));
    CHECK(lg_lora_set_weights(R->L, hw, ha, hb, NULL));
    free(hw), free(ha), free(hb);
    R->xc = dev_random(n, K, K, 1.0f, 14, R->t);
    R->dyc = dev_random(n, M, M, 1.0f, 15, R->t);
    const int64_t ldx = lg_lora_ext_ld(K, (int)r), lddy = lg_lora_ext_ld(M, (int)r);
    R->xe = lg_dev_alloc((size_t)(n * ldx) * 2);
    R->dye = lg_dev_alloc((size_t)(n * lddy) * 2);
    CUDA_MEMCPY2D c;
    memset(&c, 0, sizeof c);
    c.srcMemoryType = c.dstMemoryType = CU_MEMORYTYPE_DEVICE;
    c.srcDevice = R->xc, c.srcPitch = (size_t)K * 2, c.dstDevice = R->xe, c.dstPitch = (size_t)ldx * 2;
    c.WidthInBytes = (size_t)K * 2, c.Height = (size_t)n;
    CU_CHECK(cuMemcpy2D(&c));
    c.srcDevice = R->dyc, c.srcPitch = (size_t)M * 2, c.dstDevice = R->dye, c.dstPitch = (size_t)lddy * 2;
    c.WidthInBytes = (size_t)M * 2;
    CU_CHECK(cuMemcpy2D(&c));
    R->yf = lg_dev_alloc((size_t)(n * M) * 2), R->yp = lg_dev_alloc((size_t)(n * M) * 2);
    R->dxf = lg_dev_alloc((size_t)(n * K) * 2), R->dxp = lg_dev_alloc((size_t)(n * K) * 2);
    R->da = lg_dev_alloc((size_t)(r * K) * 4), R->db = lg_dev_alloc((size_t)(M * r) * 4);
    R->dab = lg_dev_alloc((size_t)(r * K) * 2), R->dbb = lg_dev_alloc((size_t)(M * r) * 2);
    R->xd = lg_dev_alloc((size_t)(n * K) * 2), R->mask = lg_dev_alloc((size_t)(n * K));
    R->t1 = lg_dev_alloc((size_t)(n * r) * 2), R->y2 = lg_dev_alloc((size_t)(n * M) * 2);
    R->g2 = lg_dev_alloc((size_t)(n * M) * 2), R->dt = lg_dev_alloc((size_t)(n * r) * 2);
    R->dxd = lg_dev_alloc((size_t)(n * K) * 2);
}

static void teardown(struct shape_run *R)
{
    CUdeviceptr *bufs[] = {&R->xe, &R->dye, &R->xc, &R->dyc, &R->w, &R->a, &R->b, &R->yf, &R->dxf, &R->da,
                           &R->db, &R->yp, &R->dxp, &R->dab, &R->dbb, &R->xd, &R->mask, &R->t1, &R->y2,
                           &R->g2, &R->dt, &R->dxd};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        cuMemFree(*bufs[i]);
    lg_lora_free(R->L);
}

static double rel_err_dev(CUdeviceptr a, enum lg_dtype ta, CUdeviceptr b, enum lg_dtype tb, int64_t count)
{
    float *x = malloc(sizeof(float) * (size_t)count), *y = malloc(sizeof(float) * (size_t)count);
    lg_dev_download(x, a, count, 1, count, ta);
    lg_dev_download(y, b, count, 1, count, tb);
    double *yd = malloc(sizeof(double) * (size_t)count);
    for (int64_t i = 0; i < count; i++)
        yd[i] = y[i];
    double e = lg_test_rel_err(x, yd, (size_t)count);
    free(x), free(y), free(yd);
    return e;
}

/* FusedLoRA against the PEFT-style composition: same math, same mask. */
static int validate(struct shape_run *R, const char *name)
{
    run_fused(R);
    run_peft(R);
    CU_CHECK(cuCtxSynchronize());
    double ey = rel_err_dev(R->yf, R->t, R->yp, R->t, R->n * R->M);
    double ex = rel_err_dev(R->dxf, R->t, R->dxp, R->t, R->n * R->K);
    double ea = rel_err_dev(R->da, LG_FP32, R->dab, R->t, R->r * R->K);
    double eb = rel_err_dev(R->db, LG_FP32, R->dbb, R->t, R->M * R->r);
    int ok = ey < 1e-2 && ex < 1e-2 && ea < 2e-2 && eb < 2e-2;
    printf("  validate %-10s fused vs peft rel err: Y %.2e dX %.2e dA %.2e dB %.2e %s\n", name, ey, ex, ea, eb,
           ok ? "ok" : "MISMATCH");
    return ok;
}

/* ---- tuning: FusedLoRA through the library's tuner (lg_tuner.h), the floor's GEMM algorithms here ---- */

static void tune(struct shape_run *R, int verbose)
{
    struct lg_lora_params lp = {.in_features = R->K, .out_features = R->M, .rank = R->r, .alpha = R->s * R->r,
                                .dropout = R->p, .dtype = R->t};
    struct lg_tuner_opts o = {.max_cands = 16};
    struct lg_tuner_outcome out;
    CHECK(lg_tuner_lora(R->ctx, &lp, R->n, &o, &out));
    struct lg_lora_tiles best;
    lg_lora_tiles_from_entry(&out.entry, &best);
    CHECK(lg_lora_set_tiles(R->L, &best));
    R->tiles = best;
    /* the floor gets the same chance: each GEMM over cuBLASLt's top candidates */
    struct lg_gemm f0 = gemm_desc(R, R->n, R->M, R->K, 0, 1, R->xc, R->K, R->w, R->K, R->yp, R->M);
    struct lg_gemm f1 = gemm_desc(R, R->n, R->K, R->M, 0, 0, R->dyc, R->M, R->w, R->K, R->dxp, R->K);
    int c0 = lg_blas_algo_count(R->blas, &f0), c1 = lg_blas_algo_count(R->blas, &f1);
    for (int g = 0; g < 2; g++) {
        int cnt = g ? c1 : c0, besta = 0;
        double bt = 1e30;
        for (int a = 0; a < cnt && a < 8; a++) {
            R->floor_algo[g] = a;
            double t = lg_time_median_ms(run_floor, R, 0, 2, 9);
            if (t < bt)
                bt = t, besta = a;
        }
        R->floor_algo[g] = besta;
    }
    if (verbose)
        printf("  tuned (%d candidates, %d pruned, %d failed; %.3f -> %.3f ms): down w%dx%dm%du%db%d dy c%ds%db%d "
               "da b%d algos fwd %d dx %d | floor algos %d %d\n",
               out.entry.candidates, out.pruned, out.failed + out.mismatched, out.entry.default_ms, out.entry.time_ms,
               best.down_wm, best.down_wk, best.down_mt, best.down_u, best.down_minb, best.dy_nct, best.dy_st,
               best.dy_minb, best.da_minb, best.fwd_algo, best.dx_algo, R->floor_algo[0], R->floor_algo[1]);
}

static double geomean(const double *v, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += log(v[i]);
    return exp(s / n);
}

static void parse(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.spec = "specs/llama-3.1-8b.lua", .tokens = 0, .reps = 30, .dropout = -1};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
            o->tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dropout") && i + 1 < argc)
            o->dropout = (float)atof(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            o->reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--csv") && i + 1 < argc)
            o->csv = argv[++i];
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            o->only = argv[++i];
        else if (!strcmp(argv[i], "--breakdown"))
            o->breakdown = 1;
        else if (!strcmp(argv[i], "--no-tune"))
            o->no_tune = 1;
        else if (argv[i][0] != '-')
            o->spec = argv[i];
        else {
            fprintf(stderr, "usage: bench_lora [SPEC] [--tokens N] [--dropout P] [--reps N] [--csv FILE] [--only LAYER] "
                            "[--breakdown] [--no-tune]\n");
            exit(2);
        }
    }
}

int main(int argc, char **argv)
{
    struct opts o;
    parse(argc, argv, &o);
    struct lg_spec *sp;
    CHECK(lg_spec_load(o.spec, &sp));
    lg_test_require_gpu();
    lg_ctx_t *ctx;
    struct lg_ctx_params cp = {.device = 0};
    CHECK(lg_ctx_init(&cp, &ctx));
    int64_t n = o.tokens > 0 ? o.tokens : sp->tokens;
    printf("bench_lora: %s on %s (%d SMs), %lld tokens, r=%d, alpha=%g, %s\n", sp->name, lg_ctx_device_name(ctx),
           lg_ctx_sm_count(ctx), (long long)n, sp->rank, sp->alpha, lg_dtype_name(sp->dtype));
    struct peft_fns pf;
    load_peft(ctx, sp->dtype, &pf);
    const double bw = copy_bandwidth();
    printf("device-to-device copy bandwidth: %.0f GB/s (read + write)\n", bw / 1e9);
    FILE *csv = o.csv ? fopen(o.csv, "w") : NULL;
    if (csv)
        fprintf(csv, "dropout,layer,n,K,M,r,t_floor_ms,t_peft_ms,t_fused_ms,bw_GBs,t_min_ms\n");
    float ps[2] = {0.1f, 0.0f};
    int nps = 2;
    if (o.dropout >= 0)
        ps[0] = o.dropout, nps = 1;
    int bad = 0;
    char table[8192] = "";
    size_t tl = 0;
    for (int pi = 0; pi < nps; pi++) {
        double rf[16], rm[16], pf_r[16];
        int cnt = 0;
        tl += (size_t)snprintf(table + tl, sizeof table - tl,
                               "\np = %.2f    T_floor  T_min   PEFT  Fused | PEFT/floor Fused/floor Fused/T_min\n",
                               ps[pi]);
        for (int li = 0; li < sp->nlinears && li < 16; li++) {
            if (o.only && strcmp(o.only, sp->linears[li].name))
                continue;
            struct shape_run R = {.ctx = ctx, .blas = lg_ctx_blas(ctx), .pf = pf};
            setup(&R, &sp->linears[li], sp, n, ps[pi]);
            bad |= !validate(&R, sp->linears[li].name);
            if (!o.no_tune) {
                tune(&R, 1);
                bad |= !validate(&R, sp->linears[li].name);
            }
            void (*const fns[])(void *) = {run_floor, run_peft, run_fused};
            double med[3];
            lg_time_interleaved(fns, &R, 3, 0, 3, o.reps, med);
            double tf = med[0], tp = med[1], tu = med[2];
            double bmin = (double)(2 * n * R.K * 2 + n * R.M * 2) + (ps[pi] > 0 ? 2.0 * n * R.K * 2 : 0.0);
            double tmin = tf + bmin / bw * 1e3;
            tl += (size_t)snprintf(table + tl, sizeof table - tl,
                                   "%-10s %7.3f %7.3f %6.3f %6.3f | %9.3f %11.3f %11.3f\n", sp->linears[li].name, tf,
                                   tmin, tp, tu, tp / tf, tu / tf, tu / tmin);
            if (csv)
                fprintf(csv, "%.2f,%s,%lld,%lld,%lld,%d,%.5f,%.5f,%.5f,%.1f,%.5f\n", ps[pi], sp->linears[li].name,
                        (long long)n, (long long)R.K, (long long)R.M, R.r, tf, tp, tu, bw / 1e9, tmin);
            if (o.breakdown) {
                void (*const bf[])(void *) = {run_fused_fwd, run_fused_bwd, run_fused_gemms, run_floor};
                double bm[4];
                lg_time_interleaved(bf, &R, 4, 0, 3, o.reps, bm);
                double t_fwd = bm[0], t_bwd = bm[1], t_g = bm[2], t_fl = bm[3];
                printf("  breakdown %-10s fused fwd %.3f bwd %.3f | its GEMMs %.3f, LoRA kernels %.3f ms "
                       "(floor GEMMs %.3f)\n",
                       sp->linears[li].name, t_fwd, t_bwd, t_g, t_fwd + t_bwd - t_g, t_fl);
            }
            pf_r[cnt] = tp / tf, rf[cnt] = tu / tf, rm[cnt] = tu / tmin;
            cnt++;
            teardown(&R);
        }
        tl += (size_t)snprintf(table + tl, sizeof table - tl, "%-10s %7s %7s %6s %6s | %9.3f %11.3f %11.3f\n",
                               "geomean", "", "", "", "", geomean(pf_r, cnt), geomean(rf, cnt), geomean(rm, cnt));
    }
    if (csv)
        fclose(csv);
    printf("%s", table);
    printf("(times in ms, median of %d interleaved rounds; T_min = T_floor + unavoidable LoRA bytes / copy bandwidth)\n", o.reps);
    lg_ctx_free(ctx);
    lg_spec_free(sp);
    return bad ? 1 : 0;
}
