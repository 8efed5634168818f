/* lg_ref_ops.h: the CPU reference of every op of a Llama/Qwen2 decoder besides the LoRA linear layer
 * (lg_ref.h), forward and backward. Two users: the GPU tests compare each kernel against these functions, and
 * the CPU training backend trains tiny models with them end to end. The semantics are PyTorch's and Hugging Face
 * transformers' (LlamaRMSNorm, rotate_half RoPE with "llama3" scaling, eager causal attention, SiLU-gated MLP,
 * cross-entropy with ignore_index -100, torch.optim.AdamW, clip_grad_norm_), so a model trained here matches
 * transformers + PEFT.
 *
 * Conventions, for every function below:
 *   - arrays are fp32, row-major, packed and token-major: an activation is [n, features], a per-head tensor is
 *     [n, heads, d] (token t, head h, element c at (t*heads + h)*d + c);
 *   - math is accumulated in double and rounded to fp32 once, when stored (except RoPE's frequencies and
 *     angles, which repeat transformers' fp32 roundings on purpose);
 *   - outputs are written, never accumulated into, and may be NULL where a result is not needed (each function
 *     says which); inputs are never modified unless a function says so (AdamW, clipping);
 *   - packed samples are described by cu_seqlens (struct lg_ref_seqs): int32 offsets [nseq+1] with cu[0] = 0,
 *     cu[i] < cu[i+1] (no empty sample) and cu[nseq] = n; positions restart at 0 at each sample;
 *   - the caller owns every array; a function allocates only its own scratch and frees it before returning;
 *   - void functions cannot fail; the others return LG_OK, LG_ERR_INVALID (bad argument: the detail names it,
 *     see lg_last_error()) or LG_ERR_OOM (scratch allocation), and on failure leave outputs unwritten.
 *
 * One decoder layer of the CPU backend, forward, reads (x the residual stream [n, H]):
 *
 *   struct lg_ref_rmsnorm ln = { .H = H, .eps = 1e-5f, .w = ln1_w };
 *   lg_ref_rmsnorm_forward(&ln, n, x, xn, rstd1);
 *   lg_ref_linear_forward(&q_proj, n, xn, q);  ... k, v (and the LoRA layers, lg_ref.h)
 *   struct lg_ref_seqs seq = { .n = n, .nseq = nseq, .cu = cu };
 *   lg_ref_rope_forward(&rope, &seq, Hq, q, q);  lg_ref_rope_forward(&rope, &seq, Hkv, k, k);
 *   struct lg_ref_attn at = { .seq = seq, .hq = Hq, .hkv = Hkv, .d = d, .q = q, .k = k, .v = v };
 *   lg_ref_attn_forward(&at, o, lse);
 *   ... o_proj, residual add, post-attention norm, gate/up, lg_ref_swiglu_forward, down, residual add
 *
 * and the head: lg_ref_rmsnorm_forward(&final_norm, ...), then lg_ref_lm_head_loss() on labels already shifted.
 */
#ifndef LG_REF_OPS_H
#define LG_REF_OPS_H

#include "lg_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- packed samples ---------------------------------------------------------------------------------- */

/* n tokens in nseq samples; sample i holds tokens cu[i] .. cu[i+1]-1, at positions 0 .. cu[i+1]-cu[i]-1. */
struct lg_ref_seqs {
    int64_t n, nseq;
    const int32_t *cu; /* [nseq+1] */
};

/* ---- 1. embedding gather ----------------------------------------------------------------------------- */

/* out[t, :] = table[ids[t], :] for t < n; table [V, H], out [n, H]. No gradient flows into the table (frozen).
 * An id outside [0, V) is LG_ERR_INVALID naming the token index and the id; nothing is written then. */
LG_API enum lg_status lg_ref_embed(int64_t n, int64_t V, int64_t H, const int32_t *ids, const float *table,
                                   float *out);

/* ---- 2. RMSNorm (LlamaRMSNorm, Qwen2RMSNorm) -------------------------------------------------------- */

struct lg_ref_rmsnorm {
    int64_t H;
    float eps;      /* config.rms_norm_eps */
    const float *w; /* [H], frozen */
};

