/* lg_attention.h: causal attention over packed variable-length samples with GQA, forward and backward.
 *
 * A microbatch packs nseq samples into one token stream: sample i holds tokens cu[i] .. cu[i+1]-1 and is
 * causal on its own; no token ever sees another sample and nothing is padded. With q [tokens, hq, d] and
 * k, v [tokens, hkv, d] (q head h reads kv head h / (hq / hkv)), for each token i and q head h over the keys
 * j <= i of its sample:
 *   s_j = scale·q_i·k_j,  lse_i = log Σ_j exp(s_j),  o_i = Σ_j exp(s_j - lse_i)·v_j       (lse natural log)
 * and the backward, from o, dout and lse (D_i = dout_i·o_i, P_ij = exp(s_ij - lse_i)):
 *   dS_ij = P_ij·(dout_i·v_j - D_i),  dq_i = scale·Σ_j dS_ij k_j,  dk_j = scale·Σ dS_ij q_i,  dv_j = Σ P_ij dout_i
 * (dk, dv summed over the q heads of the group). lg_ref_attn_forward/backward (lg_ref_ops.h) is the same math
 * on the CPU. Head dim 64 or 128, bf16 or fp16 tensors, fp32 softmax statistics and accumulation.
 *
 * Backends: LG_ATTN_GENERATED (the default, every device): generated flash-attention kernels
 * (templates/attn/, tensor-core mma.sync with ldmatrix and cp.async pipelines, tiles per arch), blocks listed
 * longest work first in a table built on the device from cu, no block for the masked upper triangle.
 * LG_ERR_UNSUPPORTED from lg_attn_init with LG_ATTN_CUDNN when cuDNN 9 cannot be loaded (it is loaded at run
 * time; nothing links it) or cannot serve the shape (lg_attn_cudnn_version() says whether it loaded).
 * The backward is deterministic with LG_ATTN_DETERMINISTIC (no floating-point atomics: dK/dV summed in
 * registers per key block, dQ in a pass of its own; bitwise reproducible); without it dQ is accumulated with
 * fp32 atomics in the dK/dV pass (faster, reproducible to rounding only).
 *
 * Offsets: cu_seqlens lives on the device (the kernels read it) and the caller also passes the same values
 * on the host: the launch sizes come from the host copy, and every rule (cu[0] = 0, strictly increasing,
 * cu[nseq] = tokens, max_len not below the longest sample) is checked there, since reading the device copy
 * would need a synchronisation. The two copies must agree; that is the caller's promise and is not checked.
 *
 * Ownership: lg_attn_t borrows the context and owns its workspace (block tables, D, the fp32 dQ sums), which
 * grows on demand (synchronising the stream only when it grows). Calls on one lg_attn_t must be ordered on one
 * stream at a time. Tensors are the caller's device buffers; ld* count elements between consecutive tokens
 * (0: packed, heads·d), multiples of 8, with 16-byte aligned bases, so q, k and v may be views of one fused
 * projection output. Calls never synchronise (except to grow the workspace).
 *
 *   struct lg_attn_params ap = { .hq = 32, .hkv = 8, .head_dim = 128, .dtype = LG_BF16 };
 *   lg_attn_t *attn;  lg_attn_init(ctx, &ap, &attn);
 *   struct lg_attn_seqs sq = { .nseq = n, .cu_host = cu, .cu = cu_dev, .tokens = cu[n], .max_len = longest };
 *   struct lg_attn_fwd f = { .seqs = sq, .q = q, .k = k, .v = v, .o = o, .lse = lse };
 *   lg_attn_forward(attn, &f, stream);
 *   struct lg_attn_bwd b = { .seqs = sq, .q = q, .k = k, .v = v, .o = o, .dout = dout, .lse = lse,
 *                            .dq = dq, .dk = dk, .dv = dv };
 *   lg_attn_backward(attn, &b, stream);
 *   lg_attn_free(attn);
 */
#ifndef LG_ATTENTION_H
#define LG_ATTENTION_H

#include "lg_ctx.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lg_attn lg_attn_t;

enum lg_attn_backend {
    LG_ATTN_GENERATED = 0, /* generated flash-attention kernels (default) */
    LG_ATTN_CUDNN = 1,     /* cuDNN 9 fused attention, loaded at run time */
};

enum lg_attn_flags {
    LG_ATTN_DETERMINISTIC = 1u << 0, /* backward without floating-point atomics: bitwise reproducible */
};

struct lg_attn_params {
    int hq, hkv;         /* q and kv heads; hq a multiple of hkv */
    int head_dim;        /* 64 or 128 */
    enum lg_dtype dtype; /* LG_BF16 or LG_FP16 */
    float scale;         /* softmax scale; 0: 1/sqrt(head_dim) */
    enum lg_attn_backend backend;
    unsigned flags; /* enum lg_attn_flags */
};

