/* lg_decoder_args.h: the argument blocks of the decoder kernels (templates/decoder/), passed by value. Included
 * by the runtime (runtime/ops/dec_*.c, after lg_args.h) and inlined into every decoder kernel's source by the
 * generator (after lg_args.h, whose lg_i64 and struct lg_dropout it uses), so both sides see one layout.
 * Pointers are device addresses; leading dimensions count elements between rows; activations are the kernel's
 * dtype (bf16 or fp16), statistics fp32. */
#ifndef LG_DECODER_ARGS_H
#define LG_DECODER_ARGS_H

#ifndef LG_ARGS_H
#error "lg_decoder_args.h needs lg_args.h first"
#endif

#define LG_DEC_MAX_LORA 3 /* adapted projections reading one norm output (q/k/v) */

/* One adapted projection that reads the kernel's output y (forward) or whose dX correction the kernel adds
 * (backward). A [rank, k] is the projection's A block (e.g. inside FusedLoRA's [[W,B],[A,0]] buffer).
 *   forward:  S = scale · (y ⊙ mask)·Aᵀ written as dtype at s (row stride lds): y's tail columns, so a GEMM
 *             reads [y | S]; scale = alpha/r · keep_scale, exactly FusedLoRA's down-kernel scale
 *   backward: dy_eff = dy + scale · mask ⊙ (dS·A), dS [n, rank] (already scaled by alpha/r) at ds (ldds);
 *             scale = keep_scale
 * mask: Philox(drop.seed, drop.layer, t·k + c) as templates/common/lg_philox.h, thresh16 = 0 keeps all. */
struct lg_dec_lora {
    const void *a;
    lg_i64 lda;
    void *s;
    lg_i64 lds;
    const void *ds;
    lg_i64 ldds;
    int rank; /* a multiple of 8, at most the kernel's R */
    float scale;
    struct lg_dropout drop;
};

/* Fused residual add + RMSNorm forward over rows of k features:
 *   h = x + res (rounded to dtype; x NULL: h = res), written to h unless h is NULL (h = res in place, x NULL),
 *   rstd = 1/sqrt(mean(h²) + eps) (fp32, saved), y = h·rstd·gamma (rounded, row stride ldy),
 *   and in the norm_lora_fwd kernels S of each lora[i], i < nlora, into y's tail.
 * Row kernels (norm_fwd): grid = n blocks. Tile kernels (norm_lora_fwd): 16-row tiles, grid-stride over
 * ceil(n/16) tiles (the grid is sized so the tiles in flight keep h in L2 for the second pass). */
struct lg_norm_fwd_args {
    const void *x;
    lg_i64 ldx;
    const void *res;
    lg_i64 ldres;
    void *h; /* may be res itself (ldh == ldres): the residual stream updated in place; NULL: not written */
    lg_i64 ldh;
    const void *gamma;
    void *y;
    lg_i64 ldy;
    float *rstd;
    int n, k;
    float eps;
    int nlora;
    struct lg_dec_lora lora[LG_DEC_MAX_LORA];
};

/* RMSNorm backward (gamma frozen: no dgamma), with h and rstd of the forward:
 *   g = dy_eff ⊙ gamma,  dh = rstd · (g - ĥ · mean(g ⊙ ĥ)),  ĥ = h · rstd
 *   dres = dh (accumulate = 0) or dres + dh (accumulate = 1), rounded to dtype, row stride lddres.
 * dy_eff = dy plus, in the norm_lora_bwd kernels, the masked LoRA dX correction of each lora[i], i < nlora. */
struct lg_norm_bwd_args {
    const void *dy;
    lg_i64 lddy;
    const void *h;
    lg_i64 ldh;
    const float *rstd;
    const void *gamma;
    void *dres; /* may be dy itself (in place) */
    lg_i64 lddres;
    int n, k;
    int accumulate;
    int nlora;
    struct lg_dec_lora lora[LG_DEC_MAX_LORA];
};

