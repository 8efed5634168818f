/* lg_base.h (internal): what every part of the library shares below the public API: recording a failure
 * for lg_last_error(), and the 128-bit hash. No CUDA and no Lua here or in anything base includes. */
#ifndef LG_BASE_H
#define LG_BASE_H

#include "lg_common.h"
#include "lg_file.h"

#include <stdint.h>

/* Records the detail and returns s, so a failure reads `return lg_fail(LG_ERR_IO, ...)`. */
enum lg_status lg_fail(enum lg_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepends context to the current detail ("loading specs/x.lua: " + old detail). */
enum lg_status lg_fail_wrap(enum lg_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* MurmurHash3 x64/128, streamed, so a key's fields need not be concatenated first. Byte order: little endian,
 * as the reference implementation on x86-64 and aarch64 (the only hosts we build for). */
struct lg_hash128 {
    uint64_t h1, h2, len;
    uint8_t buf[16];
    size_t nbuf;
};
void lg_hash128_init(struct lg_hash128 *s, uint32_t seed);
void lg_hash128_update(struct lg_hash128 *s, const void *data, size_t n);
void lg_hash128_final(struct lg_hash128 *s, uint64_t out[2]);
void lg_hash128(const void *data, size_t n, uint32_t seed, uint64_t out[2]);
/* The seed-0 hash of data as 32 lowercase hex characters. */
void lg_hash128_hex(const void *data, size_t n, char out[33]);

#endif
