/* norm_tile.cuh: the fused residual add + RMSNorm with the LoRA pieces of the projections that read its output
 * folded in, on 16-row tiles (an MMA's height).
 *
 * Forward (lg_norm_lora_fwd): a block of WK warps owns a 16-row tile and maps it exactly as
 * templates/lora/lora_down.cuh (wm = mt = 1, u = 2) maps X: warp wk takes the K blocks wk·U + i·WK·U + u (one
 * at a time, in that order, the next one in flight), a thread (g, t) the 16 bytes of rows g and g+8 at
 * columns 8t.. of each 32-column block.
 *   pass 1: h = x + res, rounded, stored (the residual stream), Σ h² per row;
 *   block:  the WK partial sums in warp order -> rstd (saved);
 *   pass 2: h read back (this thread's own stores, from L2), y = h·rstd·gamma stored with y's stride, and the
 *           same registers, masked per projection, feed lora_down's MMAs for S_i = s_i·D_i(y)·A_iᵀ, reduced
 *           over the warps in lora_down's order and written into y's tail: bit for bit FusedLoRA's S.
 * The tile's h must survive in L2 from pass 1 to pass 2: x, res and y go through the evict-first policy, and
 * the host sizes the grid (blocks walk tiles blockIdx.x, + gridDim.x, ...) so the tiles in flight fit.
 *
 * Backward (lg_norm_lora_bwd): 8 warps per 16-row tile, warp w takes the K blocks w, w + 8, ...
 *   pass 1: dy_eff = dy + Σ_i keep_i · mask_i ⊙ (dS_i·A_i) (lg_dec_corr: MMAs, A transposed by movmatrix),
 *           dot = Σ dy_eff·gamma·h per row;
 *   pass 2: dy, h re-read (L2), the correction recomputed, dh = rstd·g - rstd³·dot/k·h (+ dres) stored.
 *
 * Template parameters: R the largest rank of the projections (multiple of 8), NB how many (1..3), WK warps
 * over K (lora_down's default for R), DROP (0: no masks). Needs k % 32 == 0. */

#define LG_NT_U 2 /* K blocks in flight per warp: lora_down's default u */