/* Per row t:  r_t = 1 / sqrt(mean_c x[t,c]^2 + eps),  y[t,c] = w[c] · x[t,c] · r_t.
 * x, y [n, H] (y may be x); rstd [n] saves r_t for the backward (NULL to skip). */
LG_API void lg_ref_rmsnorm_forward(const struct lg_ref_rmsnorm *p, int64_t n, const float *x, float *y,
                                   float *rstd);

/* With x̂ = x·r and g = dy ⊙ w:  dx[t,c] = r_t · (g[t,c] - x̂[t,c] · mean_c'(g[t,c'] · x̂[t,c'])).
 * No dw: the norm weights are frozen. dx [n, H] may be dy. */
LG_API void lg_ref_rmsnorm_backward(const struct lg_ref_rmsnorm *p, int64_t n, const float *x, const float *rstd,
                                    const float *dy, float *dx);

/* ---- 3. rotary position embedding (HF rotate_half convention) --------------------------------------- */

enum lg_rope_scaling {
    LG_ROPE_NONE = 0,   /* rope_scaling null / "default" (Qwen2.5, Llama 2) */
    LG_ROPE_LLAMA3 = 1, /* rope_type "llama3" (Llama 3.1, 3.2) */
};

struct lg_ref_rope {
    int64_t d;     /* rotary dim = head_dim, even */
    double theta;  /* config.rope_theta */
    enum lg_rope_scaling scaling;
    /* llama3 only: rope_scaling.factor, .low_freq_factor, .high_freq_factor, .original_max_position_embeddings */
    double factor, low_freq_factor, high_freq_factor;
    int64_t original_max_pos;
};

/* inv_freq [d/2], exactly as transformers computes it in fp32 (_compute_default_rope_parameters,
 * _compute_llama3_parameters), each operation rounded to fp32 where torch rounds:
 *   e_i = fp32(2i) / d,  inv_freq_i = 1 / theta^e_i                                    (i < d/2)
 * llama3, with L = original_max_pos, lo = L / low_freq_factor, hi = L / high_freq_factor:
 *   wavelen_i = 2π / inv_freq_i
 *   wavelen_i < hi           : inv_freq_i                         (high frequencies: kept)
 *   wavelen_i > lo           : inv_freq_i / factor                (low frequencies: interpolated)
 *   otherwise (smooth band)  : s = (L / wavelen_i - low_freq_factor) / (high_freq_factor - low_freq_factor),
 *                              (1 - s) · inv_freq_i / factor + s · inv_freq_i
 * pow is taken correctly rounded and a tensor divided by a scalar as a true division, which is torch on the CPU
 * bit for bit wherever its fp32 pow rounds correctly (its error bound is 1 ulp; on a GPU, division by a scalar
 * is a multiplication by the reciprocal). An ulp of inv_freq_i moves the angle at position p by p·ulp.
 * LG_ERR_INVALID for d odd or < 2, theta <= 1, or (llama3) factor <= 0, low_freq_factor <= 0,
 * high_freq_factor <= low_freq_factor or original_max_pos < 1. */
LG_API enum lg_status lg_ref_rope_inv_freq(const struct lg_ref_rope *r, float *inv_freq);

/* The angle table of positions 0 .. npos-1, as HF's LlamaRotaryEmbedding: angle = fp32(inv_freq_i · fp32(pos))
 * (fp32 product), cos/sin of that angle evaluated in double and rounded to fp32. cos, sin [npos, d/2]; entry
 * (p, i) serves both elements i and i + d/2 (HF's emb = cat(freqs, freqs)). attention_scaling is 1 for both
 * scalings. Errors as lg_ref_rope_inv_freq. */
LG_API enum lg_status lg_ref_rope_table(const struct lg_ref_rope *r, int64_t npos, float *cos, float *sin);

/* x, y [n, nh, d] (y may be x). For token t at position p within its sample and each head, the pairs
 * (i, i + d/2), i < d/2, rotate by the angle θ = angle(p, i) of lg_ref_rope_table:
 *   y[i]       = x[i] cos θ - x[i+d/2] sin θ          (HF: x·cos + rotate_half(x)·sin)
 *   y[i + d/2] = x[i+d/2] cos θ + x[i] sin θ
 * Apply it to q (nh = Hq) and k (nh = Hkv). LG_ERR_INVALID for a bad table (above) or bad cu_seqlens. */
