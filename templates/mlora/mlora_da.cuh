/* mlora_da.cuh: FusedMultiLoRA's backward pass over X, one read of X for every module of the layer. Per block
 * (64 columns of K, one group of tokens of one adapter a) and module m:
 *   dA_mᵀ partial = keep_m · (X ⊙ mask_m)ᵀ·dS_m               (reduced over the group's tokens)
 * and, in the FUSE variants, the masked dX correction of all modules in the same pass:
 *   dX += Σ_m keep_m · mask_m ⊙ (dS_m·A_{a,m})
 *
 * The structure is FusedLoRA's dA pass (templates/lora/lora_da.cuh): warp w's threads load rows 16w+g(+8),
 * columns 8t.. and 32+8t.. of a 64-token tile (16-byte loads, one Philox call masks 8 values), prefetched one
 * tile ahead; the masked X goes to shared memory for the dA MMAs (ldmatrix.trans); for FUSE, the A tiles are
 * stored with their columns permuted (lg_mda_perm) so that thread (g, t)'s accumulators of dS·A land on the
 * dX vectors it loaded, and the correction is applied in registers with the mask words the thread drew. What
 * is new: the group lookup, NMOD modules (one masked copy of X each when DROP, one shared copy otherwise),
 * and the slot's rank up to R (its dS columns past rp are zeroed in shared memory, and its A rows there are
 * zero, so the k steps over the padded rank add nothing).
 *
 * Template parameters: R the largest padded rank (multiple of 8), NMOD modules, FUSE, DROP. K % 64 == 0. */

#define LG_MDA_BT 64
#define LG_MDA_BK 64
#define LG_MDA_LD (LG_MDA_BK + 8)

template <int R, int NMOD, int FUSE, int DROP> struct lg_mda_smem {
    static constexpr int RP = (R + 15) / 16 * 16; /* rank padded for the k16 steps of dS·A */
    lg_h16 x[DROP ? NMOD : 1][LG_MDA_BT][LG_MDA_LD];
    lg_h16 ds[NMOD][LG_MDA_BT][RP + 8];
    lg_h16 a[FUSE ? NMOD : 1][FUSE ? RP : 1][LG_MDA_LD]; /* columns permuted: see lg_mda_perm */
};

/* Column of the 64-wide tile that MMA n-tile nt, column n (0..7) stands for (as lora_da.cuh's lg_da_perm). */
static __device__ __forceinline__ int lg_mda_perm(int nt, int n)
{
    const int t = n >> 1, e = n & 1;
    return (nt < 4) ? 8 * t + 2 * nt + e : 32 + 8 * t + 2 * (nt - 4) + e;
}

