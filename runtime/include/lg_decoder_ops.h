/* lg_decoder_ops.h: the decoder's GPU ops besides FusedLoRA (lg_lora.h) and attention: the fused residual add +
 * RMSNorm (with the LoRA down-projections of the projections that read its output folded into the forward and
 * their masked dX correction into the backward), RoPE, SwiGLU (with down_proj's down-projection folded in),
 * the embedding gather, the LM head with cross-entropy in chunks, and AdamW over an adapter's LoRA tensors.
 * Every kernel is generated (generator/ops/decoder.lua, templates/decoder/), bf16 or fp16 activations with
 * fp32 accumulation and statistics; every reduction runs in a fixed order: results are bitwise reproducible.
 *
 * Each op is an object made once per shape (it resolves its kernels at init: generating source costs
 * milliseconds); its calls validate every argument (LG_ERR_INVALID naming it: shapes, leading dimensions,
 * 16-byte alignment, dtype), enqueue on the caller's stream and never synchronise, except the functions marked
 * "synchronises". Row-major buffers, leading dimensions in elements; activations in the object's dtype.
 *
 * Ownership: each object borrows the lg_ctx_t (free the objects first) and owns only what it says (RoPE: its
 * inv_freq copy; cross-entropy: its chunk buffer; AdamW: its table, partial sums and state; embedding: its
 * bad-id counter). Calls on one object are ordered on one stream at a time.
 *
 * LoRA pieces. A projection that reads an op's output y (q/k/v read the input norm's y, gate/up the post-
 * attention norm's, down_proj SwiGLU's a) is described by struct lg_lora_reader, as its lg_lora_params say it
 * (rank, alpha, dropout, layer_id); per call, struct lg_lora_reader_io says where its A block lives (e.g.
 * lg_lora_weights(l) + M·ldw elements, lda = ldw) and where S goes: columns s_col.. of y (y's row stride is the
 * extended K: lg_lora_ext_ld, docs/fusedlora.md). S is then exactly what FusedLoRA's down kernel writes for
 * the same y (bit for bit with its default tiles), so the projection's forward is the extended-K GEMM alone.
 * In the backward, the norm may add the masked correction keep·mask ⊙ (dS·A) of those projections
 * (lg_gen_dx_correction says when it should: the generator decides the placement).
 *
 *   lg_norm_t *ln;
 *   struct lg_norm_params np = { .hidden = 4096, .eps = 1e-5f, .dtype = LG_BF16, .nlora = 3,
 *       .lora = {{16, 32, 0.1f, 7}, {16, 32, 0.1f, 8}, {16, 32, 0.1f, 9}} };
 *   lg_norm_init(ctx, &np, &ln);
 *   struct lg_norm_fwd f = { .n = n, .x = attn_out, .ldx = 4096, .res = stream, .ldres = 4096, .h = stream,
 *       .ldh = 4096, .gamma = ln_w, .y = xn, .ldy = lg_lora_ext_ld(4096, 48), .rstd = rstd, .with_s = 1,
 *       .lora = {{.a = aq, .lda = ldw_q, .s_col = 4096}, {.a = ak, .lda = ldw_k, .s_col = 4112},
 *                {.a = av, .lda = ldw_v, .s_col = 4128}}, .seed = step };
 *   lg_norm_forward(ln, &f, stream);
 *   ...
 *   lg_norm_free(ln);
 */
#ifndef LG_DECODER_OPS_H
#define LG_DECODER_OPS_H

#include "lg_ctx.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LG_LORA_READERS_MAX 3

/* An adapted projection that reads an op's output (its lg_lora_params' values: the same mask and scale). */
struct lg_lora_reader {
    int rank;          /* multiple of 8, 8..128 */
    float alpha;       /* s = alpha / rank */
    float dropout;     /* p in [0, 1) */
    uint32_t layer_id; /* dropout counter, as lg_lora_params.layer_id */
};

/* Where one reader's tensors are, per call. */
struct lg_lora_reader_io {
    CUdeviceptr a; /* A [rank, hidden], dtype */
    int64_t lda;
    int64_t s_col; /* forward: S goes into columns s_col .. s_col + rank - 1 of y (s_col >= the op's width) */
    CUdeviceptr ds; /* backward: dS [n, rank] (s·dY·B, as FusedLoRA's dy pass leaves it) */
    int64_t ldds;
};

/* ---- fused residual add + RMSNorm ------------------------------------------------------------------- */

