/* lg_common.h: what every part of libloragen shares: status codes, the last-error detail, dtypes.
 *
 * Every library call that can fail returns an enum lg_status. The readable detail (file, line, field, the
 * whole NVRTC log) is kept per thread and read with lg_last_error(). The library never exits or aborts.
 *
 *   if (lg_spec_load("specs/llama-3.1-8b.lua", &spec) != LG_OK)
 *       fprintf(stderr, "%s\n", lg_last_error());
 */
#ifndef LG_COMMON_H
#define LG_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Marks the public API: the library builds with hidden visibility and exports only what carries LG_API. */
#define LG_API __attribute__((visibility("default")))

#ifdef __cplusplus
extern "C" {
#endif

enum lg_status {
    LG_OK = 0,
    LG_ERR_INVALID,     /* bad argument: shape, stride, alignment, null pointer */
    LG_ERR_SPEC,        /* a spec or job file failed to load or validate */
    LG_ERR_IO,          /* a file could not be read or written */
    LG_ERR_NVRTC,       /* run-time compilation failed; lg_last_error() holds the log */
    LG_ERR_CUDA,        /* a CUDA driver call failed */
    LG_ERR_CUBLAS,      /* a cuBLASLt call failed or found no algorithm */
    LG_ERR_OOM,         /* host or device allocation failed */
    LG_ERR_UNSUPPORTED, /* valid request this build or device cannot serve (dtype, arch) */
    LG_ERR_NO_GPU,      /* no CUDA device is present */
    LG_ERR_INTERNAL,    /* a broken invariant inside the library */
};

enum lg_dtype { LG_BF16 = 0, LG_FP16 = 1, LG_FP32 = 2 };

/* The detail of the last failure on this thread ("" when none). Valid until the next failing call. */
LG_API const char *lg_last_error(void);
LG_API const char *lg_status_str(enum lg_status s);
LG_API const char *lg_dtype_name(enum lg_dtype t);
LG_API size_t lg_dtype_size(enum lg_dtype t);
/* "bf16"/"fp16"/"fp32" to the enum; LG_ERR_INVALID on anything else. */
LG_API enum lg_status lg_dtype_parse(const char *name, enum lg_dtype *out);

/* Empties the detail (tests use it to check that a call sets one). */
LG_API void lg_clear_error(void);

#ifdef __cplusplus
}
#endif
#endif
