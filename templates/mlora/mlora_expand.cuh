/* mlora_expand.cuh: strategy (b)'s up-projection, after the frozen GEMM has written Y = X·Wᵀ:
 *   Y[t, moff + c] += S_{a,m}[t, :]·B_{a,m}[c, :]ᵀ       for every token t of a segment of adapter a
 * One block owns 64 tokens of one group (one adapter) and NCT 64-column tiles of one module. S (compact
 * layout: the adapter's modules side by side from column 0) is staged once per block, B once per column tile;
 * the MMA results go through shared memory so that Y is read and written in 16-byte row vectors. Y is rounded
 * twice (once by the GEMM, once here): strategy (a) rounds once, so the two agree to the dtype's precision.
 *
 * Template parameters: R the largest padded rank (multiple of 8), NCT column tiles per block. */

#define LG_MEX_BT 64
#define LG_MEX_BC 64

template <int R> struct lg_mex_smem {
    static constexpr int RP = (R + 15) / 16 * 16;
    lg_h16 s[LG_MEX_BT][RP + 8];
    lg_h16 b[LG_MEX_BC][RP + 8];
    float o[LG_MEX_BT][LG_MEX_BC + 4];
};

template <int R, int NCT>
static __device__ __forceinline__ void lg_mlora_expand(const struct lg_mlora_expand_args &p)
{
    typedef lg_mex_smem<R> SM;
    constexpr int RP = SM::RP;
    extern __shared__ __align__(16) unsigned char lg_dyn_smem[];
    SM &sm = *(SM *)lg_dyn_smem;

    int cb, moff, mlen;
    const int m = lg_mlora_colblock(p.L, LG_MEX_BC * NCT, (int)blockIdx.x, &cb);
    lg_mlora_module(p.L, m, &moff, &mlen);
    const int mcol0 = cb * (LG_MEX_BC * NCT);
    const int ntiles_c = min(NCT, (mlen - mcol0) / LG_MEX_BC);
    const lg_mlora_grp grp = lg_mlora_group(p.g, 2, (int)blockIdx.y);
    if (grp.adapter < 0 || ntiles_c <= 0)
        return;
    const lg_mlora_slot &sl = p.L.slot[grp.adapter * p.L.nmod + m];
    const int rp = sl.rp;
    if (rp == 0)
        return;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int g = lane >> 2, t = lane & 3;
    const lg_h16 *s = (const lg_h16 *)p.s + sl.off, *b = (const lg_h16 *)sl.b;
    lg_h16 *y = (lg_h16 *)p.y;

    /* S tile: rows of the group (zeros past its end), the slot's rp columns, zeros up to RP */
    for (int c = tid; c < LG_MEX_BT * (RP / 8); c += 128) {
        const int r = c / (RP / 8), cc = c % (RP / 8);
        const bool v = grp.r0 + r < grp.r1 && cc * 8 < rp;
        *(lg_v16 *)&sm.s[r][cc * 8] = v ? lg_ld16(s + (lg_i64)(grp.r0 + r) * p.lds + cc * 8) : lg_v16{0u, 0u, 0u, 0u};
    }
    for (int ct = 0; ct < ntiles_c; ct++) {
        const int c0 = mcol0 + ct * LG_MEX_BC; /* module-local column */
        for (int c = tid; c < LG_MEX_BC * (RP / 8); c += 128) {
            const int r = c / (RP / 8), cc = c % (RP / 8);
            *(lg_v16 *)&sm.b[r][cc * 8] =
                cc * 8 < rp ? lg_ld16(b + (lg_i64)(c0 + r) * p.L.ldw + cc * 8) : lg_v16{0u, 0u, 0u, 0u};
        }
        __syncthreads();
        /* warp w: rows 16w..16w+15 of the tile, all 64 columns (8 n-tiles), k = rank */
        float acc[LG_MEX_BC / 8][4];
#pragma unroll
        for (int nt = 0; nt < LG_MEX_BC / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                acc[nt][e] = 0.f;
#pragma unroll
        for (int ks = 0; ks < RP / 16; ks++) {
            if (ks * 16 >= rp)
                break;
            lg_h32 af[4];
            lg_ldsm_x4(af, &sm.s[warp * 16 + (lane & 15)][ks * 16 + (lane >> 4) * 8]);
#pragma unroll
            for (int np = 0; np < LG_MEX_BC / 16; np++) {
                /* B rows are output columns (n), k contiguous: a plain ldmatrix gives the col-major fragment */
                lg_h32 r4[4];
                const int q = lane >> 3;
                lg_ldsm_x4(r4, &sm.b[np * 16 + (q >> 1) * 8 + (lane & 7)][ks * 16 + (q & 1) * 8]);
                lg_mma16816(acc[2 * np], af[0], af[1], af[2], af[3], r4[0], r4[1]);
                lg_mma16816(acc[2 * np + 1], af[0], af[1], af[2], af[3], r4[2], r4[3]);
            }
        }
#pragma unroll
        for (int nt = 0; nt < LG_MEX_BC / 8; nt++)
#pragma unroll
            for (int h = 0; h < 2; h++)
                *(float2 *)&sm.o[warp * 16 + g + 8 * h][nt * 8 + 2 * t] = make_float2(acc[nt][2 * h], acc[nt][2 * h + 1]);
        __syncthreads();
        /* Y += the tile, in 16-byte row vectors */
        for (int c = tid; c < LG_MEX_BT * (LG_MEX_BC / 8); c += 128) {
            const int r = c / (LG_MEX_BC / 8), cc = c % (LG_MEX_BC / 8);
            if (grp.r0 + r >= grp.r1)
                continue;
            lg_h16 *yp = y + (lg_i64)(grp.r0 + r) * p.ldy + moff + c0 + cc * 8;
            const lg_v16 v = lg_ld16(yp);
            unsigned w[4] = {v.x, v.y, v.z, v.w};
            const float *o = &sm.o[r][cc * 8];
#pragma unroll
            for (int i = 0; i < 4; i++)
                w[i] = lg_pack2(lg_lo_f32(w[i]) + o[2 * i], lg_hi_f32(w[i]) + o[2 * i + 1]);
            lg_st16(yp, lg_v16{w[0], w[1], w[2], w[3]});
        }
        __syncthreads();
    }
}
