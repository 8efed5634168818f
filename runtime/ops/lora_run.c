/* lora_run.c: FusedLoRA's launches (lg_lora.h; the order is in lora.c's header): the tuned GEMM and the tuning
 * database's tiles for a call's token bucket, launch geometry, the workspace, the kernel each slot gets, then
 * the forward, the backward and the adapter set from device memory (converted through the reduce kernel). */
#include "lora_internal.h"
#include "lg_base.h"
#include "common/lg_philox.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A GEMM at the layer's algorithm index; where an index from the tuning database is beyond what cuBLASLt offers
 * for this call (another token count of the bucket it was tuned in), the heuristic's first instead. */
static enum lg_status gemm_tuned(const lg_lora_t *l, struct lg_gemm *g, CUstream stream)
{
    enum lg_status st = lg_blas_gemm(lg_ctx_blas(l->ctx), g, stream);
    if (st == LG_ERR_INVALID && g->algo_index > 0 && !l->tiles_set) {
        g->algo_index = 0;
        lg_clear_error();
        st = lg_blas_gemm(lg_ctx_blas(l->ctx), g, stream);
    }
    return st;
}

/* The tuning database's winner for n tokens' bucket, unless the caller set tiles (lora_tune.c). */
static void consult_tuned(lg_lora_t *l, int64_t n)
{
    if (l->tiles_set || lg_lora_tune_bucket_same(l->tuned_bucket, n))
        return;
    l->tuned_bucket = lg_lora_tune_lookup(l->ctx, &l->p, l->plan, n, &l->tiles);
    memset(l->k, 0, sizeof l->k);
}

/* ---- launch geometry ---- */

static int cdiv(int64_t a, int64_t b) { return (int)((a + b - 1) / b); }

/* Splits `tiles` row tiles over blocks so that cols * blocks_y is at most one full wave (`slots` resident
 * blocks): a partial second wave would leave most SMs idle while it runs. */
static void split_rows(int tiles, int cols, int slots, int *per_block, int *blocks)
{
    int want = slots / cols;
    if (want < 1)
        want = 1;
    *per_block = cdiv(tiles, want);
    *blocks = cdiv(tiles, *per_block);
}

struct bwd_geom {
    int dy_cols, dy_rows, dy_tpb;
    int da_cols, da_rows, da_tpb;
    size_t ds_part, db_part, da_part, ds_bytes; /* bytes */
};

static void bwd_geometry(const lg_lora_t *l, const struct lg_kernel *dy, const struct lg_kernel *da, int64_t n,
                         struct bwd_geom *g)
{
    int sms = lg_ctx_sm_count(l->ctx);
    int nct = dy->cfg.nct;
    g->dy_cols = cdiv(l->M, 64 * nct);
    split_rows(cdiv(n, 64), g->dy_cols, sms * dy->occupancy, &g->dy_tpb, &g->dy_rows);
    g->da_cols = (int)(l->K / 64);
    split_rows(cdiv(n, 64), g->da_cols, sms * da->occupancy, &g->da_tpb, &g->da_rows);
    g->ds_part = (size_t)g->dy_cols * n * l->r * 4;
    g->db_part = (size_t)g->dy_rows * l->M * l->r * 4;
    g->da_part = (size_t)g->da_rows * l->r * l->K * 4;
    g->ds_bytes = ((size_t)n * l->r * esz(l) + 255) & ~(size_t)255;
}

static enum lg_status ensure_ws(lg_lora_t *l, size_t bytes, CUstream stream)
{
    if (bytes <= l->ws_size)
        return LG_OK;
    if (l->ws) {
        cuStreamSynchronize(stream); /* earlier launches may still read the old workspace */
        cuMemFree(l->ws);
        l->ws = 0;
        l->ws_size = 0;
    }
    bytes += bytes / 4; /* headroom: token counts vary from call to call */
    enum lg_status st = lg_cu_check(cuMemAlloc(&l->ws, bytes), "LoRA workspace");
    if (st == LG_OK)
        l->ws_size = bytes;
    return st;
}

