/* test_ref_attn.c: the position-dependent ops of the CPU reference (lg_ref_ops.h) against independent math.
 * RoPE: inverse frequencies against the llama3 formula evaluated in double here and against values of
 * transformers' fp32 computation reproduced op by op (below), positions restarting per sample, the backward as
 * the inverse and the transpose. Attention: forward and backward against a dense implementation written here
 * with a full [n x n] mask built from cu_seqlens, finite differences, GQA ratios 1, 2 and 4, samples of length
 * 1, 2 and 17, and isolation: perturbing one sample leaves every other sample's outputs and gradients
 * bit-identical. Outputs are poisoned with NaN first, so an element left unwritten fails. */
#include "lg_ref_ops.h"
#include "lg_test.h"

#include <check.h>
#include <math.h>
#include <string.h>

static float *rnd(int64_t n, uint64_t seed, float scale)
{
    float *x = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    lg_test_fill(x, (size_t)n, seed, scale);
    return x;
}

static float *poisoned(int64_t n)
{
    float *x = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++)
        x[i] = NAN;
    return x;
}

/* max |a - b| / max(|b|, floor); inf when a holds a NaN */
static double max_rel(const float *a, const double *b, int64_t n, double floor)
{
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(a[i]))
            return INFINITY;
        worst = fmax(worst, fabs(a[i] - b[i]) / fmax(fabs(b[i]), floor));
    }
    return worst;
}

/* max |a - b|; inf when a holds a NaN */
static double max_abs(const float *a, const double *b, int64_t n)
{
    double worst = 0;
    for (int64_t i = 0; i < n; i++)
        worst = isfinite(a[i]) ? fmax(worst, fabs(a[i] - b[i])) : INFINITY;
    return worst;
}

/* max |a - b| / max |b|: for sums whose terms cancel, where an element's own size says little */
static double scaled_err(const float *a, const double *b, int64_t n)
{
    double bmax = 0;
    for (int64_t i = 0; i < n; i++)
        bmax = fmax(bmax, fabs(b[i]));
    return max_abs(a, b, n) / fmax(bmax, 1e-30); /* a gradient that is exactly 0 must come out 0 */
}

static int32_t *make_cu(const int *len, int nseq, int64_t *n)
{
    int32_t *cu = malloc(sizeof(int32_t) * (size_t)(nseq + 1));
    cu[0] = 0;
    for (int i = 0; i < nseq; i++)
        cu[i + 1] = cu[i] + len[i];
    *n = cu[nseq];
    return cu;
}

/* ---- RoPE ---- */

static const struct lg_ref_rope LLAMA32 = {.d = 64, .theta = 500000, .scaling = LG_ROPE_LLAMA3, .factor = 32,
                                           .low_freq_factor = 1, .high_freq_factor = 4, .original_max_pos = 8192};
static const struct lg_ref_rope LLAMA31 = {.d = 128, .theta = 500000, .scaling = LG_ROPE_LLAMA3, .factor = 8,
                                           .low_freq_factor = 1, .high_freq_factor = 4, .original_max_pos = 8192};
static const struct lg_ref_rope QWEN = {.d = 64, .theta = 1000000, .scaling = LG_ROPE_NONE};

/* The formula of _compute_llama3_parameters in double; *band = -1/0/+1 for kept/smoothed/divided, or 2 when
 * the wavelength is within 1e-4 of a band edge (so fp32 may classify it either way). */
static double llama3_formula(const struct lg_ref_rope *r, int64_t i, int *band)
{
    const double f = pow(r->theta, -2.0 * (double)i / (double)r->d);
    *band = -1;
    if (r->scaling != LG_ROPE_LLAMA3)
        return f;
    const double L = (double)r->original_max_pos, lo = L / r->low_freq_factor, hi = L / r->high_freq_factor;
    const double wl = 2 * M_PI / f;
    if (fabs(wl / lo - 1) < 1e-4 || fabs(wl / hi - 1) < 1e-4)
        *band = 2;
    if (wl < hi)
        return f;
    if (wl > lo) {
        *band = *band == 2 ? 2 : 1;
        return f / r->factor;
    }
    *band = *band == 2 ? 2 : 0;
    const double s = (L / wl - r->low_freq_factor) / (r->high_freq_factor - r->low_freq_factor);
    return (1 - s) * f / r->factor + s * f;
}

