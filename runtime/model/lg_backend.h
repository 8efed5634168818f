/* lg_backend.h (model's face): the op interface the decoder is written against, once, for every backend.
 *
 * A backend is a table of function pointers (as ggml's backends are) plus its state: the CPU backend runs the
 * fp32 reference ops of runtime/ref/ (the test oracle; CI trains tiny models with it), the CUDA backend runs
 * the generated kernels and cuBLASLt. The decoder (decoder.c) never looks inside a buffer: it allocates
 * backend memory, uploads weights, and calls ops on addresses (`lg_addr`: a host pointer on the CPU backend,
 * a CUdeviceptr on the CUDA one). Activations and gradients are in the backend's activation dtype
 * (lg_backend.act: fp32 on the CPU); frozen weights in its weight dtype; LoRA masters, their gradients and the
 * optimizer moments always fp32.
 *
 * Adapters are a list from the start: a microbatch is a list of segments, each a run of tokens that belongs to
 * one adapter (or to none), and a LoRA linear layer holds slots for every adapter of the job. One adapter on
 * one device is the N = 1 case.
 *
 * Ops are enqueued in order; a backend may run them asynchronously until lg_backend_ops.sync (the CPU backend
 * runs each at once). Every op returns LG_OK or a status with lg_fail detail.
 */
#ifndef LG_BACKEND_H
#define LG_BACKEND_H

#include "lg_base.h"

#include <stdint.h>

typedef uint64_t lg_addr; /* an address in the backend's memory; 0 is "none" */

struct lg_ref_rope; /* lg_ref_ops.h: the RoPE parameters, one definition of the frequencies for every backend */

typedef struct lg_backend lg_backend_t;
typedef struct lg_lora_linear lg_lora_linear_t; /* a frozen linear layer (or several sharing one input) + LoRA slots */

/* A run of tokens [start, start + len) that goes through adapter `adapter` (-1: the base model alone). */
struct lg_seg {
    int adapter;
    int64_t start, len;
};

/* One microbatch as the ops see it: packed samples and adapter segments, host copies and backend copies. */
struct lg_mb {
    int64_t n;            /* tokens */
    int nseq;             /* packed samples */
    const int32_t *cu;    /* [nseq + 1] sample start offsets (host); cu[0] = 0, cu[nseq] = n */
    lg_addr cu_dev;       /* the same in backend memory */
    lg_addr pos_dev;      /* [n] int32 position of each token inside its sample */
    int32_t max_len;      /* longest sample */
    int nseg;
    const struct lg_seg *seg; /* [nseg] in token order, covering [0, n) */
    uint64_t seed;        /* dropout seed of this microbatch; the backward passes the same */
    int train;            /* 0: evaluation (no dropout) */
};

/* One LoRA slot of one output of a linear layer: rank 0 means the adapter does not adapt this module. */
struct lg_lora_slot {
    int rank;
    float alpha, dropout;
};

#define LG_LINEAR_MAX_OUT 3

/* A linear layer with up to three outputs that read the same input (q/k/v; gate/up), each out_i x in. */
struct lg_lora_linear_desc {
    int64_t in;
    int nout;
    int64_t out[LG_LINEAR_MAX_OUT];
    int has_bias;
    int nadapters;
    const struct lg_lora_slot *slots; /* [nadapters * nout]: slot of adapter a, output i at a * nout + i */
    uint32_t layer_id;                /* dropout counter of output i is layer_id + i: masks differ per module */
    int64_t max_tokens;               /* the largest microbatch (buffers the layer keeps per token) */
};

/* The fp32 tensors of one adapter on one output: masters and gradients (backend memory). */
struct lg_lora_params {
    int rank;
    int64_t in, out;
    lg_addr a, b;   /* A [rank, in], B [out, rank] */
    lg_addr da, db; /* their gradients, accumulated by linear_backward */
    /* the layer's own copies of A and B in the activation dtype, when it keeps them (the CUDA backend: inside
     * FusedMultiLoRA's weight buffer, row stride half_ld); the optimizer refreshes them in its launch; 0: none */
    lg_addr a_half, b_half;
    int64_t half_ld;
};

/* One tensor of an AdamW update: fp32 param, grad, and moments, n elements; optionally a copy in the
 * activation dtype refreshed in the same launch (half, rows of half_cols elements at stride half_ld). */
struct lg_opt_tensor {
    lg_addr p, g, m, v;
    int64_t n;
    lg_addr half;
    int64_t half_ld, half_cols;
};

struct lg_opt_step {
    float lr, beta1, beta2, eps, weight_decay;
    int64_t step;     /* 1-based, for the bias corrections */
    float max_norm;   /* global-norm clip over the list; 0: off */
};

struct lg_backend_ops {
    const char *name;
    void (*destroy)(lg_backend_t *be);