static void tile(int *field, int tuned)
{
    if (tuned)
        *field = tuned;
}

/* The generator's configuration for slot s with the layer's tuned tiles over it (zero tiles keep its defaults). */
static struct lg_kernel_cfg slot_cfg(const lg_lora_t *l, enum lg_layer_slot s)
{
    struct lg_kernel_cfg c = l->plan[s];
    const struct lg_lora_tiles *t = &l->tiles;
    switch (c.op) {
    case LG_OP_DOWN:
        tile(&c.wm, t->down_wm), tile(&c.wk, t->down_wk), tile(&c.mt, t->down_mt), tile(&c.u, t->down_u);
        tile(&c.minb, t->down_minb);
        break;
    case LG_OP_DY:
        tile(&c.nct, t->dy_nct), tile(&c.st, t->dy_st), tile(&c.minb, t->dy_minb);
        break;
    case LG_OP_DA:
        tile(&c.minb, t->da_minb);
        break;
    default:
        break;
    }
    return c;
}

/* The kernel of slot s: resolved once, then a pointer read. */
static enum lg_status kernel(lg_lora_t *l, enum lg_layer_slot s, const struct lg_kernel **k)
{
    if (!l->k[s]) {
        struct lg_kernel_cfg c = slot_cfg(l, s);
        enum lg_status st = lg_ctx_kernel(l->ctx, &c, &l->k[s]);
        if (st != LG_OK)
            return st;
    }
    *k = l->k[s];
    return LG_OK;
}

/* ---- forward ---- */

static enum lg_status launch_down(lg_lora_t *l, int64_t n, CUdeviceptr x, int64_t ldx, CUdeviceptr s,
                                  int64_t lds, uint64_t seed, CUstream stream)
{
    const struct lg_kernel *k;
    enum lg_status st = kernel(l, LG_SLOT_DOWN, &k);
    if (st != LG_OK)
        return st;
    struct lg_down_args a = {.x = (const void *)x, .ldx = ldx, .a = (const void *)l->ap, .lda = l->lda,
                             .s = (void *)s, .lds = lds, .n = (int)n, .k = (int)l->K,
                             .scale = l->s * l->keep_scale,
                             .drop = {.seed = seed, .layer = l->p.layer_id, .thresh16 = l->thresh16}};
    int rows = 16 * k->cfg.mt * k->cfg.wm;
    return lg_kernel_launch(k, (unsigned)cdiv(n, rows), 1, &a, sizeof a, stream);
}