LG_API enum lg_status lg_ref_rope_forward(const struct lg_ref_rope *r, const struct lg_ref_seqs *s, int64_t nh,
                                          const float *x, float *y);

/* The gradient of lg_ref_rope_forward: the transposed rotation, i.e. rotation by -θ with the same fp32
 * cos/sin:  dx[i] = dy[i] cos θ + dy[i+d/2] sin θ,  dx[i+d/2] = dy[i+d/2] cos θ - dy[i] sin θ.  dx may be dy. */
LG_API enum lg_status lg_ref_rope_backward(const struct lg_ref_rope *r, const struct lg_ref_seqs *s, int64_t nh,
                                           const float *dy, float *dx);

/* ---- 4. causal attention over packed samples, with GQA --------------------------------------------- */

struct lg_ref_attn {
    struct lg_ref_seqs seq;
    int64_t hq, hkv, d; /* hq a multiple of hkv; q head h reads kv head h / (hq / hkv) */
    float scale;        /* softmax scale; 0 means 1/sqrt(d) */
    const float *q;     /* [n, hq, d] (after RoPE) */
    const float *k, *v; /* [n, hkv, d] */
};

/* For token i of a sample and q head h (kv head g), over the tokens j of the same sample with j <= i:
 *   s_j = scale · q[i,h]·k[j,g],   lse[i,h] = log Σ_j exp(s_j),   o[i,h] = Σ_j exp(s_j - lse[i,h]) · v[j,g].
 * A token never sees another sample. o [n, hq, d]; lse [n, hq] (natural log; NULL to skip). */
LG_API enum lg_status lg_ref_attn_forward(const struct lg_ref_attn *a, float *o, float *lse);

/* From the forward's o and lse and the output gradient dout [n, hq, d], with P_ij = exp(s_ij - lse_i),
 * D_i = Σ_c dout[i,c]·o[i,c] and dS_ij = P_ij · (dout_i·v_j - D_i):
 *   dq_i = scale · Σ_j dS_ij k_j,
 *   dk_j = scale · Σ_{i, h in the group} dS_ij q_i,   dv_j = Σ_{i, h in the group} P_ij dout_i.
 * dq [n, hq, d], dk, dv [n, hkv, d]; any may be NULL. Holds one sample's dk, dv (in double) at a time and
 * one row of scores, never a [len x len] matrix. */
LG_API enum lg_status lg_ref_attn_backward(const struct lg_ref_attn *a, const float *o, const float *lse,
                                           const float *dout, float *dq, float *dk, float *dv);

/* ---- 5. SwiGLU (LlamaMLP's act_fn(gate) * up, act_fn = SiLU) ----------------------------------------- */

/* Over n elements (tokens × intermediate size): a = silu(g) · u, silu(g) = g · σ(g), σ(g) = 1/(1 + e^-g). */
LG_API void lg_ref_swiglu_forward(int64_t n, const float *g, const float *u, float *a);

/* dg = da · u · σ(g) · (1 + g · (1 - σ(g))),  du = da · silu(g). dg or du may be NULL. */
LG_API void lg_ref_swiglu_backward(int64_t n, const float *g, const float *u, const float *da, float *dg,
                                   float *du);

/* ---- 6. LM head with cross-entropy -------------------------------------------------------------------- */

struct lg_ref_lm_head {
    int64_t n, H, V;
    const float *x;        /* [n, H]: the final norm's output */
    const float *w;        /* [V, H]: lm_head.weight, frozen (the embedding table when tied) */
    const int32_t *labels; /* [n], aligned with x: labels[t] is the token x[t] must predict; -100 = ignored */
    double scale;          /* 1 / (loss tokens in the whole global batch), so microbatches add up exactly */
};

