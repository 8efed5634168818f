/* lora_da.cuh: the backward pass over X. One read of X gives
 *   dAᵀ partial = (X ⊙ mask)ᵀ·dS · keep_scale     (reduced over this block's tokens)
 * and, in the FUSE variants, the dropout-masked dX correction in the same pass:
 *   dX += keep_scale · mask ⊙ (dS·A)
 * which is what the extended-K GEMM cannot do when p > 0 (the mask sits between dS·A and dX).
 *
 * A block of 4 warps owns 64 columns of K and walks tiles_per_block 64-token row tiles. X is loaded with
 * 16-byte loads (one Philox call masks 8 values), prefetched one tile ahead in registers (dX is loaded at the
 * start of its own tile, in flight during the MMAs), and stored masked
 * into shared memory; MMAs read it through transposed ldmatrix. For FUSE, dS·A for the tile is computed with
 * MMAs into a shared fp32 tile, and the thread that loaded an X vector applies the same mask bits to the
 * matching dX vector (so the mask is drawn once per element).
 *
 * Template parameters: R rank (multiple of 8), FUSE (add the dX correction), DROP (apply the mask).
 * Needs K % 64 == 0; any token count N. */

#define LG_DA_BT 64
#define LG_DA_BK 64
#define LG_DA_LD (LG_DA_BK + 8)
#define LG_DA_CH ((LG_DA_BT * LG_DA_BK / 8) / 128) /* 16-byte vectors per thread per tile: 4 */

template <int R> struct lg_da_smem {
    static constexpr int RP = (R + 15) / 16 * 16; /* rank padded for the k16 steps of dS·A */
    lg_h16 x[LG_DA_BT][LG_DA_LD];
    lg_h16 ds[LG_DA_BT][RP + 8];
    lg_h16 a[RP][LG_DA_LD];
    float c[LG_DA_BT][LG_DA_BK + 4];
};

