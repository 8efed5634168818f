/* emu_device.h: host versions of templates/common/lg_device.cuh and templates/attn/attn_ptx.cuh with the
 * PTX semantics of each instruction (PTX ISA: mma.m16n8k16 fragments, ldmatrix, cp.async groups, ex2,
 * red.add, shfl.bfly), written from the ISA text rather than from the kernels, so a fragment or address
 * mistake in a kernel shows up as a wrong result. The kernels include neither real header under the
 * emulator; the include guards below keep them out. */
#ifndef LG_EMU_DEVICE_H
#define LG_EMU_DEVICE_H

#include "emu_rt.h"

#define LG_DEVICE_CUH  /* the real lg_device.cuh is replaced by this file */
#define LG_ATTN_PTX_CUH /* and attn_ptx.cuh */

typedef unsigned short lg_h16;
typedef unsigned int lg_h32;
struct alignas(16) lg_v16 {
    unsigned int x, y, z, w;
};

static inline float lg_to_f32(lg_h16 h)
{
#if LG_DTYPE == 0
    return __uint_as_float((unsigned)h << 16);
#else
    _Float16 f;
    memcpy(&f, &h, 2);
    return (float)f;
#endif
}

static inline lg_h16 lg_emu_round(float x)
{
#if LG_DTYPE == 0
    unsigned u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (lg_h16)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);        /* round to nearest even */
    return (lg_h16)(u >> 16);
#else
    _Float16 f = (_Float16)x;
    lg_h16 h;
    memcpy(&h, &f, 2);
    return h;
#endif
}

static inline lg_h32 lg_pack2(float lo, float hi) { return (lg_h32)lg_emu_round(lo) | ((lg_h32)lg_emu_round(hi) << 16); }
static inline float lg_lo_f32(lg_h32 v) { return lg_to_f32((lg_h16)(v & 0xffffu)); }
static inline float lg_hi_f32(lg_h32 v) { return lg_to_f32((lg_h16)(v >> 16)); }

static inline float lg_emu_elem(lg_h32 reg, int half) { return half ? lg_hi_f32(reg) : lg_lo_f32(reg); }

/* mma.sync.m16n8k16.row.col, fp32 accumulate: D = A·B + C, A 16x16, B 16x8 (k x n), per the ISA's layouts. */
static inline void lg_mma16816(float d[4], lg_h32 a0, lg_h32 a1, lg_h32 a2, lg_h32 a3, lg_h32 b0, lg_h32 b1)
{
    const int lane = emu::tid() % 32;
    emu::Warp &w0 = emu::warps[(size_t)emu::tid() / 32];
    uint32_t *in = w0.in[lane];
    in[0] = a0, in[1] = a1, in[2] = a2, in[3] = a3, in[4] = b0, in[5] = b1;
    for (int e = 0; e < 4; e++)
        in[6 + e] = __float_as_uint(d[e]);
    emu::Warp &w = emu::warp_op("mma.m16n8k16", [](emu::Warp &w) {
        float A[16][16], B[16][8], C[16][8];
        for (int l = 0; l < 32; l++) {
            const int g = l >> 2, t = l & 3;
            const uint32_t *r = w.in[l];
            for (int hf = 0; hf < 2; hf++) {
                A[g][2 * t + hf] = lg_emu_elem(r[0], hf);
                A[g + 8][2 * t + hf] = lg_emu_elem(r[1], hf);
                A[g][2 * t + 8 + hf] = lg_emu_elem(r[2], hf);
                A[g + 8][2 * t + 8 + hf] = lg_emu_elem(r[3], hf);
                B[2 * t + hf][g] = lg_emu_elem(r[4], hf);
                B[2 * t + 8 + hf][g] = lg_emu_elem(r[5], hf);
            }
            C[g][2 * t] = __uint_as_float(r[6]);
            C[g][2 * t + 1] = __uint_as_float(r[7]);
            C[g + 8][2 * t] = __uint_as_float(r[8]);
            C[g + 8][2 * t + 1] = __uint_as_float(r[9]);
        }
        float D[16][8];
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 8; j++) {
                float acc = C[i][j];
                for (int k = 0; k < 16; k++)
                    acc += A[i][k] * B[k][j];
                D[i][j] = acc;
            }
        for (int l = 0; l < 32; l++) {
            const int g = l >> 2, t = l & 3;
            w.out[l][0] = __float_as_uint(D[g][2 * t]);
            w.out[l][1] = __float_as_uint(D[g][2 * t + 1]);
            w.out[l][2] = __float_as_uint(D[g + 8][2 * t]);
            w.out[l][3] = __float_as_uint(D[g + 8][2 * t + 1]);
        }
    });
    for (int e = 0; e < 4; e++)
        d[e] = __uint_as_float(w.out[lane][e]);
}