enum lg_status lg_lora_forward(lg_lora_t *l, const struct lg_lora_fwd *f, CUstream stream)
{
    static const char *fn = "lg_lora_forward";
    if (!l || !f)
        return lg_fail(LG_ERR_INVALID, "%s: null argument", fn);
    if (f->n < 1 || f->n > INT32_MAX)
        return lg_fail(LG_ERR_INVALID, "%s: n = %lld tokens is out of range", fn, (long long)f->n);
    consult_tuned(l, f->n);
    enum lg_status st = lg_ops_lora_check_buf(fn, "x", f->x, f->ldx, l->K);
    if (st == LG_OK)
        st = lg_ops_lora_check_buf(fn, "y", f->y, f->ldy, l->M);
    if (st == LG_OK && !l->wp)
        st = lg_fail(LG_ERR_INVALID, "%s: the layer's base weight is borrowed and not set (lg_lora_set_base)", fn);
    if (st == LG_OK)
        st = lg_ops_lora_bind(l, fn);
    if (st != LG_OK)
        return st;
    int ext = f->ldx >= l->K + l->r;
    /* one GEMM over [X|S]·[W|B]ᵀ needs B beside W: only the layer's own buffer has that */
    int ext_gemm = ext && !l->borrowed;
    CUdeviceptr s = ext ? f->x + (CUdeviceptr)(l->K * esz(l)) : f->s;
    int64_t lds = ext ? f->ldx : f->lds;
    if (!ext && (st = lg_ops_lora_check_buf(fn, "s (needed when ldx < K+r)", f->s, f->lds, l->r)) != LG_OK)
        return st;
    if ((st = launch_down(l, f->n, f->x, f->ldx, s, lds, f->seed, stream)) != LG_OK)
        return st;
    struct lg_gemm g = {.dtype = l->p.dtype, .m = f->n, .n = l->M, .k = ext_gemm ? l->K + l->r : l->K,
                        .trans_b = 1, .a = (const void *)f->x, .lda = f->ldx, .b = (const void *)l->wp,
                        .ldb = l->ldwp, .c = (void *)f->y, .ldc = f->ldy, .alpha = 1.f, .beta = 0.f,
                        .bias = (const void *)l->biasp, .algo_index = l->tiles.fwd_algo};
    if ((st = gemm_tuned(l, &g, stream)) != LG_OK || ext_gemm)
        return st;
    /* no room for S in X, or B not beside W: Y += S·Bᵀ as a second, skinny GEMM */
    struct lg_gemm u = {.dtype = l->p.dtype, .m = f->n, .n = l->M, .k = l->r, .trans_b = 1,
                        .a = (const void *)s, .lda = lds, .b = (const void *)l->bp, .ldb = l->ldb,
                        .c = (void *)f->y, .ldc = f->ldy, .alpha = 1.f, .beta = 1.f};
    return lg_blas_gemm(lg_ctx_blas(l->ctx), &u, stream);
}

/* ---- backward ---- */

/* One launch for one or two reductions (job1 may be NULL). job0 is written as dtype rows when out_half. */
static enum lg_status launch_reduce(lg_lora_t *l, int out_half, const struct lg_reduce_job *job0,
                                    const struct lg_reduce_job *job1, CUstream stream)
{
    const struct lg_kernel *k;
    enum lg_status st = kernel(l, out_half ? LG_SLOT_REDUCE_DS_DB : LG_SLOT_REDUCE_DA, &k);
    if (st != LG_OK)
        return st;
    struct lg_reduce_args a = {.job = {*job0}};
    if (job1)
        a.job[1] = *job1;
    a.blocks0 = cdiv(job0->count / 4, k->threads);
    int blocks1 = job1 ? cdiv(job1->count / 4, k->threads) : 0;
    return lg_kernel_launch(k, (unsigned)(a.blocks0 + blocks1), 1, &a, sizeof a, stream);
}

static enum lg_status check_bwd(const lg_lora_t *l, const struct lg_lora_bwd *b)
{
    static const char *fn = "lg_lora_backward";
    if (b->n < 1 || b->n > INT32_MAX)
        return lg_fail(LG_ERR_INVALID, "%s: n = %lld tokens is out of range", fn, (long long)b->n);
    enum lg_status st = lg_ops_lora_check_buf(fn, "x", b->x, b->ldx, l->K);
    if (st == LG_OK)
        st = lg_ops_lora_check_buf(fn, "dy", b->dy, b->lddy, l->M);
    if (st == LG_OK && b->ldx < l->K + l->r)
        st = lg_ops_lora_check_buf(fn, "s (needed when ldx < K+r)", b->s, b->lds, l->r);
    if (st == LG_OK && b->dx)
        st = lg_ops_lora_check_buf(fn, "dx", b->dx, b->lddx, l->K);
    if (st == LG_OK && (!b->da || !b->db))
        st = lg_fail(LG_ERR_INVALID, "%s: da and db (fp32 gradients) are required", fn);
    if (st == LG_OK && (b->da % 16 || b->db % 16))
        st = lg_fail(LG_ERR_INVALID, "%s: da and db must be 16-byte aligned", fn);
    return st;
}

/* What one backward call launches, and the workspace it needs. */
struct bwd_plan {
    const struct lg_kernel *kdy, *kda;
    int ext_dy; /* dS goes into dY's tail */
    struct bwd_geom g;
    size_t ws_bytes;
};

