/* lg_lora.h: FusedLoRA, one LoRA linear layer, forward and backward.
 *
 *   Y  = X·Wᵀ + s·D(X)·Aᵀ·Bᵀ (+ bias)           s = alpha/r, D = dropout(p), mask from Philox(seed, layer, n*K+k)
 *   dB = dYᵀ·S,  dS = s·dY·B,  dA = dSᵀ·D(X),  dX = dY·W + D'(dS·A)      (W frozen: no dW)
 *
 * Extended K (docs/design.md): the layer stores one weight buffer [[W, B], [A, 0]] of shape [M+r, K+r]. When the
 * caller's X buffer has room for r more columns (ldx >= K+r), the down-projection kernel writes
 * S = s·D(X)·Aᵀ into those columns and a single cuBLASLt GEMM computes Y = [X|S]·[W|B]ᵀ. Likewise, when dY
 * has room (lddy >= M+r) the dY kernel writes dS there and, for p = 0, dX = [dY|dS]·[W;A] is one GEMM; for
 * p > 0 the dX GEMM covers dY·W and the dA kernel adds the masked correction in the same pass over X that
 * gives dA. Without the room, S (caller's buffer) and dS (layer workspace) live apart and extra GEMMs or the
 * fused correction do the same math. Reductions over tokens are two-stage and deterministic.
 *
 * Ownership: lg_lora_t owns its weight buffer and workspace (device memory), and borrows the lg_ctx_t.
 * Calls on one layer must be ordered on one stream at a time (the workspace is shared by its calls).
 * Gradients dA [r,K] and dB [M,r] are fp32 device buffers of the caller; with grad_beta = 1 they accumulate.
 *
 *   struct lg_lora_params lp = { .in_features = 4096, .out_features = 4096, .rank = 16, .alpha = 32,
 *                                .dropout = 0.1f, .dtype = LG_BF16, .layer_id = 7 };
 *   lg_lora_t *q;  lg_lora_init(ctx, &lp, &q);
 *   lg_lora_set_weights(q, w_host, a_host, b_host, NULL);
 *   struct lg_lora_fwd f = { .n = n, .x = x, .ldx = 4096 + 16, .y = y, .ldy = 4096, .seed = step };
 *   lg_lora_forward(q, &f, stream);
 *   struct lg_lora_bwd b = { .n = n, .x = x, .ldx = 4096 + 16, .dy = dy, .lddy = 4096 + 16, .dx = dx,
 *                            .lddx = 4096, .da = da, .db = db, .seed = step };
 *   lg_lora_backward(q, &b, stream);
 *   lg_lora_free(q);
 */
#ifndef LG_LORA_H
#define LG_LORA_H

#include "lg_ctx.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lg_lora lg_lora_t;

struct lg_lora_params {
    int64_t in_features;  /* K, multiple of 64 */
    int64_t out_features; /* M, multiple of 64 */
    int rank;             /* r, multiple of 8, at most 128 */
    float alpha;          /* s = alpha / r */
    float dropout;        /* p in [0, 1) */
    enum lg_dtype dtype;  /* LG_BF16 or LG_FP16 */
    int has_bias;
    uint32_t layer_id; /* dropout counter: distinct per layer so masks differ */
};

LG_API enum lg_status lg_lora_init(lg_ctx_t *ctx, const struct lg_lora_params *p, lg_lora_t **out);
LG_API void lg_lora_free(lg_lora_t *l);

/* Host arrays of dtype bits: w [M,K], a [r,K], b [M,r], bias [M] (NULL when the layer has none). */
LG_API enum lg_status lg_lora_set_weights(lg_lora_t *l, const uint16_t *w, const uint16_t *a, const uint16_t *b,
                                   const uint16_t *bias);
/* Copies the current adapter back to the host (dtype bits). */
LG_API enum lg_status lg_lora_get_adapter(lg_lora_t *l, uint16_t *a, uint16_t *b);

/* The [[W,B],[A,0]] buffer (ld = K+r), e.g. for an optimizer that updates A and B in place. */
LG_API CUdeviceptr lg_lora_weights(const lg_lora_t *l);

struct lg_lora_fwd {
    int64_t n;      /* tokens; any count >= 1 */
    CUdeviceptr x;  /* X [n,K] */
    int64_t ldx;    /* >= K+r: S goes into columns K..K+r-1 (extended K) */
    CUdeviceptr s;  /* only when ldx < K+r: S [n,r] buffer, kept for backward */
    int64_t lds;
    CUdeviceptr y;  /* Y [n,M] */
    int64_t ldy;
    uint64_t seed;  /* dropout seed of this step; backward must pass the same */
};
LG_API enum lg_status lg_lora_forward(lg_lora_t *l, const struct lg_lora_fwd *f, CUstream stream);

struct lg_lora_bwd {
    int64_t n;
    CUdeviceptr x;   /* the forward's X (and S in its tail when ldx >= K+r) */
    int64_t ldx;
    CUdeviceptr s;   /* the forward's S buffer when ldx < K+r */
    int64_t lds;
    CUdeviceptr dy;  /* dY [n,M]; lddy >= M+r: dS is written into its tail */
    int64_t lddy;
    CUdeviceptr dx;  /* dX [n,K]; 0 skips dX (the first layer needs none) */
    int64_t lddx;
    CUdeviceptr da;  /* fp32 [r,K] */
    CUdeviceptr db;  /* fp32 [M,r] */
    float grad_beta; /* 0: overwrite dA/dB; 1: accumulate */
    uint64_t seed;
};
LG_API enum lg_status lg_lora_backward(lg_lora_t *l, const struct lg_lora_bwd *b, CUstream stream);

/* Device address of dS after backward when dY had no room for it ([n,r], ld r); for tests. */
LG_API CUdeviceptr lg_lora_ds_buffer(const lg_lora_t *l);

/* Kernel tile choices and cuBLASLt algorithm picks (the tuner sets these; zero fields keep the defaults). */
struct lg_lora_tiles {
    int down_wm, down_wk, down_mt, down_u;
    int dy_nct, dy_st;
    int down_minb, dy_minb, da_minb; /* blocks per SM the kernels' register use must allow (1: no bound) */
    int fwd_algo, dx_algo; /* index into cuBLASLt's heuristic candidates for the two big GEMMs */
};

/* The leading dimension to give X-like buffers [n, K] (and dY-like [n, M]) so the extended-K layout has room
 * for r columns and every row starts on a 128-byte boundary (the GEMMs run measurably slower otherwise). */
LG_API int64_t lg_lora_ext_ld(int64_t features, int rank);
LG_API enum lg_status lg_lora_set_tiles(lg_lora_t *l, const struct lg_lora_tiles *t);

#ifdef __cplusplus
}
#endif
#endif
