/* lg_file.h: reading and writing whole files the way every part of loragen does: regular files only, a size
 * limit stated by the caller, and writes that a reader never sees half done (a temp file beside the target,
 * flushed to disk, then renamed over it).
 *
 *   char *text; size_t n;
 *   if (lg_file_read("specs/tiny.lua", LG_FILE_LIMIT_TEXT, &text, &n) != LG_OK) puts(lg_last_error());
 *   lg_dir_create("out/tiny");
 *   lg_file_write_atomic("out/tiny/manifest.json", text, n);
 *   free(text);
 */
#ifndef LG_FILE_H
#define LG_FILE_H

#include "lg_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Size limits for the kinds of file loragen reads whole (spec and job files, datasets, JSON headers). */
#define LG_FILE_LIMIT_TEXT (64ull << 20)  /* specs, job files, config.json, manifests */
#define LG_FILE_LIMIT_DATA (16ull << 30)  /* datasets */

/* Reads the regular file at path into a malloc'd, NUL-terminated buffer (*size excludes the NUL). A FIFO,
 * device or directory, or a file over `limit` bytes, is refused with LG_ERR_IO naming the path and the
 * reason (the limit, when that was hit). */
LG_API enum lg_status lg_file_read(const char *path, uint64_t limit, char **data, size_t *size);

/* Writes n bytes to path atomically: a temp file in the same directory, fsync, rename. LG_ERR_IO names the
 * path and the errno text; on failure path is left as it was. */
LG_API enum lg_status lg_file_write_atomic(const char *path, const void *data, size_t n);

/* mkdir -p: creates each missing component (mode 0777 before umask); an existing directory is fine, an
 * existing non-directory is LG_ERR_IO. */
LG_API enum lg_status lg_dir_create(const char *path);

#ifdef __cplusplus
}
#endif
#endif
