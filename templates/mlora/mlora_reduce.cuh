/* mlora_reduce.cuh: the second stage of FusedMultiLoRA's reductions (see struct lg_mlora_reduce_args). Every
 * output is a sum over partial slices taken in slice order, four consecutive values per thread: bitwise
 * reproducible run to run. Jobs come from the segment table and the layer's slots on the device, so the host
 * builds nothing per call; a job whose slot does not exist (base segment, module not adapted) returns at once.
 *   OUT_HALF = 1: blockIdx.y < nmod: dS rows of module y (dtype), then one job per (segment, module) for dB;
 *   OUT_HALF = 0: one job per (segment, module) for dA. */

template <int OUT_HALF>
static __device__ __forceinline__ void lg_mlora_reduce(const struct lg_mlora_reduce_args &p)
{
    const int nmod = p.L.nmod;
    const lg_i64 i = ((lg_i64)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (OUT_HALF && (int)blockIdx.y < nmod) {
        /* dS of module m: element i = (token t, columns j..j+3) of the [n, R] partials */
        const int m = (int)blockIdx.y;
        if (i >= (lg_i64)p.g.n * p.r)
            return;
        const int tk = (int)(i / p.r), j = (int)(i % p.r);
        const lg_mlora_segrec sr = p.g.seg[lg_mlora_seg_of(p.g, tk)];
        if (sr.adapter < 0)
            return;
        const lg_mlora_slot &sl = p.L.slot[sr.adapter * nmod + m];
        if (j >= sl.rp)
            return;
        float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
        const lg_i64 stride = (lg_i64)p.g.n * p.r;
        int cb0 = p.cb0[0], cb1 = p.cb0[1];
#pragma unroll
        for (int q = 1; q < LG_MLORA_MAXMOD; q++)
            if (q == m)
                cb0 = p.cb0[q], cb1 = p.cb0[q + 1];
        for (int cb = cb0; cb < cb1; cb++) {
            const float4 v = *(const float4 *)(p.part + cb * stride + i);
            s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
        }
        lg_h32 *o = (lg_h32 *)((lg_h16 *)p.ds + (lg_i64)tk * p.ldds + lg_mlora_colbase(sl, p.ext) + j);
        o[0] = lg_pack2(sl.s * s.x, sl.s * s.y);
        o[1] = lg_pack2(sl.s * s.z, sl.s * s.w);
        return;
    }
    /* a gradient job: slot (segment sg, module m) */
    const int y = (int)blockIdx.y - (OUT_HALF ? nmod : 0);
    const int sg = y / nmod, m = y % nmod;
    const lg_mlora_segrec sr = p.g.seg[sg];
    if (sr.adapter < 0)
        return;
    const lg_mlora_slot &sl = p.L.slot[sr.adapter * nmod + m];
    const int r = sl.rank;
    if (r == 0)
        return;
    int first;
    const int parts = lg_mlora_groups(p.g, p.gi, sg, &first);
    float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
    float *out;
    int moff, mlen;
    lg_mlora_module(p.L, m, &moff, &mlen);
    if (OUT_HALF) {
        /* dB [mlen, r]: element (c, j) from db_part[gr][moff + c][j] */
        if (i >= (lg_i64)mlen * r)
            return;
        const lg_i64 c = i / r, j = i % r;
        const lg_i64 stride = (lg_i64)p.m_total * p.r; /* [M_total][R] */
        const float *src = p.part_db + (lg_i64)first * stride + (moff + c) * p.r + j;
#pragma unroll 4
        for (int q = 0; q < parts; q++) {
            const float4 v = *(const float4 *)(src + q * stride);
            s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
        }
        out = sl.db + i;
    } else {
        /* dA [r, K]: element (j, k) from da_part[gr][m][j][k] */
        if (i >= (lg_i64)r * p.L.k)
            return;
        const lg_i64 stride = (lg_i64)nmod * p.r * p.L.k;
        const float *src = p.part + (lg_i64)first * stride + (lg_i64)m * p.r * p.L.k + i;
#pragma unroll 4
        for (int q = 0; q < parts; q++) {
            const float4 v = *(const float4 *)(src + q * stride);
            s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
        }
        out = sl.da + i;
    }
    float4 *o = (float4 *)out;
    if (p.beta != 0.f) {
        const float4 old = *o;
        s.x += p.beta * old.x, s.y += p.beta * old.y, s.z += p.beta * old.z, s.w += p.beta * old.w;
    }
    *o = s;
}
