/* lora.c: FusedLoRA for one linear layer (see lg_lora.h for the math and the extended-K layout). This file
 * validates calls, owns the weight buffer (or, with a borrowed base, the A/B buffer) and workspace, and orders
 * the launches:
 *   forward:  down (S) -> GEMM [X|S]·[W|B]ᵀ      (borrowed base: GEMM X·Wᵀ, then Y += S·Bᵀ)
 *   backward: dy (partials dS, dB) -> reduce dS and dB (one launch) -> GEMM dX -> da (dA partials,
 *             + masked dX) -> reduce dA         (borrowed base: the dX GEMM never extends K; da adds dS·A)
 * Which kernel serves each launch, and the shape rules a layer must meet, are the generator's (lg_gen.h:
 * lg_gen_layer_kernels, lg_gen_limits_get); this file says which situation a launch is in and adds the
 * layer's tuned tiles. */
#include "lg_lora.h"
#include "lg_base.h"
#include "lg_gpu.h"
#include "lora_tune.h"
#include "common/lg_args.h"
#include "common/lg_philox.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lg_lora {
    lg_ctx_t *ctx;
    struct lg_lora_params p;
    int64_t K, M;
    int r;
    float s;          /* alpha / r */
    unsigned thresh16; /* dropout threshold (0: none) */
    float keep_scale; /* 1 / keep rate */
    CUdeviceptr w;    /* owned: [[W,B],[A,0]], M+r rows of lg_lora_ext_ld(K, r); borrowed: A then B, packed */
    CUdeviceptr bias; /* owned only */
    int borrowed;     /* params.base == LG_LORA_BASE_BORROWED */
    /* where the launches read each matrix: views into w, or the caller's W and bias when borrowed */
    CUdeviceptr wp, ap, bp, biasp;
    int64_t ldwp, lda, ldb;
    CUcontext cu;     /* current at init: every call makes it current (autograd runs backward on its own thread) */
    CUdeviceptr ws;   /* workspace: partials and dS */
    size_t ws_size;
    CUdeviceptr ds_buf; /* inside ws when the last backward needed it */
    struct lg_lora_tiles tiles;
    int tiles_set;     /* lg_lora_set_tiles chose the tiles: the tuning database is not consulted */
    int tuned_bucket;  /* the token bucket the tiles were looked up for (0: none yet) */
    struct lg_kernel_cfg plan[LG_SLOT_COUNT]; /* the generator's kernel for each slot, before tiles */
    /* kernels resolved on first use: generating source is milliseconds of Lua, far too slow per call */
    const struct lg_kernel *k[LG_SLOT_COUNT];
};

static size_t esz(const lg_lora_t *l) { return lg_dtype_size(l->p.dtype); }
int64_t lg_lora_ext_ld(int64_t features, int rank) { return (features + rank + 63) / 64 * 64; }
static int64_t ldw(const lg_lora_t *l) { return lg_lora_ext_ld(l->K, l->r); }
static size_t a_bytes_aligned(const lg_lora_t *l) { return ((size_t)(l->r * l->K) * esz(l) + 255) & ~(size_t)255; }

/* The views the launches use: into [[W,B],[A,0]] (owned), or A then B packed (borrowed; W set later). */
static void set_views(lg_lora_t *l)
{
    if (l->borrowed) {
        l->ap = l->w, l->lda = l->K;
        l->bp = l->w + (CUdeviceptr)a_bytes_aligned(l), l->ldb = l->r;
        return;
    }
    l->wp = l->w, l->ldwp = ldw(l), l->biasp = l->bias;
    l->ap = l->w + (CUdeviceptr)(l->M * ldw(l) * esz(l)), l->lda = ldw(l);
    l->bp = l->w + (CUdeviceptr)(l->K * esz(l)), l->ldb = ldw(l);
}

/* The layer's context current on this thread (a no-op when it already is). */
static enum lg_status bind(const lg_lora_t *l, const char *fn)
{
    CUcontext cur = NULL;
    if (cuCtxGetCurrent(&cur) == CUDA_SUCCESS && cur == l->cu)
        return LG_OK;
    enum lg_status st = lg_cu_check(cuCtxSetCurrent(l->cu), "cuCtxSetCurrent");
    return st == LG_OK ? st : lg_fail_wrap(st, "%s: ", fn);
}