/* Rotary embedding in place on q [n, hq, d] and k [n, hk, d] (token rows of stride ldq / ldk, heads
 * contiguous), HF rotate_half pairs (i, i + d/2). Token t of sample j (cu[j] <= t < cu[j+1]) is at position
 * t - cu[j]; angle = fp32(inv_freq[i] · fp32(pos)), cos/sin of it in double rounded to fp32 (as
 * lg_ref_rope_table). sign = +1: forward rotation, -1: its transpose (backward). Grid: ceil(n / 8) blocks of
 * 8 tokens. */
struct lg_rope_args {
    void *q;
    lg_i64 ldq;
    void *k;
    lg_i64 ldk;
    const float *inv_freq; /* [d/2] */
    const int *cu;         /* [nseq + 1] */
    int hq, hk, nseq;
    int n, d;
    float sign;
};

/* SwiGLU: a = silu(g) · u over rows of k features (g, u, a strided; a's stride is the down projection's
 * extended K), and in swiglu_lora_fwd S of lora (the down projection's A) into a's tail.
 * Backward: dg = da · u · σ(g) · (1 + g(1 - σ(g))), du = da · silu(g) (dg may overwrite g, du u). */
struct lg_swiglu_args {
    const void *g;
    lg_i64 ldg;
    const void *u;
    lg_i64 ldu;
    void *a; /* forward output */
    lg_i64 lda;
    const void *da; /* backward input */
    lg_i64 ldda;
    void *dg;
    lg_i64 lddg;
    void *du;
    lg_i64 lddu;
    int n, k;
    struct lg_dec_lora lora;
};

/* out[t, :] = table[ids[t], :] (h features, h % 8 == 0). An id outside [0, vocab) writes a zero row and adds
 * one to *bad (the kernel never reads outside the table). */
struct lg_embed_args {
    const int *ids;
    const void *table;
    lg_i64 ldt;
    void *out;
    lg_i64 ldo;
    int *bad;
    lg_i64 vocab;
    int n, h;
};

/* Cross-entropy over a chunk of logits [rows, v] (dtype, row stride ldl), one block per row:
 *   lse = log Σ exp(z),  loss[r] = w[r] · (lse - z[label])  (0 for label -100),
 *   with grad: z ← grad_scale · w[r] · (softmax(z) - onehot(label)) in place (zeros for ignored rows).
 * A label outside [0, v) other than -100 counts as ignored and adds one to *bad. lse (optional) is saved. */
struct lg_xent_args {
    void *logits;
    lg_i64 ldl;
    const int *labels;
    const float *weight;
    float *loss;
    float *lse;
    int *bad;
    int rows, v;
    int grad;
    float grad_scale;
};

/* AdamW over one adapter's tensors: a device table of entries, each tensor split into chunks of `chunk`
 * elements (chunk0: its first chunk's global index; chunks are numbered tensor after tensor). */
struct lg_adamw_entry {
    float *p;
    const float *g;
    float *m, *v;
    void *half; /* dtype copy of p (NULL: none): element e at half[(e / cols) · ldh + e % cols] */
    lg_i64 ldh, cols;
    lg_i64 n;
    lg_i64 chunk0;
};

/* The adapter's optimizer state on the device, written by adamw_fin, read by adamw_upd. */
struct lg_adamw_state {
    double norm;      /* global gradient norm of the last step, before clipping */
    double clip;      /* factor applied to the gradients (1: none) */
    double step_size; /* lr / (1 - beta1^t) */
    double bc2_sqrt;  /* sqrt(1 - beta2^t) */
    lg_i64 step;      /* steps applied so far (a skipped step does not count) */
    int skipped;      /* 1: the last step was skipped (non-finite norm), nothing changed */
    int pad;
};

/* adamw_sq: part[c] = Σ g² over chunk c (double), c < nchunks, one block per chunk.
 * adamw_fin: one block: norm = sqrt(Σ part in a fixed order), clip, step, bias corrections -> *state.
 * adamw_upd: one block per chunk: p, m, v (and the half copy) of chunk c, unless state->skipped. */
struct lg_adamw_args {
    const struct lg_adamw_entry *table;
    int ntensors;
    int nchunks;
    int chunk;
    double *part;
    struct lg_adamw_state *state;
    double lr, beta1, beta2, eps, weight_decay;
    double max_norm; /* <= 0 or infinite: no clipping */
};

#endif
