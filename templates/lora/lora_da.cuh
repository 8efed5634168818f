/* lora_da.cuh: the backward pass over X. One read of X gives
 *   dAᵀ partial = (X ⊙ mask)ᵀ·dS · keep_scale     (reduced over this block's tokens)
 * and, in the FUSE variants, the dropout-masked dX correction in the same pass:
 *   dX += keep_scale · mask ⊙ (dS·A)
 * which is what the extended-K GEMM cannot do when p > 0 (the mask sits between dS·A and dX).
 *
 * A block of 4 warps owns 64 columns of K and walks tiles_per_block 64-token row tiles. Warp w's threads load
 * rows 16w+g and 16w+g+8, columns 8t..8t+7 and 32+8t..32+8t+7 of the tile (16-byte loads; one Philox call
 * masks 8 values), prefetched one tile ahead; the masked X goes to shared memory for the dA MMAs (transposed
 * ldmatrix). For FUSE, dS·A is an MMA whose B operand (the A tile) is stored with its columns permuted so that
 * the accumulator fragments of thread (g, t) land on exactly the dX vectors that thread loaded: the
 * correction is applied in registers with the mask bits the thread already drew, with no shared-memory round
 * trip.
 *
 * Template parameters: R rank (multiple of 8), FUSE (add the dX correction), DROP (apply the mask).
 * Needs K % 64 == 0; any token count N. */

#define LG_DA_BT 64
#define LG_DA_BK 64
#define LG_DA_LD (LG_DA_BK + 8)

template <int R> struct lg_da_smem {
    static constexpr int RP = (R + 15) / 16 * 16; /* rank padded for the k16 steps of dS·A */
    lg_h16 x[LG_DA_BT][LG_DA_LD];
    lg_h16 ds[LG_DA_BT][RP + 8];
    lg_h16 a[RP][LG_DA_LD]; /* columns permuted: see lg_da_perm */
};

/* Column of the 64-wide tile that MMA n-tile nt, column n (0..7) stands for: thread t's accumulator columns
 * 2t, 2t+1 of n-tiles 0..3 are tile columns 8t..8t+7, and of n-tiles 4..7 columns 32+8t..32+8t+7. */
static __device__ __forceinline__ int lg_da_perm(int nt, int n)
{
    const int t = n >> 1, e = n & 1;
    return (nt < 4) ? 8 * t + 2 * nt + e : 32 + 8 * t + 2 * (nt - 4) + e;
}

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

    if (FUSE) /* A tile [RP][64], permuted, once per block (rows >= R zero) */
        for (int c = tid; c < RP * LG_DA_BK; c += 128) {
            const int j = c / LG_DA_BK, col = c % LG_DA_BK;
            sm.a[j][col] = j < R ? ag[(lg_i64)j * p.lda + k0 + lg_da_perm(col >> 3, col & 7)] : (lg_h16)0;
        }
    if (RP != R)
        for (int r = tid; r < LG_DA_BT; r += 128)
            *(lg_v16 *)&sm.ds[r][R] = lg_v16{0u, 0u, 0u, 0u};

    /* vector v (0..3) of this thread: tile row 16w + g + 8(v>>1), tile columns (v&1)*32 + 8t .. +7 */
    auto vrow = [&](int v) { return warp * 16 + g + 8 * (v >> 1); };
    auto vcol = [&](int v) { return (v & 1) * 32 + 8 * t; };
    lg_v16 xv[4], dxv[4];
    auto load_x = [&](int rt) {
#pragma unroll
        for (int v = 0; v < 4; v++) {
            const lg_i64 r = (lg_i64)rt * LG_DA_BT + vrow(v);
            xv[v] = r < p.n ? lg_ld16(x + r * p.ldx + k0 + vcol(v)) : lg_v16{0u, 0u, 0u, 0u};
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
            for (int v = 0; v < 4; v++) {
                const lg_i64 r = n0 + vrow(v);
                dxv[v] = r < p.n ? lg_ld16(dx + r * p.lddx + k0 + vcol(v)) : lg_v16{0u, 0u, 0u, 0u};
            }
        lg_u32 km[4][4]; /* AND-masks of this thread's 4 vectors (all ones without dropout) */
#pragma unroll
        for (int v = 0; v < 4; v++) {
            lg_v16 xm = xv[v];
            if (DROP) {
                const lg_u64 e = (lg_u64)(n0 + vrow(v)) * (lg_u64)p.k + (lg_u64)(k0 + vcol(v));
                lg_dropout_mask4(p.drop.seed, p.drop.layer, e >> 3, p.drop.thresh16, km[v]);
                xm.x &= km[v][0], xm.y &= km[v][1], xm.z &= km[v][2], xm.w &= km[v][3];
            } else {
                km[v][0] = km[v][1] = km[v][2] = km[v][3] = 0xffffffffu;
            }
            *(lg_v16 *)&sm.x[vrow(v)][vcol(v)] = xm;
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
            /* C[rows 16w.., permuted cols] = dS[rows, :] · A[:, cols] */
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
            /* vector v = (row half h = v>>1, column half ch = v&1): n-tiles 4ch..4ch+3, elements 2h, 2h+1 */
#pragma unroll
            for (int v = 0; v < 4; v++) {
                const lg_i64 r = n0 + vrow(v);
                if (r >= p.n)
                    continue;
                const int h = v >> 1, ch = v & 1;
                unsigned w[4] = {dxv[v].x, dxv[v].y, dxv[v].z, dxv[v].w};
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const float c0 = (km[v][i] & 0xffffu) ? cf[4 * ch + i][2 * h] * p.keep_scale : 0.f;
                    const float c1 = (km[v][i] >> 16) ? cf[4 * ch + i][2 * h + 1] * p.keep_scale : 0.f;
                    w[i] = lg_pack2(lg_lo_f32(w[i]) + c0, lg_hi_f32(w[i]) + c1);
                }
                lg_st16(dx + r * p.lddx + k0 + vcol(v), lg_v16{w[0], w[1], w[2], w[3]});
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
