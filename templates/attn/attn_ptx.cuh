/* attn_ptx.cuh: the few PTX instructions the attention kernels use beyond templates/common/lg_device.cuh.
 * Every inline-assembly line of the attention family lives here (the kernels themselves are plain CUDA), so
 * the CPU emulator (tests/tools/attn_emu/) can replace exactly this file and lg_device.cuh with host
 * versions of the same semantics and run the real kernel code. */
#ifndef LG_ATTN_PTX_CUH
#define LG_ATTN_PTX_CUH

/* 2^x, approximate (ex2.approx: ~2 ulp, ex2(-inf) = +0): the softmax's exponentials. */
static __device__ __forceinline__ float lg_attn_exp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* 4-byte global -> shared copy (cp.async.ca); src_bytes 0 writes zero. For per-row statistics whose rows are
 * not contiguous in global memory (lse [tokens, hq]). */
static __device__ __forceinline__ void lg_attn_cp_async4(void *smem, const void *gmem, int src_bytes)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(lg_smem_addr(smem)), "l"(gmem),
                 "r"(src_bytes));
}

/* p[0] += a, p[1] += b without returning the old values: the fast backward's dQ accumulation. One vector
 * reduction on sm_90 (red.global.add.v2.f32, p 8-byte aligned), two scalar ones before. */
static __device__ __forceinline__ void lg_attn_red_add2(float *p, float a, float b)
{
#if __CUDA_ARCH__ >= 900
    asm volatile("red.global.add.v2.f32 [%0], {%1, %2};" ::"l"(p), "f"(a), "f"(b) : "memory");
#else
    asm volatile("red.global.add.f32 [%0], %1;" ::"l"(p), "f"(a) : "memory");
    asm volatile("red.global.add.f32 [%0], %1;" ::"l"(p + 1), "f"(b) : "memory");
#endif
}

/* Butterfly exchange inside a quad of lanes (row statistics of an mma tile live in 4 lanes). */
static __device__ __forceinline__ float lg_attn_shfl_xor(float v, int mask)
{
    return __shfl_xor_sync(0xffffffffu, v, mask);
}

#endif
