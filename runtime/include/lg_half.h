/* lg_half.h: host-side conversions between fp32 and the 16-bit storage types (bf16, fp16), round to nearest
 * even, NaN preserved. Used by weight loading, checkpoints, the CPU reference and tests. */
#ifndef LG_HALF_H
#define LG_HALF_H

#include "lg_common.h"

#ifdef __cplusplus
extern "C" {
#endif

LG_API uint16_t lg_f32_to_bf16(float f);
LG_API float lg_bf16_to_f32(uint16_t h);
LG_API uint16_t lg_f32_to_f16(float f);
LG_API float lg_f16_to_f32(uint16_t h);

/* dtype-generic forms for LG_BF16/LG_FP16. */
LG_API uint16_t lg_f32_to_half(enum lg_dtype t, float f);
LG_API float lg_half_to_f32(enum lg_dtype t, uint16_t h);
/* Rounds f through the dtype and back (what storing in that dtype does to a value). */
LG_API float lg_round_to(enum lg_dtype t, float f);

#ifdef __cplusplus
}
#endif
#endif
