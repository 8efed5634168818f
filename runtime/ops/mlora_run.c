/* mlora_run.c: FusedMultiLoRA's forward and backward (lg_mlora.h): argument checks, the per-call facts taken
 * from the segment table's host copy (which adapters are present, whether any dropout applies, how wide the
 * extended K is), grid sizes, the workspace, and the launches in order (see mlora.c's header). Every check
 * comes before the first launch, so a bad call touches no output. */
#include "mlora_internal.h"
#include "lg_base.h"
#include "lg_gpu.h"

#include <string.h>

static size_t esz(const lg_mlora_t *l) { return lg_dtype_size(l->dtype); }
static int cdiv(int64_t a, int64_t b) { return (int)((a + b - 1) / b); }
static void tile(int *field, int tuned)
{
    if (tuned)
        *field = tuned;
}

/* The kernel for c: resolved once per layer and configuration, then a table lookup. */
static enum lg_status kernel(lg_mlora_t *l, struct lg_kernel_cfg c, const struct lg_kernel **k)
{
    for (int i = 0; i < l->nkc; i++)
        if (!memcmp(&l->kc[i].c, &c, sizeof c)) {
            *k = l->kc[i].k;
            return LG_OK;
        }
    enum lg_status st = lg_ctx_kernel(l->ctx, &c, k);
    if (st == LG_OK && l->nkc < LG_MLORA_KCACHE)
        l->kc[l->nkc].c = c, l->kc[l->nkc++].k = *k;
    return st;
}

static struct lg_kernel_cfg cfg(const lg_mlora_t *l, enum lg_kernel_op op)
{
    struct lg_kernel_cfg c;
    memset(&c, 0, sizeof c);
    c.op = op, c.dtype = l->dtype, c.rank = op == LG_OP_MLORA_REDUCE ? 0 : l->R;
    if (op == LG_OP_MLORA_DOWN || op == LG_OP_MLORA_DA)
        c.nmod = l->nmod;
    return c;
}

/* What this call's table means for this layer. */
struct facts {
    int adapted;  /* some present adapter adapts some module */
    int drop;     /* some present slot has dropout */
    int ext_span; /* strategy (a): columns up to the end of the last present adapter's slots */
};

static struct facts facts_of(const lg_mlora_t *l, const lg_mlora_segments_t *s, int eval)
{
    struct facts f = {0};
    for (int a = 0; a < l->nad && a < s->nadapters; a++) {
        if (!s->present[a])
            continue;
        for (int m = 0; m < l->nmod; m++) {
            const struct lg_mlora_slot *sl = &l->hs[a * l->nmod + m];
            if (!sl->rank)
                continue;
            f.adapted = 1;
            f.drop |= !eval && sl->thresh16;
            f.ext_span = sl->col + sl->rp > f.ext_span ? sl->col + sl->rp : f.ext_span;
        }
    }
    return f;
}

static struct lg_mlora_layer layer_view(const lg_mlora_t *l, int eval)
{
    struct lg_mlora_layer L;
    memset(&L, 0, sizeof L);
    L.slot = (const struct lg_mlora_slot *)(l->slots + (eval ? sizeof *l->hs * (size_t)(l->nad * l->nmod) : 0));
    L.ldw = l->ldw, L.k = (int)l->K, L.nmod = l->nmod;
    for (int m = 0; m < l->nmod; m++)
        L.moff[m] = (int)l->moff[m], L.mlen[m] = (int)l->M[m], L.layer[m] = l->layer_id + (uint32_t)m;
    return L;
}

static enum lg_status check_buf(const char *fn, const char *name, CUdeviceptr p, int64_t ld, int64_t min_ld)
{
    if (!p)
        return lg_fail(LG_ERR_INVALID, "%s: %s is NULL", fn, name);
    if (ld < min_ld)
        return lg_fail(LG_ERR_INVALID, "%s: ld of %s = %lld is below %lld", fn, name, (long long)ld,
                       (long long)min_ld);
    if (ld % 8)
        return lg_fail(LG_ERR_INVALID, "%s: ld of %s = %lld is not a multiple of 8 (16-byte rows)", fn, name,
                       (long long)ld);
    if (p % 16)
        return lg_fail(LG_ERR_INVALID, "%s: %s is not 16-byte aligned", fn, name);
    return LG_OK;
}