static enum lg_status plan_bwd(lg_lora_t *l, const struct lg_lora_bwd *b, struct bwd_plan *p)
{
    enum lg_status st;
    p->ext_dy = b->lddy >= l->M + l->r;
    if ((st = kernel(l, LG_SLOT_DY, &p->kdy)) != LG_OK)
        return st;
    /* the generator decides whether the dA pass adds dS·A to dX (fuse) or the extended-K GEMM
     * [dY|dS]·[W;A] gives all of dX (possible when unmasked, dS sits in dY's tail and A sits under W: never
     * with a borrowed W, whose layer takes the fused slot) */
    enum lg_layer_slot da_slot = !b->dx                        ? LG_SLOT_DA_NO_DX
                                 : p->ext_dy && !l->borrowed ? LG_SLOT_DA_DX_TAIL
                                                             : LG_SLOT_DA_DX;
    if ((st = kernel(l, da_slot, &p->kda)) != LG_OK)
        return st;
    bwd_geometry(l, p->kdy, p->kda, b->n, &p->g);
    p->ws_bytes = p->g.ds_part + p->g.db_part + p->g.da_part + p->g.ds_bytes;
    return LG_OK;
}

enum lg_status lg_lora_backward_workspace(lg_lora_t *l, const struct lg_lora_bwd *b, size_t *bytes)
{
    static const char *fn = "lg_lora_backward_workspace";
    if (!l || !b || !bytes)
        return lg_fail(LG_ERR_INVALID, "%s: null argument", fn);
    if (b->n < 1 || b->n > INT32_MAX)
        return lg_fail(LG_ERR_INVALID, "%s: n = %lld tokens is out of range", fn, (long long)b->n);
    struct bwd_plan p;
    consult_tuned(l, b->n);
    enum lg_status st = lg_ops_lora_bind(l, fn);
    if (st == LG_OK)
        st = plan_bwd(l, b, &p);
    *bytes = st == LG_OK ? p.ws_bytes : 0;
    return st;
}

/* The workspace of this call: the caller's when given (checked), else the layer's own, grown on demand. */
static enum lg_status bwd_workspace(lg_lora_t *l, const struct lg_lora_bwd *b, size_t need, CUstream stream,
                                    CUdeviceptr *ws)
{
    if (!b->ws) {
        enum lg_status st = ensure_ws(l, need, stream);
        *ws = l->ws;
        return st;
    }
    if (b->ws % 256)
        return lg_fail(LG_ERR_INVALID, "lg_lora_backward: ws is not 256-byte aligned");
    if (b->ws_size < need)
        return lg_fail(LG_ERR_INVALID, "lg_lora_backward: ws_size = %zu bytes is below the %zu this call needs "
                       "(lg_lora_backward_workspace)", b->ws_size, need);
    *ws = b->ws;
    return LG_OK;
}

enum lg_status lg_lora_backward(lg_lora_t *l, const struct lg_lora_bwd *b, CUstream stream)
{
    if (!l || !b)
        return lg_fail(LG_ERR_INVALID, "lg_lora_backward: null argument");
    enum lg_status st = check_bwd(l, b);
    if (st == LG_OK)
        consult_tuned(l, b->n);
    if (st == LG_OK && !l->wp && b->dx)
        st = lg_fail(LG_ERR_INVALID, "lg_lora_backward: the layer's base weight is borrowed and not set "
                     "(lg_lora_set_base)");
    if (st == LG_OK)
        st = lg_ops_lora_bind(l, "lg_lora_backward");
    if (st != LG_OK)
        return st;
    const int64_t n = b->n, K = l->K, M = l->M, r = l->r;
    const size_t e = esz(l);
    const int ext_x = b->ldx >= K + r;
    const CUdeviceptr s = ext_x ? b->x + (CUdeviceptr)(K * e) : b->s;
    const int64_t lds = ext_x ? b->ldx : b->lds;