/* With z_t = x_t Wᵀ (logits, [V]) over the counted rows C = {t : labels[t] != -100}:
 *   loss = scale · Σ_{t∈C} (logsumexp(z_t) - z_t[labels[t]])
 *   dx_t = scale · (softmax(z_t) - onehot(labels[t])) W  for t ∈ C,  0 for the ignored rows.
 * The labels are NOT shifted here: the trainer shifts them (token t predicts label t+1 of its own sample, the
 * last token of each sample gets -100), as transformers' ForCausalLMLoss does before calling cross_entropy.
 * loss (NULL to skip), dx [n, H] (NULL to skip the backward), count = |C| (NULL to skip). Logits are computed
 * for a few rows at a time (4 × V doubles of scratch), never [n x V]; ignored rows cost nothing.
 * A label outside [0, V) other than -100 is LG_ERR_INVALID naming the token. */
LG_API enum lg_status lg_ref_lm_head_loss(const struct lg_ref_lm_head *p, double *loss, float *dx,
                                          int64_t *count);

/* ---- 7. AdamW over the LoRA parameters, with global-norm clipping ------------------------------------ */

struct lg_ref_adamw {
    double lr, beta1, beta2, eps, weight_decay;
    double max_grad_norm; /* clip_grad_norm_'s max_norm; <= 0 or infinite: no clipping */
};

/* A list of tensors updated together: tensor i has count[i] elements in p[i] (parameters), g[i] (gradients),
 * m[i] and v[i] (first and second moments, zero before the first step). The order is fixed and is the order
 * of every reduction below. */
struct lg_ref_params {
    int n;
    float *const *p, *const *g, *const *m, *const *v;
    const int64_t *count;
};

/* ||g||_2 over all tensors of the list, in list order, accumulated in double; NaN or inf when any gradient is. */
LG_API double lg_ref_grad_norm(const struct lg_ref_params *l);

/* torch.nn.utils.clip_grad_norm_ given the total norm: c = max_norm / (norm + 1e-6); when c < 1, every
 * gradient is multiplied by c in place. Returns the factor applied (1 when none). */
LG_API double lg_ref_grad_clip(const struct lg_ref_params *l, double max_norm, double norm);

/* One step t (1-based: the number of steps applied so far, this one included; a skipped step does not count).
 * norm = lg_ref_grad_norm(l) is written to *grad_norm (NULL to skip). If norm is not finite the step is a no-op:
 * *skipped = 1 and parameters, moments and gradients stay as they were. Otherwise gradients are clipped
 * (lg_ref_grad_clip, when max_grad_norm > 0) and every element, as torch.optim.AdamW (amsgrad off):
 *   p ← p · (1 - lr·wd);  m ← β1 m + (1-β1) g;  v ← β2 v + (1-β2) g²;
 *   p ← p - lr · (m / (1-β1^t)) / (sqrt(v / (1-β2^t)) + eps)
 * computed in double, stored in fp32. LG_ERR_INVALID for t < 1, a NULL array or a negative count. */
LG_API enum lg_status lg_ref_adamw_step(const struct lg_ref_adamw *o, const struct lg_ref_params *l, int64_t t,
                                        double *grad_norm, int *skipped);

/* ---- 8. frozen fp32 linear ----------------------------------------------------------------------------- */

struct lg_ref_linear {
    int64_t K, M;      /* in and out features */
    const float *w;    /* [M, K] (nn.Linear.weight), frozen */
    const float *bias; /* [M] or NULL (Qwen2's q/k/v projections have one) */
};

/* y [n, M] = x [n, K] · Wᵀ (+ bias). Each output is one dot product accumulated in double in k order; 4x4
 * register blocks of (rows of x) × (rows of W) give about 5-6 GFLOP/s on one core (AMD EPYC, -O3, SSE2). */
LG_API void lg_ref_linear_forward(const struct lg_ref_linear *L, int64_t n, const float *x, float *y);

/* dx [n, K] = dy [n, M] · W: no dW (frozen). Blocked i-k-j loop: 4 rows of dy, a 256-column slice of dx
 * accumulated in double, W streamed row by row (about 5-9 GFLOP/s on the same core). */
LG_API void lg_ref_linear_backward(const struct lg_ref_linear *L, int64_t n, const float *dy, float *dx);

#ifdef __cplusplus
}
#endif
#endif
