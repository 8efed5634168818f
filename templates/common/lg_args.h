/* lg_args.h: the argument blocks of the generated LoRA kernels, passed by value. Included by the runtime (C)
 * and inlined into every generated source (CUDA), so both sides see one layout. Pointers are device
 * addresses; leading dimensions count elements between rows. Conventions (PyTorch): X [N,K], W [M,K],
 * A [r,K], B [M,r], S = s·D(X)·Aᵀ [N,r], dS = s·dY·B [N,r]. */
#ifndef LG_ARGS_H
#define LG_ARGS_H

#ifdef __CUDACC__
typedef long long lg_i64;
typedef unsigned long long lg_seed_t;
#else
#include <stdint.h>
typedef int64_t lg_i64;
typedef uint64_t lg_seed_t;
#endif

/* Dropout draw parameters (see lg_philox.h). thresh16 == 0 means no dropout. */
struct lg_dropout {
    lg_seed_t seed;
    unsigned layer;
    unsigned thresh16;
};

/* Forward down-projection: S = scale · (X ⊙ mask)·Aᵀ, written as dtype into s (row stride lds).
 * scale = alpha/r / keep_rate. Grid: ceil(n / rows_per_block). */
struct lg_down_args {
    const void *x;
    lg_i64 ldx;
    const void *a;
    lg_i64 lda;
    void *s;
    lg_i64 lds;
    int n, k;
    float scale;
    struct lg_dropout drop;
};

/* Backward pass over dY: per block, partial dS (over its columns) and partial dB (over its tokens).
 *   ds_part[col_block][n][r]   = Σ_{m in col block} dY[n,m]·B[m,:]      (not yet scaled)
 *   db_part[row_block][m][r]   = Σ_{n in row block} dY[n,m]·S[n,:]
 * Grid: (ceil(m / cols_per_block), row_blocks); each block walks rows_per_block-row tiles
 * from blockIdx.y*tiles_per_block. */
struct lg_dy_args {
    const void *dy;
    lg_i64 lddy;
    const void *b;
    lg_i64 ldb;
    const void *s;
    lg_i64 lds;
    float *ds_part;
    float *db_part;
    int n, m;
    int tiles_per_block;
};

/* Backward pass over X: dAᵀ partials and, when fused, the masked dX correction.
 *   da_part[row_block][r][k] = Σ_{n in row block} dS[n,:]ᵀ · (X ⊙ mask)[n,k] · keep_scale
 *   dx[n,k] += keep_scale · mask[n,k] · (dS·A)[n,k]          (FUSE_DX variants only)
 * Grid: (ceil(k / cols_per_block), row_blocks). */
struct lg_da_args {
    const void *x;
    lg_i64 ldx;
    const void *ds;
    lg_i64 ldds;
    const void *a;
    lg_i64 lda;
    void *dx;
    lg_i64 lddx;
    float *da_part;
    int n, k;
    int tiles_per_block;
    float keep_scale;
    struct lg_dropout drop;
};

/* Deterministic second stage: out = beta·out + scale·Σ_t part[t·part_stride + i], in a fixed order.
 * Float output (contiguous, `count` values) or dtype output with rows of width `cols` at stride ldo. */
struct lg_reduce_job {
    const float *part;
    lg_i64 part_stride;
    int parts;
    lg_i64 count;
    int cols;
    void *out;
    lg_i64 ldo;
    float scale, beta;
};

/* Two reductions in one launch (dS and dB share one): blocks [0, blocks0) do job[0], written as dtype rows in
 * the OUT_HALF variant; the rest do job[1], always fp32 (count 0: no second job). */
struct lg_reduce_args {
    struct lg_reduce_job job[2];
    int blocks0;
};

#endif