static enum lg_status check_params(const struct lg_lora_params *p)
{
    struct lg_gen_limits lim;
    enum lg_status st = lg_gen_limits_get(&lim);
    if (st != LG_OK)
        return lg_fail_wrap(st, "lg_lora_init: ");
    const int64_t fm = lim.feature_multiple;
    if ((unsigned)p->dtype >= 32 || !(lim.dtypes >> p->dtype & 1)) {
        char names[64] = "";
        for (int t = LG_BF16; t <= LG_FP32; t++)
            if (lim.dtypes >> t & 1)
                snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", names[0] ? " or " : "",
                         lg_dtype_name((enum lg_dtype)t));
        return lg_fail(LG_ERR_UNSUPPORTED, "lg_lora_init: dtype %s is not supported (%s)", lg_dtype_name(p->dtype),
                       names);
    }
    if (p->in_features <= 0 || p->in_features % fm)
        return lg_fail(LG_ERR_INVALID, "lg_lora_init: in_features = %lld must be a positive multiple of %lld",
                       (long long)p->in_features, (long long)fm);
    if (p->out_features <= 0 || p->out_features % fm)
        return lg_fail(LG_ERR_INVALID, "lg_lora_init: out_features = %lld must be a positive multiple of %lld",
                       (long long)p->out_features, (long long)fm);
    if (!lg_gen_limits_rank_ok(&lim, p->rank))
        return lg_fail(LG_ERR_INVALID, "lg_lora_init: rank = %d must be a multiple of %d in %d..%d", p->rank,
                       lim.rank_multiple, lim.rank_min, lim.rank_max);
    if (!(p->alpha > 0) || !isfinite(p->alpha))
        return lg_fail(LG_ERR_INVALID, "lg_lora_init: alpha = %g must be positive", p->alpha);
    if (!(p->dropout >= 0 && p->dropout < 1))
        return lg_fail(LG_ERR_INVALID, "lg_lora_init: dropout = %g must be in [0, 1)", p->dropout);
    if (p->base != LG_LORA_BASE_OWNED && p->base != LG_LORA_BASE_BORROWED)
        return lg_fail(LG_ERR_INVALID, "lg_lora_init: base = %d is neither LG_LORA_BASE_OWNED nor LG_LORA_BASE_BORROWED",
                       (int)p->base);
    return LG_OK;
}

enum lg_status lg_lora_init(lg_ctx_t *ctx, const struct lg_lora_params *p, lg_lora_t **out)
{
    if (!p || !out)
        return lg_fail(LG_ERR_INVALID, "lg_lora_init: null argument");
    enum lg_status st = check_params(p); /* before the context, so bad parameters are reported as such */
    if (st != LG_OK)
        return st;
    if (!ctx)
        return lg_fail(LG_ERR_INVALID, "lg_lora_init: ctx is NULL");
    lg_lora_t *l = calloc(1, sizeof *l);
    if (!l)
        return lg_fail(LG_ERR_OOM, "lg_lora_init: out of memory");
    l->ctx = ctx;
    l->p = *p;
    l->K = p->in_features;
    l->M = p->out_features;
    l->r = p->rank;
    l->s = p->alpha / (float)p->rank;
    l->thresh16 = lg_dropout_thresh16(p->dropout);
    l->keep_scale = lg_dropout_keep_scale(l->thresh16);
    /* the kernels follow the quantised rate: a p that rounds to no dropout gets the unmasked kernels */
    st = lg_gen_layer_kernels(lg_ctx_gen(ctx), p->dtype, p->rank, l->thresh16 ? p->dropout : 0.0, l->plan);
    if (st != LG_OK) {
        free(l);
        return lg_fail_wrap(st, "lg_lora_init: ");
    }
    l->borrowed = p->base == LG_LORA_BASE_BORROWED;
    /* borrowed: A and B only (W and the bias are the caller's), so the base model is never duplicated */
    size_t wbytes = l->borrowed ? a_bytes_aligned(l) + (size_t)(l->M * l->r) * esz(l)
                                : (size_t)(l->M + l->r) * (size_t)ldw(l) * esz(l);
    st = lg_cu_check(cuCtxGetCurrent(&l->cu), "lg_lora_init: cuCtxGetCurrent");
    if (st == LG_OK && !l->cu)
        st = lg_fail(LG_ERR_INVALID, "lg_lora_init: no CUDA context is current (lg_ctx_init makes one current)");
    if (st == LG_OK)
        st = lg_cu_check(cuMemAlloc(&l->w, wbytes), "lg_lora_init: weight buffer");
    if (st == LG_OK)
        st = lg_cu_check(cuMemsetD8(l->w, 0, wbytes), "lg_lora_init: zero weights");
    if (st == LG_OK && p->has_bias && !l->borrowed)
        st = lg_cu_check(cuMemAlloc(&l->bias, (size_t)l->M * esz(l)), "lg_lora_init: bias");
    if (st != LG_OK) {
        lg_lora_free(l);
        return st;
    }
    set_views(l);
    *out = l;
    return LG_OK;
}

