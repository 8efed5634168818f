/* rope.c: rotary position embedding of the CPU reference (lg_ref_ops.h), HF's rotate_half convention with
 * the "default" and "llama3" frequencies.
 *
 * transformers computes the frequencies and angles in fp32, and at long positions an angle's fp32 rounding is
 * far above 1e-6, so matching it means repeating its fp32 operations one by one rather than computing the
 * exact values in double. Each step below names the torch expression it mirrors. `1.0 / t` in torch is
 * t.reciprocal() * 1.0 (Tensor.__rtruediv__), and a Python scalar meeting an fp32 tensor is cast to fp32 first. */
#include "lg_ref_impl.h"

#include <math.h>
#include <stdlib.h>

/* shared with attention.c: the packing every position-dependent op checks first */
enum lg_status lg_ref_seqs_check(const struct lg_ref_seqs *s, const char *what, int64_t *maxlen)
{
    if (!s || !s->cu || s->nseq < 1 || s->n < 1)
        return lg_fail(LG_ERR_INVALID, "%s: need at least one sample and one token (cu_seqlens %s, nseq %lld)",
                       what, s && s->cu ? "set" : "NULL", s ? (long long)s->nseq : 0LL);
    if (s->cu[0] != 0)
        return lg_fail(LG_ERR_INVALID, "%s: cu_seqlens[0] is %d, not 0", what, s->cu[0]);
    int64_t longest = 0;
    for (int64_t i = 0; i < s->nseq; i++) {
        if (s->cu[i + 1] <= s->cu[i])
            return lg_fail(LG_ERR_INVALID, "%s: cu_seqlens not increasing: cu[%lld] = %d, cu[%lld] = %d", what,
                           (long long)i, s->cu[i], (long long)(i + 1), s->cu[i + 1]);
        if (s->cu[i + 1] - s->cu[i] > longest)
            longest = s->cu[i + 1] - s->cu[i];
    }
    if (s->cu[s->nseq] != s->n)
        return lg_fail(LG_ERR_INVALID, "%s: cu_seqlens[%lld] = %d, but there are %lld tokens", what,
                       (long long)s->nseq, s->cu[s->nseq], (long long)s->n);
    if (maxlen)
        *maxlen = longest;
    return LG_OK;
}

static float f32(double x) { return (float)x; }

static enum lg_status check_rope(const struct lg_ref_rope *r, const char *what)
{
    if (r->d < 2 || r->d % 2)
        return lg_fail(LG_ERR_INVALID, "%s: rotary dim %lld must be even and >= 2", what, (long long)r->d);
    if (!(r->theta > 1.0))
        return lg_fail(LG_ERR_INVALID, "%s: rope_theta %g must be > 1", what, r->theta);
    if (r->scaling == LG_ROPE_NONE)
        return LG_OK;
    if (r->scaling != LG_ROPE_LLAMA3)
        return lg_fail(LG_ERR_INVALID, "%s: unknown rope scaling %d", what, (int)r->scaling);
    if (!(r->factor > 0) || !(r->high_freq_factor > r->low_freq_factor) || !(r->low_freq_factor > 0) ||
        r->original_max_pos < 1)
        return lg_fail(LG_ERR_INVALID,
                       "%s: llama3 scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor and "
                       "original_max_position_embeddings >= 1 (got %g, %g, %g, %lld)",
                       what, r->factor, r->low_freq_factor, r->high_freq_factor, (long long)r->original_max_pos);
    return LG_OK;
}

/* _compute_llama3_parameters on one frequency f (already the default one) */
static float llama3(const struct lg_ref_rope *r, float f)
{
    const float factor = f32(r->factor), lff = f32(r->low_freq_factor);
    const float lo = f32((double)r->original_max_pos / r->low_freq_factor);  /* low_freq_wavelen */
    const float hi = f32((double)r->original_max_pos / r->high_freq_factor); /* high_freq_wavelen */
    const float wavelen = f32((double)f32(1.0 / f) * f32(2.0 * M_PI));      /* 2 * math.pi / inv_freq */
    float out = wavelen > lo ? f32((double)f / factor) : f;                /* torch.where(wavelen > lo, ...) */
    if (!(wavelen < hi) && !(wavelen > lo)) {                                /* is_medium_freq */
        /* smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor) */
        float ratio = f32((double)f32(1.0 / wavelen) * f32((double)r->original_max_pos));
        float smooth = f32((double)f32((double)ratio - lff) / f32(r->high_freq_factor - r->low_freq_factor));
        /* (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama, left to right */
        float a = f32((double)f32((double)f32(1.0 - smooth) * out) / factor);
        out = f32((double)a + (double)f32((double)smooth * out));
    }
    return out;
}