typedef struct lg_norm lg_norm_t;

struct lg_norm_params {
    int64_t hidden; /* multiple of 64, at most 16384 */
    float eps;      /* config.rms_norm_eps */
    enum lg_dtype dtype;
    int nlora; /* 0..3 projections that read y (their S in the forward, their correction in the backward) */
    struct lg_lora_reader lora[LG_LORA_READERS_MAX];
};

LG_API enum lg_status lg_norm_init(lg_ctx_t *ctx, const struct lg_norm_params *p, lg_norm_t **out);
LG_API void lg_norm_free(lg_norm_t *norm);

/* h = x + res (rounded, written to h; x = 0: h = res, written only when h is another buffer), rstd = 1/sqrt(mean h² + eps) (fp32
 * [n], saved for the backward), y = h·rstd·gamma. with_s: S_i = s_i·D_i(y)·A_iᵀ of every reader into y's
 * columns lora[i].s_col.. in the same pass (needs nlora > 0). */
struct lg_norm_fwd {
    int64_t n; /* tokens, >= 1 */
    CUdeviceptr x;
    int64_t ldx;
    CUdeviceptr res;
    int64_t ldres;
    CUdeviceptr h; /* may be res (ldh == ldres): the residual stream updated in place */
    int64_t ldh;
    CUdeviceptr gamma; /* [hidden], frozen */
    CUdeviceptr y;
    int64_t ldy;
    CUdeviceptr rstd;
    int with_s;
    struct lg_lora_reader_io lora[LG_LORA_READERS_MAX];
    uint64_t seed; /* dropout seed of this step, as FusedLoRA's */
};
LG_API enum lg_status lg_norm_forward(lg_norm_t *norm, const struct lg_norm_fwd *f, CUstream stream);

/* dres = (accumulate ? dres : 0) + d(norm)/dh · dy_eff, with dy_eff = dy, plus with correct = 1 the masked
 * dX correction keep_i·mask_i ⊙ (dS_i·A_i) of every reader. gamma frozen: no dgamma. dres may be dy itself
 * when accumulate = 0. */
struct lg_norm_bwd {
    int64_t n;
    CUdeviceptr dy;
    int64_t lddy;
    CUdeviceptr h; /* the forward's h and rstd */
    int64_t ldh;
    CUdeviceptr rstd;
    CUdeviceptr gamma;
    CUdeviceptr dres;
    int64_t lddres;
    int accumulate;
    int correct;
    struct lg_lora_reader_io lora[LG_LORA_READERS_MAX];
    uint64_t seed;
};
LG_API enum lg_status lg_norm_backward(lg_norm_t *norm, const struct lg_norm_bwd *b, CUstream stream);

/* Launch shape of the 16-row tile kernels (with_s / correct): resident blocks per SM; 0 = sized from the L2
 * so that a tile's rows stay cached between its two passes. For the tuner and the benchmark. */
struct lg_norm_tiles {
    int fwd_bps, bwd_bps;
};
LG_API enum lg_status lg_norm_set_tiles(lg_norm_t *norm, const struct lg_norm_tiles *t);

/* ---- RoPE --------------------------------------------------------------------------------------------- */

typedef struct lg_rope lg_rope_t;

struct lg_rope_params {
    int64_t head_dim; /* multiple of 16, at most 256 */
    enum lg_dtype dtype;
    const float *inv_freq; /* host [head_dim/2]: lg_ref_rope_inv_freq's values (one implementation), copied */
};
LG_API enum lg_status lg_rope_init(lg_ctx_t *ctx, const struct lg_rope_params *p, lg_rope_t **out);
LG_API void lg_rope_free(lg_rope_t *rope);

/* In place on q [n, hq, head_dim] and k [n, hk, head_dim] (rows of stride ldq / ldk, heads contiguous; k may
 * be 0 with hk = 0). Token t of sample j is at position t - cu_seqlens[j]; cu_seqlens int32 [nseq + 1] on the
 * device, cu[0] = 0, increasing, cu[nseq] = n (not checked on the device: a bad table gives wrong positions,
 * never a bad access). backward = 1 applies the transposed rotation (the gradient). */
struct lg_rope_run {
    int64_t n;
    CUdeviceptr q;
    int64_t ldq;
    int hq;
    CUdeviceptr k;
    int64_t ldk;
    int hk;
    CUdeviceptr cu_seqlens;
    int nseq;
    int backward;
};
LG_API enum lg_status lg_rope_apply(lg_rope_t *rope, const struct lg_rope_run *r, CUstream stream);

