/* mlora_ref.c: CPU reference of the multi-adapter and merged LoRA layer (see lg_ref_mlora.h). Plain loops in
 * double, one segment and one module at a time: slow and obviously right. The dropout mask is drawn exactly as
 * backend_cpu_linear.c draws it (one Philox call per 8 consecutive elements of the layer input, element
 * t·K + k with t the token's index in the microbatch, counter layer_id + module). */
#include "lg_ref_mlora.h"
#include "lg_base.h"
#include "lg_half.h"
#include "common/lg_philox.h"

#include <stdlib.h>
#include <string.h>

int lg_ref_mlora_rmax(const struct lg_ref_mlora *L)
{
    int r = 1;
    for (int i = 0; i < L->nadapters * L->nmod; i++)
        if (L->slot[i].rank > r)
            r = L->slot[i].rank;
    return r;
}

int64_t lg_ref_mlora_mtotal(const struct lg_ref_mlora *L)
{
    int64_t m = 0;
    for (int i = 0; i < L->nmod; i++)
        m += L->M[i];
    return m;
}

static int64_t moff(const struct lg_ref_mlora *L, int m)
{
    int64_t o = 0;
    for (int i = 0; i < m; i++)
        o += L->M[i];
    return o;
}

static enum lg_status check(const struct lg_ref_mlora *L, int64_t n, int nseg, const struct lg_ref_mlora_seg *seg,
                            const char *fn)
{
    if (L->nmod < 1 || L->nmod > LG_REF_MLORA_MAXMOD)
        return lg_fail(LG_ERR_INVALID, "%s: nmod = %d must be in 1..%d", fn, L->nmod, LG_REF_MLORA_MAXMOD);
    int64_t at = 0;
    for (int i = 0; i < nseg; i++) {
        for (int j = 0; j < i && seg[i].adapter >= 0; j++)
            if (seg[j].adapter == seg[i].adapter)
                return lg_fail(LG_ERR_INVALID, "%s: adapter %d has two segments (%d and %d)", fn, seg[i].adapter, j, i);
        if (seg[i].start != at || seg[i].len < 0)
            return lg_fail(LG_ERR_INVALID, "%s: segment %d [%lld, +%lld) does not start where segment %d ended (%lld)",
                           fn, i, (long long)seg[i].start, (long long)seg[i].len, i - 1, (long long)at);
        if (seg[i].adapter < -1 || seg[i].adapter >= L->nadapters)
            return lg_fail(LG_ERR_INVALID, "%s: segment %d names adapter %d of %d", fn, i, seg[i].adapter,
                           L->nadapters);
        at += seg[i].len;
    }
    if (at != n)
        return lg_fail(LG_ERR_INVALID, "%s: the segments cover %lld tokens, not n = %lld", fn, (long long)at,
                       (long long)n);
    return LG_OK;
}

/* D(X) of segment rows [t0, t0+len) for module m of slot c: kept inputs times 1/keep-rate, as doubles. */
static double *dropped(const struct lg_ref_mlora *L, const struct lg_ref_mlora_slot *c, int m, const float *x,
                       int64_t t0, int64_t len)
{
    const int64_t K = L->K;
    double *d = malloc(sizeof *d * (size_t)(len * K > 0 ? len * K : 1));
    if (!d)
        return NULL;
    uint32_t th = L->train ? lg_dropout_thresh16(c->dropout) : 0;
    double keep = th ? lg_dropout_keep_scale(th) : 1.0;
    for (int64_t t = 0; t < len; t++) {
        uint32_t bits = 0xffu;
        for (int64_t k = 0; k < K; k++) {
            uint64_t e = (uint64_t)(t0 + t) * (uint64_t)K + (uint64_t)k;
            if (th && (k == 0 || (e & 7) == 0))
                bits = lg_dropout_keep8(L->seed, L->layer_id + (uint32_t)m, e >> 3, th);
            d[t * K + k] = ((bits >> (e & 7)) & 1u) ? (double)x[(t0 + t) * K + k] * keep : 0.0;
        }
    }
    return d;
}

