/* backend_cpu_linear.c: LoRA linear layers on the CPU backend, in fp32 with double accumulation.
 *
 * Per output i and per segment of tokens [t0, t0+len) that belongs to adapter a (slot rank r > 0):
 *   S = s·D(X)·Aᵀ,  Y += S·Bᵀ;   backward:  dB += dYᵀ·S,  dS = s·dY·B,  dA += dSᵀ·D(X),  dX += D'(dS·A)
 * with s = alpha / r and D the dropout mask of the kernels themselves (templates/common/lg_philox.h) on
 * element e = t·K + k of the microbatch's input, counter layer_id + i: the same masks the GPU draws, and a
 * different mask per module. S is recomputed in the backward (it costs 2·len·K·r, small beside the frozen
 * GEMMs), so nothing is kept between the calls. */
#include "backend_cpu.h"
#include "common/lg_philox.h"

#include <stdlib.h>
#include <string.h>

#define F(a) ((float *)(uintptr_t)(a))
#define CF(a) ((const float *)(uintptr_t)(a))

struct cpu_lora {
    int rank;
    float alpha, dropout;
    float *a, *b, *da, *db; /* A [r, in], B [out, r] and their gradients */
};

struct lg_lora_linear {
    struct lg_lora_linear_desc d;
    float *w[LG_LINEAR_MAX_OUT], *bias[LG_LINEAR_MAX_OUT];
    struct cpu_lora *lora; /* [nadapters * nout] */
};

void lg_cpu_linear_free(lg_backend_t *be, lg_lora_linear_t *l)
{
    if (!l)
        return;
    for (int i = 0; i < LG_LINEAR_MAX_OUT; i++) {
        free(l->w[i]);
        free(l->bias[i]);
    }
    for (int i = 0; l->lora && i < l->d.nadapters * l->d.nout; i++) {
        free(l->lora[i].a);
        free(l->lora[i].b);
        free(l->lora[i].da);
        free(l->lora[i].db);
    }
    free(l->lora);
    free(l);
}

static float *dup_floats(const float *src, int64_t n)
{
    float *p = malloc((size_t)n * sizeof *p);
    if (p && src)
        memcpy(p, src, (size_t)n * sizeof *p);
    return p;
}

enum lg_status lg_cpu_linear_init(lg_backend_t *be, const struct lg_lora_linear_desc *d, const float *const *w,
                                  const float *const *bias, lg_lora_linear_t **out)
{
    if (d->nout < 1 || d->nout > LG_LINEAR_MAX_OUT || d->in < 1 || d->nadapters < 0)
        return lg_fail(LG_ERR_INVALID, "cpu linear: bad description (%d outputs, %lld inputs)", d->nout,
                       (long long)d->in);
    lg_lora_linear_t *l = calloc(1, sizeof *l);
    if (!l)
        return lg_fail(LG_ERR_OOM, "cpu linear: out of memory");
    l->d = *d;
    l->d.slots = NULL;
    l->lora = calloc((size_t)(d->nadapters * d->nout) + 1, sizeof *l->lora);
    int ok = l->lora != NULL;
    for (int i = 0; ok && i < d->nout; i++) {
        ok = (l->w[i] = dup_floats(w[i], d->out[i] * d->in)) != NULL;
        if (ok && d->has_bias)
            ok = (l->bias[i] = dup_floats(bias[i], d->out[i])) != NULL;
    }
    for (int a = 0; ok && a < d->nadapters; a++)
        for (int i = 0; ok && i < d->nout; i++) {
            const struct lg_lora_slot *s = &d->slots[a * d->nout + i];
            struct cpu_lora *c = &l->lora[a * d->nout + i];
            c->rank = s->rank;
            c->alpha = s->alpha;
            c->dropout = s->dropout;
            if (!s->rank)
                continue;
            int64_t na = (int64_t)s->rank * d->in, nb = d->out[i] * s->rank;
            c->a = calloc((size_t)na, sizeof(float));
            c->b = calloc((size_t)nb, sizeof(float));
            c->da = calloc((size_t)na, sizeof(float));
            c->db = calloc((size_t)nb, sizeof(float));
            ok = c->a && c->b && c->da && c->db;
        }
    if (!ok) {
        lg_cpu_linear_free(be, l);
        return lg_fail(LG_ERR_OOM, "cpu linear: out of memory");
    }
    *out = l;
    return LG_OK;
}

