/* lg_mlora_args.h: the argument blocks and device tables of the FusedMultiLoRA kernels (templates/mlora/),
 * shared verbatim by the runtime (C, runtime/ops/mlora*.c) and every generated mlora source (CUDA).
 *
 * A microbatch's tokens are contiguous segments, each owned by one adapter (or by none: the base model). The
 * segment table (struct lg_mlora_seg, built once per microbatch, runtime/ops/mlora_seg.c) also holds, for each
 * group height G = 16 << gi (gi = 0..LG_MLORA_NG-1), the prefix counts of the groups every segment splits into:
 * block b of a kernel that works in groups of G rows owns group b, found by a binary search over those counts.
 * A group never crosses a segment boundary, so every block serves exactly one adapter, and no segment is
 * padded: its last group is simply short.
 *
 * A layer has nmod modules (outputs) that read the same input (q/k/v: 3; gate/up: 2; a plain layer: 1) and one
 * slot per (adapter, module): slot[a * nmod + m]. A slot of rank 0 does not adapt that module. Each slot
 * occupies rp = its rank rounded up to 8 columns (the extra A rows and B columns are zero, so the padding adds
 * exactly nothing), at column `col` of the block-diagonal extended-K layout (strategy a) or at column `off` of
 * the compact layout, where each adapter's modules sit side by side from column 0 (strategy b). */
#ifndef LG_MLORA_ARGS_H
#define LG_MLORA_ARGS_H

#ifndef LG_ARGS_H
#error "lg_args.h comes first (the generator concatenates it before this file; C includes it first)"
#endif

#define LG_MLORA_NG 9     /* group heights 16, 32, ..., 4096 */
#define LG_MLORA_MAXMOD 3 /* modules sharing one input */

/* One segment: tokens [start, start + len) through adapter `adapter` (-1: base model only). */
struct lg_mlora_segrec {
    int adapter;
    int start, len;
    int first; /* 1 when this is the adapter's only segment (always, once validated) */
};

/* The device copy of a segment table: nseg records, then pre[LG_MLORA_NG][nseg + 1] prefix group counts. */
struct lg_mlora_segs {
    const struct lg_mlora_segrec *seg;
    const int *pre;
    int nseg;
    int n; /* tokens */
};

/* One (adapter, module) slot of a layer, in device memory (static per layer). */
struct lg_mlora_slot {
    int rank, rp;       /* rank, and the columns it occupies (rank rounded up to 8); 0: not adapted */
    int col, off;       /* first column: extended-K (block-diagonal) layout, compact layout */
    float s;            /* alpha / rank */
    float keep;         /* 1 / keep rate of its dropout */
    unsigned thresh16;  /* dropout threshold (0: none) */
    int pad;
    const void *a;      /* A [rp, K] rows of the layer's weight buffer (ld: the layer's ldw) */
    const void *b;      /* B [M_m, rp] columns of the layer's weight buffer (ld: ldw) */
    float *da, *db;     /* fp32 gradients [rank, K], [M_m, rank] (packed) */
};

/* What every mlora kernel knows about its layer. */
struct lg_mlora_layer {
    const struct lg_mlora_slot *slot; /* [nadapters * nmod] */
    lg_i64 ldw;                       /* row stride of A and B in the weight buffer */
    int k;                            /* in features */
    int nmod;
    int moff[LG_MLORA_MAXMOD], mlen[LG_MLORA_MAXMOD]; /* module m: output columns [moff, moff + mlen) */
    unsigned layer[LG_MLORA_MAXMOD];                  /* dropout counter of module m */
};

/* Forward down-projection: for every group of ROWS tokens of an adapted segment and every module m,
 * S_m = s_m · keep_m · (X ⊙ mask_m)·A_mᵀ into s (columns slot.col when ext, else slot.off). With ext, the
 * columns [0, ext_cols) that belong to no slot of the row's adapter are written as zeros (rows of base
 * segments entirely), which the extended-K GEMM needs. Grid: the group count of height ROWS. */
