/* jit_internal.h: what nvrtc.c, jit.c and jit_disk.c share, and the seams tests/test_jit.c needs to check the
 * cache key and the on-disk entry format. Not installed; nothing outside the JIT includes it.
 *
 * nvrtc.c: NVRTC compiles and the cache key (a compilation's identity).
 * jit_disk.c: the cache directory and the on-disk entries.
 * jit.c: lg_jit_t, the memory cache and loading into the driver.
 */
#ifndef LG_JIT_INTERNAL_H
#define LG_JIT_INTERNAL_H

#include "lg_base.h"
#include "lg_jit.h"

#include <stdbool.h>

/* A cache key, binary (for the memory tables) and as 32 lowercase hex chars (for file names). */
struct lg_jit_key {
    uint64_t h[2];
    char hex[33];
};

/* The key over every input named explicitly, so tests can vary the NVRTC version, the options and the format
 * version, which lg_jit_cache_key takes from the build. */
void lg_jit_key_ex(const char *source, int arch, int nvrtc_version, const char *const *opts, int nopt,
                   int format_version, struct lg_jit_key *out);
/* lg_jit_key_ex with this build's NVRTC version, options for `arch` and LG_JIT_FORMAT_VERSION. */
void lg_jit_key(const char *source, int arch, struct lg_jit_key *out);

/* The on-disk entry: a 64-byte little-endian header, then the cubin.
 *   0  magic "LGCUBIN\0"     8  u32 format version   12 u32 arch
 *   16 key, 32 hex chars     48 u64 payload size     56 u64 payload checksum (lg_hash128 h1, seed below)
 */
#define LG_JIT_ENTRY_MAGIC "LGCUBIN"
#define LG_JIT_ENTRY_HEADER 64
#define LG_JIT_CHECKSUM_SEED 0x6c67u

/* The disk half of an lg_jit_t. dir == NULL: memory only, `note` says why. */
struct lg_jit_disk {
    char *dir;
    bool writable; /* false: entries are read but never written or deleted */
    char note[512];
};

enum lg_disk_result { LG_DISK_MISS, LG_DISK_HIT, LG_DISK_CORRUPT };

/* Resolves the directory (params, $LORAGEN_CACHE_DIR, $XDG_CACHE_HOME/loragen, $HOME/.cache/loragen) and
 * creates it. Never fails for want of a usable directory: it falls back to memory only and notes why.
 * Returns LG_ERR_OOM only. */
enum lg_status lg_jit_disk_open(struct lg_jit_disk *d, const char *param_dir, unsigned flags);
void lg_jit_disk_close(struct lg_jit_disk *d);

/* The entry's path, malloc'd; NULL when memory-only or out of memory. */
char *lg_jit_disk_path(const struct lg_jit_disk *d, const struct lg_jit_key *k);

/* Reads and checks the entry for k. HIT: *cubin (malloc'd) and *size are set. CORRUPT: the entry failed a
 * check and has been deleted; the detail is in `why`. MISS: no entry, or it could not be read. */
enum lg_disk_result lg_jit_disk_load(struct lg_jit_disk *d, const struct lg_jit_key *k, int arch,
                                     void **cubin, size_t *size, char why[256]);

/* Writes the entry for k through a temp file and rename. A failure is noted in d->note and otherwise
 * ignored: the cache is an optimisation, and the caller has the cubin in hand. */
void lg_jit_disk_store(struct lg_jit_disk *d, const struct lg_jit_key *k, int arch, const void *cubin,
                       size_t size);

/* Builds the full entry (header + payload) in memory; tests use it to forge corrupt entries. */
void *lg_jit_entry_encode(const struct lg_jit_key *k, int arch, const void *cubin, size_t size,
                          size_t *entry_size);
/* Checks an entry read from disk; on failure returns false and says why. */
bool lg_jit_entry_check(const void *entry, size_t entry_size, const struct lg_jit_key *k, int arch,
                        char why[256]);

#endif