enum lg_status lg_ref_rope_inv_freq(const struct lg_ref_rope *r, float *inv_freq)
{
    enum lg_status st = check_rope(r, "lg_ref_rope_inv_freq");
    if (st != LG_OK)
        return st;
    const float base = f32(r->theta);
    for (int64_t i = 0; i < r->d / 2; i++) {
        /* torch.arange(0, dim, 2, dtype=torch.int64).float() / dim */
        float e = f32((double)(float)(2 * i) / (double)(float)r->d);
        /* 1.0 / (base ** e): powf (torch's fp32 pow; the double pow rounded once is its correct rounding) */
        float f = f32(1.0 / (double)f32(pow((double)base, (double)e)));
        inv_freq[i] = r->scaling == LG_ROPE_LLAMA3 ? llama3(r, f) : f;
    }
    return LG_OK;
}

enum lg_status lg_ref_rope_table(const struct lg_ref_rope *r, int64_t npos, float *cos_, float *sin_)
{
    const int64_t half = r->d / 2;
    float *inv = malloc(sizeof *inv * (size_t)(half > 0 ? half : 1));
    if (!inv)
        return lg_fail(LG_ERR_OOM, "lg_ref_rope_table: %lld floats", (long long)half);
    enum lg_status st = lg_ref_rope_inv_freq(r, inv);
    for (int64_t p = 0; st == LG_OK && p < npos; p++)
        for (int64_t i = 0; i < half; i++) {
            /* freqs = inv_freq @ position_ids.float(): one fp32 product; emb.cos(), emb.sin() in fp32 */
            double ang = (double)f32((double)inv[i] * (double)(float)p);
            cos_[p * half + i] = f32(cos(ang));
            sin_[p * half + i] = f32(sin(ang));
        }
    free(inv);
    return st;
}

/* y = R(sign·θ) x for every token and head; the table is built for the longest sample only */
static enum lg_status rotate(const struct lg_ref_rope *r, const struct lg_ref_seqs *s, int64_t nh, const float *x,
                             float *y, double sign, const char *what)
{
    int64_t maxlen = 0;
    enum lg_status st = lg_ref_seqs_check(s, what, &maxlen);
    if (st == LG_OK && nh < 1)
        st = lg_fail(LG_ERR_INVALID, "%s: %lld heads", what, (long long)nh);
    if (st == LG_OK)
        st = check_rope(r, what);
    if (st != LG_OK)
        return st;
    const int64_t d = r->d, half = d / 2;
    float *tab = malloc(sizeof *tab * (size_t)(2 * maxlen * half));
    if (!tab)
        return lg_fail(LG_ERR_OOM, "%s: rope table of %lld positions", what, (long long)maxlen);
    float *cs = tab, *sn = tab + maxlen * half;
    st = lg_ref_rope_table(r, maxlen, cs, sn);
    for (int64_t q = 0; st == LG_OK && q < s->nseq; q++)
        for (int64_t t = s->cu[q]; t < s->cu[q + 1]; t++) {
            const float *c = cs + (t - s->cu[q]) * half, *sv = sn + (t - s->cu[q]) * half;
            for (int64_t h = 0; h < nh; h++) {
                const float *xr = x + (t * nh + h) * d;
                float *yr = y + (t * nh + h) * d;
                for (int64_t i = 0; i < half; i++) {
                    double a = xr[i], b = xr[i + half], cv = c[i], sv_ = sign * sv[i];
                    yr[i] = f32(a * cv - b * sv_);
                    yr[i + half] = f32(b * cv + a * sv_);
                }
            }
        }
    free(tab);
    return st;
}

enum lg_status lg_ref_rope_forward(const struct lg_ref_rope *r, const struct lg_ref_seqs *s, int64_t nh,
                                   const float *x, float *y)
{
    return rotate(r, s, nh, x, y, 1.0, "lg_ref_rope_forward");
}

enum lg_status lg_ref_rope_backward(const struct lg_ref_rope *r, const struct lg_ref_seqs *s, int64_t nh,
                                    const float *dy, float *dx)
{
    return rotate(r, s, nh, dy, dx, -1.0, "lg_ref_rope_backward");
}