/* S rows of one segment and module into s ([n, nmod, rmax]), rounded as the GPU stores them. */
static enum lg_status seg_down(const struct lg_ref_mlora *L, const struct lg_ref_mlora_slot *c, int m,
                               const float *x, int64_t t0, int64_t len, int rmax, float *s)
{
    const int64_t K = L->K;
    const int r = c->rank;
    double *d = dropped(L, c, m, x, t0, len);
    if (!d)
        return lg_fail(LG_ERR_OOM, "lg_ref_mlora: out of memory");
    const double sc = (double)c->alpha / r;
    for (int64_t t = 0; t < len; t++)
        for (int j = 0; j < r; j++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++)
                acc += d[t * K + k] * c->a[(int64_t)j * K + k];
            s[((t0 + t) * L->nmod + m) * rmax + j] = lg_round_to(L->round, (float)(sc * acc));
        }
    free(d);
    return LG_OK;
}

static const struct lg_ref_mlora_slot *slot_of(const struct lg_ref_mlora *L, int adapter, int m)
{
    if (adapter < 0)
        return NULL;
    const struct lg_ref_mlora_slot *c = &L->slot[adapter * L->nmod + m];
    return c->rank > 0 ? c : NULL;
}

/* S of every segment and module ([n, nmod, rmax], zeros where no slot). */
static enum lg_status all_down(const struct lg_ref_mlora *L, int64_t n, const float *x, int nseg,
                               const struct lg_ref_mlora_seg *seg, int rmax, float *s)
{
    memset(s, 0, sizeof *s * (size_t)(n * L->nmod * rmax));
    for (int i = 0; i < nseg; i++)
        for (int m = 0; m < L->nmod; m++) {
            const struct lg_ref_mlora_slot *c = slot_of(L, seg[i].adapter, m);
            enum lg_status st = c && seg[i].len ? seg_down(L, c, m, x, seg[i].start, seg[i].len, rmax, s) : LG_OK;
            if (st != LG_OK)
                return st;
        }
    return LG_OK;
}

enum lg_status lg_ref_mlora_forward(const struct lg_ref_mlora *L, int64_t n, const float *x, int nseg,
                                    const struct lg_ref_mlora_seg *seg, double *y, float *s_out)
{
    enum lg_status st = check(L, n, nseg, seg, "lg_ref_mlora_forward");
    if (st != LG_OK)
        return st;
    const int64_t K = L->K, MT = lg_ref_mlora_mtotal(L);
    const int rmax = lg_ref_mlora_rmax(L);
    float *s = s_out ? s_out : malloc(sizeof *s * (size_t)(n * L->nmod * rmax > 0 ? n * L->nmod * rmax : 1));
    if (!s)
        return lg_fail(LG_ERR_OOM, "lg_ref_mlora_forward: out of memory");
    if ((st = all_down(L, n, x, nseg, seg, rmax, s)) != LG_OK) {
        if (!s_out)
            free(s);
        return st;
    }
    for (int i = 0; i < nseg; i++)
        for (int m = 0; m < L->nmod; m++) {
            const struct lg_ref_mlora_slot *c = slot_of(L, seg[i].adapter, m);
            const int64_t M = L->M[m], mo = moff(L, m);
            for (int64_t t = seg[i].start; t < seg[i].start + seg[i].len; t++)
                for (int64_t o = 0; o < M; o++) {
                    double acc = L->bias[m] ? L->bias[m][o] : 0.0;
                    for (int64_t k = 0; k < K; k++)
                        acc += (double)x[t * K + k] * L->w[m][o * K + k];
                    for (int j = 0; c && j < c->rank; j++)
                        acc += (double)s[(t * L->nmod + m) * rmax + j] * c->b[o * c->rank + j];
                    y[t * MT + mo + o] = acc;
                }
        }
    if (!s_out)
        free(s);
    return LG_OK;
}

