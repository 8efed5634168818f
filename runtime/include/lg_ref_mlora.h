/* lg_ref_mlora.h: the CPU reference of the multi-adapter and merged LoRA layer (FusedMultiLoRA, lg_mlora.h), in
 * double precision. The GPU tests compare every mlora kernel against it; its math is the CPU training
 * backend's (runtime/model/backend_cpu_linear.c), which can share it.
 *
 * A layer has nmod modules (outputs) that read the same input X [n, K] (q/k/v: 3, gate/up: 2, else 1); module m
 * has W_m [M_m, K] and Y, dY are [n, Σ M_m] with the modules side by side. Each (adapter a, module m) slot has
 * its own rank (0: the adapter does not adapt that module), alpha, dropout, A [r, K] and B [M_m, r]. The
 * microbatch's tokens are segments (adapter, start, len) in token order covering [0, n); adapter -1 is the
 * base model alone. Per segment of adapter a and per module m:
 *   S = s·D_m(X)·Aᵀ (rounded to `round`), Y_m += S·Bᵀ;   dB = dY_mᵀ·S, dS = s·dY_m·B (rounded),
 *   dA = dSᵀ·D_m(X), dX += D_m'(dS·A)
 * with s = alpha / r and D_m the kernels' dropout (templates/common/lg_philox.h) on element t·K + k of the
 * layer input, counter layer_id + m: every module its own mask, as PEFT draws one per module. train = 0 turns
 * dropout off (evaluation).
 *
 * Outputs are written, never accumulated: y [n, ΣM] and dx [n, K] entirely; the gradients of the slots whose
 * adapter has tokens (rank > 0); the gradients of absent adapters are left untouched. S and dS come out as
 * [n, nmod, rmax] (element (t, m, j) at (t·nmod + m)·rmax + j, j < the slot's rank; other entries 0) with
 * rmax = lg_ref_mlora_rmax(L).
 *
 *   struct lg_ref_mlora_slot sl[2] = {{.rank = 8, .alpha = 16, .dropout = 0.1f, .a = a0, .b = b0},
 *                                     {.rank = 4, .alpha = 8, .a = a1, .b = b1}};
 *   struct lg_ref_mlora L = {.K = 128, .nmod = 1, .M = {256}, .nadapters = 2, .slot = sl, .w = {w},
 *                            .round = LG_BF16, .seed = 1, .layer_id = 7, .train = 1};
 *   struct lg_ref_mlora_seg seg[2] = {{0, 0, 30}, {1, 30, 70}};
 *   lg_ref_mlora_forward(&L, 100, x, 2, seg, y, s);
 *   lg_ref_mlora_backward(&L, 100, x, 2, seg, s, dy, dx, da, db, ds);   // da[i], db[i]: slot i's, or NULL
 */
#ifndef LG_REF_MLORA_H
#define LG_REF_MLORA_H

#include "lg_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LG_REF_MLORA_MAXMOD 3

struct lg_ref_mlora_slot {
    int rank; /* 0: not adapted */
    float alpha, dropout;
    const float *a; /* [rank, K] */
    const float *b; /* [M_m, rank] */
};

struct lg_ref_mlora_seg {
    int adapter; /* -1: base model only */
    int64_t start, len;
};

struct lg_ref_mlora {
    int64_t K;
    int nmod;
    int64_t M[LG_REF_MLORA_MAXMOD];
    int nadapters;
    const struct lg_ref_mlora_slot *slot; /* [nadapters * nmod]: adapter a, module m at a * nmod + m */
    const float *w[LG_REF_MLORA_MAXMOD];    /* W_m [M_m, K] */
    const float *bias[LG_REF_MLORA_MAXMOD]; /* [M_m] or NULL */
    enum lg_dtype round;                    /* rounding of S and dS, as the GPU stores them */
    uint64_t seed;
    uint32_t layer_id; /* module m draws with layer_id + m */
    int train;         /* 0: no dropout */
};

/* The largest slot rank (the S/dS row pitch of this reference); the total output width Σ M_m. */
LG_API int lg_ref_mlora_rmax(const struct lg_ref_mlora *L);
LG_API int64_t lg_ref_mlora_mtotal(const struct lg_ref_mlora *L);

/* y [n, ΣM] = Σ_m X·W_mᵀ (+ bias) + the LoRA term of each segment; s [n, nmod, rmax] (NULL: not returned,
 * still computed). Returns LG_ERR_INVALID for segments that do not tile [0, n) or name a bad adapter. */
LG_API enum lg_status lg_ref_mlora_forward(const struct lg_ref_mlora *L, int64_t n, const float *x, int nseg,
                                           const struct lg_ref_mlora_seg *seg, double *y, float *s);

/* From x, the forward's s and dy [n, ΣM]: dx [n, K] (NULL: skipped), da[i] [rank, K] and db[i] [M_m, rank] of
 * slot i (NULL entries skipped), ds [n, nmod, rmax] (NULL: not returned). */
LG_API enum lg_status lg_ref_mlora_backward(const struct lg_ref_mlora *L, int64_t n, const float *x, int nseg,
                                            const struct lg_ref_mlora_seg *seg, const float *s, const float *dy,
                                            double *dx, double *const *da, double *const *db, float *ds);

#ifdef __cplusplus
}
#endif
#endif