struct lg_mlora_down_args {
    struct lg_mlora_layer L;
    struct lg_mlora_segs g;
    const void *x;
    lg_i64 ldx;
    void *s;
    lg_i64 lds;
    int ext, ext_cols;
    lg_seed_t seed;
};

/* Backward pass over dY (modules side by side, [n, M_total]): per block (column block cb of one module,
 * group gr of 64·tpb tokens) partial dS over its columns and partial dB over its tokens:
 *   ds_part[cb][t][j]          = Σ_{c in cb} dY[t, c]·B[c, j]          (not scaled; j < R)
 *   db_part[gr][moff + c][j]   = Σ_{t in gr} dY[t, moff + c]·S[t, j]
 * Grid: (column blocks of all modules, groups). */
struct lg_mlora_dy_args {
    struct lg_mlora_layer L;
    struct lg_mlora_segs g;
    const void *dy;
    lg_i64 lddy;
    const void *s;
    lg_i64 lds;
    int ext;     /* S columns at slot.col (1) or slot.off (0) */
    int gi;      /* group height 16 << gi (a multiple of 64) */
    int m_total;
    float *ds_part, *db_part;
};

/* Backward pass over X: per block (64 columns of K, one group) partial dA per module and, with FUSE, the
 * masked dX correction Σ_m keep_m · mask_m ⊙ (dS_m·A_m):
 *   da_part[gr][m][j][k] = keep_m · Σ_{t in gr} dS_m[t, j]·(X ⊙ mask_m)[t, k]
 * dS is read as dtype from ds (compact layout: slot.off, or ext layout: slot.col). Grid: (K / 64, groups). */
struct lg_mlora_da_args {
    struct lg_mlora_layer L;
    struct lg_mlora_segs g;
    const void *x;
    lg_i64 ldx;
    const void *ds;
    lg_i64 ldds;
    int ext;
    int gi;
    void *dx;
    lg_i64 lddx;
    float *da_part;
    lg_seed_t seed;
};

/* Strategy (b)'s up-projection: Y[t, moff + c] += S_m[t, :]·B_m[c, :]ᵀ for every token of an adapted segment.
 * Grid: (column blocks of 64·NCT of all modules, groups of 64 tokens). */
struct lg_mlora_expand_args {
    struct lg_mlora_layer L;
    struct lg_mlora_segs g;
    const void *s;
    lg_i64 lds;
    void *y;
    lg_i64 ldy;
};

/* Second stage of the reductions, in fixed order (bitwise reproducible). OUT_HALF = 1: dS and dB in one launch
 *   blockIdx.y <  nmod: dS of module y for every token t of an adapted segment:
 *       ds[t, colbase + j] = s · Σ_{cb of module y} ds_part[cb][t][j]      (dtype; ldds; colbase per ext)
 *   blockIdx.y >= nmod: dB of slot (segment (y - nmod) / nmod, module (y - nmod) % nmod):
 *       db[c, j] = beta·db[c, j] + Σ_{groups gr of the segment} db_part[gr][moff + c][j]
 * OUT_HALF = 0: dA of slot (segment y / nmod, module y % nmod): da[j, k] = beta·da + Σ_gr da_part[gr][m][j][k].
 * r is the partial buffers' rank stride (the kernels' R); cb0[m]..cb0[m+1] are module m's column blocks of the
 * dY pass; gi the group height of the pass that wrote the gradient partials. */
struct lg_mlora_reduce_args {
    struct lg_mlora_layer L;
    struct lg_mlora_segs g;
    const float *part;    /* OUT_HALF = 1: the dS partials; 0: the dA partials */
    const float *part_db; /* OUT_HALF = 1: the dB partials */
    void *ds;
    lg_i64 ldds;
    int ext;
    int gi;
    int r;
    int m_total;
    int cb0[LG_MLORA_MAXMOD + 1];
    float beta;
};

#endif
