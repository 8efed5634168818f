/* norm_row.cuh: the fused residual add + RMSNorm, forward and backward, one row per block with the row in
 * registers (no LoRA work; templates/decoder/norm_tile.cuh folds the LoRA pieces in).
 *
 * A block of 128 threads owns one row; thread i holds the 8-value vectors i, i+128, ... (VPT of them, so
 * k <= 1024·VPT): one pass over memory, the row's sum in a fixed order (lg_dec_block_sum), deterministic.
 * Streams are read and written with the evict-first L2 policy: nothing here is read twice.
 *
 * Forward: h = x + res (rounded; x NULL: h = res; stored unless p.h is NULL), rstd = 1/sqrt(mean h² + eps) of the ROUNDED h,
 * y = h·rstd·gamma. Backward: g = dy·gamma, dot = Σ g·h, dh = rstd·g - rstd³·dot/k · h, (+ dres). */

template <int VPT> static __device__ __forceinline__ void lg_norm_row_fwd(const struct lg_norm_fwd_args &p)
{
    __shared__ float scratch[32];
    const lg_i64 row = blockIdx.x;
    const int tid = threadIdx.x, nv = p.k >> 3;
    const lg_dec_policy ef = lg_dec_evict_first();
    const lg_h16 *res = (const lg_h16 *)p.res + row * p.ldres;
    const lg_h16 *x = p.x ? (const lg_h16 *)p.x + row * p.ldx : nullptr;

    lg_v16 rv[VPT], xv[VPT];
#pragma unroll
    for (int i = 0; i < VPT; i++) {
        const int c = tid + i * 128;
        rv[i] = c < nv ? lg_dec_ld16_ef(res + 8 * c, ef) : lg_dec_zero16();
        xv[i] = (x && c < nv) ? lg_dec_ld16_ef(x + 8 * c, ef) : lg_dec_zero16();
    }
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < VPT; i++) {
        float a[8], b[8];
        lg_dec_unpack8(rv[i], a);
        lg_dec_unpack8(xv[i], b);
        for (int e = 0; e < 8; e++)
            a[e] += b[e];
        rv[i] = lg_dec_pack8(a); /* h, rounded */
        lg_dec_unpack8(rv[i], a);
        for (int e = 0; e < 8; e++)
            ss += a[e] * a[e];
    }
    if (p.h) {
        lg_h16 *h = (lg_h16 *)p.h + row * p.ldh;
#pragma unroll
        for (int i = 0; i < VPT; i++) {
            const int c = tid + i * 128;
            if (c < nv)
                lg_dec_st16_ef(h + 8 * c, rv[i], ef);
        }
    }
    const float total = lg_dec_block_sum(ss, scratch);
    const float rs = 1.0f / sqrtf(total / (float)p.k + p.eps);
    if (tid == 0)
        p.rstd[row] = rs;
    const lg_h16 *gam = (const lg_h16 *)p.gamma;
    lg_h16 *y = (lg_h16 *)p.y + row * p.ldy;
#pragma unroll
    for (int i = 0; i < VPT; i++) {
        const int c = tid + i * 128;
        if (c >= nv)
            continue;
        float a[8], w[8];
        lg_dec_unpack8(rv[i], a);
        lg_dec_unpack8(lg_ld16(gam + 8 * c), w);
        for (int e = 0; e < 8; e++)
            a[e] = a[e] * rs * w[e];
        lg_dec_st16_ef(y + 8 * c, lg_dec_pack8(a), ef);
    }
}

template <int VPT> static __device__ __forceinline__ void lg_norm_row_bwd(const struct lg_norm_bwd_args &p)
{
    __shared__ float scratch[32];
    const lg_i64 row = blockIdx.x;
    const int tid = threadIdx.x, nv = p.k >> 3;
    const lg_dec_policy ef = lg_dec_evict_first();
    const lg_h16 *dy = (const lg_h16 *)p.dy + row * p.lddy, *h = (const lg_h16 *)p.h + row * p.ldh;
    const lg_h16 *gam = (const lg_h16 *)p.gamma;
    lg_h16 *dres = (lg_h16 *)p.dres + row * p.lddres;

    lg_v16 dv[VPT], hv[VPT], ov[VPT];
#pragma unroll
    for (int i = 0; i < VPT; i++) {
        const int c = tid + i * 128;
        dv[i] = c < nv ? lg_dec_ld16_ef(dy + 8 * c, ef) : lg_dec_zero16();
        hv[i] = c < nv ? lg_dec_ld16_ef(h + 8 * c, ef) : lg_dec_zero16();
        ov[i] = (p.accumulate && c < nv) ? lg_dec_ld16_ef(dres + 8 * c, ef) : lg_dec_zero16();
    }
    const float rs = p.rstd[row];
    float dot = 0.f;
#pragma unroll
    for (int i = 0; i < VPT; i++) {
        const int c = tid + i * 128;
        if (c >= nv)
            continue;
        float d[8], x[8], w[8];
        lg_dec_unpack8(dv[i], d);
        lg_dec_unpack8(hv[i], x);
        lg_dec_unpack8(lg_ld16(gam + 8 * c), w);
        for (int e = 0; e < 8; e++)
            dot += d[e] * w[e] * x[e];
    }
    dot = lg_dec_block_sum(dot, scratch);
    const float c2 = rs * rs * (rs * dot / (float)p.k); /* rstd² · mean(g·ĥ) */
#pragma unroll
    for (int i = 0; i < VPT; i++) {
        const int c = tid + i * 128;
        if (c >= nv)
            continue;
        float d[8], x[8], w[8], o[8];
        lg_dec_unpack8(dv[i], d);
        lg_dec_unpack8(hv[i], x);
        lg_dec_unpack8(lg_ld16(gam + 8 * c), w);
        lg_dec_unpack8(ov[i], o);
        for (int e = 0; e < 8; e++)
            d[e] = rs * (d[e] * w[e]) - c2 * x[e] + o[e];
        lg_dec_st16_ef(dres + 8 * c, lg_dec_pack8(d), ef);
    }
}