    /* memory */
    enum lg_status (*alloc)(lg_backend_t *be, size_t bytes, lg_addr *out);
    void (*release)(lg_backend_t *be, lg_addr p);
    enum lg_status (*upload)(lg_backend_t *be, lg_addr dst, const void *src, size_t bytes);
    enum lg_status (*download)(lg_backend_t *be, void *dst, lg_addr src, size_t bytes);
    /* The same without waiting: the bytes are those src holds once the ops enqueued before it have run, and
     * they are in dst after the next sync or download (dst must stay valid until then) */
    enum lg_status (*download_async)(lg_backend_t *be, void *dst, lg_addr src, size_t bytes);
    enum lg_status (*zero)(lg_backend_t *be, lg_addr p, size_t bytes);
    enum lg_status (*copy)(lg_backend_t *be, lg_addr dst, lg_addr src, size_t bytes);
    enum lg_status (*sync)(lg_backend_t *be);
    /* Memory the device has free now and in all (the host's available and total memory on the CPU backend),
     * and what this backend has taken of it since it was made */
    enum lg_status (*mem_info)(lg_backend_t *be, size_t *free_bytes, size_t *total_bytes, size_t *used_bytes);
    /* Uploads host fp32 weights as the backend's weight dtype (rows x cols). */
    enum lg_status (*upload_weight)(lg_backend_t *be, lg_addr dst, const float *src, int64_t count);
    size_t (*weight_size)(const lg_backend_t *be, int64_t count);

    /* a microbatch starts (its inputs are uploaded): per-microbatch state such as a device segment table is
     * built here, once for every layer; NULL when the backend keeps none */
    enum lg_status (*begin)(lg_backend_t *be, const struct lg_mb *mb);

    /* elementwise and row ops; n rows of d features, activations in the act dtype */
    enum lg_status (*embed)(lg_backend_t *be, int64_t n, int64_t d, lg_addr ids /* int32 [n] */, lg_addr table,
                            int64_t vocab, lg_addr out);
    /* The residual add fused with the norm: h = res + x (x = 0: h = res; h may be res), y = rmsnorm(h)·w (rows
     * of stride ldy, 0: packed; the columns past d are not written), rstd [n] fp32 saved for the backward. */
    enum lg_status (*rmsnorm_fwd)(lg_backend_t *be, int64_t n, int64_t d, lg_addr res, lg_addr x, lg_addr h,
                                  lg_addr w, float eps, lg_addr y, lg_addr rstd, int64_t ldy);
    /* dx = d(rmsnorm)/dh · dy at the forward's h; accumulate = 1 adds into dx (the residual's gradient) */
    enum lg_status (*rmsnorm_bwd)(lg_backend_t *be, int64_t n, int64_t d, lg_addr x, lg_addr w, lg_addr rstd,
                                  lg_addr dy, lg_addr dx, int accumulate);
    /* Row strides: `ld` arguments count elements between consecutive tokens' rows, so q, k and v (and g, u)
     * may be views of one merged projection's output [n, ld] (nothing is copied out of it); 0 means packed. */

    /* in place on q [n, hq, head_dim] and k [n, hkv, head_dim], both rows of stride ld; dir = +1 forward, -1
     * backward (the inverse rotation). The frequencies are lg_ref_rope_inv_freq's for every backend. */
    enum lg_status (*rope)(lg_backend_t *be, const struct lg_mb *mb, const struct lg_ref_rope *r, lg_addr q,
                           int hq, lg_addr k, int hkv, int64_t ld, int dir);
    /* q, k, v rows of stride ld; o, lse, dout packed; dq, dk, dv rows of stride ldd */
    enum lg_status (*attn_fwd)(lg_backend_t *be, const struct lg_mb *mb, int hq, int hkv, int d, lg_addr q,
                               lg_addr k, lg_addr v, int64_t ld, lg_addr o, lg_addr lse);
    /* Makes what attention calls over microbatches of mb's shape (n, nseq, max_len) and these row strides will
     * need (cuDNN's execution plans); NULL where nothing is planned per shape */
    enum lg_status (*attn_prepare)(lg_backend_t *be, const struct lg_mb *mb, int hq, int hkv, int d, int64_t ld,
                                   int64_t ldd);
    enum lg_status (*attn_bwd)(lg_backend_t *be, const struct lg_mb *mb, int hq, int hkv, int d, lg_addr q,
                               lg_addr k, lg_addr v, int64_t ld, lg_addr o, lg_addr lse, lg_addr dout, lg_addr dq,
                               lg_addr dk, lg_addr dv, int64_t ldd);
    /* a = silu(g)·u over n rows of f features (g, u rows of stride ld; a packed); backward dg, du (rows of
     * stride ldd) from da (packed) */
    enum lg_status (*swiglu_fwd)(lg_backend_t *be, int64_t n, int64_t f, lg_addr g, lg_addr u, int64_t ld,
                                 lg_addr a);
    enum lg_status (*swiglu_bwd)(lg_backend_t *be, int64_t n, int64_t f, lg_addr g, lg_addr u, int64_t ld,
                                 lg_addr da, lg_addr dg, lg_addr du, int64_t ldd);
    /* LM head + cross-entropy over n rows: target int32 [n] (-100 ignored; already shifted), weight fp32 [n]
     * (1 / the loss tokens of the row's global batch); loss fp32 [n] each row's weighted loss; dx (may be 0:
     * no backward) the gradient. Never materialises [n x vocab]. */
    enum lg_status (*xent)(lg_backend_t *be, int64_t n, int64_t h, int64_t vocab, lg_addr x, lg_addr head,
                           lg_addr target, lg_addr weight, lg_addr loss, lg_addr dx);

