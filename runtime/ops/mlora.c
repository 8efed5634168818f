/* mlora.c: FusedMultiLoRA for one (possibly merged) linear layer with many adapters (lg_mlora.h). This file
 * validates calls, owns the weight buffer, the slot tables, the gradients and the workspace, and orders the
 * launches:
 *   forward  (a): down (S_ext into X's tail, zeros elsewhere) -> one GEMM [X|S_ext]·[W|B…]ᵀ
 *            (b): down (compact S) -> GEMM X·Wᵀ -> expand (Y += S·Bᵀ per segment)
 *   backward: dy (partial dS, dB) -> reduce (dS as dtype, dB) -> GEMM dX = dY·W -> da (partial dA, all
 *             modules' masked dX corrections) -> reduce dA
 * Every kernel finds its group of tokens in the segment table on the device; the host only sizes grids from
 * the table's host copy. Which adapters are present, and so whether any dropout applies and how wide the
 * extended K is, comes from that copy too. This file: parameters, layout, weights; mlora_run.c: the calls. */
#include "mlora_internal.h"
#include "lg_base.h"
#include "lg_gpu.h"
#include "common/lg_philox.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t esz(const lg_mlora_t *l) { return lg_dtype_size(l->dtype); }
static int rup8(int r) { return (r + 7) / 8 * 8; }

/* ---- init ---- */

static enum lg_status check_params(const struct lg_mlora_params *p)
{
    static const char *fn = "lg_mlora_init";
    struct lg_gen_limits lim;
    enum lg_status st = lg_gen_limits_get(&lim);
    if (st != LG_OK)
        return lg_fail_wrap(st, "%s: ", fn);
    if ((unsigned)p->dtype >= 32 || !(lim.dtypes >> p->dtype & 1))
        return lg_fail(LG_ERR_UNSUPPORTED, "%s: dtype %s is not supported (bf16 or fp16)", fn, lg_dtype_name(p->dtype));
    if (p->in_features <= 0 || p->in_features % lim.feature_multiple)
        return lg_fail(LG_ERR_INVALID, "%s: in_features = %lld must be a positive multiple of %d", fn,
                       (long long)p->in_features, lim.feature_multiple);
    if (p->nmod < 1 || p->nmod > LG_MLORA_MAX_MODULES)
        return lg_fail(LG_ERR_INVALID, "%s: nmod = %d must be in 1..%d", fn, p->nmod, LG_MLORA_MAX_MODULES);
    for (int m = 0; m < p->nmod; m++)
        if (p->out_features[m] <= 0 || p->out_features[m] % lim.feature_multiple)
            return lg_fail(LG_ERR_INVALID, "%s: out_features[%d] = %lld must be a positive multiple of %d", fn, m,
                           (long long)p->out_features[m], lim.feature_multiple);
    if (p->nadapters < 1 || !p->slots)
        return lg_fail(LG_ERR_INVALID, "%s: nadapters = %d and slots must be given", fn, p->nadapters);
    for (int i = 0; i < p->nadapters * p->nmod; i++) {
        const struct lg_mlora_slot_params *s = &p->slots[i];
        const int a = i / p->nmod, m = i % p->nmod;
        if (s->rank && (s->rank < lim.mlora_rank_min || s->rank > lim.mlora_rank_max ||
                        s->rank % lim.mlora_rank_multiple))
            return lg_fail(LG_ERR_INVALID, "%s: adapter %d module %d: rank = %d must be 0 or a multiple of %d in %d..%d",
                           fn, a, m, s->rank, lim.mlora_rank_multiple, lim.mlora_rank_min, lim.mlora_rank_max);
        if (s->rank < 0)
            return lg_fail(LG_ERR_INVALID, "%s: adapter %d module %d: rank = %d is negative", fn, a, m, s->rank);
        if (s->rank && (!(s->alpha > 0) || !isfinite(s->alpha)))
            return lg_fail(LG_ERR_INVALID, "%s: adapter %d module %d: alpha = %g must be positive", fn, a, m, s->alpha);
        if (!(s->dropout >= 0 && s->dropout < 1))
            return lg_fail(LG_ERR_INVALID, "%s: adapter %d module %d: dropout = %g must be in [0, 1)", fn, a, m,
                           s->dropout);
    }
    return LG_OK;
}

