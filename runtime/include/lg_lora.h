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
 * Borrowed base (params.base = LG_LORA_BASE_BORROWED): W [M,K] (and the bias) stay in the caller's memory, e.g. a
 * PyTorch model's own weight, given by lg_lora_set_base as a device pointer and a leading dimension; the layer
 * owns only A and B (packed [r,K] and [M,r]). There is no [W|B] to extend K with, so the layer takes the
 * separate-buffer paths: Y = X·Wᵀ (+ bias), then Y += S·Bᵀ; dX = dY·W, then the dA pass adds the (masked)
 * dS·A. S may still sit in X's tail and dS in dY's tail. lg_lora_set_adapter_device refreshes A and B from
 * device memory on a stream (fp32 sources are converted on the device), so a framework's own parameters
 * need no trip through the host.
 *
 * Ownership: lg_lora_t owns its weight buffer (or, borrowed, its A/B buffer) and its workspace (device
 * memory), and borrows the lg_ctx_t and, in the borrowed mode, W and the bias (which must outlive the calls
 * that use them). Calls on one layer must be ordered on one stream at a time (the workspace is shared by its
 * calls); a caller running many layers on one stream may give each backward its own workspace instead
 * (lg_lora_bwd.ws, sized by lg_lora_backward_workspace), e.g. one buffer for all layers. Calls may come from
 * any thread: each makes the context that was current at lg_lora_init (the lg_ctx_t's primary context)
 * current first. Gradients dA [r,K] and dB [M,r] are fp32 device buffers of the caller; with grad_beta = 1
 * they accumulate.
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
 *
 *   // borrowed base: W is a framework's tensor [M, K] with row stride ldw; A, B come as fp32 device arrays
 *   lp.base = LG_LORA_BASE_BORROWED;  lg_lora_init(ctx, &lp, &q);
 *   lg_lora_set_base(q, w_dev, ldw, 0);
 *   struct lg_lora_adapter_src src = { .dtype = LG_FP32, .a = a_f32, .lda = 4096, .b = b_f32, .ldb = 16 };
 *   lg_lora_set_adapter_device(q, &src, stream);
 *   // forward/backward as above, with S in its own buffer when X has no room (f.s, f.lds = 16)
 */
#ifndef LG_LORA_H
#define LG_LORA_H

#include "lg_ctx.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lg_lora lg_lora_t;

/* Where the frozen weight W (and the bias) lives. */
enum lg_lora_base {
    LG_LORA_BASE_OWNED = 0,    /* the layer's [[W,B],[A,0]] buffer, filled by lg_lora_set_weights */
    LG_LORA_BASE_BORROWED = 1, /* the caller's W [M,K] (lg_lora_set_base); the layer owns only A and B */
};

struct lg_lora_params {
    int64_t in_features;  /* K, multiple of 64 */
    int64_t out_features; /* M, multiple of 64 */
    int rank;             /* r, multiple of 8, at most 128 */
    float alpha;          /* s = alpha / r */
    float dropout;        /* p in [0, 1) */
    enum lg_dtype dtype;  /* LG_BF16 or LG_FP16 */
    int has_bias;      /* owned: the layer holds a bias (lg_lora_set_weights); borrowed: lg_lora_set_base gives one */
    uint32_t layer_id; /* dropout counter: distinct per layer so masks differ */
    enum lg_lora_base base; /* where W lives; zero (owned) keeps the extended-K buffer */
};

LG_API enum lg_status lg_lora_init(lg_ctx_t *ctx, const struct lg_lora_params *p, lg_lora_t **out);
LG_API void lg_lora_free(lg_lora_t *l);

/* Host arrays of dtype bits: w [M,K], a [r,K], b [M,r], bias [M] (NULL when the layer has none). A borrowed
 * layer takes only a and b (w and bias are the caller's: lg_lora_set_base). */
LG_API enum lg_status lg_lora_set_weights(lg_lora_t *l, const uint16_t *w, const uint16_t *a, const uint16_t *b,
                                   const uint16_t *bias);
/* Copies the current adapter back to the host (dtype bits). */
LG_API enum lg_status lg_lora_get_adapter(lg_lora_t *l, uint16_t *a, uint16_t *b);

/* The [[W,B],[A,0]] buffer (ld = K+r), e.g. for an optimizer that updates A and B in place; 0 for a borrowed
 * layer (it has no such buffer). */
LG_API CUdeviceptr lg_lora_weights(const lg_lora_t *l);

/* Borrowed layers only: the caller's W [M,K] with row stride ldw (elements; >= K, a multiple of 8, 16-byte
 * aligned) and bias [M] (given exactly when the layer has has_bias; 0 otherwise). No device work and no copy:
 * call it again whenever the caller's buffer moves. */
LG_API enum lg_status lg_lora_set_base(lg_lora_t *l, CUdeviceptr w, int64_t ldw, CUdeviceptr bias);

/* The W the GEMMs read, and its row stride: the layer's own buffer, or the borrowed one (0 before
 * lg_lora_set_base). For callers that check nothing was copied. */
LG_API CUdeviceptr lg_lora_base_weight(const lg_lora_t *l, int64_t *ldw);

/* A [r,K] and B [M,r] from device memory. dtype LG_FP32: packed rows (lda = K, ldb = r), 16-byte aligned,
 * converted to the layer's dtype by a kernel (round to nearest even). dtype equal to the layer's: any
 * leading dimension (a multiple of 8), copied. a or b may be 0 to leave that matrix as it is. */
struct lg_lora_adapter_src {
    enum lg_dtype dtype;
    CUdeviceptr a;
    int64_t lda;
    CUdeviceptr b;
    int64_t ldb;
};
/* Asynchronous on `stream`: the sources must stay valid until the stream reaches the copy. */
LG_API enum lg_status lg_lora_set_adapter_device(lg_lora_t *l, const struct lg_lora_adapter_src *src,
                                                 CUstream stream);

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
    CUdeviceptr ws;  /* the caller's workspace, 256-byte aligned, for this call only; 0: the layer's own */
    size_t ws_size;  /* bytes at ws: at least lg_lora_backward_workspace's answer */
};
LG_API enum lg_status lg_lora_backward(lg_lora_t *l, const struct lg_lora_bwd *b, CUstream stream);

