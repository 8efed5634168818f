/* half.c: fp32 <-> bf16/fp16 on the host, bit-exact with the GPU's round-to-nearest-even conversions, so the
 * CPU reference sees the same rounded operands the kernels see. */
#include "lg_half.h"

#include <string.h>

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t lg_f32_to_bf16(float f)
{
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a quiet NaN */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float lg_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t lg_f32_to_f16(float f)
{
    uint32_t u = f2u(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) /* rounds to >= 65520: infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* subnormal or zero in fp16 */
        /* value = a as float; fp16 subnormal unit is 2^-24 */
        float v = u2f(a) * 16777216.0f; /* scale by 2^24 */
        /* round half to even */
        float fl = (float)(uint32_t)v;
        float rem = v - fl;
        uint32_t q = (uint32_t)fl;
        if (rem > 0.5f || (rem == 0.5f && (q & 1u)))
            q++;
        return (uint16_t)(sign | q);
    }
    uint32_t e = ((a >> 23) - 127 + 15);
    uint32_t m = a & 0x7fffffu;
    uint32_t h = (e << 10) | (m >> 13);
    uint32_t rest = m & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
        h++;
    return (uint16_t)(sign | h);
}

float lg_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        float v = (float)m / 16777216.0f;
        return sign ? -v : v;
    }
    if (e == 31)
        return u2f(sign | 0x7f800000u | (m << 13));
    return u2f(sign | ((e - 15 + 127) << 23) | (m << 13));
}

uint16_t lg_f32_to_half(enum lg_dtype t, float f) { return t == LG_FP16 ? lg_f32_to_f16(f) : lg_f32_to_bf16(f); }
float lg_half_to_f32(enum lg_dtype t, uint16_t h) { return t == LG_FP16 ? lg_f16_to_f32(h) : lg_bf16_to_f32(h); }
float lg_round_to(enum lg_dtype t, float f)
{
    return t == LG_FP32 ? f : lg_half_to_f32(t, lg_f32_to_half(t, f));
}