START_TEST(rope_inv_freq_against_formula)
{
    const struct lg_ref_rope small = {.d = 48, .theta = 10000, .scaling = LG_ROPE_LLAMA3, .factor = 4,
                                      .low_freq_factor = 1, .high_freq_factor = 4, .original_max_pos = 256};
    const struct lg_ref_rope cases[] = {LLAMA32, LLAMA31, QWEN, small, {.d = 6, .theta = 10000}};
    for (int c = 0; c < 5; c++) {
        const struct lg_ref_rope *r = &cases[c];
        float inv[64], def[64];
        struct lg_ref_rope plain = *r;
        plain.scaling = LG_ROPE_NONE;
        ck_assert_int_eq(lg_ref_rope_inv_freq(r, inv), LG_OK);
        ck_assert_int_eq(lg_ref_rope_inv_freq(&plain, def), LG_OK);
        int seen[3] = {0, 0, 0};
        for (int64_t i = 0; i < r->d / 2; i++) {
            int band;
            const double want = llama3_formula(r, i, &band);
            /* fp32 rounding of the exponent 2i/d alone moves theta^e by ln(theta)·6e-8 relative */
            ck_assert_msg(fabs(inv[i] - want) <= 2e-6 * want, "case %d inv_freq[%lld] %.9g want %.9g", c,
                          (long long)i, inv[i], want);
            if (band == -1)
                ck_assert(inv[i] == def[i]);
            else if (band == 1)
                ck_assert(inv[i] == def[i] / (float)r->factor);
            else if (band == 0)
                ck_assert(inv[i] < def[i] && inv[i] > def[i] / (float)r->factor);
            if (band >= -1 && band <= 1)
                seen[band + 1]++;
        }
        if (r->scaling == LG_ROPE_LLAMA3) /* each config has all three bands, so each branch is tested */
            ck_assert_msg(seen[0] && seen[1] && seen[2], "case %d: bands %d/%d/%d", c, seen[0], seen[1], seen[2]);
    }
}
END_TEST

/* Reference values of transformers' fp32 computation, derived here with python3 (no numpy or torch on this
 * machine) by repeating each torch op of _compute_default_rope_parameters, _compute_llama3_parameters and
 * LlamaRotaryEmbedding.forward in Python doubles rounded to fp32 after every op (struct.pack('f')), which is
 * exact IEEE fp32 for + - * / (torch's `1.0 / t` being t.reciprocal() * 1.0), with math.pow/cos/sin rounded
 * once for torch's fp32 pow, cos and sin. */
static const float llama32_inv[32] = {
    0x1p+0f,        0x1.53c38cp-1f, 0x1.c2ef78p-2f, 0x1.2b3dc6p-2f, 0x1.8d276p-3f,  0x1.078d4p-3f,  0x1.5dc95ap-4f,
    0x1.d03ccep-5f, 0x1.34119p-5f,  0x1.98de92p-6f, 0x1.0f5386p-6f, 0x1.681adap-7f, 0x1.ddee9ep-8f, 0x1.3d2804p-8f,
    0x1.a4ee4p-9f,  0x1.524f36p-10f, 0x1.c26c4p-12f, 0x1.9731eep-14f, 0x1.46831ap-16f, 0x1.b15902p-17f,
    0x1.1f91fp-17f, 0x1.7da9e8p-18f, 0x1.fa8b86p-19f, 0x1.5024d6p-19f, 0x1.be2188p-20f, 0x1.280d96p-20f,
    0x1.88ec2p-21f, 0x1.04be68p-21f, 0x1.5a0f4ep-22f, 0x1.cb4a9ap-23f, 0x1.30c94ep-23f, 0x1.94836p-24f};
static const float qwen_inv[32] = {
    0x1p+0f,        0x1.4c7bcp-1f,  0x1.afd136p-2f, 0x1.186a08p-2f, 0x1.6c310ep-3f, 0x1.d8ffacp-4f, 0x1.33281ap-4f,
    0x1.8eec7ep-5f, 0x1.030dc6p-5f, 0x1.507316p-6f, 0x1.b4f7e4p-7f, 0x1.1bc25ap-7f, 0x1.708938p-8f, 0x1.dea41cp-9f,
    0x1.36d21ap-9f, 0x1.93aeb8p-10f, 0x1.0624dep-10f, 0x1.547688p-11f, 0x1.ba2e4ap-12f, 0x1.1f24e4p-12f,
    0x1.74eea6p-13f, 0x1.e459c4p-14f, 0x1.3a8748p-14f, 0x1.987f7cp-15f, 0x1.094564p-15f, 0x1.58863ap-16f,
    0x1.bf749ep-17f, 0x1.2291c6p-17f, 0x1.796182p-18f, 0x1.ea20ep-19f, 0x1.3e47c8p-19f, 0x1.9d5ef2p-20f};