    /* linear layers with LoRA slots */
    enum lg_status (*linear_init)(lg_backend_t *be, const struct lg_lora_linear_desc *d, const float *const *w,
                                  const float *const *bias, lg_lora_linear_t **out);
    void (*linear_free)(lg_backend_t *be, lg_lora_linear_t *l);
    /* The layer's per-token buffers resized for microbatches of up to max_tokens (contents not kept); NULL
     * when the backend keeps none */
    enum lg_status (*linear_reserve)(lg_backend_t *be, lg_lora_linear_t *l, int64_t max_tokens);
    enum lg_status (*linear_params)(lg_backend_t *be, lg_lora_linear_t *l, int adapter, int out,
                                    struct lg_lora_params *p);
    /* The row stride the layer wants its input x to have (>= in): the columns past in are the layer's own, for
     * the LoRA down-projection S the CUDA layer keeps there (FusedMultiLoRA's strategy (a), one GEMM over
     * [X | S] and no pass over Y); the one who writes x leaves them alone. NULL: in */
    int64_t (*linear_in_ld)(lg_backend_t *be, const lg_lora_linear_t *l);
    /* The outputs side by side in y [n, ldy] (ldy >= Σ out_i; output i in the columns after those of outputs
     * 0..i-1): y_i = x·W_iᵀ (+ b_i) + the LoRA term of each segment's adapter; x [n, in] rows of stride ldx (0:
     * packed; linear_in_ld's stride lets the layer use the spare columns) */
    enum lg_status (*linear_fwd)(lg_backend_t *be, lg_lora_linear_t *l, const struct lg_mb *mb, lg_addr x,
                                 int64_t ldx, lg_addr y, int64_t ldy);
    /* dx [n, in] = Σ_i dy_i·W_i + LoRA terms (dx = 0: skipped), dy laid out as y, x as the forward had it; dA,
     * dB of every adapter present accumulate */
    enum lg_status (*linear_bwd)(lg_backend_t *be, lg_lora_linear_t *l, const struct lg_mb *mb, lg_addr x,
                                 int64_t ldx, lg_addr dy, int64_t lddy, lg_addr dx);
    /* after an optimizer step changed the masters: refresh any copies the layer keeps (half copies on GPU) */
    enum lg_status (*linear_sync)(lg_backend_t *be, lg_lora_linear_t *l, int adapter);

    /* optimizer over one adapter's tensors; *skipped = 1 (nothing changed) when a gradient is not finite;
     * *norm = the global gradient norm before clipping */
    enum lg_status (*adamw)(lg_backend_t *be, const struct lg_opt_tensor *t, int count, const struct lg_opt_step *s,
                            int *skipped, double *norm);

    /* The time spent per op family since the start, as a table of text lines (NULL where the backend does not
     * measure, or was not asked to); returns LG_OK with buf = "" when nothing was measured. */
    enum lg_status (*profile)(lg_backend_t *be, char *buf, size_t size);
};

struct lg_backend {
    const struct lg_backend_ops *ops;
    enum lg_dtype act;    /* activations and their gradients */
    enum lg_dtype weight; /* frozen weights */
    char desc[128];       /* "cpu (fp32 reference)", "cuda: NVIDIA H200" */
};

/* The CPU backend (backend_cpu.c). */
enum lg_status lg_backend_cpu_init(lg_backend_t **out);

/* The CUDA backend (backend_cuda.c): LG_ERR_NO_GPU without a usable GPU. */
struct lg_backend_cuda_params {
    int device;
    enum lg_dtype dtype; /* activations and frozen weights: LG_BF16 (default) or LG_FP16 */
    int deterministic;   /* attention's deterministic backward (bitwise-reproducible gradients) */
    int64_t max_tokens;  /* the largest microbatch (sizes the layers' saved S buffers) */
    int nadapters;       /* adapters of the job (the segment table's size) */
    int profile;         /* time every op with CUDA events, per op family (lg_backend_ops.profile) */
};
enum lg_status lg_backend_cuda_init(const struct lg_backend_cuda_params *p, lg_backend_t **out);

static inline size_t lg_backend_act_size(const lg_backend_t *be) { return lg_dtype_size(be->act); }

#endif
