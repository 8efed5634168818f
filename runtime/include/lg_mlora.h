/* lg_mlora.h: FusedMultiLoRA, a LoRA linear layer with many adapters in one microbatch and merged projections.
 *
 * A microbatch's tokens X [n, K] are contiguous segments, each owned by one adapter (or none: -1, the base
 * model). The layer has nmod modules that read the same X (q/k/v: 3, gate/up: 2, otherwise 1), W_m [M_m, K],
 * outputs side by side in Y [n, ΣM_m], and one slot per (adapter a, module m) with its own rank (0: a does not
 * adapt m; else a multiple of 4 in 4..128, lg_gen_limits' mlora_rank_*), alpha and dropout. Per segment of a:
 *   Y_m = X·W_mᵀ + s·D_m(X)·Aᵀ·Bᵀ,  s = alpha/r,  D_m = dropout with Philox(seed, layer_id + m, t·K + k)
 *   dB = dY_mᵀ·S,  dS = s·dY_m·B,  dA = dSᵀ·D_m(X),  dX = Σ_m dY_m·W_m + D_m'(dS·A)          (no dW)
 * exactly the CPU backend's math (runtime/model/backend_cpu_linear.c; reference: lg_ref_mlora.h). Every
 * module has its own dropout mask, as PEFT draws one per module.
 *
 * Segment table (lg_mlora_segments_t): built once per microbatch for every layer. lg_mlora_segments_set
 * validates the host copy (segments tile [0, n) in order, no overlap, ids in range, one segment per adapter;
 * empty segments are dropped) and uploads it with cuMemcpyHtoDAsync from a pinned buffer: no host
 * synchronisation (it waits only for the previous upload of the same object to have run). Keep one object per
 * microbatch in flight (1F1B holds several).
 *
 * Two strategies for the up-projection, both generated (lg_mlora_pick decides; either can be forced):
 *   (a) LG_MLORA_EXT_K: extended K, block-diagonal. X's tail holds S_ext with Σ rp columns (rp: rank rounded
 *       up to 8; adapter a's columns non-zero only on its segment, zeros written elsewhere) and one cuBLASLt
 *       GEMM computes Y = [X | S_ext]·[W | B_1 … B_n]ᵀ. Its k spans the present adapters' columns only.
 *   (b) LG_MLORA_EXPAND: the frozen GEMM, then a segmented expand kernel adds S_{a,m}·B_{a,m}ᵀ per segment.
 *   Heuristic (docs/fusedmultilora.md): (a) when X has room for the layer's Σ rp columns, Σ rp <= 256 and
 *   Σ rp <= K/8 (the extra GEMM work Σ rp/K stays below what (b)'s extra read and write of Y costs), else (b).
 * Forward and backward must be given the same strategy (AUTO resolves identically for the same inputs).
 *
 * Merged projections: one down pass reads X once for every module (each masked with its own mask), one dY pass
 * per module column block, one dA pass reads X once for every module and adds all modules' dX corrections.
 * Adapters absent from the microbatch get no kernel work and keep their gradients. Reductions are two-stage in
 * a fixed order (no float atomics): gradients are bitwise reproducible.
 *
 * Ownership: lg_mlora_t owns its weight buffer [[W | B blocks], [A stack | 0]] (dtype), the fp32 gradients of
 * every slot (lg_mlora_grads) and a workspace, and borrows the lg_ctx_t. lg_mlora_segments_t owns its device
 * and pinned host copies. Calls on one layer are ordered on one stream (they share the workspace).
 *
 *   struct lg_mlora_slot_params sl[2] = {{.rank = 16, .alpha = 32, .dropout = 0.1f}, {.rank = 8, .alpha = 16}};
 *   struct lg_mlora_params mp = {.in_features = 4096, .nmod = 1, .out_features = {4096}, .nadapters = 2,
 *                                .slots = sl, .dtype = LG_BF16, .layer_id = 7};
 *   lg_mlora_t *l;  lg_mlora_init(ctx, &mp, &l);
 *   lg_mlora_set_weights(l, 0, w, NULL);  lg_mlora_set_adapter(l, 0, 0, a0, b0);  lg_mlora_set_adapter(l, 1, 0, a1, b1);
 *   lg_mlora_segments_t *sg;  lg_mlora_segments_init(ctx, 64, &sg);
 *   struct lg_mlora_seg segs[2] = {{0, 0, 3000}, {1, 3000, 5192}};
 *   lg_mlora_segments_set(sg, 8192, 2, segs, 2, stream);
 *   struct lg_mlora_fwd f = {.n = 8192, .seg = sg, .x = x, .ldx = lg_mlora_ext_ld(l), .y = y, .ldy = 4096, .seed = step};
 *   lg_mlora_forward(l, &f, stream);
 *   struct lg_mlora_bwd b = {.n = 8192, .seg = sg, .x = x, .ldx = f.ldx, .dy = dy, .lddy = 4096, .dx = dx, .lddx = 4096,
 *                            .seed = step};
 *   lg_mlora_backward(l, &b, stream);   // gradients: lg_mlora_grads(l, a, m, &da, &db)
 */
