/* dec_norm.c: the fused residual add + RMSNorm (lg_decoder_ops.h). Four kernels, resolved at init:
 *   norm_fwd / norm_bwd            one row per block in registers (the plain forward and backward);
 *   norm_lora_fwd / norm_lora_bwd  16-row tiles, the readers' S folded into the forward, their masked dX
 *                                  correction into the backward (two passes over each tile, the second from L2).
 * The tile kernels walk the tiles with a grid sized so the tiles in flight fit in about 2/3 of the L2 (their
 * second pass then hits it); lg_norm_set_tiles overrides that for the tuner. */
#include "dec_internal.h"
#include "lg_base.h"
#include "lg_gpu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NORM_HIDDEN_MAX 16384

struct lg_norm {
    lg_ctx_t *ctx;
    struct lg_norm_params p;
    size_t esz;
    int sms, l2_bytes;
    struct lg_norm_tiles tiles;
    const struct lg_kernel *k_fwd, *k_bwd, *k_lfwd, *k_lbwd; /* the last two only when nlora > 0 */
};

static enum lg_status check_params(const struct lg_norm_params *p)
{
    static const char *fn = "lg_norm_init";
    enum lg_status st = lg_ops_dec_check_dtype(fn, p->dtype);
    if (st != LG_OK)
        return st;
    if (p->hidden < 64 || p->hidden % 64 || p->hidden > NORM_HIDDEN_MAX)
        return lg_fail(LG_ERR_INVALID, "%s: hidden = %lld must be a multiple of 64 in 64..%d", fn,
                       (long long)p->hidden, NORM_HIDDEN_MAX);
    if (!(p->eps >= 0) || !isfinite(p->eps))
        return lg_fail(LG_ERR_INVALID, "%s: eps = %g must be finite and >= 0", fn, p->eps);
    if (p->nlora < 0 || p->nlora > LG_LORA_READERS_MAX)
        return lg_fail(LG_ERR_INVALID, "%s: nlora = %d must be in 0..%d", fn, p->nlora, LG_LORA_READERS_MAX);
    for (int i = 0; i < p->nlora && st == LG_OK; i++)
        st = lg_ops_dec_check_reader(fn, i, &p->lora[i]);
    return st;
}

/* The smallest vectors-per-thread value (a power of two) that covers hidden with 128 threads. */
static int vpt_for(int64_t hidden)
{
    int v = 1;
    while (v * 1024 < hidden)
        v *= 2;
    return v;
}

static enum lg_status resolve(lg_norm_t *l)
{
    const struct lg_norm_params *p = &l->p;
    struct lg_kernel_cfg c = {.op = LG_OP_NORM_FWD, .dtype = p->dtype, .vpt = vpt_for(p->hidden)};
    enum lg_status st = lg_ctx_kernel(l->ctx, &c, &l->k_fwd);
    c.op = LG_OP_NORM_BWD;
    if (st == LG_OK)
        st = lg_ctx_kernel(l->ctx, &c, &l->k_bwd);
    if (st != LG_OK || p->nlora == 0)
        return st;
    int rmax = 0, drop = 0;
    for (int i = 0; i < p->nlora; i++) {
        rmax = p->lora[i].rank > rmax ? p->lora[i].rank : rmax;
        drop |= lg_ops_dec_drops(&p->lora[i]);
    }
    struct lg_kernel_cfg t = {.op = LG_OP_NORM_LORA_FWD, .dtype = p->dtype, .rank = rmax, .nlora = p->nlora,
                              .drop = drop};
    st = lg_ctx_kernel(l->ctx, &t, &l->k_lfwd);
    t.op = LG_OP_NORM_LORA_BWD;
    if (st == LG_OK)
        st = lg_ctx_kernel(l->ctx, &t, &l->k_lbwd);
    return st;
}

enum lg_status lg_norm_init(lg_ctx_t *ctx, const struct lg_norm_params *p, lg_norm_t **out)
{
    if (!p || !out)
        return lg_fail(LG_ERR_INVALID, "lg_norm_init: null argument");
    enum lg_status st = check_params(p);
    if (st != LG_OK)
        return st;
    if (!ctx)
        return lg_fail(LG_ERR_INVALID, "lg_norm_init: ctx is NULL");
    lg_norm_t *l = calloc(1, sizeof *l);
    if (!l)
        return lg_fail(LG_ERR_OOM, "lg_norm_init: out of memory");
    l->ctx = ctx;
    l->p = *p;
    l->esz = lg_dtype_size(p->dtype);
    l->sms = lg_ctx_sm_count(ctx);
    CUdevice dev;
    if ((st = lg_cu_check(cuCtxGetDevice(&dev), "lg_norm_init: cuCtxGetDevice")) == LG_OK)
        st = lg_cu_check(cuDeviceGetAttribute(&l->l2_bytes, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, dev),
                         "lg_norm_init: L2 size");
    if (st == LG_OK)
        st = resolve(l);
    if (st != LG_OK) {
        free(l);
        return lg_fail_wrap(st, "lg_norm_init: ");
    }
    *out = l;
    return LG_OK;
}