/* d = 24: 2i/d is not exact in binary, and its fp32 rounding changes 7 of these 12 entries */
static const float d24_inv[12] = {0x1p+0f,        0x1.db4c78p-2f, 0x1.b93a6ap-3f, 0x1.99999ap-4f,
                                  0x1.7c3d2ap-5f, 0x1.60fb8cp-6f, 0x1.47ae14p-7f, 0x1.3030f4p-8f,
                                  0x1.1a62d2p-9f, 0x1.0624dep-10f, 0x1.e6b4b8p-12f, 0x1.c3d14ep-13f};
static const struct {
    int pos, i;
    float c, s;
} llama32_cs[] = {{1, 0, 0x1.14a28p-1f, 0x1.aed548p-1f},         {1000, 3, -0x1.ff1648p-1f, -0x1.e8ff18p-5f},
                  {4095, 1, -0x1.ffc386p-1f, 0x1.f1aa3ap-6f},     {8191, 16, -0x1.dc0fc2p-1f, -0x1.78e0f4p-2f},
                  {30000, 31, 0x1.ffff7ap-1f, 0x1.7257a8p-9f},    {777, 15, 0x1.13724cp-1f, 0x1.af9806p-1f},
                  {123, 17, 0x1.fff6a8p-1f, 0x1.874798p-7f}},
  qwen_cs[] = {{1, 0, 0x1.14a28p-1f, 0x1.aed548p-1f},           {1000, 3, -0x1.bb7374p-1f, -0x1.ffd736p-2f},
               {4095, 1, 0x1.1e9c8p-3f, 0x1.faf61ep-1f},        {8191, 16, -0x1.529c6p-2f, 0x1.e33286p-1f},
               {30000, 31, 0x1.ff7428p-1f, 0x1.7a5156p-5f},     {777, 15, 0x1.765eep-2f, 0x1.dc8e58p-1f},
               {123, 17, 0x1.fe5e1cp-1f, 0x1.46d0dep-4f}};

START_TEST(rope_matches_transformers_fp32)
{
    float inv[32];
    ck_assert_int_eq(lg_ref_rope_inv_freq(&LLAMA32, inv), LG_OK);
    for (int i = 0; i < 32; i++)
        ck_assert_msg(inv[i] == llama32_inv[i], "llama3 inv_freq[%d] %a want %a", i, inv[i], llama32_inv[i]);
    ck_assert_int_eq(lg_ref_rope_inv_freq(&QWEN, inv), LG_OK);
    for (int i = 0; i < 32; i++)
        ck_assert_msg(inv[i] == qwen_inv[i], "default inv_freq[%d] %a want %a", i, inv[i], qwen_inv[i]);
    const struct lg_ref_rope d24 = {.d = 24, .theta = 10000};
    ck_assert_int_eq(lg_ref_rope_inv_freq(&d24, inv), LG_OK);
    for (int i = 0; i < 12; i++)
        ck_assert_msg(inv[i] == d24_inv[i], "d=24 inv_freq[%d] %a want %a", i, inv[i], d24_inv[i]);
    const int64_t npos = 30001;
    float *c = malloc(sizeof(float) * npos * 32), *s = malloc(sizeof(float) * npos * 32);
    for (int k = 0; k < 2; k++) {
        ck_assert_int_eq(lg_ref_rope_table(k ? &QWEN : &LLAMA32, npos, c, s), LG_OK);
        for (int e = 0; e < 7; e++) {
            const int p = k ? qwen_cs[e].pos : llama32_cs[e].pos, i = k ? qwen_cs[e].i : llama32_cs[e].i;
            const float wc = k ? qwen_cs[e].c : llama32_cs[e].c, ws = k ? qwen_cs[e].s : llama32_cs[e].s;
            ck_assert_msg(c[p * 32 + i] == wc && s[p * 32 + i] == ws, "table %d pos %d i %d: %a %a want %a %a", k,
                          p, i, c[p * 32 + i], s[p * 32 + i], wc, ws);
        }
        for (int i = 0; i < 32; i++) /* position 0 is the identity */
            ck_assert(c[i] == 1.0f && s[i] == 0.0f);
    }
    free(c), free(s);
}
END_TEST

