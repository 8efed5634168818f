/* jit_disk.c: the JIT's on-disk cache: where it lives, and entries that are either whole and checked or
 * not loaded at all.
 *
 * A cubin that loads but is wrong would be far worse than a recompile, so every entry carries its key, size
 * and a checksum, and anything that fails a check is deleted and rebuilt. Writes go to a unique temp file in
 * the same directory and are renamed into place, so readers (other processes too) never see half an entry.
 * The cache is an optimisation: no disk problem ever fails a compile. */
#include "jit_internal.h"
#include "lg_base.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Larger than any cubin we generate by far; bounds the malloc for a header-less or hostile file. */
#define LG_ENTRY_MAX ((size_t)1 << 30)

/* ---- entry format ---- */

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t payload_checksum(const void *p, size_t n)
{
    uint64_t h[2];
    lg_hash128(p, n, LG_JIT_CHECKSUM_SEED, h);
    return h[0];
}

void *lg_jit_entry_encode(const struct lg_jit_key *k, int arch, const void *cubin, size_t size,
                          size_t *entry_size)
{
    uint8_t *e = malloc(LG_JIT_ENTRY_HEADER + size);
    if (!e)
        return NULL;
    memset(e, 0, LG_JIT_ENTRY_HEADER);
    memcpy(e, LG_JIT_ENTRY_MAGIC, sizeof LG_JIT_ENTRY_MAGIC);
    put_le(e + 8, LG_JIT_FORMAT_VERSION, 4);
    put_le(e + 12, (uint32_t)arch, 4);
    memcpy(e + 16, k->hex, 32);
    put_le(e + 48, size, 8);
    put_le(e + 56, payload_checksum(cubin, size), 8);
    memcpy(e + LG_JIT_ENTRY_HEADER, cubin, size);
    *entry_size = LG_JIT_ENTRY_HEADER + size;
    return e;
}

bool lg_jit_entry_check(const void *entry, size_t entry_size, const struct lg_jit_key *k, int arch,
                        char why[256])
{
    const uint8_t *e = entry;
    const char *bad = NULL;
    if (entry_size < LG_JIT_ENTRY_HEADER)
        bad = "shorter than its header";
    else if (memcmp(e, LG_JIT_ENTRY_MAGIC, sizeof LG_JIT_ENTRY_MAGIC) != 0)
        bad = "bad magic";
    else if (get_le(e + 8, 4) != LG_JIT_FORMAT_VERSION)
        bad = "wrong format version";
    else if (get_le(e + 12, 4) != (uint32_t)arch || memcmp(e + 16, k->hex, 32) != 0)
        bad = "header names another key";
    else if (get_le(e + 48, 8) != entry_size - LG_JIT_ENTRY_HEADER)
        bad = "payload size differs from the header's";
    else if (get_le(e + 56, 8) != payload_checksum(e + LG_JIT_ENTRY_HEADER, entry_size - LG_JIT_ENTRY_HEADER))
        bad = "payload checksum mismatch";
    if (bad)
        snprintf(why, 256, "%s", bad);
    return bad == NULL;
}

/* ---- directory ---- */

static void note(struct lg_jit_disk *d, const char *fmt, const char *a, int err)
{
    char msg[400];
    snprintf(msg, sizeof msg, fmt, a);
    snprintf(d->note, sizeof d->note, "%s%s%s", msg, err ? ": " : "", err ? strerror(err) : "");
}

/* The directory the environment names (malloc'd), or NULL with d->note saying why there is none. */
static char *env_dir(struct lg_jit_disk *d)
{
    const char *e = getenv("LORAGEN_CACHE_DIR");
    if (e && *e)
        return strdup(e);
    const char *base = getenv("XDG_CACHE_HOME"), *sub = "/loragen";
    if (!base || !*base) {
        base = getenv("HOME");
        sub = "/.cache/loragen";
    }
    if (!base || !*base) {
        note(d, "memory-only JIT cache: %sno $LORAGEN_CACHE_DIR, $XDG_CACHE_HOME or $HOME", "", 0);
        return NULL;
    }
    char *dir = malloc(strlen(base) + strlen(sub) + 1);
    if (dir)
        strcat(strcpy(dir, base), sub);
    return dir;
}