template <int R, int NMOD, int FUSE, int DROP>
static __device__ __forceinline__ void lg_mlora_da(const struct lg_mlora_da_args &p)
{
    constexpr int NT = R / 8;
    typedef lg_mda_smem<R, NMOD, FUSE, DROP> SM;
    constexpr int RP = SM::RP;
    extern __shared__ __align__(16) unsigned char lg_dyn_smem[];
    SM &sm = *(SM *)lg_dyn_smem;

    const lg_mlora_grp grp = lg_mlora_group(p.g, p.gi, (int)blockIdx.y);
    const int ad = grp.adapter;
    if (ad < 0)
        return;
    int rp[NMOD], cbase[NMOD];
    unsigned th[NMOD];
    float keep[NMOD];
    const lg_h16 *ag[NMOD];
    int any = 0;
#pragma unroll
    for (int m = 0; m < NMOD; m++) {
        const lg_mlora_slot &sl = p.L.slot[ad * NMOD + m];
        rp[m] = sl.rp, cbase[m] = lg_mlora_colbase(sl, p.ext), th[m] = DROP ? sl.thresh16 : 0u;
        keep[m] = sl.keep, ag[m] = (const lg_h16 *)sl.a;
        any |= rp[m];
    }
    if (!any)
        return;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int g = lane >> 2, t = lane & 3;
    const int k0 = blockIdx.x * LG_MDA_BK;
    const int row_tiles = (grp.r1 - grp.r0 + LG_MDA_BT - 1) / LG_MDA_BT;
    const lg_h16 *x = (const lg_h16 *)p.x, *dsg = (const lg_h16 *)p.ds;
    lg_h16 *dx = (lg_h16 *)p.dx;

#pragma unroll
    for (int m = 0; m < NMOD; m++) {
        if (FUSE) /* A tile [RP][64], permuted, once per block (rows past the slot's rank zero) */
            for (int c = tid; c < RP * LG_MDA_BK; c += 128) {
                const int j = c / LG_MDA_BK, col = c % LG_MDA_BK;
                sm.a[FUSE ? m : 0][j][col] =
                    j < rp[m] ? ag[m][(lg_i64)j * p.L.ldw + k0 + lg_mda_perm(col >> 3, col & 7)] : (lg_h16)0;
            }
        /* dS columns past the slot's padded rank: zero once (the tile loads below never write them) */
        for (int c = tid; c < LG_MDA_BT * ((RP - rp[m]) / 8); c += 128) {
            const int r = c / ((RP - rp[m]) / 8), cc = c % ((RP - rp[m]) / 8);
            *(lg_v16 *)&sm.ds[m][r][rp[m] + cc * 8] = lg_v16{0u, 0u, 0u, 0u};
        }
    }

    auto vrow = [&](int v) { return warp * 16 + g + 8 * (v >> 1); };
    auto vcol = [&](int v) { return (v & 1) * 32 + 8 * t; };
    lg_v16 xv[4], dxv[4];
    auto load_x = [&](int rt) {
#pragma unroll
        for (int v = 0; v < 4; v++) {
            const lg_i64 r = (lg_i64)grp.r0 + rt * LG_MDA_BT + vrow(v);
            xv[v] = r < grp.r1 ? lg_ld16(x + r * p.ldx + k0 + vcol(v)) : lg_v16{0u, 0u, 0u, 0u};
        }
    };

    float acc[NMOD][NT][4];
#pragma unroll
    for (int m = 0; m < NMOD; m++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                acc[m][j][e] = 0.f;

    if (row_tiles > 0)
        load_x(0);
    for (int rt = 0; rt < row_tiles; rt++) {
        const lg_i64 n0 = (lg_i64)grp.r0 + rt * LG_MDA_BT;
        if (FUSE)
#pragma unroll
            for (int v = 0; v < 4; v++) {
                const lg_i64 r = n0 + vrow(v);
                dxv[v] = r < grp.r1 ? lg_ld16(dx + r * p.lddx + k0 + vcol(v)) : lg_v16{0u, 0u, 0u, 0u};
            }
        lg_u32 km[NMOD][4][4]; /* AND-masks of this thread's 4 vectors per module (all ones without dropout) */
#pragma unroll
        for (int m = 0; m < NMOD; m++)
#pragma unroll
            for (int v = 0; v < 4; v++) {
                if (DROP && th[m]) {
                    const lg_u64 e = (lg_u64)(n0 + vrow(v)) * (lg_u64)p.L.k + (lg_u64)(k0 + vcol(v));
                    lg_dropout_mask4(p.seed, p.L.layer[m], e >> 3, th[m], km[m][v]);
                } else {
                    km[m][v][0] = km[m][v][1] = km[m][v][2] = km[m][v][3] = 0xffffffffu;
                }
                if (DROP || m == 0) {
                    lg_v16 xm = xv[v];
                    xm.x &= km[m][v][0], xm.y &= km[m][v][1], xm.z &= km[m][v][2], xm.w &= km[m][v][3];
                    *(lg_v16 *)&sm.x[DROP ? m : 0][vrow(v)][vcol(v)] = xm;
                }
            }
#pragma unroll
        for (int m = 0; m < NMOD; m++) {
            const int nch = rp[m] / 8;
            for (int c = tid; c < LG_MDA_BT * nch; c += 128) {
                const int r = c / nch, cc = c % nch;
                *(lg_v16 *)&sm.ds[m][r][cc * 8] = n0 + r < grp.r1
                                                      ? lg_ld16(dsg + (n0 + r) * p.ldds + cbase[m] + cc * 8)
                                                      : lg_v16{0u, 0u, 0u, 0u};
            }
        }
        __syncthreads();
        if (rt + 1 < row_tiles) /* prefetch: the next tile's X flies while this one computes */
            load_x(rt + 1);

#pragma unroll
        for (int m = 0; m < NMOD; m++) {
            if (rp[m] == 0)
                continue;
#pragma unroll
            for (int kn = 0; kn < LG_MDA_BT / 16; kn++) {
                /* dA_mᵀ[cols of warp, :] += X_mᵀ[cols, k = rows kn] · dS_m[k, :] */
                lg_h32 af[4];
                const int q = lane >> 3;
                lg_ldsm_x4_t(af, &sm.x[DROP ? m : 0][kn * 16 + (q >> 1) * 8 + (lane & 7)][warp * 16 + (q & 1) * 8]);
                lg_h32 bf[NT][2];
#pragma unroll
                for (int jp = 0; jp < R / 16; jp++) {
                    lg_h32 r4[4];
                    lg_ldsm_x4_t(r4, &sm.ds[m][kn * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)][jp * 16 + (lane >> 4) * 8]);
                    bf[2 * jp][0] = r4[0];
                    bf[2 * jp][1] = r4[1];
                    bf[2 * jp + 1][0] = r4[2];
                    bf[2 * jp + 1][1] = r4[3];
                }
                if (R % 16) {
                    lg_h32 r2[2];
                    lg_ldsm_x2_t(r2, &sm.ds[m][kn * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)][(R / 16) * 16]);
                    bf[NT - 1][0] = r2[0];
                    bf[NT - 1][1] = r2[1];
                }
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    if (j * 8 >= rp[m])
                        break;
                    lg_mma16816(acc[m][j], af[0], af[1], af[2], af[3], bf[j][0], bf[j][1]);
                }
            }
        }

        if (FUSE) {
            float corr[4][8];
#pragma unroll
            for (int v = 0; v < 4; v++)
#pragma unroll
                for (int i = 0; i < 8; i++)
                    corr[v][i] = 0.f;
#pragma unroll
            for (int m = 0; m < NMOD; m++) {
                if (rp[m] == 0)
                    continue;
                /* C[rows 16w.., permuted cols] = dS_m[rows, :] · A_m[:, cols] */
                float cf[LG_MDA_BK / 8][4];
#pragma unroll
                for (int nt = 0; nt < LG_MDA_BK / 8; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        cf[nt][e] = 0.f;
#pragma unroll
                for (int ks = 0; ks < RP / 16; ks++) {
                    if (ks * 16 >= rp[m])
                        break;
                    lg_h32 af[4];
                    lg_ldsm_x4(af, &sm.ds[m][warp * 16 + (lane & 15)][ks * 16 + (lane >> 4) * 8]);
#pragma unroll
                    for (int np = 0; np < LG_MDA_BK / 16; np++) {
                        lg_h32 r4[4];
                        lg_ldsm_x4_t(r4, &sm.a[FUSE ? m : 0][ks * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)]
                                                [np * 16 + (lane >> 4) * 8]);
                        lg_mma16816(cf[2 * np], af[0], af[1], af[2], af[3], r4[0], r4[1]);
                        lg_mma16816(cf[2 * np + 1], af[0], af[1], af[2], af[3], r4[2], r4[3]);
                    }
                }
                /* vector v = (row half h = v>>1, column half ch = v&1): n-tiles 4ch..4ch+3, elements 2h, 2h+1 */
#pragma unroll
                for (int v = 0; v < 4; v++) {
                    const int h = v >> 1, ch = v & 1;
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        corr[v][2 * i] += (km[m][v][i] & 0xffffu) ? cf[4 * ch + i][2 * h] * keep[m] : 0.f;
                        corr[v][2 * i + 1] += (km[m][v][i] >> 16) ? cf[4 * ch + i][2 * h + 1] * keep[m] : 0.f;
                    }
                }
            }