/* The LoRA backward of one segment and module: dB, dS (rounded, into ds), dA, and dX's masked correction. */
static enum lg_status seg_bwd(const struct lg_ref_mlora *L, const struct lg_ref_mlora_slot *c, int m,
                              const float *x, const struct lg_ref_mlora_seg *g, const float *s, const float *dy,
                              int rmax, double *dxo, double *da, double *db, float *ds)
{
    const int64_t K = L->K, M = L->M[m], MT = lg_ref_mlora_mtotal(L), mo = moff(L, m);
    const int64_t t0 = g->start, len = g->len;
    const int r = c->rank, nm = L->nmod;
    const double sc = (double)c->alpha / r;
    for (int64_t o = 0; db && o < M; o++)
        for (int j = 0; j < r; j++) {
            double acc = 0;
            for (int64_t t = t0; t < t0 + len; t++)
                acc += (double)dy[t * MT + mo + o] * s[(t * nm + m) * rmax + j];
            db[o * r + j] = acc;
        }
    for (int64_t t = t0; t < t0 + len; t++)
        for (int j = 0; j < r; j++) {
            double acc = 0;
            for (int64_t o = 0; o < M; o++)
                acc += (double)dy[t * MT + mo + o] * c->b[o * r + j];
            ds[(t * nm + m) * rmax + j] = lg_round_to(L->round, (float)(sc * acc));
        }
    double *d = dropped(L, c, m, x, t0, len);
    if (!d)
        return lg_fail(LG_ERR_OOM, "lg_ref_mlora_backward: out of memory");
    for (int j = 0; da && j < r; j++)
        for (int64_t k = 0; k < K; k++) {
            double acc = 0;
            for (int64_t t = 0; t < len; t++)
                acc += (double)ds[((t0 + t) * nm + m) * rmax + j] * d[t * K + k];
            da[(int64_t)j * K + k] = acc;
        }
    if (dxo) {
        /* D'(dS·A): the same mask (D(X)'s zeros where X itself is non-zero) and keep scale */
        uint32_t th = L->train ? lg_dropout_thresh16(c->dropout) : 0;
        double keep = th ? lg_dropout_keep_scale(th) : 1.0;
        for (int64_t t = 0; t < len; t++) {
            uint32_t bits = 0xffu;
            for (int64_t k = 0; k < K; k++) {
                uint64_t e = (uint64_t)(t0 + t) * (uint64_t)K + (uint64_t)k;
                if (th && (k == 0 || (e & 7) == 0))
                    bits = lg_dropout_keep8(L->seed, L->layer_id + (uint32_t)m, e >> 3, th);
                if (!((bits >> (e & 7)) & 1u))
                    continue;
                double acc = 0;
                for (int j = 0; j < r; j++)
                    acc += (double)ds[((t0 + t) * nm + m) * rmax + j] * c->a[(int64_t)j * K + k];
                dxo[(t0 + t) * K + k] += acc * keep;
            }
        }
    }
    free(d);
    return LG_OK;
}

enum lg_status lg_ref_mlora_backward(const struct lg_ref_mlora *L, int64_t n, const float *x, int nseg,
                                     const struct lg_ref_mlora_seg *seg, const float *s_in, const float *dy,
                                     double *dx, double *const *da, double *const *db, float *ds_out)
{
    enum lg_status st = check(L, n, nseg, seg, "lg_ref_mlora_backward");
    if (st != LG_OK)
        return st;
    const int64_t K = L->K, MT = lg_ref_mlora_mtotal(L);
    const int rmax = lg_ref_mlora_rmax(L), nm = L->nmod;
    const size_t ns = (size_t)(n * nm * rmax > 0 ? n * nm * rmax : 1);
    float *s = s_in ? (float *)s_in : malloc(sizeof *s * ns);
    float *ds = ds_out ? ds_out : malloc(sizeof *ds * ns);
    if (!s || !ds)
        st = lg_fail(LG_ERR_OOM, "lg_ref_mlora_backward: out of memory");
    if (st == LG_OK && !s_in)
        st = all_down(L, n, x, nseg, seg, rmax, s);
    if (st == LG_OK)
        memset(ds, 0, sizeof *ds * ns);
    /* dX = Σ_m dY_m·W_m, then each segment's corrections */
    for (int64_t t = 0; st == LG_OK && dx && t < n; t++)
        for (int64_t k = 0; k < K; k++) {
            double acc = 0;
            for (int m = 0; m < nm; m++) {
                const int64_t M = L->M[m], mo = moff(L, m);
                for (int64_t o = 0; o < M; o++)
                    acc += (double)dy[t * MT + mo + o] * L->w[m][o * K + k];
            }
            dx[t * K + k] = acc;
        }
    for (int i = 0; st == LG_OK && i < nseg; i++)
        for (int m = 0; st == LG_OK && m < nm; m++) {
            const struct lg_ref_mlora_slot *c = slot_of(L, seg[i].adapter, m);
            if (!c || !seg[i].len)
                continue;
            const int si = seg[i].adapter * nm + m;
            st = seg_bwd(L, c, m, x, &seg[i], s, dy, rmax, dx, da ? da[si] : NULL, db ? db[si] : NULL, ds);
        }
    if (!s_in)
        free(s);
    if (!ds_out)
        free(ds);
    return st;
}