enum lg_status lg_jit_disk_open(struct lg_jit_disk *d, const char *param_dir, unsigned flags)
{
    memset(d, 0, sizeof *d);
    if (flags & LG_JIT_NO_DISK_CACHE) {
        note(d, "memory-only JIT cache: %sLG_JIT_NO_DISK_CACHE", "", 0);
        return LG_OK;
    }
    char *dir = param_dir && *param_dir ? strdup(param_dir) : env_dir(d);
    if (!dir)
        return d->note[0] ? LG_OK : lg_fail(LG_ERR_OOM, "jit: cache directory name");
    if (lg_dir_create(dir) != LG_OK) {
        note(d, "memory-only JIT cache: %s", lg_last_error(), 0);
        free(dir);
        return LG_OK;
    }
    d->dir = dir;
    d->writable = access(dir, W_OK | X_OK) == 0;
    if (!d->writable)
        note(d, "read-only JIT cache: %s is not writable", dir, errno);
    return LG_OK;
}

void lg_jit_disk_close(struct lg_jit_disk *d)
{
    free(d->dir);
    d->dir = NULL;
}

char *lg_jit_disk_path(const struct lg_jit_disk *d, const struct lg_jit_key *k)
{
    if (!d->dir)
        return NULL;
    size_t n = strlen(d->dir) + 1 + 32 + sizeof ".cubin";
    char *path = malloc(n);
    if (path)
        snprintf(path, n, "%s/%s.cubin", d->dir, k->hex);
    return path;
}

/* ---- load and store ---- */

/* Reads the entry at path; returns 0, ENOENT-like errnos for a miss, or EFBIG for anything that cannot be an
 * entry of ours (too large, or not a regular file: a FIFO must not block the loader). */
static int read_entry(const char *path, uint8_t **data, size_t *size)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return errno;
    if (!S_ISREG(st.st_mode) || (size_t)st.st_size > LG_ENTRY_MAX)
        return EFBIG;
    char *buf;
    if (lg_file_read(path, LG_ENTRY_MAX, &buf, size) != LG_OK)
        return EIO; /* vanished or unreadable: a miss, not corruption */
    *data = (uint8_t *)buf;
    return 0;
}

enum lg_disk_result lg_jit_disk_load(struct lg_jit_disk *d, const struct lg_jit_key *k, int arch,
                                     void **cubin, size_t *size, char why[256])
{
    char *path = lg_jit_disk_path(d, k);
    if (!path)
        return LG_DISK_MISS;
    uint8_t *data = NULL;
    size_t n = 0;
    int err = read_entry(path, &data, &n);
    enum lg_disk_result res = LG_DISK_MISS;
    if (err == EFBIG) {
        snprintf(why, 256, "not a regular file, or larger than any entry we write");
        res = LG_DISK_CORRUPT;
    } else if (!err && !lg_jit_entry_check(data, n, k, arch, why)) {
        res = LG_DISK_CORRUPT;
    } else if (!err) {
        /* Move the payload to the front rather than copy it: cubins run to megabytes. */
        memmove(data, data + LG_JIT_ENTRY_HEADER, n - LG_JIT_ENTRY_HEADER);
        *cubin = data;
        *size = n - LG_JIT_ENTRY_HEADER;
        data = NULL;
        res = LG_DISK_HIT;
    }
    if (res == LG_DISK_CORRUPT && d->writable)
        unlink(path); /* so no later reader trips on it, even if our rebuild is never stored */
    free(data);
    free(path);
    return res;
}

void lg_jit_disk_store(struct lg_jit_disk *d, const struct lg_jit_key *k, int arch, const void *cubin,
                       size_t size)
{
    if (!d->dir || !d->writable)
        return;
    char *path = lg_jit_disk_path(d, k);
    size_t n = 0;
    uint8_t *entry = lg_jit_entry_encode(k, arch, cubin, size, &n);
    if (!path || !entry) {
        if (!d->note[0])
            note(d, "JIT cache write failed in %s", d->dir, ENOMEM);
    } else if (lg_file_write_atomic(path, entry, n) != LG_OK && !d->note[0]) {
        note(d, "JIT cache write failed: %s", lg_last_error(), 0);
    }
    free(entry);
    free(path);
}
