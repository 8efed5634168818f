/* mlora_dy.cuh: FusedMultiLoRA's backward pass over dY. One read of dY gives both products that need it,
 * per module m and per group of tokens (one adapter a):
 *   dS partial = dY_m·B_{a,m}   (over this block's columns)     dB partial = dY_mᵀ·S_{a,m}   (over its tokens)
 * into fp32 partial buffers that mlora_reduce.cuh sums in a fixed order (no float atomics).
 *
 * The structure is FusedLoRA's dY pass (templates/lora/lora_dy.cuh): 4 warps, 64-token row tiles and NCT
 * 64-column tiles per block staged with cp.async ST stages deep, dS through ldmatrix, dB through
 * ldmatrix.trans, dB accumulators in registers for the block's whole token range. What is new: a block's
 * columns lie in one module (blockIdx.x counts the column blocks of all modules in order), its tokens are one
 * group of 64·2^k rows inside one segment (rows past the group's end are zero-filled, so a neighbouring
 * adapter's tokens add nothing), and the rank is the slot's, up to R (n-tiles past it are skipped).
 *
 * Needs M_m % 64 == 0 for every module, R % 8 == 0. */

#define LG_MDY_BT 64
#define LG_MDY_BC 64
#define LG_MDY_LD (LG_MDY_BC + 8) /* padded row: ldmatrix rows land in distinct banks */

template <int R, int ST> struct lg_mdy_smem {
    lg_h16 dy[ST][LG_MDY_BT][LG_MDY_LD];
    lg_h16 b[ST][LG_MDY_BC][R + 8];
    lg_h16 s[ST][LG_MDY_BT][R + 8];
};

/* Issues (does not commit) one stage: dY rows n0.. (valid below r1), columns c0.. of the whole dY, and the
 * matching rows of B (module-local row mb0..) and S; rp/8 16-byte chunks of B and S per row. */
template <int R, int ST>
static __device__ __forceinline__ void lg_mdy_stage(lg_mdy_smem<R, ST> &sm, int buf, const struct lg_mlora_dy_args &p,
                                                    const lg_h16 *b, const lg_h16 *s, int rp, lg_i64 n0, int r1,
                                                    int c0, int mb0)
{
    const lg_h16 *dy = (const lg_h16 *)p.dy;
    for (int c = threadIdx.x; c < LG_MDY_BT * (LG_MDY_BC / 8); c += 128) {
        const int r = c / (LG_MDY_BC / 8), cc = c % (LG_MDY_BC / 8);
        const bool v = n0 + r < r1;
        lg_cp_async16(&sm.dy[buf][r][cc * 8], dy + (v ? n0 + r : 0) * p.lddy + c0 + cc * 8, v ? 16 : 0);
    }
    const int nch = rp / 8;
    for (int c = threadIdx.x; c < LG_MDY_BC * nch; c += 128) {
        const int r = c / nch, cc = c % nch;
        lg_cp_async16(&sm.b[buf][r][cc * 8], b + (lg_i64)(mb0 + r) * p.L.ldw + cc * 8, 16);
    }
    for (int c = threadIdx.x; c < LG_MDY_BT * nch; c += 128) {
        const int r = c / nch, cc = c % nch;
        const bool v = n0 + r < r1;
        lg_cp_async16(&sm.s[buf][r][cc * 8], s + (v ? n0 + r : 0) * p.lds + cc * 8, v ? 16 : 0);
    }
}