template <int R, int NB, int WK, int DROP>
static __device__ __forceinline__ void lg_norm_lora_fwd(const struct lg_norm_fwd_args &p)
{
    constexpr int U = LG_NT_U, NT = R / 8;
    constexpr int RED = (WK > 1) ? (WK - 1) * NT * 4 * 32 : 1;
    __shared__ float red[RED];
    __shared__ float ssr[WK][16];

    const int wk = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int nkb = p.k >> 5, tiles = (p.n + 15) >> 4;
    const lg_dec_policy ef = lg_dec_evict_first();
    const lg_h16 *x = (const lg_h16 *)p.x, *res = (const lg_h16 *)p.res, *gam = (const lg_h16 *)p.gamma;
    lg_h16 *hb = (lg_h16 *)p.h, *y = (lg_h16 *)p.y;
    const bool add = x != nullptr, wr = hb != nullptr;
    const lg_h16 *hs = wr ? (const lg_h16 *)hb : res; /* where pass 2 finds h */
    const lg_i64 ldhs = wr ? p.ldh : p.ldres;
    /* Step i of this warp's chain is K block kb(i) (lora_down's order, one block at a time). lora_down runs
     * the U blocks of a group together and multiplies zeros for the ones past the end: a step is live while
     * its group's first block is in range. */
    auto kb_of = [&](int i) { return wk * U + (i / U) * (WK * U) + (i % U); };
    auto live = [&](int i) { return kb_of(i) - i % U < nkb; };

    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const lg_i64 r0 = (lg_i64)tile * 16 + g, r1 = r0 + 8;
        const bool ok0 = r0 < p.n, ok1 = r1 < p.n;

        /* ---- pass 1: h = x + res, Σ h² ---- */
        auto load1 = [&](int kb, lg_v16 &a0, lg_v16 &a1, lg_v16 &b0, lg_v16 &b1) {
            const lg_i64 col = (lg_i64)kb * 32 + 8 * t;
            const bool v0 = kb < nkb && ok0, v1 = kb < nkb && ok1;
            if (wr) { /* h is written and read back: x and res are streams (without, res is read again) */
                a0 = v0 ? lg_dec_ld16_ef(res + r0 * p.ldres + col, ef) : lg_dec_zero16();
                a1 = v1 ? lg_dec_ld16_ef(res + r1 * p.ldres + col, ef) : lg_dec_zero16();
                b0 = (v0 && add) ? lg_dec_ld16_ef(x + r0 * p.ldx + col, ef) : lg_dec_zero16();
                b1 = (v1 && add) ? lg_dec_ld16_ef(x + r1 * p.ldx + col, ef) : lg_dec_zero16();
            } else {
                a0 = v0 ? lg_dec_ld16(res + r0 * p.ldres + col) : lg_dec_zero16();
                a1 = v1 ? lg_dec_ld16(res + r1 * p.ldres + col) : lg_dec_zero16();
                b0 = b1 = lg_dec_zero16();
            }
        };
        float ss0 = 0.f, ss1 = 0.f;
        auto add8 = [&](const lg_v16 &a, const lg_v16 &b, float &ss) {
            float fa[8], fb[8];
            lg_dec_unpack8(a, fa);
            lg_dec_unpack8(b, fb);
#pragma unroll
            for (int e = 0; e < 8; e++)
                fa[e] += fb[e];
            const lg_v16 hv = lg_dec_pack8(fa);
            lg_dec_unpack8(hv, fa);
#pragma unroll
            for (int e = 0; e < 8; e++)
                ss += fa[e] * fa[e];
            return hv;
        };
        {
            lg_v16 a0, a1, b0, b1;
            int kb = kb_of(0);
            if (kb < nkb)
                load1(kb, a0, a1, b0, b1);
            for (int i = 0; kb < nkb; i++) {
                const int kbn = kb_of(i + 1);
                lg_v16 n0, n1, m0, m1;
                if (kbn < nkb)
                    load1(kbn, n0, n1, m0, m1);
                const lg_i64 col = (lg_i64)kb * 32 + 8 * t;
                const lg_v16 h0 = add8(a0, b0, ss0), h1 = add8(a1, b1, ss1);
                if (wr && ok0)
                    lg_dec_st16(hb + r0 * p.ldh + col, h0);
                if (wr && ok1)
                    lg_dec_st16(hb + r1 * p.ldh + col, h1);
                kb = kbn;
                a0 = n0, a1 = n1, b0 = m0, b1 = m1;
            }
        }
        if (!ok0)
            ss0 = 0.f;
        if (!ok1)
            ss1 = 0.f;

        /* ---- rstd: the 4 lanes of a row, then the WK warps in order ---- */
        ss0 += __shfl_xor_sync(0xffffffffu, ss0, 1);
        ss0 += __shfl_xor_sync(0xffffffffu, ss0, 2);
        ss1 += __shfl_xor_sync(0xffffffffu, ss1, 1);
        ss1 += __shfl_xor_sync(0xffffffffu, ss1, 2);
        if (t == 0)
            ssr[wk][g] = ss0, ssr[wk][g + 8] = ss1;
        __syncthreads();
        float q0 = ssr[0][g], q1 = ssr[0][g + 8];
        for (int w = 1; w < WK; w++)
            q0 += ssr[w][g], q1 += ssr[w][g + 8];
        const float rs0 = 1.0f / sqrtf(q0 / (float)p.k + p.eps), rs1 = 1.0f / sqrtf(q1 / (float)p.k + p.eps);
        if (wk == 0 && t == 0) {
            if (ok0)
                p.rstd[r0] = rs0;
            if (ok1)
                p.rstd[r1] = rs1;
        }

        /* ---- pass 2: y, and S through lora_down's MMAs ---- */
        float acc[NB][NT][4];
#pragma unroll
        for (int b = 0; b < NB; b++)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    acc[b][j][e] = 0.f;
        auto load2 = [&](int kb, lg_v16 &h0, lg_v16 &h1) {
            const lg_i64 col = (lg_i64)kb * 32 + 8 * t;
            h0 = (kb < nkb && ok0) ? lg_dec_ld16(hs + r0 * ldhs + col) : lg_dec_zero16();
            h1 = (kb < nkb && ok1) ? lg_dec_ld16(hs + r1 * ldhs + col) : lg_dec_zero16();
        };
        auto norm8 = [&](const lg_v16 &hv, float rs, const float (&w)[8]) {
            float f[8];
            lg_dec_unpack8(hv, f);
#pragma unroll
            for (int e = 0; e < 8; e++)
                f[e] = f[e] * rs * w[e];
            return lg_dec_pack8(f);
        };
        {
            lg_v16 h0, h1;
            load2(kb_of(0), h0, h1);
            for (int i = 0; live(i); i++) {
                const int kb = kb_of(i), kbn = kb_of(i + 1);
                const bool vk = kb < nkb;
                lg_v16 n0, n1;
                if (live(i + 1))
                    load2(kbn, n0, n1);
                const lg_i64 col = (lg_i64)kb * 32 + 8 * t;
                lg_v16 y0 = lg_dec_zero16(), y1 = lg_dec_zero16();
                if (vk) {
                    float w[8];
                    lg_dec_unpack8(lg_ld16(gam + col), w);
                    if (ok0) {
                        y0 = norm8(h0, rs0, w);
                        lg_dec_st16_ef(y + r0 * p.ldy + col, y0, ef);
                    }
                    if (ok1) {
                        y1 = norm8(h1, rs1, w);
                        lg_dec_st16_ef(y + r1 * p.ldy + col, y1, ef);
                    }
                }
#pragma unroll
                for (int b = 0; b < NB; b++) {
                    const struct lg_dec_lora &L = p.lora[b];
                    lg_v16 bw[NT];
                    lg_dec_a_frags<NT>(bw, (const lg_h16 *)L.a, L.lda, L.rank, g, col, vk);
                    lg_v16 v0 = y0, v1 = y1;
                    if (DROP) {
                        v0 = lg_dec_masked(v0, L.drop, (lg_u64)r0 * (lg_u64)p.k + (lg_u64)col);
                        v1 = lg_dec_masked(v1, L.drop, (lg_u64)r1 * (lg_u64)p.k + (lg_u64)col);
                    }
                    lg_dec_s_mma<NT>(acc[b], v0, v1, bw);
                }
                h0 = n0, h1 = n1;
            }
        }
#pragma unroll
        for (int b = 0; b < NB; b++)
            lg_dec_s_store<NT, WK>(acc[b], red, p.lora[b], r0, p.n, wk, lane);
    }
}