/* Column layouts, slot tables (host) and the sizes that follow from them. */
static enum lg_status layout(lg_mlora_t *l, const struct lg_mlora_params *p)
{
    l->hs = calloc((size_t)(l->nad * l->nmod) * 2, sizeof *l->hs);
    if (!l->hs)
        return lg_fail(LG_ERR_OOM, "lg_mlora_init: out of memory");
    int col = 0, rpmax = 8;
    l->rmax = 4;
    for (int a = 0; a < l->nad; a++) {
        int off = 0;
        for (int m = 0; m < l->nmod; m++) {
            const struct lg_mlora_slot_params *sp = &p->slots[a * l->nmod + m];
            struct lg_mlora_slot *s = &l->hs[a * l->nmod + m];
            s->rank = sp->rank, s->rp = rup8(sp->rank), s->col = col, s->off = off;
            s->s = sp->rank ? sp->alpha / (float)sp->rank : 0.f;
            s->thresh16 = sp->rank ? lg_dropout_thresh16(sp->dropout) : 0;
            s->keep = lg_dropout_keep_scale(s->thresh16);
            col += s->rp, off += s->rp;
            rpmax = s->rp > rpmax ? s->rp : rpmax;
            l->rmax = sp->rank > l->rmax ? sp->rank : l->rmax;
        }
        l->wmax = off > l->wmax ? off : l->wmax;
    }
    l->R = rpmax, l->ext_cols = col;
    l->ldw = (l->K + col + 63) / 64 * 64;
    return LG_OK;
}

/* Pointers into the weight and gradient buffers, and the device slot tables (training and evaluation). */
static enum lg_status upload_slots(lg_mlora_t *l)
{
    const int ns = l->nad * l->nmod;
    size_t g = 0;
    for (int i = 0; i < ns; i++) {
        struct lg_mlora_slot *s = &l->hs[i];
        const int m = i % l->nmod;
        s->a = (const void *)(l->w + (CUdeviceptr)(((l->MT + s->col) * l->ldw) * (int64_t)esz(l)));
        s->b = (const void *)(l->w + (CUdeviceptr)((l->moff[m] * l->ldw + l->K + s->col) * (int64_t)esz(l)));
        s->da = s->rank ? (float *)(l->grads + g) : NULL;
        g += (size_t)s->rank * (size_t)l->K * 4;
        s->db = s->rank ? (float *)(l->grads + g) : NULL;
        g += (size_t)l->M[m] * (size_t)s->rank * 4;
        struct lg_mlora_slot *e = &l->hs[ns + i];
        *e = *s;
        e->thresh16 = 0, e->keep = 1.f;
    }
    return lg_cu_check(cuMemcpyHtoD(l->slots, l->hs, sizeof *l->hs * (size_t)ns * 2), "lg_mlora_init: slot tables");
}

static size_t grad_bytes(const lg_mlora_t *l)
{
    size_t g = 0;
    for (int i = 0; i < l->nad * l->nmod; i++)
        g += (size_t)l->hs[i].rank * (size_t)(l->K + l->M[i % l->nmod]) * 4;
    return g ? g : 16;
}