static enum lg_status check_table(const lg_mlora_t *l, const lg_mlora_segments_t *s, int64_t n, const char *fn)
{
    if (!s || !s->n)
        return lg_fail(LG_ERR_INVALID, "%s: no segment table (lg_mlora_segments_set first)", fn);
    if (s->n != n)
        return lg_fail(LG_ERR_INVALID, "%s: the segment table holds %lld tokens but n = %lld", fn, (long long)s->n,
                       (long long)n);
    if (s->nadapters > l->nad)
        for (int a = l->nad; a < s->nadapters; a++)
            if (s->present[a])
                return lg_fail(LG_ERR_INVALID, "%s: the segment table names adapter %d; the layer has %d", fn, a,
                               l->nad);
    return LG_OK;
}

/* Where S lives: X's tail (ext: K + slot.col; compact: K + slot.off) or the caller's buffer. */
static enum lg_status s_place(const lg_mlora_t *l, const char *fn, int ext, CUdeviceptr x, int64_t ldx,
                              CUdeviceptr s, int64_t lds, CUdeviceptr *sp, int64_t *ldsp)
{
    if (ext) {
        if (ldx < l->K + l->ext_cols)
            return lg_fail(LG_ERR_INVALID, "%s: strategy (a) needs ldx >= K + %d (lg_mlora_ext_ld), got %lld", fn,
                           l->ext_cols, (long long)ldx);
        *sp = x + (CUdeviceptr)(l->K * (int64_t)esz(l)), *ldsp = ldx;
        return LG_OK;
    }
    if (ldx >= l->K + l->wmax) {
        *sp = x + (CUdeviceptr)(l->K * (int64_t)esz(l)), *ldsp = ldx;
        return LG_OK;
    }
    *sp = s, *ldsp = lds;
    return check_buf(fn, "s (needed when ldx < K + lg_mlora_compact_cols)", s, lds, l->wmax);
}

/* The frozen GEMM of the forward (fwd: Y = X·Wᵀ over every module's columns) or the backward's dX = Σ_m dY_m·W_m,
 * as one GEMM over the modules side by side, or with tiles.split one per module (Y's column block m; dX
 * accumulating module after module), which cuBLASLt sometimes runs faster than the wide one (merged gate/up:
 * docs/perf.md); the tuner picks. g is the merged GEMM. */
static enum lg_status frozen_gemm(const lg_mlora_t *l, struct lg_gemm *g, int fwd, CUstream stream)
{
    if (!l->tiles.split || l->nmod < 2)
        return lg_ops_mlora_gemm(l, g, stream);
    const size_t es = esz(l);
    enum lg_status st = LG_OK;
    for (int m = 0; st == LG_OK && m < l->nmod; m++) {
        struct lg_gemm p = *g;
        const size_t wrow = (size_t)l->moff[m] * (size_t)l->ldw * es, col = (size_t)l->moff[m] * es;
        p.b = (const char *)g->b + wrow;
        if (fwd) { /* Y[:, moff .. moff + M) = X·W_mᵀ (+ bias_m) */
            p.n = l->M[m];
            p.c = (char *)g->c + col;
            p.bias = g->bias ? (const char *)g->bias + col : NULL;
        } else { /* dX (+)= dY[:, moff .. moff + M)·W_m */
            p.k = l->M[m];
            p.a = (const char *)g->a + col;
            p.beta = m ? 1.f : g->beta;
        }
        st = lg_ops_mlora_gemm(l, &p, stream);
    }
    return st;
}

static enum lg_mlora_strategy resolve(const lg_mlora_t *l, const lg_mlora_segments_t *s, enum lg_mlora_strategy st,
                                      int64_t ldx)
{
    return st == LG_MLORA_AUTO ? lg_mlora_pick(l, s, ldx) : st;
}

/* ---- forward ---- */

static int log2i(int v)
{
    int g = 0;
    while ((1 << g) < v)
        g++;
    return g;
}

enum lg_status lg_mlora_forward(lg_mlora_t *l, const struct lg_mlora_fwd *f, CUstream stream)
{
    static const char *fn = "lg_mlora_forward";
    if (!l || !f)
        return lg_fail(LG_ERR_INVALID, "%s: null argument", fn);
    if (f->strategy < LG_MLORA_AUTO || f->strategy > LG_MLORA_EXPAND)
        return lg_fail(LG_ERR_INVALID, "%s: unknown strategy %d", fn, (int)f->strategy);
    enum lg_status st = check_table(l, f->seg, f->n, fn);
    if (st == LG_OK)
        lg_ops_mlora_consult(l, f->n);
    if (st == LG_OK)
        st = check_buf(fn, "x", f->x, f->ldx, l->K);
    if (st == LG_OK)
        st = check_buf(fn, "y", f->y, f->ldy, l->MT);
    const int ext = resolve(l, f->seg, f->strategy, f->ldx) == LG_MLORA_EXT_K;
    CUdeviceptr s = 0;
    int64_t lds = 0;
    if (st == LG_OK)
        st = s_place(l, fn, ext, f->x, f->ldx, f->s, f->lds, &s, &lds);
    if (st != LG_OK)
        return st;
    const lg_mlora_segments_t *sg = f->seg;
    const struct facts fa = facts_of(l, sg, f->eval);
    const struct lg_mlora_segs gv = lg_mlora_segs_view(sg);
    const struct lg_mlora_layer L = layer_view(l, f->eval);