#ifndef LG_MLORA_H
#define LG_MLORA_H

#include "lg_ctx.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LG_MLORA_MAX_MODULES 3

typedef struct lg_mlora lg_mlora_t;
typedef struct lg_mlora_segments lg_mlora_segments_t;

/* ---- segment tables ---- */

struct lg_mlora_seg {
    int adapter; /* 0..nadapters-1, or -1: base model only */
    int64_t start, len;
};

/* Checks a table on the host (no GPU): segments in token order tiling [0, n) (no overlap, no gap, total n),
 * ids in -1..nadapters-1, no adapter twice, n <= INT32_MAX. LG_ERR_INVALID names the segment and the rule. */
LG_API enum lg_status lg_mlora_segments_check(int64_t n, int nadapters, const struct lg_mlora_seg *seg, int nseg);

/* A table of up to max_segments segments (device and pinned host memory). Needs a current context. */
LG_API enum lg_status lg_mlora_segments_init(lg_ctx_t *ctx, int max_segments, lg_mlora_segments_t **out);
LG_API void lg_mlora_segments_free(lg_mlora_segments_t *s);
/* Validates and uploads asynchronously on `stream`; on error nothing changes (the previous table stays). */
LG_API enum lg_status lg_mlora_segments_set(lg_mlora_segments_t *s, int64_t n, int nadapters,
                                            const struct lg_mlora_seg *seg, int nseg, CUstream stream);
LG_API int64_t lg_mlora_segments_tokens(const lg_mlora_segments_t *s);

/* ---- the layer ---- */

struct lg_mlora_slot_params {
    int rank;      /* 0: the adapter does not adapt this module */
    float alpha;   /* s = alpha / rank */
    float dropout; /* p in [0, 1) */
};

struct lg_mlora_params {
    int64_t in_features;                        /* K, multiple of 64 */
    int nmod;                                   /* 1..3 modules sharing the input */
    int64_t out_features[LG_MLORA_MAX_MODULES]; /* M_m, multiples of 64 */
    int nadapters;                              /* >= 1, no upper bound */
    const struct lg_mlora_slot_params *slots;   /* [nadapters * nmod]: adapter a, module m at a * nmod + m */
    enum lg_dtype dtype;                        /* LG_BF16 or LG_FP16 */
    int has_bias;                               /* bias [ΣM] added by the forward GEMM */
    uint32_t layer_id;                          /* module m's dropout counter is layer_id + m */
};

LG_API enum lg_status lg_mlora_init(lg_ctx_t *ctx, const struct lg_mlora_params *p, lg_mlora_t **out);
LG_API void lg_mlora_free(lg_mlora_t *l);

/* Host arrays of dtype bits: module m's w [M_m, K] and bias [M_m] (NULL: none); slot (a, m)'s a [r, K] and
 * b [M_m, r]. */
LG_API enum lg_status lg_mlora_set_weights(lg_mlora_t *l, int module, const uint16_t *w, const uint16_t *bias);
LG_API enum lg_status lg_mlora_set_adapter(lg_mlora_t *l, int adapter, int module, const uint16_t *a,
                                           const uint16_t *b);
/* Slot (a, m)'s fp32 gradients dA [r, K] and dB [M_m, r] (packed), owned by the layer; 0 for rank 0. */
LG_API enum lg_status lg_mlora_grads(const lg_mlora_t *l, int adapter, int module, CUdeviceptr *da,
                                     CUdeviceptr *db);

/* X's leading dimension with room for strategy (a) (K + Σ rp, 128-byte rows), and the tail width
 * strategy (b) needs in X (or in a separate S buffer) and dS in dY: the widest adapter's Σ_m rp. */
LG_API int64_t lg_mlora_ext_ld(const lg_mlora_t *l);
LG_API int lg_mlora_compact_cols(const lg_mlora_t *l);
/* Σ rp over all slots (strategy (a)'s tail width). */
LG_API int lg_mlora_ext_cols(const lg_mlora_t *l);

enum lg_mlora_strategy {
    LG_MLORA_AUTO = 0,  /* the heuristic (lg_mlora_pick) */
    LG_MLORA_EXT_K = 1, /* (a): block-diagonal extended K, one GEMM */
    LG_MLORA_EXPAND = 2 /* (b): frozen GEMM, then the segmented expand kernel */
};
/* The strategy AUTO resolves to for this layer, table and ldx. */
LG_API enum lg_mlora_strategy lg_mlora_pick(const lg_mlora_t *l, const lg_mlora_segments_t *seg, int64_t ldx);

struct lg_mlora_fwd {
    int64_t n;      /* tokens: must equal the table's */
    const lg_mlora_segments_t *seg;
    CUdeviceptr x;  /* X [n, K] */
    int64_t ldx;    /* (a): >= K + lg_mlora_ext_cols; (b): >= K + lg_mlora_compact_cols puts S in the tail */
    CUdeviceptr s;  /* (b) without room in X: S [n, lds >= compact cols], kept for the backward */
    int64_t lds;
    CUdeviceptr y;  /* Y [n, ΣM] */
    int64_t ldy;
    uint64_t seed;  /* the backward must pass the same */
    int eval;       /* 1: no dropout (evaluation); the backward assumes training */
    enum lg_mlora_strategy strategy;
};
LG_API enum lg_status lg_mlora_forward(lg_mlora_t *l, const struct lg_mlora_fwd *f, CUstream stream);