/* ---- SwiGLU ------------------------------------------------------------------------------------------- */

typedef struct lg_swiglu lg_swiglu_t;

struct lg_swiglu_params {
    int64_t inter; /* intermediate size, multiple of 64 */
    enum lg_dtype dtype;
    int with_lora; /* 1: down_proj is adapted (lora describes it) and the forward may compute its S */
    struct lg_lora_reader lora;
};
LG_API enum lg_status lg_swiglu_init(lg_ctx_t *ctx, const struct lg_swiglu_params *p, lg_swiglu_t **out);
LG_API void lg_swiglu_free(lg_swiglu_t *sw);

/* a = silu(g)·u (a's row stride: down_proj's extended K); with_s: S = s·D(a)·Aᵀ into a's columns
 * lora.s_col.. in the same pass. */
struct lg_swiglu_fwd {
    int64_t n;
    CUdeviceptr g;
    int64_t ldg;
    CUdeviceptr u;
    int64_t ldu;
    CUdeviceptr a;
    int64_t lda;
    int with_s;
    struct lg_lora_reader_io lora;
    uint64_t seed;
};
LG_API enum lg_status lg_swiglu_forward(lg_swiglu_t *sw, const struct lg_swiglu_fwd *f, CUstream stream);

/* dg = da·u·σ(g)·(1 + g(1 - σ(g))), du = da·silu(g). dg may be g and du may be u (same strides). */
struct lg_swiglu_bwd {
    int64_t n;
    CUdeviceptr g;
    int64_t ldg;
    CUdeviceptr u;
    int64_t ldu;
    CUdeviceptr da;
    int64_t ldda;
    CUdeviceptr dg;
    int64_t lddg;
    CUdeviceptr du;
    int64_t lddu;
};
LG_API enum lg_status lg_swiglu_backward(lg_swiglu_t *sw, const struct lg_swiglu_bwd *b, CUstream stream);

/* ---- embedding gather --------------------------------------------------------------------------------- */

typedef struct lg_embed lg_embed_t;

struct lg_embed_params {
    int64_t hidden; /* multiple of 8 */
    int64_t vocab;
    enum lg_dtype dtype;
};
LG_API enum lg_status lg_embed_init(lg_ctx_t *ctx, const struct lg_embed_params *p, lg_embed_t **out);
LG_API void lg_embed_free(lg_embed_t *e);

/* out[t, :] = table[ids[t], :] (frozen table [vocab, hidden], row stride ldt; ids int32 [n] on the device).
 * The ids are validated on the host by the trainer when it reads the dataset (lg_tokens.h); the kernel cannot
 * report a bad id without a synchronisation, so an id outside [0, vocab) writes a zero row (never a read
 * outside the table) and counts in the object's bad-id counter (lg_embed_bad_ids). */
struct lg_embed_run {
    int64_t n;
    CUdeviceptr ids;
    CUdeviceptr table;
    int64_t ldt;
    CUdeviceptr out;
    int64_t ldo;
};
LG_API enum lg_status lg_embed_gather(lg_embed_t *e, const struct lg_embed_run *r, CUstream stream);
/* The number of out-of-range ids seen so far (synchronises the stream). */
LG_API enum lg_status lg_embed_bad_ids(lg_embed_t *e, CUstream stream, int *count);

/* ---- LM head with cross-entropy, in chunks ------------------------------------------------------------ */

typedef struct lg_xent lg_xent_t;

struct lg_xent_params {
    int64_t hidden; /* multiple of 8 */
    int64_t vocab;  /* multiple of 8 (128,256 and 152,064 are) */
    enum lg_dtype dtype;
    int64_t chunk;   /* tokens per chunk; 0: the most that fit in max_bytes, a multiple of 64 */
    size_t max_bytes; /* budget of the chunk buffer; 0: 512 MiB */
};
LG_API enum lg_status lg_xent_init(lg_ctx_t *ctx, const struct lg_xent_params *p, lg_xent_t **out);
LG_API void lg_xent_free(lg_xent_t *xe);
LG_API int64_t lg_xent_chunk(const lg_xent_t *xe);            /* tokens per chunk */
LG_API size_t lg_xent_workspace_bytes(const lg_xent_t *xe);   /* device memory the object owns */

