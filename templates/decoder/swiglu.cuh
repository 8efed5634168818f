/* swiglu.cuh: LlamaMLP's act_fn(gate) * up with act_fn = SiLU, forward and backward, and the forward with the
 * down projection's LoRA down-projection folded in.
 *
 * lg_swiglu_fwd / lg_swiglu_bwd: elementwise over rows of k features: blockIdx.x and the thread pick an
 * 8-value vector of the row, blockIdx.y walks the rows (grid-stride: any row count), every stream read and written once under the evict-first L2 policy. silu(g) = g / (1 + e^-g)
 * in fp32. Backward: dg = da · u · σ(g) · (1 + g(1 - σ(g))), du = da · g · σ(g); dg may overwrite g and du
 * u (each thread reads its vector before writing it).
 *
 * lg_swiglu_lora_fwd<R, WK, DROP>: a = silu(g)·u is written with a's stride (the down projection's extended K)
 * and, in the same registers, masked and fed to templates/lora/lora_down.cuh's MMAs in its exact mapping
 * (16-row tiles, warp wk over K blocks wk·U + i·WK·U + u, fixed-order reduction), so S = s·D(a)·Aᵀ lands in
 * a's tail bit for bit as FusedLoRA's down kernel would write it. Needs k % 32 == 0. */

static __device__ __forceinline__ float lg_silu(float g) { return g / (1.0f + __expf(-g)); }

static __device__ __forceinline__ lg_v16 lg_swiglu8(const lg_v16 &gv, const lg_v16 &uv)
{
    float a[8], b[8];
    lg_dec_unpack8(gv, a);
    lg_dec_unpack8(uv, b);
#pragma unroll
    for (int e = 0; e < 8; e++)
        a[e] = lg_silu(a[e]) * b[e];
    return lg_dec_pack8(a);
}

static __device__ __forceinline__ void lg_swiglu_fwd(const struct lg_swiglu_args &p)
{
    const lg_dec_policy ef = lg_dec_evict_first();
    const int v = blockIdx.x * blockDim.x + threadIdx.x;
    if (v >= (p.k >> 3))
        return;
    const lg_i64 c = 8 * v;
    const lg_h16 *g = (const lg_h16 *)p.g, *u = (const lg_h16 *)p.u;
    lg_h16 *a = (lg_h16 *)p.a;
    for (lg_i64 row = blockIdx.y; row < p.n; row += gridDim.y) {
        const lg_v16 gv = lg_dec_ld16_ef(g + row * p.ldg + c, ef), uv = lg_dec_ld16_ef(u + row * p.ldu + c, ef);
        lg_dec_st16_ef(a + row * p.lda + c, lg_swiglu8(gv, uv), ef);
    }
}

static __device__ __forceinline__ void lg_swiglu_bwd(const struct lg_swiglu_args &p)
{
    const lg_dec_policy ef = lg_dec_evict_first();
    const int v = blockIdx.x * blockDim.x + threadIdx.x;
    if (v >= (p.k >> 3))
        return;
    const lg_i64 c = 8 * v;
    const lg_h16 *g = (const lg_h16 *)p.g, *u = (const lg_h16 *)p.u, *da = (const lg_h16 *)p.da;
    lg_h16 *dg = (lg_h16 *)p.dg, *du = (lg_h16 *)p.du;
    for (lg_i64 row = blockIdx.y; row < p.n; row += gridDim.y) {
        float x[8], y[8], d[8], og[8], ou[8];
        lg_dec_unpack8(lg_dec_ld16_ef(g + row * p.ldg + c, ef), x);
        lg_dec_unpack8(lg_dec_ld16_ef(u + row * p.ldu + c, ef), y);
        lg_dec_unpack8(lg_dec_ld16_ef(da + row * p.ldda + c, ef), d);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            const float s = 1.0f / (1.0f + __expf(-x[e]));
            ou[e] = d[e] * x[e] * s;
            og[e] = d[e] * y[e] * s * (1.0f + x[e] * (1.0f - s));
        }
        lg_dec_st16_ef(dg + row * p.lddg + c, lg_dec_pack8(og), ef);
        lg_dec_st16_ef(du + row * p.lddu + c, lg_dec_pack8(ou), ef);
    }
}

template <int R, int WK, int DROP> static __device__ __forceinline__ void lg_swiglu_lora_fwd(const struct lg_swiglu_args &p)
{
    constexpr int U = 2, NT = R / 8;
    constexpr int RED = (WK > 1) ? (WK - 1) * NT * 4 * 32 : 1;
    __shared__ float red[RED];

    const int wk = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int nkb = p.k >> 5;
    const lg_dec_policy ef = lg_dec_evict_first();
    const lg_h16 *gp = (const lg_h16 *)p.g, *up = (const lg_h16 *)p.u;
    lg_h16 *ap = (lg_h16 *)p.a;
    const lg_i64 r0 = (lg_i64)blockIdx.x * 16 + g;
    const lg_i64 rows[2] = {r0, r0 + 8};
    const bool ok[2] = {rows[0] < p.n, rows[1] < p.n};

    float acc[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            acc[j][e] = 0.f;

    /* step i is K block kb(i) of lora_down's chain, one at a time (live while its group's first block is in
     * range: lora_down multiplies zeros for the rest of a group, and so do we) */
    auto kb_of = [&](int i) { return wk * U + (i / U) * (WK * U) + (i % U); };
    for (int i = 0; kb_of(i) - i % U < nkb; i++) {
        const int kb = kb_of(i);
        const bool vk = kb < nkb;
        const lg_i64 col = (lg_i64)kb * 32 + 8 * t;
        lg_v16 gv[2], uv[2], bw[NT];
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const bool v = vk && ok[hh];
            gv[hh] = v ? lg_dec_ld16_ef(gp + rows[hh] * p.ldg + col, ef) : lg_dec_zero16();
            uv[hh] = v ? lg_dec_ld16_ef(up + rows[hh] * p.ldu + col, ef) : lg_dec_zero16();
        }
        lg_dec_a_frags<NT>(bw, (const lg_h16 *)p.lora.a, p.lora.lda, p.lora.rank, g, col, vk);
        lg_v16 av[2];
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            av[hh] = lg_dec_zero16();
            if (!vk || !ok[hh])
                continue;
            av[hh] = lg_swiglu8(gv[hh], uv[hh]);
            lg_dec_st16_ef(ap + rows[hh] * p.lda + col, av[hh], ef);
            if (DROP)
                av[hh] = lg_dec_masked(av[hh], p.lora.drop, (lg_u64)rows[hh] * (lg_u64)p.k + (lg_u64)col);
        }
        lg_dec_s_mma<NT>(acc, av[0], av[1], bw);
    }
    lg_dec_s_store<NT, WK>(acc, red, p.lora, r0, p.n, wk, lane);
}
