/* dec_internal.h: what the decoder ops' files (dec_*.c, lg_decoder_ops.h) share inside the ops part: argument
 * checks that name the argument, and the LoRA-reader block every S-computing or correcting kernel takes. */
#ifndef LG_DEC_INTERNAL_H
#define LG_DEC_INTERNAL_H

#include "lg_decoder_ops.h"
#include "common/lg_args.h"
#include "common/lg_decoder_args.h"

/* A 16-bit activation buffer of rows of `cols` elements at stride ld: non-NULL, ld >= cols, ld % 8 == 0
 * (16-byte rows) and 16-byte aligned. */
enum lg_status lg_ops_dec_check_rows(const char *fn, const char *name, CUdeviceptr p, int64_t ld, int64_t cols);
/* A device array that must be non-NULL and `align`-byte aligned. */
enum lg_status lg_ops_dec_check_ptr(const char *fn, const char *name, CUdeviceptr p, unsigned align);
/* dtype must be bf16 or fp16. */
enum lg_status lg_ops_dec_check_dtype(const char *fn, enum lg_dtype t);
/* A reader's configuration: rank a multiple of 8 in 8..128, alpha > 0, dropout in [0, 1). */
enum lg_status lg_ops_dec_check_reader(const char *fn, int i, const struct lg_lora_reader *r);
/* n tokens in 1..INT32_MAX. */
enum lg_status lg_ops_dec_check_n(const char *fn, int64_t n);

/* The kernel argument block of reader r with io and seed: scale = alpha/r · keep (forward, as FusedLoRA's down
 * kernel computes it) or keep (backward), the dropout threshold of lg_philox.h. */
struct lg_dec_lora lg_ops_dec_lora(const struct lg_lora_reader *r, const struct lg_lora_reader_io *io, uint64_t seed,
                                   int backward, CUdeviceptr s_base, int64_t lds, size_t esz);

/* 1 when the reader's dropout rounds to a nonzero threshold (the masked kernels are needed). */
int lg_ops_dec_drops(const struct lg_lora_reader *r);

static inline int64_t lg_ops_dec_cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

#endif