    struct bwd_plan p;
    CUdeviceptr ws = 0;
    if ((st = plan_bwd(l, b, &p)) != LG_OK || (st = bwd_workspace(l, b, p.ws_bytes, stream, &ws)) != LG_OK)
        return st;
    const struct bwd_geom g = p.g;
    const int fuse = p.kda->cfg.fuse, ext_dy = p.ext_dy;
    float *ds_part = (float *)ws, *db_part = (float *)(ws + g.ds_part);
    float *da_part = (float *)(ws + g.ds_part + g.db_part);
    l->ds_buf = ext_dy ? 0 : ws + g.ds_part + g.db_part + g.da_part;
    const CUdeviceptr ds = ext_dy ? b->dy + (CUdeviceptr)(M * e) : l->ds_buf;
    const int64_t ldds = ext_dy ? b->lddy : r;

    /* 1. one pass over dY: partial dS and dB */
    struct lg_dy_args ay = {.dy = (const void *)b->dy, .lddy = b->lddy, .b = (const void *)l->bp,
                            .ldb = l->ldb, .s = (const void *)s, .lds = lds, .ds_part = ds_part,
                            .db_part = db_part, .n = (int)n, .m = (int)M, .tiles_per_block = g.dy_tpb};
    if ((st = lg_kernel_launch(p.kdy, (unsigned)g.dy_cols, (unsigned)g.dy_rows, &ay, sizeof ay, stream)) != LG_OK)
        return st;
    /* 2. one launch: dS = s · Σ partials as dtype (into dY's tail when it has room), and dB = Σ partials
     *    (fp32, optionally accumulated) */
    struct lg_reduce_job rs = {.part = ds_part, .part_stride = n * r, .parts = g.dy_cols, .count = n * r,
                               .cols = (int)r, .out = (void *)ds, .ldo = ldds, .scale = l->s};
    struct lg_reduce_job rb = {.part = db_part, .part_stride = M * r, .parts = g.dy_rows, .count = M * r,
                               .cols = (int)r, .out = (void *)b->db, .scale = 1.f, .beta = b->grad_beta};
    if ((st = launch_reduce(l, 1, &rs, &rb, stream)) != LG_OK)
        return st;
    /* 3. dX GEMM: [dY|dS]·[W;A] when the generator fused nothing (own buffer only), else dY·W */
    if (b->dx) {
        const int ext_gemm = !fuse;
        struct lg_gemm gx = {.dtype = l->p.dtype, .m = n, .n = K, .k = ext_gemm ? M + r : M,
                             .a = (const void *)b->dy, .lda = b->lddy, .b = (const void *)l->wp, .ldb = l->ldwp,
                             .c = (void *)b->dx, .ldc = b->lddx, .alpha = 1.f, .beta = 0.f,
                             .algo_index = l->tiles.dx_algo};
        if ((st = gemm_tuned(l, &gx, stream)) != LG_OK)
            return st;
    }
    /* 4. one pass over X: partial dA (+ the masked dX correction) */
    struct lg_da_args aa = {.x = (const void *)b->x, .ldx = b->ldx, .ds = (const void *)ds, .ldds = ldds,
                            .a = (const void *)l->ap, .lda = l->lda, .dx = (void *)b->dx, .lddx = b->lddx,
                            .da_part = da_part, .n = (int)n, .k = (int)K, .tiles_per_block = g.da_tpb,
                            .keep_scale = l->keep_scale,
                            .drop = {.seed = b->seed, .layer = l->p.layer_id, .thresh16 = l->thresh16}};
    if ((st = lg_kernel_launch(p.kda, (unsigned)g.da_cols, (unsigned)g.da_rows, &aa, sizeof aa, stream)) != LG_OK)
        return st;
    /* 5. dA = Σ partials */
    struct lg_reduce_job ra = {.part = da_part, .part_stride = r * K, .parts = g.da_rows, .count = r * K,
                               .cols = (int)r, .out = (void *)b->da, .scale = 1.f, .beta = b->grad_beta};
    return launch_reduce(l, 0, &ra, NULL, stream);
}