#pragma unroll
            for (int v = 0; v < 4; v++) {
                const lg_i64 r = n0 + vrow(v);
                if (r >= grp.r1)
                    continue;
                unsigned w[4] = {dxv[v].x, dxv[v].y, dxv[v].z, dxv[v].w};
#pragma unroll
                for (int i = 0; i < 4; i++)
                    w[i] = lg_pack2(lg_lo_f32(w[i]) + corr[v][2 * i], lg_hi_f32(w[i]) + corr[v][2 * i + 1]);
                lg_st16(dx + r * p.lddx + k0 + vcol(v), lg_v16{w[0], w[1], w[2], w[3]});
            }
        }
        __syncthreads();
    }

    /* dA partials, layout [group][module][R][K]: this warp holds dA_mᵀ rows k0+16w+g(+8), rank cols 8j+2t(+1) */
#pragma unroll
    for (int m = 0; m < NMOD; m++) {
        float *dap = p.da_part + ((lg_i64)blockIdx.y * NMOD + m) * R * p.L.k;
#pragma unroll
        for (int j = 0; j < NT; j++) {
            if (j * 8 >= rp[m])
                break;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int kc = k0 + warp * 16 + g + 8 * (e >> 1);
                const int jr = j * 8 + 2 * t + (e & 1);
                dap[(lg_i64)jr * p.L.k + kc] = acc[m][j][e] * keep[m];
            }
        }
    }
}