struct lg_mlora_bwd {
    int64_t n;
    const lg_mlora_segments_t *seg;
    CUdeviceptr x;   /* the forward's X (and S in its tail) */
    int64_t ldx;
    CUdeviceptr s;   /* the forward's S buffer, when it had one */
    int64_t lds;
    CUdeviceptr dy;  /* dY [n, ΣM]; with room (lddy >= ΣM + the tail width) dS goes into its tail */
    int64_t lddy;
    CUdeviceptr dx;  /* dX [n, K]; 0 skips dX */
    int64_t lddx;
    float grad_beta; /* 0: overwrite the present adapters' gradients; 1: accumulate */
    uint64_t seed;
    enum lg_mlora_strategy strategy; /* the forward's */
};
LG_API enum lg_status lg_mlora_backward(lg_mlora_t *l, const struct lg_mlora_bwd *b, CUstream stream);

/* The backward's scratch (partial sums of dS, dB and dA; dS itself when dY has no room), grown on first use to
 * what the largest microbatch needs. Each layer has its own unless given one to share: layers that run one after
 * another on one stream can share one workspace, which then holds the largest layer's need rather than the sum
 * of all (32 Llama-3.1-8B layers at 8192 tokens: about 7 GiB against 0.2). A shared workspace must outlive the
 * layers that use it; it grows (synchronising the stream of the backward that grows it) on any of them. */
typedef struct lg_mlora_ws lg_mlora_ws_t;
LG_API enum lg_status lg_mlora_ws_init(lg_mlora_ws_t **out);
LG_API void lg_mlora_ws_free(lg_mlora_ws_t *ws);
LG_API size_t lg_mlora_ws_bytes(const lg_mlora_ws_t *ws); /* bytes allocated now */
/* Uses ws from now on (NULL: a workspace of its own again); the layer's own, if any, is freed. */
LG_API void lg_mlora_share_ws(lg_mlora_t *l, lg_mlora_ws_t *ws);

/* Device address and row stride of dS after a backward whose dY had no room for it (compact layout: slot
 * (a, m) of a token of a at column off(a, m)), in the workspace until its next use; for tests. */
LG_API CUdeviceptr lg_mlora_ds_buffer(const lg_mlora_t *l, int64_t *ld);
/* Column of slot (a, m) in the compact layout (S/dS of strategy (b)) and in the extended-K layout. */
LG_API int lg_mlora_slot_col(const lg_mlora_t *l, int adapter, int module, int ext);

/* The weight buffer [[W_0; …; W_{nmod-1} | B blocks], [A stack | 0]] and its row stride, e.g. for an optimizer
 * or a benchmark that times the layer's own GEMMs. */
LG_API CUdeviceptr lg_mlora_weights(const lg_mlora_t *l, int64_t *ldw);

/* Kernel tiles (zero fields keep the generator's defaults). */
struct lg_mlora_tiles {
    int down_wm, down_wk, down_mt, down_u;
    int dy_nct, dy_st, expand_nct;
    int down_minb, dy_minb, da_minb;
    int fwd_algo, dx_algo; /* index into cuBLASLt's heuristic candidates (0..7) for the frozen GEMM and dX GEMM */
    int split; /* 1: with several modules, the frozen GEMM (strategy (b)) and the dX GEMM one per module */
};
/* t = NULL: back to automatic tiles. Until a layer's tiles are set, each call looks up the tuning database
 * (lg_tune.h) under lg_mlora_tune_key for its token count, or takes lg_mlora_arch_tiles where none matches. */
LG_API enum lg_status lg_mlora_set_tiles(lg_mlora_t *l, const struct lg_mlora_tiles *t);
/* The tiles the layer's last call used. */
LG_API void lg_mlora_get_tiles(const lg_mlora_t *l, struct lg_mlora_tiles *t);

/* The tuning database's view of a layer: its key at n tokens (op "mlora", shape
 * "k<K>_m<M0>[x<M1>...]_r<R>_a<adapters>_p<0|1>", R the kernels' rank, p whether any slot has dropout, the token
 * bucket of n), the tiles as an entry's named parameters (zero ones left out), and the tiles used without an
 * entry: zero (the generator's defaults) except where a default cannot run on this arch (lg_tune.h's rules),
 * which gets the nearest variant that can. */
struct lg_tune_key;
struct lg_tune_entry;
LG_API void lg_mlora_tune_key(const lg_mlora_t *l, int64_t n, struct lg_tune_key *out);
LG_API void lg_mlora_tiles_from_entry(const struct lg_tune_entry *e, struct lg_mlora_tiles *t);
LG_API void lg_mlora_tiles_to_entry(const struct lg_mlora_tiles *t, struct lg_tune_entry *e);
LG_API enum lg_status lg_mlora_arch_tiles(const lg_mlora_t *l, struct lg_mlora_tiles *t);

#ifdef __cplusplus
}
#endif
#endif
