/* lora_reduce.cuh: second stage of the deterministic reductions (dS, dB, dA). Each thread sums 4 consecutive
 * values over all partial slices in slice order, so results are bitwise reproducible run to run. One launch
 * serves two jobs (lg_reduce_args): job 0 is written as dtype rows of `cols` values at stride ldo when
 * OUT_HALF = 1 (dS into the tail of the dY buffer), job 1 always as fp32 with out = beta·out + scale·sum
 * (gradient accumulation). */

template <int OUT_HALF>
static __device__ __forceinline__ void lg_reduce(const struct lg_reduce_args &p)
{
    const bool second = (int)blockIdx.x >= p.blocks0;
    const struct lg_reduce_job &q = second ? p.job[1] : p.job[0];
    const lg_i64 i = ((lg_i64)(blockIdx.x - (second ? p.blocks0 : 0)) * blockDim.x + threadIdx.x) * 4;
    if (i >= q.count)
        return;
    float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
    /* unrolled so several slices' loads are in flight; the additions stay in slice order (deterministic) */
#pragma unroll 8
    for (int t = 0; t < q.parts; t++) {
        const float4 v = *(const float4 *)(q.part + t * q.part_stride + i);
        s.x += v.x;
        s.y += v.y;
        s.z += v.z;
        s.w += v.w;
    }
    s.x *= q.scale;
    s.y *= q.scale;
    s.z *= q.scale;
    s.w *= q.scale;
    if (OUT_HALF && !second) {
        const lg_i64 row = i / q.cols, col = i % q.cols;
        lg_h32 *o = (lg_h32 *)((lg_h16 *)q.out + row * q.ldo + col);
        o[0] = lg_pack2(s.x, s.y);
        o[1] = lg_pack2(s.z, s.w);
    } else {
        float4 *o = (float4 *)((float *)q.out + i);
        if (q.beta != 0.f) {
            const float4 old = *o;
            s.x += q.beta * old.x;
            s.y += q.beta * old.y;
            s.z += q.beta * old.z;
            s.w += q.beta * old.w;
        }
        *o = s;
    }
}