/* Per chunk of tokens: logits = x·Wᵀ (cuBLASLt) into the chunk buffer; one kernel for the softmax, the loss
 * and dlogits in place; dx = dx_beta·dx + dlogits·W (cuBLASLt). The [n x vocab] logits never exist.
 *   loss[t] = weight[t]·(lse_t - z_t[label_t]), 0 for label -100;
 *   dx_t = weight[t]·(softmax(z_t) - onehot(label_t))·W,  0 for ignored rows.
 * weight[t] is the token's share of its global batch's loss (1 / its loss tokens), so microbatches and
 * adapters add up exactly. Labels are already shifted (lg_ref_lm_head_loss's convention). dlogits are stored
 * as grad_scale·weight·(softmax - onehot) and the dX GEMM runs with alpha = 1/grad_scale: leave 0 (= 1) for
 * bf16; for fp16 pass about 1/weight so they stay in fp16's range. A label outside [0, vocab) other than -100
 * counts as ignored and in lg_xent_bad_labels. W is the head [vocab, hidden] or, tied, the embedding table. */
struct lg_xent_run {
    int64_t n;
    CUdeviceptr x; /* [n, hidden]: the final norm's output */
    int64_t ldx;
    CUdeviceptr w;
    int64_t ldw;
    CUdeviceptr labels; /* int32 [n] */
    CUdeviceptr weight; /* fp32 [n] */
    CUdeviceptr loss;   /* fp32 [n] */
    CUdeviceptr lse;    /* fp32 [n] or 0 */
    CUdeviceptr dx;     /* [n, hidden] or 0: forward only */
    int64_t lddx;
    float dx_beta;
    float grad_scale;
};
LG_API enum lg_status lg_xent_apply(lg_xent_t *xe, const struct lg_xent_run *r, CUstream stream);
LG_API enum lg_status lg_xent_bad_labels(lg_xent_t *xe, CUstream stream, int *count); /* synchronises */

/* ---- AdamW over one adapter's LoRA tensors ------------------------------------------------------------ */

typedef struct lg_adamw lg_adamw_t;

/* One tensor: fp32 master p, gradient g, moments m and v (count elements each, a multiple of 4, 16-byte
 * aligned, fewer than 2^31), and optionally its dtype copy inside a half buffer: element e at
 * half[(e / half_cols)·half_ld + e % half_cols] (A [r, K] inside FusedLoRA's [[W,B],[A,0]]: half = weights +
 * M·ldw elements, half_cols = K, half_ld = ldw; B [M, r]: half = weights + K elements, half_cols = r). */
struct lg_adamw_tensor {
    CUdeviceptr p, g, m, v;
    int64_t count;
    CUdeviceptr half;
    int64_t half_ld, half_cols;
};

struct lg_adamw_params {
    enum lg_dtype dtype; /* of the half copies */
    int ntensors;
    const struct lg_adamw_tensor *tensors; /* copied to the device */
    int chunk; /* elements per block; 0: 8192 */
};
LG_API enum lg_status lg_adamw_init(lg_ctx_t *ctx, const struct lg_adamw_params *p, lg_adamw_t **out);
LG_API void lg_adamw_free(lg_adamw_t *a);

struct lg_adamw_hyper {
    double lr, beta1, beta2, eps, weight_decay;
    double max_grad_norm; /* clip_grad_norm_'s max_norm; <= 0 or infinite: no clipping */
};

/* One step, as lg_ref_adamw_step with t = the device's step count + 1: the global gradient norm (a fixed-order
 * two-stage reduction), then, if it is finite, clipping and the update of every tensor and half copy in one
 * launch; if it is not, nothing changes and the skip flag is raised. Three launches, no synchronisation. The
 * gradients are read, never modified (the clip factor is applied on the fly). */
LG_API enum lg_status lg_adamw_step(lg_adamw_t *a, const struct lg_adamw_hyper *h, CUstream stream);

struct lg_adamw_status {
    double norm; /* gradient norm of the last step, before clipping */
    double clip; /* factor applied (1: none) */
    int64_t step; /* steps applied so far */
    int skipped;  /* the last step was skipped (non-finite norm) */
};
LG_API enum lg_status lg_adamw_read_status(lg_adamw_t *a, CUstream stream, struct lg_adamw_status *out); /* synchronises */
/* Sets the step count (resume from a checkpoint); enqueued on stream. */
LG_API enum lg_status lg_adamw_set_step(lg_adamw_t *a, int64_t step, CUstream stream);

#ifdef __cplusplus
}
#endif
#endif