void lg_lora_free(lg_lora_t *l)
{
    if (!l)
        return;
    if (l->cu)
        bind(l, "lg_lora_free");
    if (l->w)
        cuMemFree(l->w);
    if (l->bias)
        cuMemFree(l->bias);
    if (l->ws)
        cuMemFree(l->ws);
    free(l);
}

CUdeviceptr lg_lora_weights(const lg_lora_t *l) { return l->borrowed ? 0 : l->w; }

CUdeviceptr lg_lora_base_weight(const lg_lora_t *l, int64_t *ldw_out)
{
    if (ldw_out)
        *ldw_out = l->ldwp;
    return l->wp;
}

/* The checks every device buffer argument gets (defined with the forward below). */
static enum lg_status check_buf(const char *fn, const char *name, CUdeviceptr p, int64_t ld, int64_t min_ld);

enum lg_status lg_lora_set_base(lg_lora_t *l, CUdeviceptr w, int64_t ldw_in, CUdeviceptr bias)
{
    static const char *fn = "lg_lora_set_base";
    if (!l)
        return lg_fail(LG_ERR_INVALID, "%s: null layer", fn);
    if (!l->borrowed)
        return lg_fail(LG_ERR_INVALID, "%s: the layer owns its base weight (params.base = LG_LORA_BASE_OWNED); "
                       "use lg_lora_set_weights", fn);
    enum lg_status st = check_buf(fn, "w", w, ldw_in, l->K);
    if (st != LG_OK)
        return st;
    if (l->p.has_bias && !bias)
        return lg_fail(LG_ERR_INVALID, "%s: the layer has has_bias = 1 but bias is 0", fn);
    if (!l->p.has_bias && bias)
        return lg_fail(LG_ERR_INVALID, "%s: bias given but the layer has has_bias = 0", fn);
    if (bias % 16)
        return lg_fail(LG_ERR_INVALID, "%s: bias is not 16-byte aligned", fn);
    l->wp = w, l->ldwp = ldw_in, l->biasp = bias;
    return LG_OK;
}
CUdeviceptr lg_lora_ds_buffer(const lg_lora_t *l) { return l->ds_buf; }

enum lg_status lg_lora_set_tiles(lg_lora_t *l, const struct lg_lora_tiles *t)
{
    if (!t) { /* back to the tuning database's winners (or the defaults) */
        l->tiles_set = 0, l->tuned_bucket = 0;
        memset(&l->tiles, 0, sizeof l->tiles);
        memset(l->k, 0, sizeof l->k);
        return LG_OK;
    }
    l->tiles_set = 1;
    if (t->fwd_algo < 0 || t->fwd_algo >= 8 || t->dx_algo < 0 || t->dx_algo >= 8)
        return lg_fail(LG_ERR_INVALID, "lg_lora_set_tiles: GEMM algorithm index must be in 0..7");
    l->tiles = *t;
    memset(l->k, 0, sizeof l->k);
    return LG_OK;
}

void lg_lora_get_tiles(const lg_lora_t *l, struct lg_lora_tiles *t) { *t = l->tiles; }

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

/* Copies rows of `cols` elements between a packed host array and a strided device region. */
static enum lg_status copy_rows(CUdeviceptr dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                                size_t rows, int to_host)
{
    CUDA_MEMCPY2D c;
    memset(&c, 0, sizeof c);
    c.WidthInBytes = width;
    c.Height = rows;
    if (to_host) {
        c.srcMemoryType = CU_MEMORYTYPE_DEVICE;
        c.srcDevice = dst;
        c.srcPitch = dpitch;
        c.dstMemoryType = CU_MEMORYTYPE_HOST;
        c.dstHost = (void *)src;
        c.dstPitch = spitch;
    } else {
        c.dstMemoryType = CU_MEMORYTYPE_DEVICE;
        c.dstDevice = dst;
        c.dstPitch = dpitch;
        c.srcMemoryType = CU_MEMORYTYPE_HOST;
        c.srcHost = src;
        c.srcPitch = spitch;
    }
    return lg_cu_check(cuMemcpy2D(&c), "cuMemcpy2D");
}