/* a config that scales at short positions: wavelengths 2π·10^i against the band [4, 16], so i = 0 is smoothed
 * and the others divided */
static const struct lg_ref_rope SHORT = {.d = 8, .theta = 10000, .scaling = LG_ROPE_LLAMA3, .factor = 4,
                                         .low_freq_factor = 1, .high_freq_factor = 4, .original_max_pos = 16};

START_TEST(rope_positions_restart_per_sample)
{
    const int len[] = {1, 2, 17, 5};
    int64_t n;
    int32_t *cu = make_cu(len, 4, &n);
    const int64_t nh = 3, d = SHORT.d, row = nh * d;
    float *x = rnd(n * row, lg_test_seed() + 1, 1.0f), *y = poisoned(n * row), *y1 = poisoned(n * row);
    struct lg_ref_seqs seq = {.n = n, .nseq = 4, .cu = cu};
    ck_assert_int_eq(lg_ref_rope_forward(&SHORT, &seq, nh, x, y), LG_OK);
    for (int q = 0; q < 4; q++) { /* each sample on its own gives the same bits */
        int32_t one[2] = {0, len[q]};
        struct lg_ref_seqs s1 = {.n = len[q], .nseq = 1, .cu = one};
        ck_assert_int_eq(lg_ref_rope_forward(&SHORT, &s1, nh, x + cu[q] * row, y1 + cu[q] * row), LG_OK);
    }
    ck_assert(memcmp(y, y1, sizeof(float) * n * row) == 0);
    /* against the rotation written out in double, at position t - cu[sample] */
    double *want = malloc(sizeof(double) * n * row);
    for (int q = 0; q < 4; q++)
        for (int64_t t = cu[q]; t < cu[q + 1]; t++)
            for (int64_t h = 0; h < nh; h++)
                for (int64_t i = 0; i < d / 2; i++) {
                    int band;
                    const double a = (double)(t - cu[q]) * llama3_formula(&SHORT, i, &band);
                    const float *xr = x + t * row + h * d;
                    want[t * row + h * d + i] = xr[i] * cos(a) - xr[i + d / 2] * sin(a);
                    want[t * row + h * d + i + d / 2] = xr[i + d / 2] * cos(a) + xr[i] * sin(a);
                }
    /* |x| <= 1: the fp32 angle (ulp 2e-6 at 16) and frequency (6e-8 relative) bound the error by ~3e-6 */
    ck_assert_msg(max_abs(y, want, n * row) < 5e-6, "rope vs formula: %g", max_abs(y, want, n * row));
    for (int q = 0; q < 4; q++) /* position 0 of every sample is left as it is */
        ck_assert(memcmp(y + cu[q] * row, x + cu[q] * row, sizeof(float) * row) == 0);
    memcpy(y1, x, sizeof(float) * n * row); /* in place */
    ck_assert_int_eq(lg_ref_rope_forward(&SHORT, &seq, nh, y1, y1), LG_OK);
    ck_assert(memcmp(y, y1, sizeof(float) * n * row) == 0);
    free(cu), free(x), free(y), free(y1), free(want);
}
END_TEST

struct rope_ctx {
    const struct lg_ref_rope *r;
    struct lg_ref_seqs seq;
    int64_t nh;
    float *x, *w, *y;
};

static double rope_loss(void *c_)
{
    struct rope_ctx *c = c_;
    ck_assert_int_eq(lg_ref_rope_forward(c->r, &c->seq, c->nh, c->x, c->y), LG_OK);
    return lg_test_wsum(c->y, c->w, c->seq.n * c->nh * c->r->d);
}

