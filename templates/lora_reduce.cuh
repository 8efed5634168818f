/* lora_reduce.cuh: second stage of the deterministic reductions (dS, dB, dA). Each thread sums 4 consecutive
 * values over all partial slices in slice order, so results are bitwise reproducible run to run.
 * OUT_HALF = 1 writes dtype rows of `cols` values at stride ldo (dS into the tail of the dY buffer);
 * OUT_HALF = 0 writes fp32 contiguously with out = beta·out + scale·sum (gradient accumulation). */

template <int OUT_HALF>
static __device__ __forceinline__ void lg_reduce(const struct lg_reduce_args &p)
{
    const lg_i64 i = ((lg_i64)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (i >= p.count)
        return;
    float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int t = 0; t < p.parts; t++) {
        const float4 v = *(const float4 *)(p.part + t * p.part_stride + i);
        s.x += v.x;
        s.y += v.y;
        s.z += v.z;
        s.w += v.w;
    }
    s.x *= p.scale;
    s.y *= p.scale;
    s.z *= p.scale;
    s.w *= p.scale;
    if (OUT_HALF) {
        const lg_i64 row = i / p.cols, col = i % p.cols;
        lg_h32 *o = (lg_h32 *)((lg_h16 *)p.out + row * p.ldo + col);
        o[0] = lg_pack2(s.x, s.y);
        o[1] = lg_pack2(s.z, s.w);
    } else {
        float4 *o = (float4 *)((float *)p.out + i);
        if (p.beta != 0.f) {
            const float4 old = *o;
            s.x += p.beta * old.x;
            s.y += p.beta * old.y;
            s.z += p.beta * old.z;
            s.w += p.beta * old.w;
        }
        *o = s;
    }
}
