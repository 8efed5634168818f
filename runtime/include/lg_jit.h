/* lg_jit.h: run-time compilation of generated CUDA source with NVRTC, with an in-memory and on-disk cache.
 *
 * lg_nvrtc_compile() needs no GPU: `loragen gen` uses it to check every kernel for sm_80/sm_89/sm_90.
 * lg_jit_t hands out CUfunctions loaded into the current CUDA context (lg_ctx_t makes one); all calls on one
 * lg_jit_t must see the same context. With params->arch set, lg_jit_init and lg_jit_get_cubin need no GPU
 * and no driver (cudrv.c opens it on first use). Not thread-safe.
 *
 * Disk cache: one file per (source hash, arch, NVRTC version, options, format version), written to a temp
 * file and renamed into place. Directory: params->cache_dir, else $LORAGEN_CACHE_DIR, else
 * $XDG_CACHE_HOME/loragen, else $HOME/.cache/loragen; created if missing. If it cannot be created the JIT
 * carries on with the memory cache alone (lg_jit_cache_note says why); a failed write is never an error.
 * Each entry carries a header and a checksum of its payload; an entry that fails either is deleted and
 * rebuilt, never loaded.
 *
 * Ownership: lg_jit_t owns its modules (unloaded in lg_jit_free) and its cache directory string. Cubins
 * returned by lg_nvrtc_compile are malloc'd and belong to the caller.
 *
 *   lg_jit_t *jit;
 *   struct lg_jit_params jp = {0};              // defaults: env cache dir, current device's arch
 *   lg_jit_init(&jp, &jit);
 *   CUfunction f;
 *   lg_jit_get(jit, src, "lg_lora_down_bf16_r16", &f);
 *   ... cuLaunchKernel(f, ...) ...
 *   lg_jit_free(jit);
 */
#ifndef LG_JIT_H
#define LG_JIT_H

#include "lg_common.h"

#include <cuda.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever the on-disk entry layout or the compile options change meaning. */
#define LG_JIT_FORMAT_VERSION 1

/* Compiles `source` (named `src_name` in diagnostics) for sm_<arch> (80, 89, 90, ...) to a cubin. On failure
 * returns LG_ERR_NVRTC with the whole NVRTC log in lg_last_error(). `log_out` (optional) receives the log
 * (malloc'd, may be empty) on success as well, for warnings. */
LG_API enum lg_status lg_nvrtc_compile(const char *source, const char *src_name, int arch, void **cubin,
                                size_t *cubin_size, char **log_out);

/* The options lg_nvrtc_compile passes to NVRTC for `arch`, NULL-terminated; part of the cache key. */
LG_API const char *const *lg_nvrtc_options(int arch, int *count);

/* NVRTC's version as major*1000 + minor*10 (13.0 -> 13000). */
LG_API int lg_nvrtc_version(void);

/* The disk-cache key of a compilation: 32 hex chars + NUL written to key_out (33 bytes). */
LG_API void lg_jit_cache_key(const char *source, int arch, char key_out[33]);

enum lg_jit_flags {
    LG_JIT_NO_DISK_CACHE = 1u << 0, /* memory cache only */
};

struct lg_jit_params {
    const char *cache_dir; /* NULL: from the environment as above */
    int arch;              /* 0: the current context's device */
    unsigned flags;        /* enum lg_jit_flags */
};

typedef struct lg_jit lg_jit_t;

LG_API enum lg_status lg_jit_init(const struct lg_jit_params *p, lg_jit_t **out);
LG_API void lg_jit_free(lg_jit_t *jit);

/* Compiles (or finds in the memory/disk cache) `source` and returns its kernel `kernel_name`, loaded in the
 * current context. The function stays valid until lg_jit_free. */
LG_API enum lg_status lg_jit_get(lg_jit_t *jit, const char *source, const char *kernel_name, CUfunction *out);

/* Statistics, for tests and `loragen` progress output. */
struct lg_jit_stats {
    unsigned mem_hits, disk_hits, compiles, corrupt_rebuilt;
};
/* Every lg_jit_get/lg_jit_get_cubin call counts one of mem_hits, disk_hits or compiles; corrupt_rebuilt
 * counts disk entries that failed their checks (each also counts a compile). */
LG_API void lg_jit_get_stats(const lg_jit_t *jit, struct lg_jit_stats *out);
/* The disk cache directory, or NULL when the cache is memory-only. Owned by jit. */
LG_API const char *lg_jit_cache_dir(const lg_jit_t *jit);
/* Why the disk cache is off, read-only or failed a write ("" when all is well), for `loragen` to print
 * once. Owned by jit. */
LG_API const char *lg_jit_cache_note(const lg_jit_t *jit);

/* Without a GPU (tests, `loragen gen`): the cubin for source/arch (0: the jit's arch) through the caches,
 * as lg_jit_get would load it. The returned buffer belongs to the caller. */
LG_API enum lg_status lg_jit_get_cubin(lg_jit_t *jit, const char *source, int arch, void **cubin, size_t *size);

#ifdef __cplusplus
}
#endif
#endif
