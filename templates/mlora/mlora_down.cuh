/* mlora_down.cuh: FusedMultiLoRA's forward down-projection, one pass over X for every module of the layer:
 * for each group of ROWS tokens (one adapter a) and each module m the adapter adapts,
 *   S_m = s_m · keep_m · (X ⊙ mask_m)·A_{a,m}ᵀ
 * with mask_m drawn from Philox(seed, layer_m, t·K + k): each module its own mask, as PEFT samples one per
 * module, and the same bits the CPU backend draws.
 *
 * The structure is FusedLoRA's down pass (templates/lora/lora_down.cuh): no shared memory for X; a thread
 * loads 16 contiguous bytes of rows g and g+8 and feeds them to m16n8k16 MMAs under a fixed permutation of K
 * inside each 32-wide block, with A's fragments loaded under the same permutation; warps split K (WK) and
 * reduce in shared memory in a fixed order; loads run one block ahead. What is new: the group lookup (a block
 * never mixes adapters), NMOD modules sharing the X fragments (masked once per module), and ranks chosen at
 * run time up to R (n-tiles past the slot's padded rank are skipped by a block-uniform branch; A's padding
 * rows are zero, so the padded S columns come out as exact zeros).
 *
 * Template parameters: R the layer's largest padded rank (multiple of 8), NMOD modules, WM warps along rows,
 * WK warps along K, MT 16-row tiles per warp, U K-blocks in flight, DROP (0: no mask code). K % 32 == 0. */

template <int R, int NMOD, int WM, int WK, int MT, int U, int DROP>
static __device__ __forceinline__ void lg_mlora_down(const struct lg_mlora_down_args &p)
{
    constexpr int NT = R / 8;
    constexpr int ROWS = 16 * MT * WM;
    constexpr int GI = ROWS == 16 ? 0 : ROWS == 32 ? 1 : ROWS == 64 ? 2 : ROWS == 128 ? 3 : 4;
    static_assert((16 << GI) == ROWS, "ROWS must be 16, 32, 64, 128 or 256");
    constexpr int RED = (WK > 1) ? (WK - 1) * WM * MT * NMOD * NT * 4 * 32 : 1;
    __shared__ float red[RED];

    const lg_mlora_grp grp = lg_mlora_group(p.g, GI, (int)blockIdx.x);
    const int ad = grp.adapter;
    int rp[NMOD], cbase[NMOD];
    float sc[NMOD];
    unsigned th[NMOD];
    const lg_h16 *am[NMOD];
    int own0 = 0, own1 = 0;
#pragma unroll
    for (int m = 0; m < NMOD; m++) {
        rp[m] = 0, cbase[m] = 0, sc[m] = 0.f, th[m] = 0u, am[m] = 0;
        if (ad >= 0) {
            const lg_mlora_slot &sl = p.L.slot[ad * NMOD + m];
            rp[m] = sl.rp, cbase[m] = lg_mlora_colbase(sl, p.ext), sc[m] = sl.s * sl.keep;
            th[m] = DROP ? sl.thresh16 : 0u, am[m] = (const lg_h16 *)sl.a;
            if (m == 0)
                own0 = sl.col;
            own1 = sl.col + sl.rp;
        }
    }
    if (own1 <= own0)
        own0 = own1 = 0;

    lg_h16 *s = (lg_h16 *)p.s;
    if (p.ext) {
        /* extended K: every other column of these rows is zero (the GEMM reads all ext_cols of them) */
        const int nch = p.ext_cols / 8, rows = grp.r1 - grp.r0;
        for (int i = threadIdx.x; i < rows * nch; i += blockDim.x) {
            const int c = (i % nch) * 8;
            if (c < own0 || c >= own1)
                lg_st16(s + (lg_i64)(grp.r0 + i / nch) * p.lds + c, lg_v16{0u, 0u, 0u, 0u});
        }
    }
    if (own1 == own0)
        return; /* base segment, or an adapter that does not adapt this layer */

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = warp % WM, wk = warp / WM;
    const int g = lane >> 2, t = lane & 3;
    const lg_i64 row0 = (lg_i64)grp.r0 + wm * 16 * MT;
    const lg_h16 *x = (const lg_h16 *)p.x;

    const lg_h16 *xr[MT][2];
    lg_i64 row[MT][2];
    bool ok[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            row[mt][h] = row0 + mt * 16 + g + 8 * h;
            ok[mt][h] = row[mt][h] < grp.r1;
            xr[mt][h] = x + (ok[mt][h] ? row[mt][h] : 0) * p.ldx + 8 * t;
        }

    float acc[NMOD][MT][NT][4];
#pragma unroll
    for (int m = 0; m < NMOD; m++)
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    acc[m][mt][j][e] = 0.f;

    const int nkb = p.L.k >> 5;
    lg_v16 xv[U][MT][2], bw[U][NMOD][NT];
    auto load = [&](int kb0, lg_v16 (&xo)[U][MT][2], lg_v16 (&bo)[U][NMOD][NT]) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const bool vk = kb0 + u < nkb;
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int h = 0; h < 2; h++)
                    xo[u][mt][h] = (vk && ok[mt][h]) ? lg_ld16_stream(xr[mt][h] + (kb0 + u) * 32)
                                                     : lg_v16{0u, 0u, 0u, 0u};
