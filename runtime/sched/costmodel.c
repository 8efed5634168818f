/* costmodel.c: how long one transformer layer takes on one microbatch, forward and backward.
 *
 * A linear term in (padded) tokens for the frozen base's GEMMs, a term in tokens x LoRA rank for the
 * adapters' own skinny GEMMs, a quadratic term sum(len^2) for causal attention, and a fixed cost per
 * microbatch. Token counts alone (LoRAFusion's cost) call a microbatch of one 4096-token sample as cheap as
 * one of eight 512-token samples; with attention counted it is ~10% dearer on an 8B model. The coefficients
 * come from the model's FLOPs at assumed throughputs, or from a least-squares fit to measured layer times. */
#include "sched_internal.h"
#include "lg_base.h"

#include <math.h>
#include <string.h>

struct lg_model_dims lg_model_dims_default(void)
{
    struct lg_model_dims d = {
        .hidden = 4096, .ffn = 14336, .layers = 32, .heads = 32, .kv_heads = 8,
        .tflops = 400.0, .attn_tflops = 250.0, .layer_us = 40.0,
    };
    return d;
}

enum lg_status lg_costmodel_from_dims(const struct lg_model_dims *d, struct lg_costmodel *out)
{
    if (!d || !out)
        return lg_fail(LG_ERR_INVALID, "lg_costmodel_from_dims: null argument");
    if (d->hidden <= 0 || d->ffn <= 0 || d->layers <= 0 || d->heads <= 0 || d->kv_heads <= 0)
        return lg_fail(LG_ERR_INVALID, "model: hidden, ffn, layers, heads and kv_heads must be positive");
    if (d->hidden % d->heads || d->heads % d->kv_heads)
        return lg_fail(LG_ERR_INVALID, "model: hidden (%d) must divide by heads (%d), heads by kv_heads (%d)",
                       d->hidden, d->heads, d->kv_heads);
    if (!(d->tflops > 0) || !(d->attn_tflops > 0) || !(d->layer_us >= 0))
        return lg_fail(LG_ERR_INVALID, "model: tflops and attention_tflops must be > 0, layer_us >= 0");
    double h = d->hidden, f = d->ffn, kv = (double)d->hidden / d->heads * d->kv_heads;
    /* q, k, v, o, gate, up, down: weights and the (in + out) widths their LoRA pairs see */
    double params = h * h * 2 + h * kv * 2 + 3 * h * f;
    double lora_width = (h + h) * 2 + (h + kv) * 2 + (h + f) * 3;
    memset(out, 0, sizeof *out);
    out->layer_us = d->layer_us;
    out->token_us = 2.0 * params / (d->tflops * 1e6);
    /* rank-r GEMMs are memory bound: assume a quarter of the dense rate */
    out->token_rank_us = 2.0 * lora_width / (d->tflops * 0.25 * 1e6);
    /* causal attention: QK^T and PV, 2*len^2*h FLOPs each, half of them masked */
    out->attn_us = 2.0 * h / (d->attn_tflops * 1e6);
    out->bwd_linear = 1.05;
    out->bwd_attn = 2.5;
    out->layers = d->layers;
    /* kept for backward: norm in/out, q, k, v, attention out, residual, norm, gate, up, act (bf16) */
    out->act_bytes = 2.0 * (6 * h + 2 * kv + 3 * f);
    return LG_OK;
}

double lg_costmodel_fwd_us(const struct lg_costmodel *cm, double padded, double rank_tokens, double sum_len2)
{
    return cm->layer_us + cm->token_us * padded + cm->token_rank_us * rank_tokens + cm->attn_us * sum_len2;
}

double lg_costmodel_bwd_us(const struct lg_costmodel *cm, double padded, double rank_tokens, double sum_len2)
{
    return cm->layer_us + cm->bwd_linear * (cm->token_us * padded + cm->token_rank_us * rank_tokens) +
           cm->bwd_attn * cm->attn_us * sum_len2;
}

int lg_sched_stage_layers(const struct lg_costmodel *cm, int stages, int s)
{
    return cm->layers / stages + (s < cm->layers % stages);
}

uint32_t lg_sched_memory_capacity(const struct lg_job_params *p)
{
    int l0 = lg_sched_stage_layers(&p->cost, p->stages, 0);
    double per_token = (double)p->stages * l0 * p->cost.act_bytes;
    if (!(per_token > 0) || !(p->memory_budget_bytes > 0))
        return 0;
    double c = floor(p->memory_budget_bytes / per_token);
    if (c > 1 << 24)
        c = 1 << 24;
    uint32_t m = p->pad_multiple > 0 ? (uint32_t)p->pad_multiple : 1;
    return (uint32_t)c / m * m;
}

