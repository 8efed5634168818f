/* tokenwise.c: the ops of the CPU reference (lg_ref_ops.h) that see one token at a time: the embedding gather,
 * RMSNorm (LlamaRMSNorm / Qwen2RMSNorm) and the SwiGLU activation of LlamaMLP / Qwen2MLP,
 * act_fn(gate_proj(x)) * up_proj(x) with act_fn = SiLU (the projections are lg_ref_linear or the LoRA layer). */
#include "lg_ref_impl.h"

#include <math.h>
#include <string.h>

enum lg_status lg_ref_embed(int64_t n, int64_t V, int64_t H, const int32_t *ids, const float *table, float *out)
{
    if (n < 0 || V < 1 || H < 1)
        return lg_fail(LG_ERR_INVALID, "lg_ref_embed: bad shape n %lld, V %lld, H %lld", (long long)n,
                       (long long)V, (long long)H);
    for (int64_t t = 0; t < n; t++)
        if (ids[t] < 0 || ids[t] >= V)
            return lg_fail(LG_ERR_INVALID, "lg_ref_embed: token %lld has id %d, outside [0, %lld)", (long long)t,
                           ids[t], (long long)V);
    for (int64_t t = 0; t < n; t++)
        memcpy(out + t * H, table + (int64_t)ids[t] * H, sizeof(float) * (size_t)H);
    return LG_OK;
}

void lg_ref_rmsnorm_forward(const struct lg_ref_rmsnorm *p, int64_t n, const float *x, float *y, float *rstd)
{
    const int64_t H = p->H;
    for (int64_t t = 0; t < n; t++) {
        const float *xr = x + t * H;
        double ss = 0;
        for (int64_t c = 0; c < H; c++)
            ss += (double)xr[c] * xr[c];
        /* HF keeps rstd in fp32; the backward uses the stored value, so round it here too */
        float r = (float)(1.0 / sqrt(ss / (double)H + (double)p->eps));
        for (int64_t c = 0; c < H; c++)
            y[t * H + c] = (float)((double)p->w[c] * ((double)xr[c] * r));
        if (rstd)
            rstd[t] = r;
    }
}

void lg_ref_rmsnorm_backward(const struct lg_ref_rmsnorm *p, int64_t n, const float *x, const float *rstd,
                             const float *dy, float *dx)
{
    const int64_t H = p->H;
    for (int64_t t = 0; t < n; t++) {
        const float *xr = x + t * H, *dr = dy + t * H;
        const double r = rstd[t];
        double dot = 0; /* Σ g·x̂ */
        for (int64_t c = 0; c < H; c++)
            dot += (double)dr[c] * p->w[c] * ((double)xr[c] * r);
        const double mean = dot / (double)H;
        for (int64_t c = 0; c < H; c++) {
            double g = (double)dr[c] * p->w[c];
            dx[t * H + c] = (float)(r * (g - (double)xr[c] * r * mean));
        }
    }
}

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

void lg_ref_swiglu_forward(int64_t n, const float *g, const float *u, float *a)
{
    for (int64_t e = 0; e < n; e++) {
        const double x = g[e];
        a[e] = (float)(x * sigmoid(x) * u[e]);
    }
}

void lg_ref_swiglu_backward(int64_t n, const float *g, const float *u, const float *da, float *dg, float *du)
{
    for (int64_t e = 0; e < n; e++) {
        const double x = g[e], s = sigmoid(x), d = da[e];
        if (dg)
            dg[e] = (float)(d * u[e] * s * (1.0 + x * (1.0 - s)));
        if (du)
            du[e] = (float)(d * x * s);
    }
}
