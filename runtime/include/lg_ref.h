/* lg_ref.h: the CPU reference of the LoRA layer, in double precision. The GPU tests compare every kernel
 * against it, and the CPU backend trains tiny models with it.
 *
 * It follows the same math as the kernels, including where the GPU rounds intermediates to the storage dtype
 * (S before the up-projection, dS before dX and dA): set `round` to the dtype to mirror that, or LG_FP32 for
 * exact math. The dropout mask is the kernels' own function (templates/lg_philox.h).
 *
 * All arrays are row-major and packed (ld = row length). Outputs are written, never accumulated.
 *
 *   struct lg_ref_lora L = { .K = 128, .M = 320, .r = 8, .alpha = 16, .dropout = 0.1f, .round = LG_BF16,
 *                            .seed = 1, .layer = 0, .w = w, .a = a, .b = b };
 *   lg_ref_lora_forward(&L, n, x, y, s);
 *   lg_ref_lora_backward(&L, n, x, s, dy, dx, da, db, ds);
 */
#ifndef LG_REF_H
#define LG_REF_H

#include "lg_common.h"

#ifdef __cplusplus
extern "C" {
#endif

struct lg_ref_lora {
    int64_t K, M;
    int r;
    float alpha, dropout;
    enum lg_dtype round; /* rounding of S and dS, as the GPU stores them */
    uint64_t seed;
    uint32_t layer;
    const float *w;    /* [M,K] */
    const float *a;    /* [r,K] */
    const float *b;    /* [M,r] */
    const float *bias; /* [M] or NULL */
};

/* The dropout threshold and keep scale the kernels use for probability p. */
LG_API uint32_t lg_ref_dropout_thresh16(float p);
LG_API float lg_ref_keep_scale(float p);
/* Keep mask of an [n,k] input (1 = kept), from the shared Philox function. */
LG_API void lg_ref_dropout_mask(uint64_t seed, uint32_t layer, float p, int64_t n, int64_t k, uint8_t *mask);

/* y [n,M] = x·Wᵀ + S·Bᵀ (+bias), s [n,r] = alpha/r · D(x)·Aᵀ (rounded per L->round). */
LG_API void lg_ref_lora_forward(const struct lg_ref_lora *L, int64_t n, const float *x, double *y, float *s);

/* From x, the forward's s and dy: dx [n,K] (NULL to skip), da [r,K], db [M,r], ds [n,r] (rounded). */
LG_API void lg_ref_lora_backward(const struct lg_ref_lora *L, int64_t n, const float *x, const float *s, const float *dy,
                          double *dx, double *da, double *db, float *ds);

#ifdef __cplusplus
}
#endif
#endif