START_TEST(rope_backward_is_inverse_and_gradient)
{
    const int len[] = {2, 17, 1};
    const struct lg_ref_rope *cfg[] = {&SHORT, &LLAMA32, &QWEN};
    for (int k = 0; k < 3; k++) {
        int64_t n;
        int32_t *cu = make_cu(len, 3, &n);
        const int64_t nh = 2, total = n * nh * cfg[k]->d;
        struct rope_ctx c = {.r = cfg[k], .seq = {.n = n, .nseq = 3, .cu = cu}, .nh = nh,
                             .x = rnd(total, lg_test_seed() + 10 + (uint64_t)k, 1.0f),
                             .w = rnd(total, lg_test_seed() + 20 + (uint64_t)k, 1.0f), .y = poisoned(total)};
        float *back = poisoned(total), *g = poisoned(total);
        ck_assert_int_eq(lg_ref_rope_forward(c.r, &c.seq, nh, c.x, c.y), LG_OK);
        ck_assert_int_eq(lg_ref_rope_backward(c.r, &c.seq, nh, c.y, back), LG_OK);
        double *xd = malloc(sizeof(double) * total);
        for (int64_t i = 0; i < total; i++)
            xd[i] = c.x[i];
        ck_assert_msg(max_abs(back, xd, total) < 1e-6, "backward(forward(x)) - x: %g", max_abs(back, xd, total));
        /* adjoint: <R x, w> = <x, Rᵀ w> */
        ck_assert_int_eq(lg_ref_rope_backward(c.r, &c.seq, nh, c.w, g), LG_OK);
        const double lhs = lg_test_wsum(c.y, c.w, total), rhs = lg_test_wsum(c.x, g, total);
        ck_assert_msg(fabs(lhs - rhs) <= 1e-6 * sqrt((double)total), "adjoint %g vs %g", lhs, rhs);
        lg_test_check_fd("rope dx", rope_loss, &c, c.x, g, total, 1.0f / 64);
        memcpy(back, c.w, sizeof(float) * total); /* in place */
        ck_assert_int_eq(lg_ref_rope_backward(c.r, &c.seq, nh, back, back), LG_OK);
        ck_assert(memcmp(back, g, sizeof(float) * total) == 0);
        free(cu), free(c.x), free(c.w), free(c.y), free(back), free(g), free(xd);
    }
}
END_TEST

START_TEST(rope_rejects_bad_arguments)
{
    float inv[8], x[64], y[64];
    lg_test_fill(x, 64, lg_test_seed() + 5, 1.0f);
    struct lg_ref_rope r = SHORT;
    r.d = 7;
    ck_assert_int_eq(lg_ref_rope_inv_freq(&r, inv), LG_ERR_INVALID);
    r = SHORT, r.high_freq_factor = 1;
    ck_assert_int_eq(lg_ref_rope_inv_freq(&r, inv), LG_ERR_INVALID);
    r = SHORT, r.theta = 1;
    ck_assert_int_eq(lg_ref_rope_inv_freq(&r, inv), LG_ERR_INVALID);
    const int32_t bad[][3] = {{0, 3, 3}, {1, 2, 4}, {0, 2, 5}, {0, 5, 2}}; /* empty, cu[0]≠0, cu[2]≠n, decreasing */
    for (int b = 0; b < 4; b++) {
        struct lg_ref_seqs s = {.n = 4, .nseq = 2, .cu = bad[b]};
        for (int i = 0; i < 64; i++)
            y[i] = NAN;
        lg_clear_error();
        ck_assert_int_eq(lg_ref_rope_forward(&SHORT, &s, 2, x, y), LG_ERR_INVALID);
        ck_assert(strstr(lg_last_error(), "cu_seqlens"));
        for (int i = 0; i < 64; i++)
            ck_assert(isnan(y[i]));
    }
}
END_TEST

/* ---- attention: a dense reference with the full [n x n] mask ---- */

struct acase {
    int len[4], nseq;
    int64_t hq, hkv, d;
    float scale;
};

static const struct acase ACASES[] = {
    {{1, 2, 17}, 3, 4, 4, 8, 0},     /* GQA ratio 1 */
    {{17, 1, 2}, 3, 4, 2, 5, 0},     /* ratio 2, odd head dim */
    {{2, 17, 1, 1}, 4, 8, 2, 4, 0},  /* ratio 4 */
    {{1}, 1, 2, 1, 3, 0.7f},         /* one token, given scale */
    {{6, 3}, 2, 1, 1, 16, 0},        /* one head */
};

struct attn_fx {
    int64_t n;
    int32_t *cu;
    float *q, *k, *v, *dout;
    struct lg_ref_attn a;
};

