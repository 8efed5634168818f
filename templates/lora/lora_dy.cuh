/* lora_dy.cuh: the backward pass over dY. One read of dY gives both LoRA products that need it:
 *   dS partial = dY·B      (reduced over this block's columns of dY)
 *   dB partial = dYᵀ·S     (reduced over this block's tokens)
 * Both go to fp32 partial buffers; lora_reduce.cuh sums them in a fixed order, so the result is
 * deterministic (no float atomics).
 *
 * A block of 4 warps walks 64-token row tiles (tiles_per_block of them) and, inside each, NCT 64-column
 * tiles: cols_per_block = 64·NCT. dY, B and S tiles are staged in shared memory with cp.async, ST stages
 * deep, and fed to m16n8k16 MMAs through ldmatrix (plain for dY·B, transposed for dYᵀ·S). Warp w owns
 * rows 16w..16w+15 of the tile for dS and columns 16w..16w+15 for dB. The dB accumulators for all NCT column
 * tiles stay in registers for the whole block (the NCT loop is unrolled so they are never spilled).
 *
 * Needs M % 64 == 0, R % 8 == 0; any token count N. */

#define LG_DY_BT 64
#define LG_DY_BC 64
#define LG_DY_LD (LG_DY_BC + 8) /* padded row: ldmatrix rows land in distinct banks */

template <int R, int ST> struct lg_dy_smem {
    lg_h16 dy[ST][LG_DY_BT][LG_DY_LD];
    lg_h16 b[ST][LG_DY_BC][R + 8];
    lg_h16 s[ST][LG_DY_BT][R + 8];
};

/* Issues (does not commit) the cp.async copies of one stage: dY rows n0.., cols m0.., and the matching B and S
 * tiles. Rows past n are zero-filled. */
template <int R, int ST>
static __device__ __forceinline__ void lg_dy_stage(lg_dy_smem<R, ST> &sm, int buf, const struct lg_dy_args &p,
                                                   lg_i64 n0, int m0)
{
    const lg_h16 *dy = (const lg_h16 *)p.dy, *b = (const lg_h16 *)p.b, *s = (const lg_h16 *)p.s;
    for (int c = threadIdx.x; c < LG_DY_BT * (LG_DY_BC / 8); c += 128) {
        const int r = c / (LG_DY_BC / 8), cc = c % (LG_DY_BC / 8);
        const bool v = n0 + r < p.n;
        lg_cp_async16(&sm.dy[buf][r][cc * 8], dy + (v ? n0 + r : 0) * p.lddy + m0 + cc * 8, v ? 16 : 0);
    }
    for (int c = threadIdx.x; c < LG_DY_BC * (R / 8); c += 128) {
        const int r = c / (R / 8), cc = c % (R / 8);
        lg_cp_async16(&sm.b[buf][r][cc * 8], b + (lg_i64)(m0 + r) * p.ldb + cc * 8, 16);
    }
    for (int c = threadIdx.x; c < LG_DY_BT * (R / 8); c += 128) {
        const int r = c / (R / 8), cc = c % (R / 8);
        const bool v = n0 + r < p.n;
        lg_cp_async16(&sm.s[buf][r][cc * 8], s + (v ? n0 + r : 0) * p.lds + cc * 8, v ? 16 : 0);
    }
}

/* B fragments for NT n-tiles of a 16-deep k step from a [k][R+8] shared tile (k rows, rank columns), through
 * transposed ldmatrix: frag[j][0..1] = {b0, b1} of n-tile j. */
template <int R>
static __device__ __forceinline__ void lg_load_bfrag_kr(lg_h32 frag[R / 8][2], const lg_h16 (*tile)[R + 8],
                                                        int k0, int lane)
{
#pragma unroll
    for (int jp = 0; jp < R / 16; jp++) {
        lg_h32 r[4];
        lg_ldsm_x4_t(r, &tile[k0 + ((lane >> 3) & 1) * 8 + (lane & 7)][jp * 16 + (lane >> 4) * 8]);
        frag[2 * jp][0] = r[0];
        frag[2 * jp][1] = r[1];
        frag[2 * jp + 1][0] = r[2];
        frag[2 * jp + 1][1] = r[3];
    }
    if (R % 16) {
        lg_h32 r[2];
        lg_ldsm_x2_t(r, &tile[k0 + ((lane >> 3) & 1) * 8 + (lane & 7)][(R / 16) * 16]);
        frag[R / 8 - 1][0] = r[0];
        frag[R / 8 - 1][1] = r[1];
    }
}

