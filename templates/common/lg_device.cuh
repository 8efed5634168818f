/* lg_device.cuh: device helpers every generated kernel uses. Self-contained (NVRTC here ships no CUDA
 * headers): 16-bit types as raw bits, conversions and tensor-core MMA through inline PTX (sm_80+).
 *
 * The generator defines LG_DTYPE (0 = bf16, 1 = fp16) before this file. */
#ifndef LG_DEVICE_CUH
#define LG_DEVICE_CUH

typedef unsigned short lg_h16; /* one bf16 or fp16 value, as bits */
typedef unsigned int lg_h32;   /* two of them, element 0 in the low half */

struct __align__(16) lg_v16 { unsigned int x, y, z, w; }; /* 8 values: one 16-byte access */

static __device__ __forceinline__ float lg_to_f32(lg_h16 h)
{
#if LG_DTYPE == 0
    return __uint_as_float((unsigned int)h << 16);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#endif
}

/* lo goes to the low half (element 0), hi to the high half. */
static __device__ __forceinline__ lg_h32 lg_pack2(float lo, float hi)
{
    lg_h32 r;
#if LG_DTYPE == 0
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#else
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#endif
    return r;
}

static __device__ __forceinline__ float lg_lo_f32(lg_h32 v) { return lg_to_f32((lg_h16)(v & 0xffffu)); }
static __device__ __forceinline__ float lg_hi_f32(lg_h32 v) { return lg_to_f32((lg_h16)(v >> 16)); }

/* D += A·B for one m16n8k16 tile, fp32 accumulate. Fragment layouts: PTX ISA "mma.m16n8k16". */
static __device__ __forceinline__ void lg_mma16816(float d[4], lg_h32 a0, lg_h32 a1, lg_h32 a2, lg_h32 a3,
                                                   lg_h32 b0, lg_h32 b1)
{
#if LG_DTYPE == 0
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

static __device__ __forceinline__ unsigned lg_smem_addr(const void *p)
{
    return (unsigned)__cvta_generic_to_shared(p);
}

/* Four 8x8 b16 matrices from shared memory; lane l supplies the address of row l%8 of matrix l/8. */
static __device__ __forceinline__ void lg_ldsm_x4(lg_h32 r[4], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(lg_smem_addr(p)));
}

static __device__ __forceinline__ void lg_ldsm_x4_t(lg_h32 r[4], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(lg_smem_addr(p)));
}

static __device__ __forceinline__ void lg_ldsm_x2_t(lg_h32 r[2], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(lg_smem_addr(p)));
}

/* 16-byte global -> shared copy that bypasses registers; bytes beyond src_bytes (0 or 16) are zero-filled,
 * which is how out-of-range rows become zeros. */
static __device__ __forceinline__ void lg_cp_async16(void *smem, const void *gmem, int src_bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(lg_smem_addr(smem)), "l"(gmem),
                 "r"(src_bytes));
}
static __device__ __forceinline__ void lg_cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> static __device__ __forceinline__ void lg_cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

static __device__ __forceinline__ lg_v16 lg_ld16(const void *p) { return *(const lg_v16 *)p; }
/* Streaming load: read once, do not keep in L1. */
static __device__ __forceinline__ lg_v16 lg_ld16_stream(const void *p)
{
    lg_v16 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}
static __device__ __forceinline__ void lg_st16(void *p, lg_v16 v) { *(lg_v16 *)p = v; }

#endif