static void afx_init(struct attn_fx *f, const struct acase *c, uint64_t seed)
{
    f->cu = make_cu(c->len, c->nseq, &f->n);
    const int64_t n = f->n;
    f->q = rnd(n * c->hq * c->d, seed + 1, 1.5f), f->k = rnd(n * c->hkv * c->d, seed + 2, 1.5f);
    f->v = rnd(n * c->hkv * c->d, seed + 3, 1.0f), f->dout = rnd(n * c->hq * c->d, seed + 4, 1.0f);
    f->a = (struct lg_ref_attn){.seq = {.n = n, .nseq = c->nseq, .cu = f->cu}, .hq = c->hq, .hkv = c->hkv,
                                .d = c->d, .scale = c->scale, .q = f->q, .k = f->k, .v = f->v};
}

static void afx_free(struct attn_fx *f) { free(f->cu), free(f->q), free(f->k), free(f->v), free(f->dout); }

/* o, lse, dq, dk, dv of dense masked attention: P = softmax(scale·QKᵀ + mask), dP = dO·Vᵀ,
 * D = rowsum(P ⊙ dP), dS = P ⊙ (dP - D) */
static void dense_attn(const struct lg_ref_attn *a, const float *dout, double *o, double *lse, double *dq,
                       double *dk, double *dv)
{
    const int64_t n = a->seq.n, hq = a->hq, hkv = a->hkv, d = a->d;
    const double sc = a->scale != 0 ? a->scale : 1.0 / sqrt((double)d);
    int *seg = malloc(sizeof(int) * n);
    for (int64_t s = 0; s < a->seq.nseq; s++)
        for (int64_t t = a->seq.cu[s]; t < a->seq.cu[s + 1]; t++)
            seg[t] = (int)s;
    double *P = malloc(sizeof(double) * n * n), *dP = malloc(sizeof(double) * n * n);
    memset(dk, 0, sizeof(double) * n * hkv * d), memset(dv, 0, sizeof(double) * n * hkv * d);
    for (int64_t h = 0; h < hq; h++) {
        const int64_t g = h / (hq / hkv);
#define Q(i, c) ((double)a->q[((i) * hq + h) * d + (c)])
#define K(j, c) ((double)a->k[((j) * hkv + g) * d + (c)])
#define V(j, c) ((double)a->v[((j) * hkv + g) * d + (c)])
#define DO(i, c) ((double)dout[((i) * hq + h) * d + (c)])
        for (int64_t i = 0; i < n; i++) {
            double mx = -INFINITY, se = 0;
            for (int64_t j = 0; j < n; j++) {
                double s = 0;
                for (int64_t c = 0; c < d; c++)
                    s += Q(i, c) * K(j, c);
                P[i * n + j] = seg[i] == seg[j] && j <= i ? sc * s : -INFINITY;
                mx = fmax(mx, P[i * n + j]);
            }
            for (int64_t j = 0; j < n; j++)
                se += exp(P[i * n + j] - mx);
            lse[i * hq + h] = mx + log(se);
            for (int64_t j = 0; j < n; j++)
                P[i * n + j] = exp(P[i * n + j] - mx) / se;
            for (int64_t c = 0; c < d; c++) {
                double acc = 0;
                for (int64_t j = 0; j < n; j++)
                    acc += P[i * n + j] * V(j, c);
                o[(i * hq + h) * d + c] = acc;
            }
            double D = 0;
            for (int64_t j = 0; j < n; j++) {
                double s = 0;
                for (int64_t c = 0; c < d; c++)
                    s += DO(i, c) * V(j, c);
                dP[i * n + j] = s;
                D += P[i * n + j] * s;
            }
            for (int64_t j = 0; j < n; j++)
                dP[i * n + j] = P[i * n + j] * (dP[i * n + j] - D); /* now dS */
        }
        for (int64_t i = 0; i < n; i++)
            for (int64_t c = 0; c < d; c++) {
                double acc = 0;
                for (int64_t j = 0; j < n; j++)
                    acc += dP[i * n + j] * K(j, c);
                dq[(i * hq + h) * d + c] = sc * acc;
            }
        for (int64_t j = 0; j < n; j++)
            for (int64_t c = 0; c < d; c++) {
                double ak = 0, av = 0;
                for (int64_t i = 0; i < n; i++)
                    ak += dP[i * n + j] * Q(i, c), av += P[i * n + j] * DO(i, c);
                dk[(j * hkv + g) * d + c] += sc * ak;
                dv[(j * hkv + g) * d + c] += av;
            }
#undef Q
#undef K
#undef V
#undef DO
    }
    free(seg), free(P), free(dP);
}

struct attn_out {
    float *o, *lse, *dq, *dk, *dv;
};

