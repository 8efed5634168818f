/* lg_philox.h: the dropout mask, shared verbatim by the CUDA kernels and the CPU reference so both draw the
 * same bits. Counter-based Philox4x32-10 (Salmon et al., SC'11): the mask of element e = n*K + k of a layer's
 * input is a pure function of (seed, layer, e), so backward regenerates it and nothing is stored.
 *
 * One Philox call yields 128 bits = eight 16-bit draws for the eight consecutive elements 8g..8g+7 (one
 * 16-byte vector of bf16/fp16). Element 8g+i is kept when its draw >= thresh16 = round(p * 65536); p is thus
 * quantised to 1/65536 and the keep scale is 1/(1 - thresh16/65536), exactly the keep rate. */
#ifndef LG_PHILOX_H
#define LG_PHILOX_H

#ifdef __CUDACC__
#define LG_HD static __device__ __forceinline__
#define LG_MULHI(a, b) __umulhi((a), (b))
typedef unsigned int lg_u32;
typedef unsigned long long lg_u64;
#else
#include <stdint.h>
#define LG_HD static inline
#define LG_MULHI(a, b) ((uint32_t)(((uint64_t)(a) * (uint64_t)(b)) >> 32))
typedef uint32_t lg_u32;
typedef uint64_t lg_u64;
#endif

#define LG_PHILOX_SALT 0x4c4f5241u /* "LORA": separates dropout draws from any other Philox user */

/* The threshold for drop probability p (p quantised to 1/65536, rounded to nearest) and the scale
 * 1/keep-rate that goes with it: one definition for the kernels' callers and the CPU reference. */
LG_HD lg_u32 lg_dropout_thresh16(float p)
{
    const double t = (double)p * 65536.0 + 0.5;
    return t >= 65535.0 ? 65535u : (t < 1.0 ? 0u : (lg_u32)t);
}

LG_HD float lg_dropout_keep_scale(lg_u32 thresh16) { return 65536.0f / (float)(65536u - thresh16); }

/* Draws for group g (elements 8g..8g+7): out[i/2] >> (16*(i%2)) & 0xffff is element 8g+i's draw. */
LG_HD void lg_philox_group(lg_u64 seed, lg_u32 layer, lg_u64 g, lg_u32 out[4])
{
    lg_u32 c0 = (lg_u32)g, c1 = (lg_u32)(g >> 32), c2 = layer, c3 = LG_PHILOX_SALT;
    lg_u32 k0 = (lg_u32)seed, k1 = (lg_u32)(seed >> 32);
    for (int i = 0; i < 10; i++) {
        lg_u32 hi0 = LG_MULHI(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        lg_u32 hi1 = LG_MULHI(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* Keep bits of the eight elements of group g: bit i set = element 8g+i kept. */
LG_HD lg_u32 lg_dropout_keep8(lg_u64 seed, lg_u32 layer, lg_u64 g, lg_u32 thresh16)
{
    lg_u32 r[4];
    lg_philox_group(seed, layer, g, r);
    lg_u32 bits = 0;
    for (int i = 0; i < 8; i++) {
        lg_u32 d = (r[i >> 1] >> (16 * (i & 1))) & 0xffffu;
        bits |= (lg_u32)(d >= thresh16) << i;
    }
    return bits;
}

/* The same decision as AND-masks for the four 32-bit words of a 16-byte vector of eight 16-bit values:
 * m[i] keeps element 8g+2i in its low half and 8g+2i+1 in its high half. Cheaper than the bit form when
 * the mask is applied straight away: the high draw needs no extraction, since
 * (w >> 16) >= t  <=>  w >= t << 16. */
LG_HD void lg_dropout_mask4(lg_u64 seed, lg_u32 layer, lg_u64 g, lg_u32 thresh16, lg_u32 m[4])
{
    lg_u32 r[4];
    lg_philox_group(seed, layer, g, r);
    const lg_u32 th_hi = thresh16 << 16;
    for (int i = 0; i < 4; i++)
        m[i] = (((r[i] & 0xffffu) >= thresh16) ? 0x0000ffffu : 0u) | ((r[i] >= th_hi) ? 0xffff0000u : 0u);
}

#endif