enum lg_status lg_cpu_linear_params(lg_backend_t *be, lg_lora_linear_t *l, int adapter, int out,
                                    struct lg_lora_params *p)
{
    if (adapter < 0 || adapter >= l->d.nadapters || out < 0 || out >= l->d.nout)
        return lg_fail(LG_ERR_INVALID, "cpu linear: adapter %d, output %d out of range", adapter, out);
    const struct cpu_lora *c = &l->lora[adapter * l->d.nout + out];
    *p = (struct lg_lora_params){.rank = c->rank, .in = l->d.in, .out = l->d.out[out],
                                 .a = (lg_addr)(uintptr_t)c->a, .b = (lg_addr)(uintptr_t)c->b,
                                 .da = (lg_addr)(uintptr_t)c->da, .db = (lg_addr)(uintptr_t)c->db};
    return LG_OK;
}

enum lg_status lg_cpu_linear_sync(lg_backend_t *be, lg_lora_linear_t *l, int adapter) { return LG_OK; }

/* D(X) of one segment as doubles [len, K]: the kept inputs scaled by 1/keep-rate (or X itself at p = 0). */
static double *dropped(const struct lg_mb *mb, const float *x, int64_t K, int64_t t0, int64_t len,
                       const struct cpu_lora *c, uint32_t layer)
{
    double *d = malloc((size_t)(len * K) * sizeof *d);
    if (!d)
        return NULL;
    uint32_t th = mb->train ? lg_dropout_thresh16(c->dropout) : 0;
    double keep = th ? lg_dropout_keep_scale(th) : 1.0;
    for (int64_t t = 0; t < len; t++) {
        uint32_t bits = 0xffu;
        for (int64_t k = 0; k < K; k++) {
            uint64_t e = (uint64_t)(t0 + t) * (uint64_t)K + (uint64_t)k;
            if (th && (k == 0 || (e & 7) == 0)) /* one Philox draw serves eight consecutive elements */
                bits = lg_dropout_keep8(mb->seed, layer, e >> 3, th);
            int kept = (bits >> (e & 7)) & 1u;
            d[t * K + k] = kept ? (double)x[(t0 + t) * K + k] * keep : 0.0;
        }
    }
    return d;
}

/* S [len, r] = s · D(X)·Aᵀ for the segment. */
static void down(const double *dx, int64_t len, int64_t K, const struct cpu_lora *c, double *S)
{
    double sc = (double)c->alpha / c->rank;
    for (int64_t t = 0; t < len; t++)
        for (int j = 0; j < c->rank; j++) {
            const float *a = c->a + (int64_t)j * K;
            double acc = 0;
            for (int64_t k = 0; k < K; k++)
                acc += dx[t * K + k] * a[k];
            S[t * c->rank + j] = sc * acc;
        }
}

static enum lg_status lora_fwd(const lg_lora_linear_t *l, int i, const struct cpu_lora *c, const struct lg_mb *mb,
                               const struct lg_seg *g, const float *x, float *y)
{
    int64_t K = l->d.in, M = l->d.out[i], r = c->rank;
    double *dx = dropped(mb, x, K, g->start, g->len, c, l->d.layer_id + (uint32_t)i);
    double *S = malloc((size_t)(g->len * r) * sizeof *S);
    if (!dx || !S) {
        free(dx);
        free(S);
        return lg_fail(LG_ERR_OOM, "cpu linear: out of memory");
    }
    down(dx, g->len, K, c, S);
    for (int64_t t = 0; t < g->len; t++)
        for (int64_t o = 0; o < M; o++) {
            double acc = 0;
            for (int j = 0; j < r; j++)
                acc += S[t * r + j] * c->b[o * r + j];
            y[(g->start + t) * M + o] += (float)acc;
        }
    free(dx);
    free(S);
    return LG_OK;
}