static void run_attn(const struct attn_fx *f, struct attn_out *r)
{
    const int64_t n = f->n, hq = f->a.hq, hkv = f->a.hkv, d = f->a.d;
    r->o = poisoned(n * hq * d), r->lse = poisoned(n * hq), r->dq = poisoned(n * hq * d);
    r->dk = poisoned(n * hkv * d), r->dv = poisoned(n * hkv * d);
    ck_assert_int_eq(lg_ref_attn_forward(&f->a, r->o, r->lse), LG_OK);
    ck_assert_int_eq(lg_ref_attn_backward(&f->a, r->o, r->lse, f->dout, r->dq, r->dk, r->dv), LG_OK);
}

static void out_free(struct attn_out *r) { free(r->o), free(r->lse), free(r->dq), free(r->dk), free(r->dv); }

START_TEST(attn_matches_dense_mask)
{
    for (size_t c = 0; c < sizeof ACASES / sizeof *ACASES; c++) {
        struct attn_fx f;
        afx_init(&f, &ACASES[c], lg_test_seed() + 100 * c);
        struct attn_out r;
        run_attn(&f, &r);
        const int64_t nq = f.n * f.a.hq * f.a.d, nkv = f.n * f.a.hkv * f.a.d;
        double *o = malloc(sizeof(double) * nq), *lse = malloc(sizeof(double) * f.n * f.a.hq);
        double *dq = malloc(sizeof(double) * nq), *dk = malloc(sizeof(double) * nkv);
        double *dv = malloc(sizeof(double) * nkv);
        dense_attn(&f.a, f.dout, o, lse, dq, dk, dv);
        /* the backward reads lse as stored (fp32, ~2e-7 relative in P), hence normwise gradients */
        ck_assert_msg(max_rel(r.o, o, nq, 1e-2) < 1e-6, "case %zu o", c);
        ck_assert_msg(max_rel(r.lse, lse, f.n * f.a.hq, 1e-2) < 1e-6, "case %zu lse", c);
        ck_assert_msg(scaled_err(r.dq, dq, nq) < 1e-5, "case %zu dq %g", c, scaled_err(r.dq, dq, nq));
        ck_assert_msg(scaled_err(r.dk, dk, nkv) < 1e-5, "case %zu dk %g", c, scaled_err(r.dk, dk, nkv));
        ck_assert_msg(scaled_err(r.dv, dv, nkv) < 1e-5, "case %zu dv %g", c, scaled_err(r.dv, dv, nkv));
        /* a length-1 sample attends to itself only: o = v, lse = scale·q·k */
        for (int64_t s = 0; s < f.a.seq.nseq; s++) {
            const int64_t t = f.cu[s];
            if (f.cu[s + 1] - t != 1)
                continue;
            for (int64_t h = 0; h < f.a.hq; h++)
                ck_assert(memcmp(r.o + (t * f.a.hq + h) * f.a.d,
                                 f.v + (t * f.a.hkv + h / (f.a.hq / f.a.hkv)) * f.a.d, sizeof(float) * f.a.d) == 0);
        }
        /* results not asked for are skipped without changing the others */
        float *dk2 = poisoned(nkv);
        ck_assert_int_eq(lg_ref_attn_backward(&f.a, r.o, r.lse, f.dout, NULL, dk2, NULL), LG_OK);
        ck_assert(memcmp(dk2, r.dk, sizeof(float) * nkv) == 0);
        free(dk2), free(o), free(lse), free(dq), free(dk), free(dv);
        out_free(&r), afx_free(&f);
    }
}
END_TEST

struct attn_ctx {
    struct attn_fx *f;
    float *o;
};

static double attn_loss(void *c_)
{
    struct attn_ctx *c = c_;
    ck_assert_int_eq(lg_ref_attn_forward(&c->f->a, c->o, NULL), LG_OK);
    return lg_test_wsum(c->o, c->f->dout, c->f->n * c->f->a.hq * c->f->a.d);
}

START_TEST(attn_backward_finite_differences)
{
    for (size_t c = 0; c < sizeof ACASES / sizeof *ACASES; c++) {
        struct attn_fx f;
        afx_init(&f, &ACASES[c], lg_test_seed() + 1000 + 100 * c);
        struct attn_out r;
        run_attn(&f, &r);
        const int64_t nq = f.n * f.a.hq * f.a.d, nkv = f.n * f.a.hkv * f.a.d;
        struct attn_ctx ctx = {.f = &f, .o = poisoned(nq)};
        lg_test_check_fd("attn dq", attn_loss, &ctx, f.q, r.dq, nq, 1.0f / 128);
        lg_test_check_fd("attn dk", attn_loss, &ctx, f.k, r.dk, nkv, 1.0f / 128);
        lg_test_check_fd("attn dv", attn_loss, &ctx, f.v, r.dv, nkv, 1.0f / 128);
        free(ctx.o), out_free(&r), afx_free(&f);
    }
}
END_TEST

