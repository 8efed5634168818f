/* attention.c: causal attention over packed variable-length samples with GQA, the CPU reference
 * (lg_ref_ops.h). Each (token, q head) row is computed on its own against the keys of its own sample, so a
 * token can only see its sample by construction, and memory is one row of scores (plus, in the backward, one
 * sample's dk/dv in double). Cost is Σ len² · d per head, as dense attention restricted to the samples. */
#include "lg_ref_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static enum lg_status check(const struct lg_ref_attn *a, const char *what, int64_t *maxlen)
{
    enum lg_status st = lg_ref_seqs_check(&a->seq, what, maxlen);
    if (st != LG_OK)
        return st;
    if (a->hq < 1 || a->hkv < 1 || a->hq % a->hkv || a->d < 1)
        return lg_fail(LG_ERR_INVALID, "%s: heads %lld/%lld (q/kv; q a multiple of kv) and head dim %lld", what,
                       (long long)a->hq, (long long)a->hkv, (long long)a->d);
    if (!a->q || !a->k || !a->v)
        return lg_fail(LG_ERR_INVALID, "%s: q, k and v are required", what);
    return LG_OK;
}

static double scale_of(const struct lg_ref_attn *a) { return a->scale != 0 ? a->scale : 1.0 / sqrt((double)a->d); }

static double dot(const float *x, const float *y, int64_t d)
{
    double acc = 0;
    for (int64_t c = 0; c < d; c++)
        acc += (double)x[c] * y[c];
    return acc;
}

/* Scores of query row (token t = b+i, head h) against keys b..b+i of kv head g, into s[0..i]; returns
 * their log-sum-exp. */
static double row_scores(const struct lg_ref_attn *a, int64_t b, int64_t i, int64_t h, double sc, double *s)
{
    const int64_t d = a->d, g = h / (a->hq / a->hkv);
    const float *q = a->q + ((b + i) * a->hq + h) * d;
    double mx = -INFINITY;
    for (int64_t j = 0; j <= i; j++) {
        s[j] = sc * dot(q, a->k + ((b + j) * a->hkv + g) * d, d);
        mx = fmax(mx, s[j]);
    }
    double sum = 0;
    for (int64_t j = 0; j <= i; j++)
        sum += exp(s[j] - mx);
    return mx + log(sum);
}

enum lg_status lg_ref_attn_forward(const struct lg_ref_attn *a, float *o, float *lse)
{
    int64_t maxlen = 0;
    enum lg_status st = check(a, "lg_ref_attn_forward", &maxlen);
    if (st != LG_OK)
        return st;
    const int64_t d = a->d, hq = a->hq, hkv = a->hkv, grp = hq / hkv;
    const double sc = scale_of(a);
    double *s = malloc(sizeof *s * (size_t)(maxlen + d));
    if (!s)
        return lg_fail(LG_ERR_OOM, "lg_ref_attn_forward: scratch for a row of %lld", (long long)maxlen);
    double *acc = s + maxlen;
    for (int64_t q = 0; q < a->seq.nseq; q++) {
        const int64_t b = a->seq.cu[q], len = a->seq.cu[q + 1] - b;
        for (int64_t i = 0; i < len; i++)
            for (int64_t h = 0; h < hq; h++) {
                const double l = row_scores(a, b, i, h, sc, s);
                memset(acc, 0, sizeof *acc * (size_t)d);
                for (int64_t j = 0; j <= i; j++) {
                    const double p = exp(s[j] - l);
                    const float *vr = a->v + ((b + j) * hkv + h / grp) * d;
                    for (int64_t c = 0; c < d; c++)
                        acc[c] += p * vr[c];
                }
                float *orow = o + ((b + i) * hq + h) * d;
                for (int64_t c = 0; c < d; c++)
                    orow[c] = (float)acc[c];
                if (lse)
                    lse[(b + i) * hq + h] = (float)l;
            }
    }
    free(s);
    return LG_OK;
}

/* One query row's contribution: dq row (written), and dk/dv of its sample (accumulated, unscaled dk). */
struct bwd_row {
    const float *q, *dout;
    double D, lse;
    double *dq;       /* [d] */
    double *dk, *dv;  /* this sample's [len, hkv, d], or NULL */
};

static void backward_row(const struct lg_ref_attn *a, int64_t b, int64_t i, int64_t g, double sc,
                         const struct bwd_row *r)
{
    const int64_t d = a->d, hkv = a->hkv;
    memset(r->dq, 0, sizeof *r->dq * (size_t)d);
    for (int64_t j = 0; j <= i; j++) {
        const float *kr = a->k + ((b + j) * hkv + g) * d, *vr = a->v + ((b + j) * hkv + g) * d;
        const double p = exp(sc * dot(r->q, kr, d) - r->lse);
        const double ds = p * (dot(r->dout, vr, d) - r->D);
        for (int64_t c = 0; c < d; c++)
            r->dq[c] += ds * kr[c];
        if (r->dk)
            for (int64_t c = 0; c < d; c++)
                r->dk[(j * hkv + g) * d + c] += ds * r->q[c];
        if (r->dv)
            for (int64_t c = 0; c < d; c++)
                r->dv[(j * hkv + g) * d + c] += p * r->dout[c];
    }
}

static void store(float *dst, const double *src, int64_t count, double mul)
{
    for (int64_t e = 0; e < count; e++)
        dst[e] = (float)(mul * src[e]);
}

enum lg_status lg_ref_attn_backward(const struct lg_ref_attn *a, const float *o, const float *lse,
                                    const float *dout, float *dq, float *dk, float *dv)
{
    int64_t maxlen = 0;
    enum lg_status st = check(a, "lg_ref_attn_backward", &maxlen);
    if (st != LG_OK)
        return st;
    if (!o || !lse || !dout)
        return lg_fail(LG_ERR_INVALID, "lg_ref_attn_backward: o, lse and dout are required");
    const int64_t d = a->d, hq = a->hq, hkv = a->hkv, grp = hq / hkv;
    const double sc = scale_of(a);
    const size_t kvn = (size_t)(maxlen * hkv * d);
    double *buf = malloc(sizeof *buf * (2 * kvn + (size_t)d));
    if (!buf)
        return lg_fail(LG_ERR_OOM, "lg_ref_attn_backward: dk/dv scratch for a sample of %lld", (long long)maxlen);
    struct bwd_row r = {.dq = buf + 2 * kvn, .dk = dk ? buf : NULL, .dv = dv ? buf + kvn : NULL};
    for (int64_t q = 0; q < a->seq.nseq; q++) {
        const int64_t b = a->seq.cu[q], len = a->seq.cu[q + 1] - b;
        memset(buf, 0, sizeof *buf * 2 * kvn);
        for (int64_t i = 0; i < len; i++)
            for (int64_t h = 0; h < hq; h++) {
                const int64_t row = (b + i) * hq + h;
                r.q = a->q + row * d, r.dout = dout + row * d, r.lse = lse[row];
                r.D = dot(r.dout, o + row * d, d);
                backward_row(a, b, i, h / grp, sc, &r);
                if (dq)
                    store(dq + row * d, r.dq, d, sc);
            }
        if (dk)
            store(dk + b * hkv * d, r.dk, len * hkv * d, sc);
        if (dv)
            store(dv + b * hkv * d, r.dv, len * hkv * d, 1.0);
    }
    free(buf);
    return LG_OK;
}