    if (fa.adapted) {
        struct lg_kernel_cfg c = cfg(l, LG_OP_MLORA_DOWN);
        c.drop = fa.drop;
        tile(&c.wm, l->tiles.down_wm), tile(&c.wk, l->tiles.down_wk), tile(&c.mt, l->tiles.down_mt);
        tile(&c.u, l->tiles.down_u), tile(&c.minb, l->tiles.down_minb);
        const struct lg_kernel *k;
        if ((st = kernel(l, c, &k)) != LG_OK)
            return st;
        struct lg_mlora_down_args a = {.L = L, .g = gv, .x = (const void *)f->x, .ldx = f->ldx, .s = (void *)s,
                                       .lds = lds, .ext = ext, .ext_cols = ext ? fa.ext_span : 0, .seed = f->seed};
        const int gi = log2i(k->cfg.mt * k->cfg.wm);
        if ((st = lg_kernel_launch(k, (unsigned)sg->total[gi], 1, &a, sizeof a, stream)) != LG_OK)
            return st;
    }
    struct lg_gemm g = {.dtype = l->dtype, .m = f->n, .n = l->MT, .k = l->K + (ext ? fa.ext_span : 0),
                        .trans_b = 1, .a = (const void *)f->x, .lda = f->ldx, .b = (const void *)l->w,
                        .ldb = l->ldw, .c = (void *)f->y, .ldc = f->ldy, .alpha = 1.f, .beta = 0.f,
                        .bias = (const void *)l->bias, .algo_index = l->tiles.fwd_algo};
    if ((st = ext ? lg_ops_mlora_gemm(l, &g, stream) : frozen_gemm(l, &g, 1, stream)) != LG_OK || ext ||
        !fa.adapted)
        return st;
    /* (b): Y += S·Bᵀ per segment */
    struct lg_kernel_cfg c = cfg(l, LG_OP_MLORA_EXPAND);
    tile(&c.nct, l->tiles.expand_nct);
    const struct lg_kernel *k;
    if ((st = kernel(l, c, &k)) != LG_OK)
        return st;
    int cols = 0;
    for (int m = 0; m < l->nmod; m++)
        cols += cdiv(l->M[m], 64 * k->cfg.nct);
    struct lg_mlora_expand_args a = {.L = L, .g = gv, .s = (const void *)s, .lds = lds, .y = (void *)f->y,
                                     .ldy = f->ldy};
    return lg_kernel_launch(k, (unsigned)cols, (unsigned)sg->total[2], &a, sizeof a, stream);
}

/* ---- backward ---- */

/* The group height (gi, a multiple of 64 tokens) for a pass with `cols` column blocks: about one wave of
 * `slots` resident blocks in all. */
static int group_gi(const lg_mlora_segments_t *s, int cols, int slots)
{
    int want = slots / (cols > 0 ? cols : 1);
    if (want < 1)
        want = 1;
    int tpb = cdiv(s->total[2], want), gi = 2;
    while ((1 << (gi - 2)) < tpb && gi < LG_MLORA_NG - 1)
        gi++;
    return gi;
}

static enum lg_status ensure_ws(lg_mlora_t *l, size_t bytes, int64_t n, CUstream stream)
{
    struct lg_mlora_ws *w = l->ws;
    if (bytes <= w->size)
        return LG_OK;
    if (w->p) {
        cuStreamSynchronize(stream); /* earlier launches (of any layer sharing it) may still read it */
        cuMemFree(w->p);
        w->p = 0, w->size = 0;
    }
    bytes += bytes / 4;
    enum lg_status st = lg_cu_check(cuMemAlloc(&w->p, bytes), "FusedMultiLoRA workspace");
    if (st == LG_OK)
        w->size = bytes;
    else
        st = lg_fail_wrap(st, "FusedMultiLoRA backward (layer %u, %lld tokens) asked for a %.1f MiB workspace: ",
                          l->layer_id, (long long)n, (double)bytes / (1u << 20));
    return st;
}

static size_t al256(size_t b) { return (b + 255) & ~(size_t)255; }