/* Each output computed packed, then put into its columns of y. */
/* Eight spare columns past in: the CUDA layer keeps its S there, and asking for them here runs every caller's
 * strided path (the norms' row stride, the arena's wider rows) in the CPU backend's tests too. */
int64_t lg_cpu_linear_in_ld(lg_backend_t *be, const lg_lora_linear_t *l)
{
    (void)be;
    return l->d.in + 8;
}

/* x rows of stride ldx as a packed copy (NULL: out of memory); *own set when it is a copy to free. */
static const float *packed_x(const lg_lora_linear_t *l, int64_t n, lg_addr x, int64_t ldx, float **own)
{
    *own = NULL;
    if (!ldx || ldx == l->d.in)
        return CF(x);
    return *own = lg_cpu_pack(CF(x), ldx, n, l->d.in);
}

enum lg_status lg_cpu_linear_fwd(lg_backend_t *be, lg_lora_linear_t *l, const struct lg_mb *mb, lg_addr xa,
                                 int64_t ldx, lg_addr y, int64_t ldy)
{
    float *own;
    const float *xp = packed_x(l, mb->n, xa, ldx, &own);
    if (!xp)
        return lg_fail(LG_ERR_OOM, "cpu linear: out of memory");
    const lg_addr x = (lg_addr)(uintptr_t)xp;
    enum lg_status st = LG_OK;
    for (int i = 0, col = 0; st == LG_OK && i < l->d.nout; col += (int)l->d.out[i], i++) {
        int64_t M = l->d.out[i];
        float *yi = malloc((size_t)(mb->n * M > 0 ? mb->n * M : 1) * sizeof *yi);
        if (!yi) {
            free(own);
            return lg_fail(LG_ERR_OOM, "cpu linear: out of memory");
        }
        struct lg_ref_linear L = {.K = l->d.in, .M = M, .w = l->w[i], .bias = l->bias[i]};
        lg_ref_linear_forward(&L, mb->n, CF(x), yi);
        for (int s = 0; st == LG_OK && s < mb->nseg; s++) {
            const struct lg_seg *g = &mb->seg[s];
            if (g->adapter < 0 || g->len == 0)
                continue;
            const struct cpu_lora *c = &l->lora[g->adapter * l->d.nout + i];
            if (c->rank)
                st = lora_fwd(l, i, c, mb, g, CF(x), yi);
        }
        lg_cpu_unpack(F(y) + col, ldy, yi, mb->n, M);
        free(yi);
    }
    free(own);
    return st;
}