template <int R, int NCT, int ST>
static __device__ __forceinline__ void lg_lora_dy(const struct lg_dy_args &p)
{
    constexpr int NT = R / 8;
    extern __shared__ __align__(16) unsigned char lg_dyn_smem[];
    lg_dy_smem<R, ST> &sm = *(lg_dy_smem<R, ST> *)lg_dyn_smem;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t = lane & 3;
    const int col_base = blockIdx.x * (LG_DY_BC * NCT);
    const int ntiles_c = min(NCT, (p.m - col_base) / LG_DY_BC);
    const int row_tiles = (p.n + LG_DY_BT - 1) / LG_DY_BT;
    const int rt_begin = blockIdx.y * p.tiles_per_block;
    const int rt_end = min(rt_begin + p.tiles_per_block, row_tiles);
    const int total = max(rt_end - rt_begin, 0) * ntiles_c; /* stages this block consumes, in (rt, ct) order */

    constexpr bool HOIST = R <= 32;
    lg_h32 sfr[HOIST ? LG_DY_BT / 16 : 1][NT][2];
    float ds[NT][4];
    float db[NCT][NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            ds[j][e] = 0.f;
#pragma unroll
            for (int ct = 0; ct < NCT; ct++)
                db[ct][j][e] = 0.f;
        }

    /* ST-deep cp.async ring: stage i lives in buffer i % ST. One (possibly empty) group is committed per
     * stage so wait_group<ST-2> always means "stage `it` has landed". */
    auto issue = [&](int i) {
        if (i < total)
            lg_dy_stage<R, ST>(sm, i % ST, p, (lg_i64)(rt_begin + i / ntiles_c) * LG_DY_BT,
                               col_base + (i % ntiles_c) * LG_DY_BC);
        lg_cp_async_commit();
    };
#pragma unroll
    for (int i = 0; i < ST - 1; i++)
        issue(i);

    int it = 0;
    for (int rt = rt_begin; rt < rt_end; rt++) {
        const lg_i64 n0 = (lg_i64)rt * LG_DY_BT;
#pragma unroll
        for (int ct = 0; ct < NCT; ct++) {
            if (ct >= ntiles_c)
                break;
            lg_cp_async_wait<ST - 2>();
            __syncthreads(); /* stage `it` visible to all; everyone is done reading stage it-1's buffer */
            issue(it + ST - 1);
            const int buf = it % ST;
            /* S fragments depend on the row tile only: at small rank, load them once per row tile */
            if (HOIST && ct == 0)
#pragma unroll
                for (int kn = 0; kn < LG_DY_BT / 16; kn++)
                    lg_load_bfrag_kr<R>(sfr[kn], sm.s[buf], kn * 16, lane);
#pragma unroll
            for (int kk = 0; kk < LG_DY_BC / 16; kk++) {
                /* dS += dY[rows of warp, k = cols kk] · B[k, :] */
                lg_h32 af[4];
                lg_ldsm_x4(af, &sm.dy[buf][warp * 16 + (lane & 15)][kk * 16 + (lane >> 4) * 8]);
                lg_h32 bf[NT][2];
                lg_load_bfrag_kr<R>(bf, sm.b[buf], kk * 16, lane);
#pragma unroll
                for (int j = 0; j < NT; j++)
                    lg_mma16816(ds[j], af[0], af[1], af[2], af[3], bf[j][0], bf[j][1]);
            }
#pragma unroll
            for (int kn = 0; kn < LG_DY_BT / 16; kn++) {
                /* dB += dYᵀ[cols of warp, k = rows kn] · S[k, :] */
                lg_h32 af[4];
                const int q = lane >> 3;
                lg_ldsm_x4_t(af, &sm.dy[buf][kn * 16 + (q >> 1) * 8 + (lane & 7)][warp * 16 + (q & 1) * 8]);
                lg_h32 bf[NT][2];
                if (HOIST) {
#pragma unroll
                    for (int j = 0; j < NT; j++)
                        bf[j][0] = sfr[kn][j][0], bf[j][1] = sfr[kn][j][1];
                } else {
                    lg_load_bfrag_kr<R>(bf, sm.s[buf], kn * 16, lane);
                }
#pragma unroll
                for (int j = 0; j < NT; j++)
                    lg_mma16816(db[ct][j], af[0], af[1], af[2], af[3], bf[j][0], bf[j][1]);
            }
            it++;
        }
        /* this row tile's dS over the block's columns is complete: write its partial */
        float *dsp = p.ds_part + (lg_i64)blockIdx.x * p.n * R;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const lg_i64 r = n0 + warp * 16 + g + 8 * h;
            if (r < p.n)
#pragma unroll
                for (int j = 0; j < NT; j++)
                    *(float2 *)(dsp + r * R + j * 8 + 2 * t) = make_float2(ds[j][2 * h], ds[j][2 * h + 1]);
        }
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                ds[j][e] = 0.f;
    }
    lg_cp_async_wait<0>();

    float *dbp = p.db_part + (lg_i64)blockIdx.y * p.m * R;
#pragma unroll
    for (int ct = 0; ct < NCT; ct++) {
        if (ct >= ntiles_c)
            break;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const lg_i64 m = col_base + ct * LG_DY_BC + warp * 16 + g + 8 * h;
#pragma unroll
            for (int j = 0; j < NT; j++)
                *(float2 *)(dbp + m * R + j * 8 + 2 * t) = make_float2(db[ct][j][2 * h], db[ct][j][2 * h + 1]);
        }
    }
}