/* ldmatrix.m8n8.xN[.trans].b16: matrix i's row r is at the address of lane 8i + r. */
static inline void lg_emu_ldsm(lg_h32 *r, const void *p, int n, bool trans)
{
    const int lane = emu::tid() % 32;
    emu::Warp &w0 = emu::warps[(size_t)emu::tid() / 32];
    w0.ptr[lane] = p;
    w0.in[lane][0] = (uint32_t)(n * 2 + trans);
    static const char *names[] = {"ldmatrix.x1", "ldmatrix.x1.trans", "ldmatrix.x2", "ldmatrix.x2.trans", "",
                                  "",            "",                  "",            "ldmatrix.x4",
                                  "ldmatrix.x4.trans"};
    emu::Warp &w = emu::warp_op(names[n * 2 + trans], [n, trans](emu::Warp &w) {
        for (int i = 0; i < n; i++)
            for (int rr = 0; rr < 8; rr++)
                emu::check_smem(w.ptr[8 * i + rr], 16, 16);
        for (int l = 0; l < 32; l++)
            for (int i = 0; i < n; i++) {
                lg_h16 e0, e1;
                if (!trans) {
                    const lg_h16 *row = (const lg_h16 *)w.ptr[8 * i + l / 4];
                    e0 = row[2 * (l % 4)], e1 = row[2 * (l % 4) + 1];
                } else {
                    e0 = ((const lg_h16 *)w.ptr[8 * i + 2 * (l % 4)])[l / 4];
                    e1 = ((const lg_h16 *)w.ptr[8 * i + 2 * (l % 4) + 1])[l / 4];
                }
                w.out[l][i] = (lg_h32)e0 | ((lg_h32)e1 << 16);
            }
    });
    for (int i = 0; i < n; i++)
        r[i] = w.out[lane][i];
}

static inline void lg_ldsm_x4(lg_h32 r[4], const void *p) { lg_emu_ldsm(r, p, 4, false); }
static inline void lg_ldsm_x4_t(lg_h32 r[4], const void *p) { lg_emu_ldsm(r, p, 4, true); }
static inline void lg_ldsm_x2_t(lg_h32 r[2], const void *p) { lg_emu_ldsm(r, p, 2, true); }

static inline void lg_cp_async16(void *smem, const void *gmem, int src_bytes) { emu::cp_async(smem, gmem, 16, src_bytes); }
static inline void lg_cp_async_commit() { emu::cur->committed++; }
template <int N> static inline void lg_cp_async_wait() { emu::cp_wait(N); }

static inline lg_v16 lg_ld16(const void *p)
{
    if ((uintptr_t)p % 16)
        emu::fail("misaligned 16-byte load");
    lg_v16 v;
    memcpy(&v, p, 16);
    return v;
}
static inline lg_v16 lg_ld16_stream(const void *p) { return lg_ld16(p); }
static inline void lg_st16(void *p, lg_v16 v)
{
    if ((uintptr_t)p % 16)
        emu::fail("misaligned 16-byte store");
    memcpy(p, &v, 16);
}

/* ---- attn_ptx.cuh ---- */
static inline float lg_attn_exp2(float x) { return exp2f(x); }
static inline void lg_attn_cp_async4(void *smem, const void *gmem, int src_bytes) { emu::cp_async(smem, gmem, 4, src_bytes); }
static inline void lg_attn_red_add2(float *p, float a, float b)
{
    if ((uintptr_t)p % 8)
        emu::fail("misaligned red.global.add.v2.f32");
    p[0] += a, p[1] += b;
}
static inline float lg_attn_shfl_xor(float v, int mask) { return __shfl_xor_sync(0xffffffffu, v, mask); }

#endif