/* ---- adapter from device memory ---- */

/* fp32 [rows, cols] packed -> dtype rows at stride ld, through the reduce kernel (one slice, scale 1). */
static enum lg_status convert_f32(lg_lora_t *l, CUdeviceptr dst, int64_t ld, CUdeviceptr src, int64_t rows,
                                  int64_t cols, CUstream stream)
{
    struct lg_reduce_job j = {.part = (const float *)src, .part_stride = 0, .parts = 1, .count = rows * cols,
                              .cols = (int)cols, .out = (void *)dst, .ldo = ld, .scale = 1.f};
    return launch_reduce(l, 1, &j, NULL, stream);
}

/* Same-dtype rows: one copy when both sides are packed, else one per row. */
static enum lg_status copy_dev(CUdeviceptr dst, int64_t ldd, CUdeviceptr src, int64_t lds, int64_t rows,
                               int64_t cols, size_t e, CUstream stream)
{
    if (ldd == cols && lds == cols)
        return lg_cu_check(cuMemcpyDtoDAsync(dst, src, (size_t)(rows * cols) * e, stream), "cuMemcpyDtoDAsync");
    for (int64_t i = 0; i < rows; i++) {
        enum lg_status st = lg_cu_check(cuMemcpyDtoDAsync(dst + (CUdeviceptr)(i * ldd) * e,
                                                          src + (CUdeviceptr)(i * lds) * e, (size_t)cols * e,
                                                          stream),
                                        "cuMemcpyDtoDAsync");
        if (st != LG_OK)
            return st;
    }
    return LG_OK;
}

static enum lg_status check_src(const lg_lora_t *l, const char *name, CUdeviceptr p, int64_t ld, int64_t cols,
                                enum lg_dtype t)
{
    static const char *fn = "lg_lora_set_adapter_device";
    if (t == LG_FP32) {
        if (ld != cols)
            return lg_fail(LG_ERR_INVALID, "%s: an fp32 %s must be packed (ld = %lld, want %lld)", fn, name,
                           (long long)ld, (long long)cols);
        return p % 16 ? lg_fail(LG_ERR_INVALID, "%s: %s is not 16-byte aligned", fn, name) : LG_OK;
    }
    return lg_ops_lora_check_buf(fn, name, p, ld, cols);
}

enum lg_status lg_lora_set_adapter_device(lg_lora_t *l, const struct lg_lora_adapter_src *src, CUstream stream)
{
    static const char *fn = "lg_lora_set_adapter_device";
    if (!l || !src)
        return lg_fail(LG_ERR_INVALID, "%s: null argument", fn);
    if (src->dtype != LG_FP32 && src->dtype != l->p.dtype)
        return lg_fail(LG_ERR_UNSUPPORTED, "%s: source dtype %s is neither fp32 nor the layer's %s", fn,
                       lg_dtype_name(src->dtype), lg_dtype_name(l->p.dtype));
    enum lg_status st = LG_OK;
    if (src->a)
        st = check_src(l, "a", src->a, src->lda, l->K, src->dtype);
    if (st == LG_OK && src->b)
        st = check_src(l, "b", src->b, src->ldb, l->r, src->dtype);
    if (st == LG_OK)
        st = lg_ops_lora_bind(l, fn);
    const int f32 = src->dtype == LG_FP32;
    if (st == LG_OK && src->a)
        st = f32 ? convert_f32(l, l->ap, l->lda, src->a, l->r, l->K, stream)
                 : copy_dev(l->ap, l->lda, src->a, src->lda, l->r, l->K, esz(l), stream);
    if (st == LG_OK && src->b)
        st = f32 ? convert_f32(l, l->bp, l->ldb, src->b, l->M, l->r, stream)
                 : copy_dev(l->bp, l->ldb, src->b, src->ldb, l->M, l->r, esz(l), stream);
    return st;
}