/* Solves the k x k system a x = b in place (Gaussian elimination, partial pivoting). */
static int solve(double a[4][4], double b[4], int k, double x[4])
{
    for (int c = 0; c < k; c++) {
        int piv = c;
        for (int r = c + 1; r < k; r++)
            if (fabs(a[r][c]) > fabs(a[piv][c]))
                piv = r;
        if (fabs(a[piv][c]) < 1e-12)
            return -1;
        for (int j = 0; j < k; j++) {
            double t = a[c][j];
            a[c][j] = a[piv][j];
            a[piv][j] = t;
        }
        double t = b[c];
        b[c] = b[piv];
        b[piv] = t;
        for (int r = c + 1; r < k; r++) {
            double f = a[r][c] / a[c][c];
            for (int j = c; j < k; j++)
                a[r][j] -= f * a[c][j];
            b[r] -= f * b[c];
        }
    }
    for (int r = k - 1; r >= 0; r--) {
        double s = b[r];
        for (int j = r + 1; j < k; j++)
            s -= a[r][j] * x[j];
        x[r] = s / a[r][r];
    }
    return 0;
}

enum lg_status lg_costmodel_fit(struct lg_costmodel *cm, const struct lg_cost_sample *s, size_t n)
{
    if (!cm || !s)
        return lg_fail(LG_ERR_INVALID, "lg_costmodel_fit: null argument");
    int use_rank = 0;
    for (size_t i = 0; i < n; i++)
        use_rank |= s[i].rank_tokens != 0;
    int k = use_rank ? 4 : 3;
    if (n < (size_t)k + 1)
        return lg_fail(LG_ERR_INVALID, "cost calibration: need at least %d measurements, got %zu", k + 1, n);
    /* columns: 1, tokens, sum_len2, rank_tokens; scaled to unit max so the normal equations stay sane */
    double scale[4] = {1, 0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        if (!(s[i].fwd_us > 0) || s[i].tokens < 0 || s[i].sum_len2 < 0 || s[i].rank_tokens < 0)
            return lg_fail(LG_ERR_INVALID, "cost calibration[%zu]: times must be > 0, counts >= 0", i + 1);
        scale[1] = fmax(scale[1], s[i].tokens);
        scale[2] = fmax(scale[2], s[i].sum_len2);
        scale[3] = fmax(scale[3], s[i].rank_tokens);
    }
    for (int j = 1; j < k; j++)
        if (scale[j] == 0)
            return lg_fail(LG_ERR_INVALID, "cost calibration: every measurement has zero %s",
                           j == 1 ? "tokens" : j == 2 ? "sum_len2" : "rank_tokens");
    double ata[4][4] = {{0}}, atb[4] = {0}, x[4] = {0};
    for (size_t i = 0; i < n; i++) {
        double row[4] = {1, s[i].tokens / scale[1], s[i].sum_len2 / scale[2],
                         use_rank ? s[i].rank_tokens / scale[3] : 0};
        for (int r = 0; r < k; r++) {
            for (int c = 0; c < k; c++)
                ata[r][c] += row[r] * row[c];
            atb[r] += row[r] * s[i].fwd_us;
        }
    }
    if (solve(ata, atb, k, x) != 0)
        return lg_fail(LG_ERR_INVALID, "cost calibration: the measurements do not separate the terms (vary "
                                       "tokens and sample lengths independently)");
    double layer = x[0], tok = x[1] / scale[1], attn = x[2] / scale[2], rank = use_rank ? x[3] / scale[3] : 0;
    double tmax = 0;
    for (size_t i = 0; i < n; i++)
        tmax = fmax(tmax, s[i].fwd_us);
    if (layer < -1e-6 * tmax || tok < 0 || attn < 0 || rank < 0)
        return lg_fail(LG_ERR_INVALID,
                       "cost calibration: fitted a negative coefficient (layer_us %.4g, token_us %.4g, "
                       "attention_us %.4g, token_rank_us %.4g): the measurements do not follow the model",
                       layer, tok, attn, rank);
    cm->layer_us = fmax(layer, 0);
    cm->token_us = tok;
    cm->attn_us = attn;
    if (use_rank)
        cm->token_rank_us = rank;
    return LG_OK;
}