void lg_norm_free(lg_norm_t *l) { free(l); }

enum lg_status lg_norm_set_tiles(lg_norm_t *l, const struct lg_norm_tiles *t)
{
    if (!l || !t)
        return lg_fail(LG_ERR_INVALID, "lg_norm_set_tiles: null argument");
    if (t->fwd_bps < 0 || t->fwd_bps > 32 || t->bwd_bps < 0 || t->bwd_bps > 32)
        return lg_fail(LG_ERR_INVALID, "lg_norm_set_tiles: blocks per SM must be in 0..32 (0: from the L2 size)");
    l->tiles = *t;
    return LG_OK;
}

/* Grid of a tile kernel: `bps` blocks per SM (0: as many as keep tile_bytes per block in 2/3 of the L2), at
 * most the kernel's occupancy and the tile count. */
static unsigned tile_grid(const lg_norm_t *l, const struct lg_kernel *k, int bps, int64_t n, size_t tile_bytes)
{
    if (bps <= 0) {
        const double budget = (double)l->l2_bytes * 2.0 / 3.0;
        bps = (int)(budget / ((double)tile_bytes * (double)l->sms));
        bps = bps < 1 ? 1 : bps;
    }
    if (bps > k->occupancy)
        bps = k->occupancy;
    int64_t grid = (int64_t)bps * l->sms, tiles = lg_ops_dec_cdiv(n, 16);
    return (unsigned)(grid < tiles ? grid : tiles);
}

/* ---- forward ---- */

static enum lg_status check_readers_io(const lg_norm_t *l, const char *fn, const struct lg_lora_reader_io *io,
                                       int fwd, int64_t ldy)
{
    const int64_t H = l->p.hidden;
    for (int i = 0; i < l->p.nlora; i++) {
        char name[32];
        snprintf(name, sizeof name, "lora[%d].a", i);
        enum lg_status st = lg_ops_dec_check_rows(fn, name, io[i].a, io[i].lda, H);
        if (st != LG_OK)
            return st;
        const int r = l->p.lora[i].rank;
        if (fwd) {
            if (io[i].s_col < H || io[i].s_col + r > ldy || io[i].s_col % 2)
                return lg_fail(LG_ERR_INVALID,
                               "%s: lora[%d].s_col = %lld: S (%d columns) must lie in y's tail, columns %lld..%lld "
                               "(ldy), at an even column", fn, i, (long long)io[i].s_col, r, (long long)H,
                               (long long)ldy - 1);
        } else {
            snprintf(name, sizeof name, "lora[%d].ds", i);
            if ((st = lg_ops_dec_check_rows(fn, name, io[i].ds, io[i].ldds, r)) != LG_OK)
                return st;
        }
    }
    return LG_OK;
}

static enum lg_status check_fwd(const lg_norm_t *l, const struct lg_norm_fwd *f)
{
    static const char *fn = "lg_norm_forward";
    const int64_t H = l->p.hidden;
    enum lg_status st = lg_ops_dec_check_n(fn, f->n);
    if (st == LG_OK && f->x)
        st = lg_ops_dec_check_rows(fn, "x", f->x, f->ldx, H);
    if (st == LG_OK)
        st = lg_ops_dec_check_rows(fn, "res", f->res, f->ldres, H);
    if (st == LG_OK && (f->x || (f->h && f->h != f->res)))
        st = lg_ops_dec_check_rows(fn, "h", f->h, f->ldh, H);
    if (st == LG_OK && f->h == f->res && f->ldh != f->ldres)
        st = lg_fail(LG_ERR_INVALID, "%s: h is res (in place) but ldh %lld != ldres %lld", fn, (long long)f->ldh,
                     (long long)f->ldres);
    if (st == LG_OK)
        st = lg_ops_dec_check_ptr(fn, "gamma", f->gamma, 16);
    if (st == LG_OK)
        st = lg_ops_dec_check_rows(fn, "y", f->y, f->ldy, H);
    if (st == LG_OK)
        st = lg_ops_dec_check_ptr(fn, "rstd", f->rstd, 4);
    if (st == LG_OK && f->y == f->res)
        st = lg_fail(LG_ERR_INVALID, "%s: y must not be res (h is read back while y is written)", fn);
    if (st == LG_OK && f->with_s && l->p.nlora == 0)
        st = lg_fail(LG_ERR_INVALID, "%s: with_s but the norm was built with nlora = 0", fn);
    if (st == LG_OK && f->with_s)
        st = check_readers_io(l, fn, f->lora, 1, f->ldy);
    return st;
}

