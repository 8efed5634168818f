/* lg_attn_args.h: the argument blocks of the generated attention kernels (templates/attn/), passed by value.
 * Included by the host launchers (runtime/ops/attention.c, C) and emitted into every attention source (CUDA),
 * so both sides see one layout. Pointers are device addresses; ld* count elements between consecutive tokens
 * (rows) of a [tokens, heads, head_dim] tensor, so q/k/v may be views of one fused projection buffer.
 *
 * Packing: sample i holds tokens cu[i] .. cu[i+1]-1 and is causal on its own. A block table lists the blocks
 * a launch runs as (sample, block) int pairs, longest work first (attn_sched.cuh builds it on the device from
 * cu, so no host copy of the table and no synchronisation is needed); the kernels' grid is (heads, entries).
 * Softmax statistics are fp32: lse [tokens, hq] natural log (lg_ref_attn_forward's layout); the backward's
 * D = rowsum(dO ∘ O) is kept per head as dd [hq][tokens_pad] so that a block's rows are contiguous. */
#ifndef LG_ATTN_ARGS_H
#define LG_ATTN_ARGS_H

#ifdef __CUDACC__
typedef long long lg_attn_i64;
#else
#include <stdint.h>
typedef int64_t lg_attn_i64;
#endif

/* Block table builder: entries (sample, block) of blocks of `rows` tokens, in decreasing work order.
 * mode 0 (query blocks, forward and dQ): work of query block b = the key blocks of `kv_rows` it reads,
 *   ceil(min((b+1)·rows, len) / kv_rows).
 * mode 1 (key blocks, dK/dV): work of key block b = the query blocks of `kv_rows` tokens at or after it,
 *   nq - floor(b·rows / kv_rows).
 * Ties keep (sample, block) order. `entries` is Σ ceil(len / rows), computed by the host from its copy. */
struct lg_attn_sched_args {
    const int *cu;
    int *table; /* [entries][2] */
    int nseq, entries;
    int rows, kv_rows, mode;
};

/* Forward: o = softmax(scale·q·kᵀ, causal per sample)·v and lse, for the query block of table entry y and q
 * head x. scale_log2 = scale·log2(e). */
struct lg_attn_fwd_args {
    const void *q, *k, *v;
    lg_attn_i64 ldq, ldk, ldv;
    void *o;
    lg_attn_i64 ldo;
    float *lse;
    const int *cu, *table;
    int hq, hkv;
    float scale_log2;
};

/* Backward preprocess: dd[h][t] = Σ_c dout[t,h,c]·o[t,h,c] (fp32), for t < tokens. One thread per 8 values. */
struct lg_attn_pre_args {
    const void *o, *dout;
    lg_attn_i64 ldo, lddo;
    float *dd;
    lg_attn_i64 tokens, dd_ld; /* dd_ld: tokens rounded up to 4 (16-byte rows) */
    int hq;
};

/* Backward, one key block of kv head x (table entry y) over every query block at or after it of all q heads
 * in its group: dK and dV accumulate in registers (deterministic) and are written once. With the atomic
 * variant the same pass adds dS·K into dq_acc (fp32 [tokens, hq, head_dim], zeroed first); otherwise the dQ
 * kernel computes dQ in a pass of its own. */
struct lg_attn_bwd_args {
    const void *q, *k, *v, *dout;
    lg_attn_i64 ldq, ldk, ldv, lddo;
    const float *lse, *dd;
    lg_attn_i64 dd_ld;
    void *dq, *dk, *dv; /* dq: the dQ kernel only */
    lg_attn_i64 lddq, lddk, lddv;
    float *dq_acc;
    const int *cu, *table;
    int hq, hkv;
    float scale, scale_log2;
};

/* dQ = scale·dq_acc as dtype (after the atomic dK/dV pass). One thread per 8 values. */
struct lg_attn_cvt_args {
    const float *dq_acc;
    void *dq;
    lg_attn_i64 lddq, tokens;
    int hq;
    float scale;
};

#endif