/* Bytes of workspace lg_lora_backward needs for this call (its n, dx and lddy matter). Resolves the
 * backward's kernels (the first call per layer configuration generates and compiles them). */
LG_API enum lg_status lg_lora_backward_workspace(lg_lora_t *l, const struct lg_lora_bwd *b, size_t *bytes);

/* Device address of dS after backward when dY had no room for it ([n,r], ld r), inside the workspace that
 * backward used (the layer's or the caller's); for tests. */
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
/* t = NULL: back to automatic tiles. Until a layer's tiles are set, each call looks up the tuning database
 * (lg_tune.h, lg_tune_default) under lg_lora_tune_key for its token count and uses the winner's tiles, or the
 * defaults when no entry matches. */
LG_API enum lg_status lg_lora_set_tiles(lg_lora_t *l, const struct lg_lora_tiles *t);

/* The tiles the layer's last call used (its own, the database's winner, or the arch heuristic's). */
LG_API void lg_lora_get_tiles(const lg_lora_t *l, struct lg_lora_tiles *t);

/* The tuning database's view of a layer (lg_tune.h): its key at n tokens on ctx's GPU (op "lora", shape
 * "k<K>_m<M>_r<r>_p<0|1>", the token bucket of n), and the tiles as an entry's named parameters (down_wm, ...,
 * dx_algo; zero tiles are left out). */
struct lg_tune_key;
struct lg_tune_entry;
LG_API void lg_lora_tune_key(lg_ctx_t *ctx, const struct lg_lora_params *p, int64_t n, struct lg_tune_key *out);
LG_API void lg_lora_tiles_from_entry(const struct lg_tune_entry *e, struct lg_lora_tiles *t);
LG_API void lg_lora_tiles_to_entry(const struct lg_lora_tiles *t, struct lg_tune_entry *e);
/* The tiles a layer of parameters p uses on ctx's arch without a database entry: zero (the generator's
 * defaults) except where a default cannot run on this arch (lg_tune.h's rules), which gets the nearest variant
 * that can. */
LG_API enum lg_status lg_lora_arch_tiles(lg_ctx_t *ctx, const struct lg_lora_params *p, struct lg_lora_tiles *t);

#ifdef __cplusplus
}
#endif
#endif
