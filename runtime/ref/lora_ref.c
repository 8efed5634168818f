/* ref.c: CPU reference of the LoRA layer (see lg_ref.h). Plain loops in double: slow and obviously right. */
#include "lg_ref.h"
#include "lg_half.h"
#include "common/lg_philox.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

uint32_t lg_ref_dropout_thresh16(float p) { return lg_dropout_thresh16(p); }

float lg_ref_keep_scale(float p) { return lg_dropout_keep_scale(lg_dropout_thresh16(p)); }

void lg_ref_dropout_mask(uint64_t seed, uint32_t layer, float p, int64_t n, int64_t k, uint8_t *mask)
{
    uint32_t th = lg_ref_dropout_thresh16(p);
    for (int64_t i = 0; i < n * k; i += 8) {
        uint32_t bits = th ? lg_dropout_keep8(seed, layer, (uint64_t)i >> 3, th) : 0xffu;
        for (int j = 0; j < 8 && i + j < n * k; j++)
            mask[i + j] = (uint8_t)((bits >> j) & 1u);
    }
}

/* D(x) = x ⊙ mask · keep_scale, as a new array */
static double *dropped(const struct lg_ref_lora *L, int64_t n, const float *x)
{
    double *d = malloc(sizeof *d * (size_t)(n * L->K));
    uint8_t *m = malloc((size_t)(n * L->K));
    lg_ref_dropout_mask(L->seed, L->layer, L->dropout, n, L->K, m);
    double ks = lg_ref_keep_scale(L->dropout);
    for (int64_t i = 0; i < n * L->K; i++)
        d[i] = m[i] ? (double)x[i] * ks : 0.0;
    free(m);
    return d;
}

void lg_ref_lora_forward(const struct lg_ref_lora *L, int64_t n, const float *x, double *y, float *s)
{
    const int64_t K = L->K, M = L->M, r = L->r;
    const double sc = (double)L->alpha / r;
    double *dx = dropped(L, n, x);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < r; j++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++)
                acc += dx[i * K + k] * L->a[j * K + k];
            s[i * r + j] = lg_round_to(L->round, (float)(sc * acc));
        }
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < M; o++) {
            double acc = L->bias ? L->bias[o] : 0.0;
            for (int64_t k = 0; k < K; k++)
                acc += (double)x[i * K + k] * L->w[o * K + k];
            for (int64_t j = 0; j < r; j++)
                acc += (double)s[i * r + j] * L->b[o * r + j];
            y[i * M + o] = acc;
        }
    free(dx);
}

void lg_ref_lora_backward(const struct lg_ref_lora *L, int64_t n, const float *x, const float *s, const float *dy,
                          double *dxo, double *da, double *db, float *ds)
{
    const int64_t K = L->K, M = L->M, r = L->r;
    const double sc = (double)L->alpha / r;
    /* dB = dYᵀ·S */
    for (int64_t o = 0; o < M; o++)
        for (int64_t j = 0; j < r; j++) {
            double acc = 0;
            for (int64_t i = 0; i < n; i++)
                acc += (double)dy[i * M + o] * s[i * r + j];
            db[o * r + j] = acc;
        }
    /* dS = s·dY·B, rounded as stored */
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < r; j++) {
            double acc = 0;
            for (int64_t o = 0; o < M; o++)
                acc += (double)dy[i * M + o] * L->b[o * r + j];
            ds[i * r + j] = lg_round_to(L->round, (float)(sc * acc));
        }
    /* dA = dSᵀ·D(X) */
    double *dxd = dropped(L, n, x);
    for (int64_t j = 0; j < r; j++)
        for (int64_t k = 0; k < K; k++) {
            double acc = 0;
            for (int64_t i = 0; i < n; i++)
                acc += (double)ds[i * r + j] * dxd[i * K + k];
            da[j * K + k] = acc;
        }
    free(dxd);
    if (!dxo)
        return;
    /* dX = dY·W + D'(dS·A), with D' the same mask and scale */
    uint8_t *m = malloc((size_t)(n * K));
    lg_ref_dropout_mask(L->seed, L->layer, L->dropout, n, K, m);
    double ks = lg_ref_keep_scale(L->dropout);
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < K; k++) {
            double acc = 0, corr = 0;
            for (int64_t o = 0; o < M; o++)
                acc += (double)dy[i * M + o] * L->w[o * K + k];
            for (int64_t j = 0; j < r; j++)
                corr += (double)ds[i * r + j] * L->a[j * K + k];
            dxo[i * K + k] = acc + (m[i * K + k] ? corr * ks : 0.0);
        }
    free(m);
}