static int same(const float *a, const float *b, int64_t n) { return memcmp(a, b, sizeof(float) * n) == 0; }

/* Perturbing q, k or v of sample `hit` must leave every other sample's o, lse, dq, dk, dv bit-identical (and
 * change the hit sample's own). */
START_TEST(attn_samples_are_isolated)
{
    const struct acase c = {{3, 1, 17, 2}, 4, 4, 2, 6, 0};
    for (int hit = 0; hit < 4; hit++)
        for (int which = 0; which < 3; which++) {
            struct attn_fx f;
            afx_init(&f, &c, lg_test_seed() + 77);
            struct attn_out base, pert;
            run_attn(&f, &base);
            const int64_t b = f.cu[hit], e = f.cu[hit + 1];
            float *t = which == 0 ? f.q : which == 1 ? f.k : f.v;
            const int64_t row = (which == 0 ? f.a.hq : f.a.hkv) * f.a.d;
            lg_test_fill(t + b * row, (size_t)((e - b) * row), lg_test_seed() + 999 + (uint64_t)which, 1.5f);
            run_attn(&f, &pert);
            const int64_t qr = f.a.hq * f.a.d, kr = f.a.hkv * f.a.d;
            for (int s = 0; s < 4; s++) {
                const int64_t sb = f.cu[s], sl = f.cu[s + 1] - sb;
                const int iso = same(base.o + sb * qr, pert.o + sb * qr, sl * qr) &&
                                same(base.lse + sb * f.a.hq, pert.lse + sb * f.a.hq, sl * f.a.hq) &&
                                same(base.dq + sb * qr, pert.dq + sb * qr, sl * qr) &&
                                same(base.dk + sb * kr, pert.dk + sb * kr, sl * kr) &&
                                same(base.dv + sb * kr, pert.dv + sb * kr, sl * kr);
                if (s != hit)
                    ck_assert_msg(iso, "perturbing %c of sample %d changed sample %d", "qkv"[which], hit, s);
                else
                    ck_assert_msg(!iso, "perturbing %c of sample %d changed nothing there", "qkv"[which], hit);
            }
            out_free(&base), out_free(&pert), afx_free(&f);
        }
}
END_TEST

START_TEST(attn_rejects_bad_arguments)
{
    const struct acase c = {{2, 3}, 2, 3, 2, 4, 0}; /* 3 q heads over 2 kv heads */
    struct attn_fx f;
    afx_init(&f, &c, lg_test_seed() + 5);
    float *o = poisoned(f.n * 3 * 4), *lse = poisoned(f.n * 3);
    lg_clear_error();
    ck_assert_int_eq(lg_ref_attn_forward(&f.a, o, lse), LG_ERR_INVALID);
    ck_assert(strstr(lg_last_error(), "heads"));
    f.a.hq = 4;
    const int32_t bad[3] = {0, 3, 3};
    f.a.seq.cu = bad;
    ck_assert_int_eq(lg_ref_attn_forward(&f.a, o, lse), LG_ERR_INVALID);
    ck_assert_int_eq(lg_ref_attn_backward(&f.a, o, lse, f.dout, o, NULL, NULL), LG_ERR_INVALID);
    for (int64_t i = 0; i < f.n * 3; i++)
        ck_assert(isnan(lse[i]));
    free(o), free(lse), afx_free(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ref_attn");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, rope_inv_freq_against_formula);
    tcase_add_test(tc, rope_matches_transformers_fp32);
    tcase_add_test(tc, rope_positions_restart_per_sample);
    tcase_add_test(tc, rope_backward_is_inverse_and_gradient);
    tcase_add_test(tc, rope_rejects_bad_arguments);
    tcase_add_test(tc, attn_matches_dense_mask);
    tcase_add_test(tc, attn_backward_finite_differences);
    tcase_add_test(tc, attn_samples_are_isolated);
    tcase_add_test(tc, attn_rejects_bad_arguments);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0) ? 1 : 0;
}