static enum lg_status check_bwd(const lg_mlora_t *l, const struct lg_mlora_bwd *b)
{
    static const char *fn = "lg_mlora_backward";
    if (b->strategy < LG_MLORA_AUTO || b->strategy > LG_MLORA_EXPAND)
        return lg_fail(LG_ERR_INVALID, "%s: unknown strategy %d", fn, (int)b->strategy);
    enum lg_status st = check_table(l, b->seg, b->n, fn);
    if (st == LG_OK)
        st = check_buf(fn, "x", b->x, b->ldx, l->K);
    if (st == LG_OK)
        st = check_buf(fn, "dy", b->dy, b->lddy, l->MT);
    if (st == LG_OK && b->dx)
        st = check_buf(fn, "dx", b->dx, b->lddx, l->K);
    if (st == LG_OK && !(b->grad_beta == 0.f || b->grad_beta == 1.f))
        st = lg_fail(LG_ERR_INVALID, "%s: grad_beta = %g must be 0 or 1", fn, b->grad_beta);
    return st;
}

struct bwd_plan {
    const struct lg_kernel *dy, *da, *red_dsdb, *red_da;
    int dy_cols, gi_dy, gi_da, cb0[LG_MLORA_MAX_MODULES + 1];
    size_t ds_part, db_part, da_part, ds_bytes;
};

static enum lg_status plan_bwd(lg_mlora_t *l, const lg_mlora_segments_t *sg, const struct facts *fa, int fuse,
                               int ds_apart, struct bwd_plan *p)
{
    struct lg_kernel_cfg c = cfg(l, LG_OP_MLORA_DY);
    tile(&c.nct, l->tiles.dy_nct), tile(&c.st, l->tiles.dy_st), tile(&c.minb, l->tiles.dy_minb);
    enum lg_status st = kernel(l, c, &p->dy);
    c = cfg(l, LG_OP_MLORA_DA);
    c.fuse = fuse, c.drop = fa->drop;
    tile(&c.minb, l->tiles.da_minb);
    if (st == LG_OK)
        st = kernel(l, c, &p->da);
    c = cfg(l, LG_OP_MLORA_REDUCE);
    c.out_half = 1;
    if (st == LG_OK)
        st = kernel(l, c, &p->red_dsdb);
    c.out_half = 0;
    if (st == LG_OK)
        st = kernel(l, c, &p->red_da);
    if (st != LG_OK)
        return st;
    const int sms = lg_ctx_sm_count(l->ctx);
    p->dy_cols = 0;
    for (int m = 0; m < l->nmod; m++) {
        p->cb0[m] = p->dy_cols;
        p->dy_cols += cdiv(l->M[m], 64 * p->dy->cfg.nct);
    }
    for (int m = l->nmod; m <= LG_MLORA_MAX_MODULES; m++)
        p->cb0[m] = p->dy_cols;
    p->gi_dy = group_gi(sg, p->dy_cols, sms * p->dy->occupancy);
    p->gi_da = group_gi(sg, (int)(l->K / 64), sms * p->da->occupancy);
    const size_t n = (size_t)sg->n, R = (size_t)l->R;
    p->ds_part = al256((size_t)p->dy_cols * n * R * 4);
    p->db_part = al256((size_t)sg->total[p->gi_dy] * (size_t)l->MT * R * 4);
    p->da_part = al256((size_t)sg->total[p->gi_da] * (size_t)l->nmod * R * (size_t)l->K * 4);
    p->ds_bytes = ds_apart ? al256(n * (size_t)l->wmax * esz(l)) : 0;
    return LG_OK;
}

