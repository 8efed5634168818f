/* backend_cpu.h: what the CPU backend's two files share (backend_cpu.c: the op table and the row ops;
 * backend_cpu_linear.c: LoRA linear layers). Private to the model part. */
#ifndef LG_BACKEND_CPU_H
#define LG_BACKEND_CPU_H

#include "lg_backend.h"
#include "lg_ref_ops.h"

#include <stdio.h>

enum lg_status lg_cpu_linear_init(lg_backend_t *be, const struct lg_lora_linear_desc *d, const float *const *w,
                                  const float *const *bias, lg_lora_linear_t **out);
void lg_cpu_linear_free(lg_backend_t *be, lg_lora_linear_t *l);
enum lg_status lg_cpu_linear_params(lg_backend_t *be, lg_lora_linear_t *l, int adapter, int out,
                                    struct lg_lora_params *p);
/* Rows [n, w] of a buffer with row stride ld to and from a packed [n, w] copy (the CPU backend's way with
 * strided views: the reference ops take packed arrays). lg_cpu_pack returns NULL when out of memory. */
float *lg_cpu_pack(const float *src, int64_t ld, int64_t n, int64_t w);
void lg_cpu_unpack(float *dst, int64_t ld, const float *src, int64_t n, int64_t w);

int64_t lg_cpu_linear_in_ld(lg_backend_t *be, const lg_lora_linear_t *l);
enum lg_status lg_cpu_linear_fwd(lg_backend_t *be, lg_lora_linear_t *l, const struct lg_mb *mb, lg_addr x,
                                 int64_t ldx, lg_addr y, int64_t ldy);
enum lg_status lg_cpu_linear_bwd(lg_backend_t *be, lg_lora_linear_t *l, const struct lg_mb *mb, lg_addr x,
                                 int64_t ldx, lg_addr dy, int64_t lddy, lg_addr dx);
enum lg_status lg_cpu_linear_sync(lg_backend_t *be, lg_lora_linear_t *l, int adapter);

#endif