LG_API enum lg_status lg_attn_init(lg_ctx_t *ctx, const struct lg_attn_params *p, lg_attn_t **out);
LG_API void lg_attn_free(lg_attn_t *a);

/* The packing of one call. */
struct lg_attn_seqs {
    int nseq;               /* samples, >= 1 */
    const int32_t *cu_host; /* [nseq+1] sample start offsets on the host (checked; sizes the launches) */
    CUdeviceptr cu;         /* the same [nseq+1] int32 offsets on the device */
    int64_t tokens;         /* total tokens: must equal cu_host[nseq] */
    int max_len;            /* the longest sample, or any bound above it */
};

struct lg_attn_fwd {
    struct lg_attn_seqs seqs;
    CUdeviceptr q, k, v; /* [tokens, hq | hkv, d] */
    int64_t ldq, ldk, ldv;
    CUdeviceptr o; /* [tokens, hq, d] */
    int64_t ldo;
    CUdeviceptr lse; /* fp32 [tokens, hq], natural log: the backward needs it */
};
LG_API enum lg_status lg_attn_forward(lg_attn_t *a, const struct lg_attn_fwd *f, CUstream stream);

struct lg_attn_bwd {
    struct lg_attn_seqs seqs;
    CUdeviceptr q, k, v, o, dout; /* the forward's inputs and output, and dL/do */
    int64_t ldq, ldk, ldv, ldo, lddo;
    CUdeviceptr lse;          /* the forward's */
    CUdeviceptr dq, dk, dv;   /* written (not accumulated) */
    int64_t lddq, lddk, lddv;
};
LG_API enum lg_status lg_attn_backward(lg_attn_t *a, const struct lg_attn_bwd *b, CUstream stream);

/* Makes now what calls with these samples and strides will need (f, b: a forward's and a backward's arguments,
 * either may be NULL; only seqs.nseq, seqs.tokens, seqs.max_len and the row strides are read, no pointer): on
 * the cuDNN backend the execution plans of their (samples, length) bucket and the device memory they run in, so
 * a trainer can build every plan of an epoch before its first step (a new bucket would otherwise build its
 * plans inside a step: docs/perf.md, 2026-12-02). Nothing to do on the generated backend. */
LG_API enum lg_status lg_attn_prepare(lg_attn_t *a, const struct lg_attn_fwd *f, const struct lg_attn_bwd *b,
                                      CUstream stream);

/* Kernel tiles of the generated backend (the tuner sets these; zero fields keep the per-arch defaults).
 * fwd_*: the forward; dkv_*: the dK/dV pass (16 keys per warp); dq_*: the deterministic dQ pass. bm: query
 * rows per block, bn: keys per block, nw: warps, st: cp.async stages (generator/ops/attn.lua lists the values
 * and prunes the impossible combinations: lg_attn_forward/backward then fail naming the rule). */
struct lg_attn_tiles {
    int fwd_bm, fwd_bn, fwd_nw, fwd_st;
    int dkv_bm, dkv_nw, dkv_st;
    int dq_bm, dq_bn, dq_nw, dq_st;
};
LG_API enum lg_status lg_attn_set_tiles(lg_attn_t *a, const struct lg_attn_tiles *t);
/* The tiles the layer runs: the per-arch defaults overlaid with set or tuned ones (zero: the generator's). */
LG_API void lg_attn_get_tiles(const lg_attn_t *a, struct lg_attn_tiles *t);
/* The tuning database's view (lg_tune.h): the key of a generated-backend layer on ctx's GPU (op "attn", shape
 * "hq<hq>_hkv<hkv>_d<head_dim>_<det|atomic>", token bucket 0: one entry per GPU and model shape), and the tiles
 * as an entry's named parameters (the fields below; zero ones left out). lg_attn_init takes the process
 * database's winner where the key matches, over the per-arch defaults. */
struct lg_tune_key;
struct lg_tune_entry;
LG_API void lg_attn_tune_key(lg_ctx_t *ctx, const struct lg_attn_params *p, struct lg_tune_key *out);
LG_API void lg_attn_tiles_from_entry(const struct lg_tune_entry *e, struct lg_attn_tiles *t);
LG_API void lg_attn_tiles_to_entry(const struct lg_attn_tiles *t, struct lg_tune_entry *e);

/* The kernels' names as they will run (defaults filled in), for benchmark tables; each buffer LG_NAME_MAX. */
LG_API enum lg_status lg_attn_kernel_names(lg_attn_t *a, char *fwd, char *dkv, char *dq);

/* The loaded cuDNN's version (e.g. 91900), or 0 when libcudnn.so.9 cannot be loaded here. */
LG_API int lg_attn_cudnn_version(void);

#ifdef __cplusplus
}
#endif
#endif