/* B fragments for NT n-tiles of a 16-deep k step from a [k][R+8] shared tile, through transposed ldmatrix. */
template <int R>
static __device__ __forceinline__ void lg_mdy_bfrag(lg_h32 frag[R / 8][2], const lg_h16 (*tile)[R + 8], int k0,
                                                    int lane)
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
static __device__ __forceinline__ void lg_mlora_dy(const struct lg_mlora_dy_args &p)
{
    constexpr int NT = R / 8;
    extern __shared__ __align__(16) unsigned char lg_dyn_smem[];
    lg_mdy_smem<R, ST> &sm = *(lg_mdy_smem<R, ST> *)lg_dyn_smem;

    /* this block's module and columns */
    int cb, moff, mlen;
    const int m = lg_mlora_colblock(p.L, LG_MDY_BC * NCT, (int)blockIdx.x, &cb);
    lg_mlora_module(p.L, m, &moff, &mlen);
    const int mcol0 = cb * (LG_MDY_BC * NCT); /* module-local */
    const int ntiles_c = min(NCT, (mlen - mcol0) / LG_MDY_BC);

    const lg_mlora_grp grp = lg_mlora_group(p.g, p.gi, (int)blockIdx.y);
    if (grp.adapter < 0 || ntiles_c <= 0)
        return;
    const lg_mlora_slot &sl = p.L.slot[grp.adapter * p.L.nmod + m];
    const int rp = sl.rp;
    if (rp == 0)
        return;
    const lg_h16 *bsl = (const lg_h16 *)sl.b;
    const lg_h16 *ssl = (const lg_h16 *)p.s + lg_mlora_colbase(sl, p.ext);

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t = lane & 3;
    const int row_tiles = (grp.r1 - grp.r0 + LG_MDY_BT - 1) / LG_MDY_BT;
    const int total = row_tiles * ntiles_c;

    constexpr bool HOIST = R <= 32;
    lg_h32 sfr[HOIST ? LG_MDY_BT / 16 : 1][NT][2];
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

    auto issue = [&](int i) {
        if (i < total) {
            const int c = (i % ntiles_c) * LG_MDY_BC;
            lg_mdy_stage<R, ST>(sm, i % ST, p, bsl, ssl, rp, (lg_i64)grp.r0 + (i / ntiles_c) * LG_MDY_BT, grp.r1,
                                moff + mcol0 + c, mcol0 + c);
        }
        lg_cp_async_commit();
    };
#pragma unroll
    for (int i = 0; i < ST - 1; i++)
        issue(i);

    int it = 0;
    for (int rt = 0; rt < row_tiles; rt++) {
        const lg_i64 n0 = (lg_i64)grp.r0 + rt * LG_MDY_BT;
#pragma unroll
        for (int ct = 0; ct < NCT; ct++) {
            if (ct >= ntiles_c)
                break;
            lg_cp_async_wait<ST - 2>();
            __syncthreads();
            issue(it + ST - 1);
            const int buf = it % ST;
            if (HOIST && ct == 0)
#pragma unroll
                for (int kn = 0; kn < LG_MDY_BT / 16; kn++)
                    lg_mdy_bfrag<R>(sfr[kn], sm.s[buf], kn * 16, lane);
#pragma unroll
            for (int kk = 0; kk < LG_MDY_BC / 16; kk++) {
                lg_h32 af[4];
                lg_ldsm_x4(af, &sm.dy[buf][warp * 16 + (lane & 15)][kk * 16 + (lane >> 4) * 8]);
                lg_h32 bf[NT][2];
                lg_mdy_bfrag<R>(bf, sm.b[buf], kk * 16, lane);
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    if (j * 8 >= rp)
                        break;
                    lg_mma16816(ds[j], af[0], af[1], af[2], af[3], bf[j][0], bf[j][1]);
                }
            }
#pragma unroll
            for (int kn = 0; kn < LG_MDY_BT / 16; kn++) {
                lg_h32 af[4];
                const int q = lane >> 3;
                lg_ldsm_x4_t(af, &sm.dy[buf][kn * 16 + (q >> 1) * 8 + (lane & 7)][warp * 16 + (q & 1) * 8]);
                lg_h32 bf[NT][2];
                if (HOIST) {
#pragma unroll
                    for (int j = 0; j < NT; j++)
                        bf[j][0] = sfr[kn][j][0], bf[j][1] = sfr[kn][j][1];
                } else {
                    lg_mdy_bfrag<R>(bf, sm.s[buf], kn * 16, lane);
                }
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    if (j * 8 >= rp)
                        break;
                    lg_mma16816(db[ct][j], af[0], af[1], af[2], af[3], bf[j][0], bf[j][1]);
                }
            }
            it++;
        }
        /* this row tile's dS over the block's columns is complete: its partial, rows of the group only */
        float *dsp = p.ds_part + (lg_i64)blockIdx.x * p.g.n * R;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const lg_i64 r = n0 + warp * 16 + g + 8 * h;
            if (r < grp.r1)
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    if (j * 8 >= rp)
                        break;
                    *(float2 *)(dsp + r * R + j * 8 + 2 * t) = make_float2(ds[j][2 * h], ds[j][2 * h + 1]);
                }
        }
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                ds[j][e] = 0.f;
    }
    lg_cp_async_wait<0>();

    float *dbp = p.db_part + (lg_i64)blockIdx.y * p.m_total * R;
#pragma unroll
    for (int ct = 0; ct < NCT; ct++) {
        if (ct >= ntiles_c)
            break;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const lg_i64 c = moff + mcol0 + ct * LG_MDY_BC + warp * 16 + g + 8 * h;
#pragma unroll
            for (int j = 0; j < NT; j++) {
                if (j * 8 >= rp)
                    break;
                *(float2 *)(dbp + c * R + j * 8 + 2 * t) = make_float2(db[ct][j][2 * h], db[ct][j][2 * h + 1]);
            }
        }
    }
}