enum lg_status lg_mlora_init(lg_ctx_t *ctx, const struct lg_mlora_params *p, lg_mlora_t **out)
{
    if (!p || !out)
        return lg_fail(LG_ERR_INVALID, "lg_mlora_init: null argument");
    enum lg_status st = check_params(p);
    if (st != LG_OK)
        return st;
    if (!ctx)
        return lg_fail(LG_ERR_INVALID, "lg_mlora_init: ctx is NULL");
    lg_mlora_t *l = calloc(1, sizeof *l);
    if (!l)
        return lg_fail(LG_ERR_OOM, "lg_mlora_init: out of memory");
    l->ctx = ctx, l->dtype = p->dtype, l->nmod = p->nmod, l->nad = p->nadapters, l->K = p->in_features;
    l->has_bias = p->has_bias, l->layer_id = p->layer_id, l->ws = &l->own;
    for (int m = 0; m < l->nmod; m++) {
        l->M[m] = p->out_features[m], l->moff[m] = l->MT;
        l->MT += l->M[m];
        l->Mmax = l->M[m] > l->Mmax ? l->M[m] : l->Mmax;
    }
    st = layout(l, p);
    size_t wbytes = (size_t)(l->MT + l->ext_cols) * (size_t)l->ldw * esz(l);
    if (st == LG_OK)
        st = lg_cu_check(cuMemAlloc(&l->w, wbytes), "lg_mlora_init: weight buffer");
    if (st == LG_OK) /* zeros: the off-diagonal blocks, and the padding rows and columns of every slot */
        st = lg_cu_check(cuMemsetD8(l->w, 0, wbytes), "lg_mlora_init: zero weights");
    if (st == LG_OK)
        st = lg_cu_check(cuMemAlloc(&l->grads, grad_bytes(l)), "lg_mlora_init: gradients");
    if (st == LG_OK)
        st = lg_cu_check(cuMemsetD8(l->grads, 0, grad_bytes(l)), "lg_mlora_init: zero gradients");
    if (st == LG_OK)
        st = lg_cu_check(cuMemAlloc(&l->slots, sizeof *l->hs * (size_t)(l->nad * l->nmod) * 2), "lg_mlora_init: slots");
    if (st == LG_OK && l->has_bias)
        st = lg_cu_check(cuMemAlloc(&l->bias, (size_t)l->MT * esz(l)), "lg_mlora_init: bias");
    if (st == LG_OK && l->has_bias)
        st = lg_cu_check(cuMemsetD8(l->bias, 0, (size_t)l->MT * esz(l)), "lg_mlora_init: zero bias");
    if (st == LG_OK)
        st = upload_slots(l);
    if (st != LG_OK) {
        lg_mlora_free(l);
        return st;
    }
    *out = l;
    return LG_OK;
}

void lg_mlora_free(lg_mlora_t *l)
{
    if (!l)
        return;
    CUdeviceptr *bufs[] = {&l->w, &l->bias, &l->grads, &l->slots, &l->own.p};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (*bufs[i])
            cuMemFree(*bufs[i]);
    free(l->hs);
    free(l);
}

/* ---- weights, gradients, layout queries ---- */

static enum lg_status put_rows(CUdeviceptr dst, size_t dpitch, const void *src, size_t width, size_t rows)
{
    CUDA_MEMCPY2D c;
    memset(&c, 0, sizeof c);
    c.WidthInBytes = width, c.Height = rows;
    c.dstMemoryType = CU_MEMORYTYPE_DEVICE, c.dstDevice = dst, c.dstPitch = dpitch;
    c.srcMemoryType = CU_MEMORYTYPE_HOST, c.srcHost = src, c.srcPitch = width;
    return lg_cu_check(cuMemcpy2D(&c), "cuMemcpy2D");
}

enum lg_status lg_mlora_set_weights(lg_mlora_t *l, int module, const uint16_t *w, const uint16_t *bias)
{
    if (!l || module < 0 || module >= l->nmod)
        return lg_fail(LG_ERR_INVALID, "lg_mlora_set_weights: module %d out of range", module);
    const size_t e = esz(l);
    enum lg_status st = LG_OK;
    if (w)
        st = put_rows(l->w + (CUdeviceptr)(l->moff[module] * l->ldw * (int64_t)e), (size_t)l->ldw * e, w,
                      (size_t)l->K * e, (size_t)l->M[module]);
    if (st == LG_OK && bias) {
        if (!l->bias)
            return lg_fail(LG_ERR_INVALID, "lg_mlora_set_weights: bias given but the layer has has_bias = 0");
        st = lg_cu_check(cuMemcpyHtoD(l->bias + (CUdeviceptr)(l->moff[module] * (int64_t)e), bias,
                                      (size_t)l->M[module] * e), "lg_mlora_set_weights: bias");
    }
    return st;
}

static const struct lg_mlora_slot *slot(const lg_mlora_t *l, int a, int m) { return &l->hs[a * l->nmod + m]; }

enum lg_status lg_mlora_set_adapter(lg_mlora_t *l, int adapter, int module, const uint16_t *a, const uint16_t *b)
{
    if (!l || adapter < 0 || adapter >= l->nad || module < 0 || module >= l->nmod)
        return lg_fail(LG_ERR_INVALID, "lg_mlora_set_adapter: adapter %d module %d out of range", adapter, module);
    const struct lg_mlora_slot *s = slot(l, adapter, module);
    if (!s->rank)
        return lg_fail(LG_ERR_INVALID, "lg_mlora_set_adapter: adapter %d does not adapt module %d (rank 0)", adapter,
                       module);
    const size_t e = esz(l);
    enum lg_status st = LG_OK;
    if (a)
        st = put_rows((CUdeviceptr)s->a, (size_t)l->ldw * e, a, (size_t)l->K * e, (size_t)s->rank);
    if (st == LG_OK && b)
        st = put_rows((CUdeviceptr)s->b, (size_t)l->ldw * e, b, (size_t)s->rank * e, (size_t)l->M[module]);
    return st;
}