enum lg_status lg_mlora_backward(lg_mlora_t *l, const struct lg_mlora_bwd *b, CUstream stream)
{
    static const char *fn = "lg_mlora_backward";
    if (!l || !b)
        return lg_fail(LG_ERR_INVALID, "%s: null argument", fn);
    enum lg_status st = check_bwd(l, b);
    if (st == LG_OK)
        lg_ops_mlora_consult(l, b->n);
    const int ext = st == LG_OK && resolve(l, b->seg, b->strategy, b->ldx) == LG_MLORA_EXT_K;
    CUdeviceptr s = 0;
    int64_t lds = 0;
    if (st == LG_OK)
        st = s_place(l, fn, ext, b->x, b->ldx, b->s, b->lds, &s, &lds);
    if (st != LG_OK)
        return st;
    const lg_mlora_segments_t *sg = b->seg;
    const struct facts fa = facts_of(l, sg, 0);
    const int ds_apart = b->lddy < l->MT + l->wmax;
    struct bwd_plan p;
    if (fa.adapted && (st = plan_bwd(l, sg, &fa, b->dx != 0, ds_apart, &p)) != LG_OK)
        return st;
    if (fa.adapted && (st = ensure_ws(l, p.ds_part + p.db_part + p.da_part + p.ds_bytes, b->n, stream)) != LG_OK)
        return st;
    const struct lg_mlora_segs gv = lg_mlora_segs_view(sg);
    const struct lg_mlora_layer L = layer_view(l, 0);
    const CUdeviceptr ws = l->ws->p;
    float *ds_part = (float *)ws, *db_part = (float *)(ws + p.ds_part);
    float *da_part = (float *)(ws + p.ds_part + p.db_part);
    CUdeviceptr ds = 0;
    int64_t ldds = 0;
    if (fa.adapted) {
        l->ds_buf = ds_apart ? ws + p.ds_part + p.db_part + p.da_part : 0;
        l->ds_ld = ds_apart ? l->wmax : 0;
        ds = ds_apart ? l->ds_buf : b->dy + (CUdeviceptr)(l->MT * (int64_t)esz(l));
        ldds = ds_apart ? l->wmax : b->lddy;
        /* 1. one pass over dY: partial dS per column block, partial dB per group */
        struct lg_mlora_dy_args ay = {.L = L, .g = gv, .dy = (const void *)b->dy, .lddy = b->lddy,
                                      .s = (const void *)s, .lds = lds, .ext = ext, .gi = p.gi_dy,
                                      .m_total = (int)l->MT, .ds_part = ds_part, .db_part = db_part};
        if ((st = lg_kernel_launch(p.dy, (unsigned)p.dy_cols, (unsigned)sg->total[p.gi_dy], &ay, sizeof ay,
                                   stream)) != LG_OK)
            return st;
        /* 2. dS (dtype, compact) for every module, and dB of every present slot, in one launch */
        struct lg_mlora_reduce_args rr = {.L = L, .g = gv, .part = ds_part, .part_db = db_part, .ds = (void *)ds,
                                          .ldds = ldds, .ext = 0, .gi = p.gi_dy, .r = l->R, .m_total = (int)l->MT,
                                          .beta = b->grad_beta};
        memcpy(rr.cb0, p.cb0, sizeof rr.cb0);
        int gx = cdiv((int64_t)sg->n * l->R / 4, p.red_dsdb->threads);
        int gx2 = cdiv(l->Mmax * l->rmax / 4, p.red_dsdb->threads);
        if ((st = lg_kernel_launch(p.red_dsdb, (unsigned)(gx > gx2 ? gx : gx2),
                                   (unsigned)(l->nmod + sg->nseg * l->nmod), &rr, sizeof rr, stream)) != LG_OK)
            return st;
    }
    /* 3. dX = Σ_m dY_m·W_m: one GEMM over the modules side by side */
    if (b->dx) {
        struct lg_gemm gx = {.dtype = l->dtype, .m = b->n, .n = l->K, .k = l->MT, .a = (const void *)b->dy,
                             .lda = b->lddy, .b = (const void *)l->w, .ldb = l->ldw, .c = (void *)b->dx,
                             .ldc = b->lddx, .alpha = 1.f, .beta = 0.f, .algo_index = l->tiles.dx_algo};
        if ((st = frozen_gemm(l, &gx, 0, stream)) != LG_OK)
            return st;
    }
    if (!fa.adapted)
        return LG_OK;
    /* 4. one pass over X: partial dA of every module, and their masked dX corrections */
    struct lg_mlora_da_args aa = {.L = L, .g = gv, .x = (const void *)b->x, .ldx = b->ldx, .ds = (const void *)ds,
                                  .ldds = ldds, .ext = 0, .gi = p.gi_da, .dx = (void *)b->dx, .lddx = b->lddx,
                                  .da_part = da_part, .seed = b->seed};
    if ((st = lg_kernel_launch(p.da, (unsigned)(l->K / 64), (unsigned)sg->total[p.gi_da], &aa, sizeof aa,
                               stream)) != LG_OK)
        return st;
    /* 5. dA of every present slot */
    struct lg_mlora_reduce_args ra = {.L = L, .g = gv, .part = da_part, .gi = p.gi_da, .r = l->R,
                                      .m_total = (int)l->MT, .beta = b->grad_beta};
    memcpy(ra.cb0, p.cb0, sizeof ra.cb0);
    return lg_kernel_launch(p.red_da, (unsigned)cdiv((int64_t)l->rmax * l->K / 4, p.red_da->threads),
                            (unsigned)(sg->nseg * l->nmod), &ra, sizeof ra, stream);
}