template <int R, int FUSE, int DROP>
static __device__ __forceinline__ void lg_lora_da(const struct lg_da_args &p)
{
    constexpr int NT = R / 8;
    constexpr int RP = lg_da_smem<R>::RP;
    extern __shared__ __align__(16) unsigned char lg_dyn_smem[];
    lg_da_smem<R> &sm = *(lg_da_smem<R> *)lg_dyn_smem;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int g = lane >> 2, t = lane & 3;
    const int k0 = blockIdx.x * LG_DA_BK;
    const int row_tiles = (p.n + LG_DA_BT - 1) / LG_DA_BT;
    const int rt_begin = blockIdx.y * p.tiles_per_block;
    const int rt_end = min(rt_begin + p.tiles_per_block, row_tiles);
    const lg_h16 *x = (const lg_h16 *)p.x, *dsg = (const lg_h16 *)p.ds, *ag = (const lg_h16 *)p.a;
    lg_h16 *dx = (lg_h16 *)p.dx;

    /* A tile [RP][64] once per block (rows >= R zero); dS pad columns zero once. */
    for (int c = tid; c < RP * (LG_DA_BK / 8); c += 128) {
        const int r = c / (LG_DA_BK / 8), cc = c % (LG_DA_BK / 8);
        lg_v16 v = {0u, 0u, 0u, 0u};
        if (FUSE && r < R)
            v = lg_ld16(ag + (lg_i64)r * p.lda + k0 + cc * 8);
        *(lg_v16 *)&sm.a[r][cc * 8] = v;
    }
    if (RP != R)
        for (int r = tid; r < LG_DA_BT; r += 128)
            *(lg_v16 *)&sm.ds[r][R] = lg_v16{0u, 0u, 0u, 0u};

    /* the vectors this thread loads: vector v of a tile is row (c / 8), cols (c % 8)*8 with c = tid + 128v */
    auto vec_row = [&](int rt, int v) { return (lg_i64)rt * LG_DA_BT + (tid + 128 * v) / 8; };
    auto vec_col = [&](int v) { return k0 + ((tid + 128 * v) % 8) * 8; };
    lg_v16 xv[LG_DA_CH], dxv[LG_DA_CH];
    auto load_x = [&](int rt) {
#pragma unroll
        for (int v = 0; v < LG_DA_CH; v++) {
            const lg_i64 r = vec_row(rt, v);
            xv[v] = r < p.n ? lg_ld16_stream(x + r * p.ldx + vec_col(v)) : lg_v16{0u, 0u, 0u, 0u};
        }
    };

    float acc[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            acc[j][e] = 0.f;

    if (rt_begin < rt_end)
        load_x(rt_begin);
    for (int rt = rt_begin; rt < rt_end; rt++) {
        const lg_i64 n0 = (lg_i64)rt * LG_DA_BT;
        if (FUSE) /* dX of this tile: in flight while the MMAs run */
#pragma unroll
            for (int v = 0; v < LG_DA_CH; v++) {
                const lg_i64 r = vec_row(rt, v);
                dxv[v] = r < p.n ? lg_ld16_stream(dx + r * p.lddx + vec_col(v)) : lg_v16{0u, 0u, 0u, 0u};
            }
        lg_u32 keep = 0xffffffffu; /* 8 bits per vector */
#pragma unroll
        for (int v = 0; v < LG_DA_CH; v++) {
            const int c = tid + 128 * v;
            lg_v16 xm = xv[v];
            if (DROP) {
                const lg_u64 e = (lg_u64)(n0 + c / 8) * (lg_u64)p.k + (lg_u64)(k0 + (c % 8) * 8);
                const lg_u32 kb = lg_dropout_keep8(p.drop.seed, p.drop.layer, e >> 3, p.drop.thresh16);
                keep = (keep & ~(0xffu << (8 * v))) | (kb << (8 * v));
                xm = lg_mask8(xm, kb);
            }
            *(lg_v16 *)&sm.x[c / 8][(c % 8) * 8] = xm;
        }
        for (int c = tid; c < LG_DA_BT * (R / 8); c += 128) {
            const int r = c / (R / 8), cc = c % (R / 8);
            *(lg_v16 *)&sm.ds[r][cc * 8] =
                n0 + r < p.n ? lg_ld16(dsg + (n0 + r) * p.ldds + cc * 8) : lg_v16{0u, 0u, 0u, 0u};
        }
        __syncthreads();
        if (rt + 1 < rt_end) /* prefetch: the next tile's X flies while this one computes */
            load_x(rt + 1);

#pragma unroll
        for (int kn = 0; kn < LG_DA_BT / 16; kn++) {
            /* dAᵀ[cols of warp, :] += Xmᵀ[cols, k = rows kn] · dS[k, :] */
            lg_h32 af[4];
            const int q = lane >> 3;
            lg_ldsm_x4_t(af, &sm.x[kn * 16 + (q >> 1) * 8 + (lane & 7)][warp * 16 + (q & 1) * 8]);
            lg_h32 bf[NT][2];
#pragma unroll
            for (int jp = 0; jp < R / 16; jp++) {
                lg_h32 r4[4];
                lg_ldsm_x4_t(r4, &sm.ds[kn * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)][jp * 16 + (lane >> 4) * 8]);
                bf[2 * jp][0] = r4[0];
                bf[2 * jp][1] = r4[1];
                bf[2 * jp + 1][0] = r4[2];
                bf[2 * jp + 1][1] = r4[3];
            }
            if (R % 16) {
                lg_h32 r2[2];
                lg_ldsm_x2_t(r2, &sm.ds[kn * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)][(R / 16) * 16]);
                bf[NT - 1][0] = r2[0];
                bf[NT - 1][1] = r2[1];
            }
#pragma unroll
            for (int j = 0; j < NT; j++)
                lg_mma16816(acc[j], af[0], af[1], af[2], af[3], bf[j][0], bf[j][1]);
        }

        if (FUSE) {
            /* C[rows of warp, 64 cols] = dS[rows, :] · A[:, cols] */
            float cf[LG_DA_BK / 8][4];
#pragma unroll
            for (int nt = 0; nt < LG_DA_BK / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    cf[nt][e] = 0.f;
#pragma unroll
            for (int ks = 0; ks < RP / 16; ks++) {
                lg_h32 af[4];
                lg_ldsm_x4(af, &sm.ds[warp * 16 + (lane & 15)][ks * 16 + (lane >> 4) * 8]);
#pragma unroll
                for (int np = 0; np < LG_DA_BK / 16; np++) {
                    lg_h32 r4[4];
                    lg_ldsm_x4_t(r4, &sm.a[ks * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)][np * 16 + (lane >> 4) * 8]);
                    lg_mma16816(cf[2 * np], af[0], af[1], af[2], af[3], r4[0], r4[1]);
                    lg_mma16816(cf[2 * np + 1], af[0], af[1], af[2], af[3], r4[2], r4[3]);
                }
            }
#pragma unroll
            for (int nt = 0; nt < LG_DA_BK / 8; nt++) {
                *(float2 *)&sm.c[warp * 16 + g][nt * 8 + 2 * t] = make_float2(cf[nt][0], cf[nt][1]);
                *(float2 *)&sm.c[warp * 16 + g + 8][nt * 8 + 2 * t] = make_float2(cf[nt][2], cf[nt][3]);
            }
            __syncthreads();
#pragma unroll
            for (int v = 0; v < LG_DA_CH; v++) {
                const int c = tid + 128 * v;
                const lg_i64 r = n0 + c / 8;
                if (r >= p.n)
                    continue;
                const float4 c03 = *(const float4 *)&sm.c[c / 8][(c % 8) * 8];
                const float4 c47 = *(const float4 *)&sm.c[c / 8][(c % 8) * 8 + 4];
                const float cr[8] = {c03.x, c03.y, c03.z, c03.w, c47.x, c47.y, c47.z, c47.w};
                const unsigned kb = (keep >> (8 * v)) & 0xffu;
                unsigned w[4] = {dxv[v].x, dxv[v].y, dxv[v].z, dxv[v].w};
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const float c0 = ((kb >> (2 * i)) & 1u) ? cr[2 * i] * p.keep_scale : 0.f;
                    const float c1 = ((kb >> (2 * i + 1)) & 1u) ? cr[2 * i + 1] * p.keep_scale : 0.f;
                    w[i] = lg_pack2(lg_lo_f32(w[i]) + c0, lg_hi_f32(w[i]) + c1);
                }
                lg_st16(dx + r * p.lddx + k0 + (c % 8) * 8, lg_v16{w[0], w[1], w[2], w[3]});
            }
        }
        __syncthreads();
    }

    /* dA partial, layout [row_block][R][K]: this warp holds dAᵀ rows k0+16w+g(+8), rank cols 8j+2t(+1) */
    float *dap = p.da_part + (lg_i64)blockIdx.y * R * p.k;
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int kc = k0 + warp * 16 + g + 8 * (e >> 1);
            const int jr = j * 8 + 2 * t + (e & 1);
            dap[(lg_i64)jr * p.k + kc] = acc[j][e] * p.keep_scale;
        }
}