#pragma unroll
            for (int m = 0; m < NMOD; m++)
#pragma unroll
                for (int j = 0; j < NT; j++)
                    bo[u][m][j] = (vk && j * 8 < rp[m])
                                      ? lg_ld16(am[m] + (lg_i64)(j * 8 + g) * p.L.ldw + (kb0 + u) * 32 + 8 * t)
                                      : lg_v16{0u, 0u, 0u, 0u};
        }
    };
    int kb0 = wk * U;
    if (kb0 < nkb)
        load(kb0, xv, bw);
    while (kb0 < nkb) {
        const int kbn = kb0 + WK * U;
        lg_v16 xn[U][MT][2], bn[U][NMOD][NT];
        if (kbn < nkb)
            load(kbn, xn, bn);
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int m = 0; m < NMOD; m++) {
                    if (rp[m] == 0)
                        continue;
                    lg_v16 xa = xv[u][mt][0], xb = xv[u][mt][1];
                    if (DROP && th[m]) {
                        const lg_u64 kk = (lg_u64)((kb0 + u) * 32 + 8 * t);
                        lg_u32 ma[4], mb[4];
                        lg_dropout_mask4(p.seed, p.L.layer[m], ((lg_u64)row[mt][0] * (lg_u64)p.L.k + kk) >> 3,
                                         th[m], ma);
                        lg_dropout_mask4(p.seed, p.L.layer[m], ((lg_u64)row[mt][1] * (lg_u64)p.L.k + kk) >> 3,
                                         th[m], mb);
                        xa.x &= ma[0], xa.y &= ma[1], xa.z &= ma[2], xa.w &= ma[3];
                        xb.x &= mb[0], xb.y &= mb[1], xb.z &= mb[2], xb.w &= mb[3];
                    }
#pragma unroll
                    for (int j = 0; j < NT; j++) {
                        if (j * 8 >= rp[m])
                            break;
                        lg_mma16816(acc[m][mt][j], xa.x, xb.x, xa.y, xb.y, bw[u][m][j].x, bw[u][m][j].y);
                        lg_mma16816(acc[m][mt][j], xa.z, xb.z, xa.w, xb.w, bw[u][m][j].z, bw[u][m][j].w);
                    }
                }
        kb0 = kbn;
        if (kb0 < nkb) {
#pragma unroll
            for (int u = 0; u < U; u++) {
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
                    xv[u][mt][0] = xn[u][mt][0], xv[u][mt][1] = xn[u][mt][1];
#pragma unroll
                for (int m = 0; m < NMOD; m++)
#pragma unroll
                    for (int j = 0; j < NT; j++)
                        bw[u][m][j] = bn[u][m][j];
            }
        }
    }

    if (WK > 1) {
        /* fixed-order reduction over the K split: deterministic, no atomics */
        constexpr int PER = NMOD * MT * NT * 4;
        if (wk > 0) {
            float *dst = red + (((wk - 1) * WM + wm) * PER) * 32 + lane;
#pragma unroll
            for (int m = 0; m < NMOD; m++)
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int j = 0; j < NT; j++)
#pragma unroll
                        for (int e = 0; e < 4; e++)
                            dst[(((m * MT + mt) * NT + j) * 4 + e) * 32] = acc[m][mt][j][e];
        }
        __syncthreads();
        if (wk > 0)
            return;
        for (int w = 1; w < WK; w++) {
            const float *src = red + (((w - 1) * WM + wm) * PER) * 32 + lane;
#pragma unroll
            for (int m = 0; m < NMOD; m++)
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int j = 0; j < NT; j++)
#pragma unroll
                        for (int e = 0; e < 4; e++)
                            acc[m][mt][j][e] += src[(((m * MT + mt) * NT + j) * 4 + e) * 32];
        }
    }

#pragma unroll
    for (int m = 0; m < NMOD; m++) {
        if (rp[m] == 0)
            continue;
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                if (!ok[mt][h])
                    continue;
                lg_h16 *srow = s + row[mt][h] * p.lds + cbase[m];
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    if (j * 8 >= rp[m])
                        break;
                    *(lg_h32 *)(srow + j * 8 + 2 * t) =
                        lg_pack2(sc[m] * acc[m][mt][j][2 * h], sc[m] * acc[m][mt][j][2 * h + 1]);
                }
            }
    }
}