template <int R, int NB, int DROP>
static __device__ __forceinline__ void lg_norm_lora_bwd(const struct lg_norm_bwd_args &p)
{
    constexpr int WK = 8, KS = (R + 15) / 16;
    __shared__ float dotr[WK][16];

    const int wk = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int nkb = p.k >> 5, tiles = (p.n + 15) >> 4;
    const lg_dec_policy ef = lg_dec_evict_first();
    const lg_h16 *dy = (const lg_h16 *)p.dy, *h = (const lg_h16 *)p.h, *gam = (const lg_h16 *)p.gamma;
    lg_h16 *dres = (lg_h16 *)p.dres;

    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const lg_i64 r0 = (lg_i64)tile * 16 + g;
        const lg_i64 rows[2] = {r0, r0 + 8};
        const bool ok[2] = {rows[0] < p.n, rows[1] < p.n};
        lg_h32 f[NB][KS][4];
#pragma unroll
        for (int b = 0; b < NB; b++)
            lg_dec_ds_frags<KS>(f[b], p.lora[b], r0, p.n, t);

        /* g = (dy + corrections) · gamma of the thread's two vectors of K block kb, as floats */
        auto grad = [&](int kb, const lg_v16 (&dv)[2], float (&gv)[2][8], float (&w)[8]) {
            const lg_i64 col = (lg_i64)kb * 32 + 8 * t;
            lg_dec_unpack8(lg_ld16(gam + col), w);
            lg_dec_unpack8(dv[0], gv[0]);
            lg_dec_unpack8(dv[1], gv[1]);
#pragma unroll
            for (int b = 0; b < NB; b++) {
                const struct lg_dec_lora &L = p.lora[b];
                float c[4][4];
                lg_dec_corr<KS>(c, f[b], L, g, col);
#pragma unroll
                for (int hh = 0; hh < 2; hh++) {
                    lg_u32 m[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
                    if (DROP)
                        lg_dropout_mask4(L.drop.seed, L.drop.layer, ((lg_u64)rows[hh] * (lg_u64)p.k + (lg_u64)col) >> 3,
                                         L.drop.thresh16, m);
                    lg_dec_corr_add(gv[hh], c, hh, m, L.scale);
                }
            }
#pragma unroll
            for (int hh = 0; hh < 2; hh++)
#pragma unroll
                for (int e = 0; e < 8; e++)
                    gv[hh][e] *= w[e];
        };
        auto load = [&](int kb, lg_v16 (&dv)[2], lg_v16 (&hv)[2]) {
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                const bool v = kb < nkb && ok[hh];
                const lg_i64 col = (lg_i64)kb * 32 + 8 * t;
                dv[hh] = v ? lg_dec_ld16(dy + rows[hh] * p.lddy + col) : lg_dec_zero16();
                hv[hh] = v ? lg_dec_ld16(h + rows[hh] * p.ldh + col) : lg_dec_zero16();
            }
        };

        /* ---- pass 1: dot = Σ g·h per row ---- */
        float dot[2] = {0.f, 0.f};
        {
            lg_v16 cd[2], chv[2];
            int kb = wk;
            if (kb < nkb)
                load(kb, cd, chv);
            while (kb < nkb) {
                lg_v16 nd[2], nhv[2];
                if (kb + WK < nkb)
                    load(kb + WK, nd, nhv);
                float gv[2][8], w[8];
                grad(kb, cd, gv, w);
#pragma unroll
                for (int hh = 0; hh < 2; hh++) {
                    float x[8];
                    lg_dec_unpack8(chv[hh], x);
#pragma unroll
                    for (int e = 0; e < 8; e++)
                        dot[hh] += gv[hh][e] * x[e];
                }
                kb += WK;
                cd[0] = nd[0], cd[1] = nd[1], chv[0] = nhv[0], chv[1] = nhv[1];
            }
        }
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            dot[hh] += __shfl_xor_sync(0xffffffffu, dot[hh], 1);
            dot[hh] += __shfl_xor_sync(0xffffffffu, dot[hh], 2);
        }
        if (t == 0)
            dotr[wk][g] = dot[0], dotr[wk][g + 8] = dot[1];
        __syncthreads();
        float rs[2], c2[2];
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            float q = dotr[0][g + 8 * hh];
            for (int w = 1; w < WK; w++)
                q += dotr[w][g + 8 * hh];
            rs[hh] = ok[hh] ? p.rstd[rows[hh]] : 0.f;
            c2[hh] = rs[hh] * rs[hh] * (rs[hh] * q / (float)p.k);
        }

        /* ---- pass 2: dh ---- */
        for (int kb = wk; kb < nkb; kb += WK) {
            lg_v16 dv[2], hv[2];
            load(kb, dv, hv);
            const lg_i64 col = (lg_i64)kb * 32 + 8 * t;
            lg_v16 ov[2];
#pragma unroll
            for (int hh = 0; hh < 2; hh++)
                ov[hh] = (p.accumulate && ok[hh]) ? lg_dec_ld16_ef(dres + rows[hh] * p.lddres + col, ef)
                                                  : lg_dec_zero16();
            float gv[2][8], w[8];
            grad(kb, dv, gv, w);
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                if (!ok[hh])
                    continue;
                float x[8], o[8];
                lg_dec_unpack8(hv[hh], x);
                lg_dec_unpack8(ov[hh], o);
#pragma unroll
                for (int e = 0; e < 8; e++)
                    x[e] = rs[hh] * gv[hh][e] - c2[hh] * x[e] + o[e];
                lg_dec_st16_ef(dres + rows[hh] * p.lddres + col, lg_dec_pack8(x), ef);
            }
        }
        __syncthreads(); /* dotr is free again */
    }
}