/* The LoRA backward of one segment: dB, dA accumulate; dx (NULL: skipped) gets the masked correction. */
static enum lg_status lora_bwd(const lg_lora_linear_t *l, int i, struct cpu_lora *c, const struct lg_mb *mb,
                               const struct lg_seg *g, const float *x, const float *dy, float *dxo)
{
    int64_t K = l->d.in, M = l->d.out[i], r = c->rank, t0 = g->start, len = g->len;
    uint32_t layer = l->d.layer_id + (uint32_t)i;
    double sc = (double)c->alpha / c->rank;
    double *dx = dropped(mb, x, K, t0, len, c, layer);
    double *S = malloc((size_t)(len * r) * sizeof *S), *dS = malloc((size_t)(len * r) * sizeof *dS);
    if (!dx || !S || !dS) {
        free(dx);
        free(S);
        free(dS);
        return lg_fail(LG_ERR_OOM, "cpu linear: out of memory");
    }
    down(dx, len, K, c, S);
    for (int64_t o = 0; o < M; o++)
        for (int j = 0; j < r; j++) {
            double acc = 0;
            for (int64_t t = 0; t < len; t++)
                acc += (double)dy[(t0 + t) * M + o] * S[t * r + j];
            c->db[o * r + j] += (float)acc;
        }
    for (int64_t t = 0; t < len; t++)
        for (int j = 0; j < r; j++) {
            double acc = 0;
            for (int64_t o = 0; o < M; o++)
                acc += (double)dy[(t0 + t) * M + o] * c->b[o * r + j];
            dS[t * r + j] = sc * acc;
        }
    for (int j = 0; j < r; j++)
        for (int64_t k = 0; k < K; k++) {
            double acc = 0;
            for (int64_t t = 0; t < len; t++)
                acc += dS[t * r + j] * dx[t * K + k];
            c->da[(int64_t)j * K + k] += (float)acc;
        }
    if (dxo) {
        /* D'(dS·A): the same mask and keep scale; dx[t,k] is D(X)'s value, so its zero pattern is the mask */
        uint32_t th = mb->train ? lg_dropout_thresh16(c->dropout) : 0;
        double keep = th ? lg_dropout_keep_scale(th) : 1.0;
        for (int64_t t = 0; t < len; t++) {
            uint32_t bits = 0xffu;
            for (int64_t k = 0; k < K; k++) {
                uint64_t e = (uint64_t)(t0 + t) * (uint64_t)K + (uint64_t)k;
                if (th && (k == 0 || (e & 7) == 0))
                    bits = lg_dropout_keep8(mb->seed, layer, e >> 3, th);
                if (!((bits >> (e & 7)) & 1u))
                    continue;
                double acc = 0;
                for (int j = 0; j < r; j++)
                    acc += dS[t * r + j] * c->a[(int64_t)j * K + k];
                dxo[(t0 + t) * K + k] += (float)(acc * keep);
            }
        }
    }
    free(dx);
    free(S);
    free(dS);
    return LG_OK;
}

enum lg_status lg_cpu_linear_bwd(lg_backend_t *be, lg_lora_linear_t *l, const struct lg_mb *mb, lg_addr xa,
                                 int64_t ldx, lg_addr dy, int64_t lddy, lg_addr dx)
{
    float *own;
    const float *xp = packed_x(l, mb->n, xa, ldx, &own);
    if (!xp)
        return lg_fail(LG_ERR_OOM, "cpu linear: out of memory");
    const lg_addr x = (lg_addr)(uintptr_t)xp;
    int64_t n = mb->n, K = l->d.in;
    float *dyi[LG_LINEAR_MAX_OUT] = {0}, *tmp = NULL;
    enum lg_status st = LG_OK;
    for (int i = 0, col = 0; i < l->d.nout; col += (int)l->d.out[i], i++)
        if (!(dyi[i] = lg_cpu_pack(CF(dy) + col, lddy, n, l->d.out[i])))
            st = lg_fail(LG_ERR_OOM, "cpu linear: out of memory");
    if (st == LG_OK && dx && l->d.nout > 1 && !(tmp = malloc((size_t)(n * K) * sizeof *tmp)))
        st = lg_fail(LG_ERR_OOM, "cpu linear: out of memory");
    for (int i = 0; st == LG_OK && dx && i < l->d.nout; i++) {
        struct lg_ref_linear L = {.K = K, .M = l->d.out[i], .w = l->w[i]};
        lg_ref_linear_backward(&L, n, dyi[i], i == 0 ? F(dx) : tmp);
        for (int64_t e = 0; i > 0 && e < n * K; e++)
            F(dx)[e] += tmp[e];
    }
    free(tmp);
    for (int i = 0; st == LG_OK && i < l->d.nout; i++)
        for (int s = 0; st == LG_OK && s < mb->nseg; s++) {
            const struct lg_seg *g = &mb->seg[s];
            if (g->adapter < 0 || g->len == 0)
                continue;
            struct cpu_lora *c = &l->lora[g->adapter * l->d.nout + i];
            if (c->rank)
                st = lora_bwd(l, i, c, mb, g, CF(x), dyi[i], dx ? F(dx) : NULL);
        }
    for (int i = 0; i < l->d.nout; i++)
        free(dyi[i]);
    free(own);
    return st;
}