enum lg_status lg_mlora_grads(const lg_mlora_t *l, int adapter, int module, CUdeviceptr *da, CUdeviceptr *db)
{
    if (!l || adapter < 0 || adapter >= l->nad || module < 0 || module >= l->nmod)
        return lg_fail(LG_ERR_INVALID, "lg_mlora_grads: adapter %d module %d out of range", adapter, module);
    const struct lg_mlora_slot *s = slot(l, adapter, module);
    if (da)
        *da = (CUdeviceptr)s->da;
    if (db)
        *db = (CUdeviceptr)s->db;
    return LG_OK;
}

int64_t lg_mlora_ext_ld(const lg_mlora_t *l) { return (l->K + l->ext_cols + 63) / 64 * 64; }
int lg_mlora_compact_cols(const lg_mlora_t *l) { return l->wmax; }
int lg_mlora_ext_cols(const lg_mlora_t *l) { return l->ext_cols; }
int lg_mlora_slot_col(const lg_mlora_t *l, int adapter, int module, int ext)
{
    const struct lg_mlora_slot *s = slot(l, adapter, module);
    return ext ? s->col : s->off;
}
CUdeviceptr lg_mlora_weights(const lg_mlora_t *l, int64_t *ldw)
{
    if (ldw)
        *ldw = l->ldw;
    return l->w;
}
CUdeviceptr lg_mlora_ds_buffer(const lg_mlora_t *l, int64_t *ld)
{
    if (ld)
        *ld = l->ds_ld;
    return l->ds_buf;
}

enum lg_status lg_mlora_ws_init(lg_mlora_ws_t **out)
{
    if (!out)
        return lg_fail(LG_ERR_INVALID, "lg_mlora_ws_init: null argument");
    if (!(*out = calloc(1, sizeof **out)))
        return lg_fail(LG_ERR_OOM, "lg_mlora_ws_init: out of memory");
    return LG_OK;
}

void lg_mlora_ws_free(lg_mlora_ws_t *ws)
{
    if (!ws)
        return;
    if (ws->p)
        cuMemFree(ws->p);
    free(ws);
}

size_t lg_mlora_ws_bytes(const lg_mlora_ws_t *ws) { return ws ? ws->size : 0; }

void lg_mlora_share_ws(lg_mlora_t *l, lg_mlora_ws_t *ws)
{
    if (!l)
        return;
    if (l->own.p && ws) { /* the layer's own is no longer used */
        cuMemFree(l->own.p);
        l->own = (struct lg_mlora_ws){0};
    }
    l->ws = ws ? ws : &l->own;
}

enum lg_status lg_mlora_set_tiles(lg_mlora_t *l, const struct lg_mlora_tiles *t)
{
    if (!l)
        return lg_fail(LG_ERR_INVALID, "lg_mlora_set_tiles: null argument");
    if (!t) { /* back to the tuning database's winners (or the arch heuristic) */
        l->tiles_set = 0, l->tuned_bucket = 0;
        memset(&l->tiles, 0, sizeof l->tiles);
        return LG_OK;
    }
    if (t->fwd_algo < 0 || t->fwd_algo >= 8 || t->dx_algo < 0 || t->dx_algo >= 8)
        return lg_fail(LG_ERR_INVALID, "lg_mlora_set_tiles: GEMM algorithm index must be in 0..7");
    if (t->split < 0 || t->split > 1)
        return lg_fail(LG_ERR_INVALID, "lg_mlora_set_tiles: split must be 0 (one GEMM) or 1 (one per module)");
    l->tiles = *t;
    l->tiles_set = 1;
    return LG_OK;
}

enum lg_mlora_strategy lg_mlora_pick(const lg_mlora_t *l, const lg_mlora_segments_t *seg, int64_t ldx)
{
    (void)seg; /* the GEMM's extra k depends on the layer's columns; the tuner may later look at the table */
    const int c = l->ext_cols;
    return ldx >= l->K + c && c <= 256 && c <= l->K / 8 ? LG_MLORA_EXT_K : LG_MLORA_EXPAND;
}