enum lg_status lg_norm_forward(lg_norm_t *l, const struct lg_norm_fwd *f, CUstream stream)
{
    if (!l || !f)
        return lg_fail(LG_ERR_INVALID, "lg_norm_forward: null argument");
    enum lg_status st = check_fwd(l, f);
    if (st != LG_OK)
        return st;
    /* h is written unless it would be res unchanged (no x, h = res or none) */
    const int write_h = f->x || (f->h && f->h != f->res);
    struct lg_norm_fwd_args a = {.x = (const void *)f->x, .ldx = f->ldx, .res = (const void *)f->res,
                                 .ldres = f->ldres, .h = write_h ? (void *)f->h : NULL,
                                 .ldh = write_h ? f->ldh : 0, .gamma = (const void *)f->gamma,
                                 .y = (void *)f->y, .ldy = f->ldy, .rstd = (float *)f->rstd, .n = (int)f->n,
                                 .k = (int)l->p.hidden, .eps = l->p.eps};
    if (!f->with_s)
        return lg_kernel_launch(l->k_fwd, (unsigned)f->n, 1, &a, sizeof a, stream);
    a.nlora = l->p.nlora;
    for (int i = 0; i < l->p.nlora; i++)
        a.lora[i] = lg_ops_dec_lora(&l->p.lora[i], &f->lora[i], f->seed, 0, f->y, f->ldy, l->esz);
    /* what a tile keeps in L2 between its passes: its 16 rows of h */
    unsigned grid = tile_grid(l, l->k_lfwd, l->tiles.fwd_bps, f->n, (size_t)(16 * l->p.hidden) * l->esz);
    return lg_kernel_launch(l->k_lfwd, grid, 1, &a, sizeof a, stream);
}

/* ---- backward ---- */

static enum lg_status check_bwd(const lg_norm_t *l, const struct lg_norm_bwd *b)
{
    static const char *fn = "lg_norm_backward";
    const int64_t H = l->p.hidden;
    enum lg_status st = lg_ops_dec_check_n(fn, b->n);
    if (st == LG_OK)
        st = lg_ops_dec_check_rows(fn, "dy", b->dy, b->lddy, H);
    if (st == LG_OK)
        st = lg_ops_dec_check_rows(fn, "h", b->h, b->ldh, H);
    if (st == LG_OK)
        st = lg_ops_dec_check_ptr(fn, "rstd", b->rstd, 4);
    if (st == LG_OK)
        st = lg_ops_dec_check_ptr(fn, "gamma", b->gamma, 16);
    if (st == LG_OK)
        st = lg_ops_dec_check_rows(fn, "dres", b->dres, b->lddres, H);
    if (st == LG_OK && b->accumulate != 0 && b->accumulate != 1)
        st = lg_fail(LG_ERR_INVALID, "%s: accumulate = %d must be 0 or 1", fn, b->accumulate);
    if (st == LG_OK && b->dres == b->dy && (b->accumulate || b->lddres != b->lddy))
        st = lg_fail(LG_ERR_INVALID, "%s: dres may be dy only with accumulate = 0 and the same leading dimension",
                     fn);
    if (st == LG_OK && b->dres == b->h)
        st = lg_fail(LG_ERR_INVALID, "%s: dres must not be h", fn);
    if (st == LG_OK && b->correct && l->p.nlora == 0)
        st = lg_fail(LG_ERR_INVALID, "%s: correct but the norm was built with nlora = 0", fn);
    if (st == LG_OK && b->correct)
        st = check_readers_io(l, fn, b->lora, 0, 0);
    return st;
}

enum lg_status lg_norm_backward(lg_norm_t *l, const struct lg_norm_bwd *b, CUstream stream)
{
    if (!l || !b)
        return lg_fail(LG_ERR_INVALID, "lg_norm_backward: null argument");
    enum lg_status st = check_bwd(l, b);
    if (st != LG_OK)
        return st;
    struct lg_norm_bwd_args a = {.dy = (const void *)b->dy, .lddy = b->lddy, .h = (const void *)b->h,
                                 .ldh = b->ldh, .rstd = (const float *)b->rstd, .gamma = (const void *)b->gamma,
                                 .dres = (void *)b->dres, .lddres = b->lddres, .n = (int)b->n,
                                 .k = (int)l->p.hidden, .accumulate = b->accumulate};
    if (!b->correct)
        return lg_kernel_launch(l->k_bwd, (unsigned)b->n, 1, &a, sizeof a, stream);
    a.nlora = l->p.nlora;
    for (int i = 0; i < l->p.nlora; i++)
        a.lora[i] = lg_ops_dec_lora(&l->p.lora[i], &b->lora[i], b->seed, 1, 0, 0, l->esz);
    /* kept in L2 between the passes: the tile's dy and h */
    unsigned grid = tile_grid(l, l->k_lbwd, l->tiles.bwd_bps, b->n, (size_t)(32 * l->p.hidden) * l->esz);
    return lg_kernel_launch(l->k_lbwd, grid, 1, &a, sizeof a, stream);
}
