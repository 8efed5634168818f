/* lora_tune.h: FusedLoRA's side of the tuning database (lora_tune.c), for lora.c. */
#ifndef LG_LORA_TUNE_H
#define LG_LORA_TUNE_H

#include "lg_lora.h"

/* 1 when n falls in the token bucket `bucket` (0: none looked up yet). */
int lg_lora_tune_bucket_same(int bucket, int64_t n);
/* Fills *t from the process database's entry for (ctx's GPU, p, n), or with the arch heuristic for the layer's
 * kernels `plan` when none matches; returns n's bucket. */
int lg_lora_tune_lookup(lg_ctx_t *ctx, const struct lg_lora_params *p, const struct lg_kernel_cfg plan[LG_SLOT_COUNT],
                        int64_t n, struct lg_lora_tiles *t);
/* The arch heuristic alone (lg_lora_arch_tiles for a layer's plan). */
void lg_lora_tune_arch_tiles(lg_ctx_t *ctx, const struct lg_kernel_cfg plan[LG_SLOT_COUNT], struct lg_lora_tiles *t);

#endif
