/* lora.c: FusedLoRA for one linear layer (see lg_lora.h for the math and the extended-K layout). This file
 * validates calls, owns the weight buffer (or, with a borrowed base, the A/B buffer) and workspace, and orders
 * the launches:
 *   forward:  down (S) -> GEMM [X|S]·[W|B]ᵀ      (borrowed base: GEMM X·Wᵀ, then Y += S·Bᵀ)
 *   backward: dy (partials dS, dB) -> reduce dS and dB (one launch) -> GEMM dX -> da (dA partials,
 *             + masked dX) -> reduce dA         (borrowed base: the dX GEMM never extends K; da adds dS·A)
 * Which kernel serves each launch, and the shape rules a layer must meet, are the generator's (lg_gen.h:
 * lg_gen_layer_kernels, lg_gen_limits_get); lora_run.c says which situation a launch is in, adds the layer's
 * tuned tiles and launches. This file checks the parameters, makes and frees the layer, and moves weights and
 * adapters between host and device. */
#include "lora_internal.h"
#include "lg_base.h"
#include "common/lg_philox.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
enum lg_status lg_ops_lora_bind(const lg_lora_t *l, const char *fn)
{
    CUcontext cur = NULL;
    if (cuCtxGetCurrent(&cur) == CUDA_SUCCESS && cur == l->cu)
        return LG_OK;
    enum lg_status st = lg_cu_check(cuCtxSetCurrent(l->cu), "cuCtxSetCurrent");
    return st == LG_OK ? st : lg_fail_wrap(st, "%s: ", fn);
}

/* The checks every device buffer argument gets (lora_internal.h). */
enum lg_status lg_ops_lora_check_buf(const char *fn, const char *name, CUdeviceptr p, int64_t ld, int64_t min_ld)
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
        lg_ops_lora_bind(l, "lg_lora_free");
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

enum lg_status lg_lora_set_base(lg_lora_t *l, CUdeviceptr w, int64_t ldw_in, CUdeviceptr bias)
{
    static const char *fn = "lg_lora_set_base";
    if (!l)
        return lg_fail(LG_ERR_INVALID, "%s: null layer", fn);
    if (!l->borrowed)
        return lg_fail(LG_ERR_INVALID, "%s: the layer owns its base weight (params.base = LG_LORA_BASE_OWNED); "
                       "use lg_lora_set_weights", fn);
    enum lg_status st = lg_ops_lora_check_buf(fn, "w", w, ldw_in, l->K);
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
    enum lg_status st = lg_ops_lora_bind(l, "lg_lora_set_weights");
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
    enum lg_status st = lg_ops_lora_bind(l, "lg_lora_get_adapter");
    if (st == LG_OK && a)
        st = copy_rows(l->ap, (size_t)l->lda * e, a, (size_t)l->K * e, (size_t)l->K * e, (size_t)l->r, 1);
    if (st == LG_OK && b)
        st = copy_rows(l->bp, (size_t)l->ldb * e, b, (size_t)l->r * e, (size_t)l->r * e, (size_t)l->M, 1);
    return st;
}