enum lg_status lg_lora_set_weights(lg_lora_t *l, const uint16_t *w, const uint16_t *a, const uint16_t *b,
                                   const uint16_t *bias)
{
    if (!l)
        return lg_fail(LG_ERR_INVALID, "lg_lora_set_weights: null layer");
    if (l->borrowed && (w || bias))
        return lg_fail(LG_ERR_INVALID, "lg_lora_set_weights: the layer's base weight and bias are borrowed "
                       "(lg_lora_set_base); only a and b can be set");
    size_t e = esz(l);
    enum lg_status st = bind(l, "lg_lora_set_weights");
    if (st == LG_OK && w)
        st = copy_rows(l->wp, (size_t)l->ldwp * e, w, (size_t)l->K * e, (size_t)l->K * e, (size_t)l->M, 0);
    if (st == LG_OK && a)
        st = copy_rows(l->ap, (size_t)l->lda * e, a, (size_t)l->K * e, (size_t)l->K * e, (size_t)l->r, 0);
    if (st == LG_OK && b)
        st = copy_rows(l->bp, (size_t)l->ldb * e, b, (size_t)l->r * e, (size_t)l->r * e, (size_t)l->M, 0);
    if (st == LG_OK && bias) {
        if (!l->bias)
            return lg_fail(LG_ERR_INVALID, "lg_lora_set_weights: bias given but the layer has has_bias = 0");
        st = lg_cu_check(cuMemcpyHtoD(l->bias, bias, (size_t)l->M * e), "lg_lora_set_weights: bias");
    }
    return st;
}

enum lg_status lg_lora_get_adapter(lg_lora_t *l, uint16_t *a, uint16_t *b)
{
    size_t e = esz(l);
    enum lg_status st = bind(l, "lg_lora_get_adapter");
    if (st == LG_OK && a)
        st = copy_rows(l->ap, (size_t)l->lda * e, a, (size_t)l->K * e, (size_t)l->K * e, (size_t)l->r, 1);
    if (st == LG_OK && b)
        st = copy_rows(l->bp, (size_t)l->ldb * e, b, (size_t)l->r * e, (size_t)l->r * e, (size_t)l->M, 1);
    return st;
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

static enum lg_status check_buf(const char *fn, const char *name, CUdeviceptr p, int64_t ld, int64_t min_ld)
{
    if (!p)
        return lg_fail(LG_ERR_INVALID, "%s: %s is NULL", fn, name);
    if (ld < min_ld)
        return lg_fail(LG_ERR_INVALID, "%s: ld of %s = %lld is below its row length %lld", fn, name,
                       (long long)ld, (long long)min_ld);
    if (ld % 8)
        return lg_fail(LG_ERR_INVALID, "%s: ld of %s = %lld is not a multiple of 8 (16-byte rows)", fn, name,
                       (long long)ld);
    if (p % 16)
        return lg_fail(LG_ERR_INVALID, "%s: %s is not 16-byte aligned", fn, name);
    return LG_OK;
}

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
    enum lg_status st = check_buf(fn, "x", f->x, f->ldx, l->K);
    if (st == LG_OK)
        st = check_buf(fn, "y", f->y, f->ldy, l->M);
    if (st == LG_OK && !l->wp)
        st = lg_fail(LG_ERR_INVALID, "%s: the layer's base weight is borrowed and not set (lg_lora_set_base)", fn);
    if (st == LG_OK)
        st = bind(l, fn);
    if (st != LG_OK)
        return st;
    int ext = f->ldx >= l->K + l->r;
    /* one GEMM over [X|S]·[W|B]ᵀ needs B beside W: only the layer's own buffer has that */
    int ext_gemm = ext && !l->borrowed;
    CUdeviceptr s = ext ? f->x + (CUdeviceptr)(l->K * esz(l)) : f->s;
    int64_t lds = ext ? f->ldx : f->lds;
    if (!ext && (st = check_buf(fn, "s (needed when ldx < K+r)", f->s, f->lds, l->r)) != LG_OK)
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
    enum lg_status st = check_buf(fn, "x", b->x, b->ldx, l->K);
    if (st == LG_OK)
        st = check_buf(fn, "dy", b->dy, b->lddy, l->M);
    if (st == LG_OK && b->ldx < l->K + l->r)
        st = check_buf(fn, "s (needed when ldx < K+r)", b->s, b->lds, l->r);
    if (st == LG_OK && b->dx)
        st = check_buf(fn, "dx", b->dx, b->lddx, l->K);
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
    enum lg_status st = bind(l, fn);
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
        st = bind(l, "lg_lora_backward");
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
    return check_buf(fn, name, p, ld, cols);
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
        st = bind(l, fn);
    const int f32 = src->dtype == LG_FP32;
    if (st == LG_OK && src->a)
        st = f32 ? convert_f32(l, l->ap, l->lda, src->a, l->r, l->K, stream)
                 : copy_dev(l->ap, l->lda, src->a, src->lda, l->r, l->K, esz(l), stream);
    if (st == LG_OK && src->b)
        st = f32 ? convert_f32(l, l->bp, l->ldb, src->b, l->M, l->r, stream)
                 : copy_dev(l->bp, l->ldb, src->b, src->ldb, l->M, l->r, esz(l), stream);
    return st;
}
