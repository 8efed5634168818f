/* lg_ckpt.h: crash-safe checkpoint directories. A checkpoint is a directory of files committed as a whole:
 * the files are written into a fresh temporary directory beside the checkpoints, each synced, then a manifest
 * (every file's size and 128-bit hash) is written, the directory synced and renamed into place, and the
 * `latest` pointer (a one-line file naming it) replaced atomically. A reader opens `latest`, and checks every
 * file against the manifest before trusting any of it: a checkpoint cut short by a crash is never named by
 * `latest`, and one damaged afterwards is refused with a message naming the file.
 *
 * Ownership: lg_ckpt_writer_t owns its temporary directory until commit or abort.
 *
 *   lg_ckpt_writer_t *w;
 *   lg_ckpt_begin("out/job/checkpoints", &w);
 *   snprintf(path, n, "%s/state.safetensors", lg_ckpt_dir(w));  ... write files there ...
 *   lg_ckpt_commit(w, 2);                       // keeps the two newest checkpoints
 *   char dir[1024];
 *   if (lg_ckpt_latest("out/job/checkpoints", dir, sizeof dir) == LG_OK) ... read dir/state.safetensors ...
 */
#ifndef LG_CKPT_H
#define LG_CKPT_H

#include "lg_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lg_ckpt_writer lg_ckpt_writer_t;

/* Creates root (and parents) and a temporary directory in it for the next checkpoint. */
LG_API enum lg_status lg_ckpt_begin(const char *root, lg_ckpt_writer_t **out);
/* The temporary directory to write the checkpoint's files into. */
LG_API const char *lg_ckpt_dir(const lg_ckpt_writer_t *w);
/* Writes the manifest over every regular file in the directory, syncs, renames the directory to
 * root/ckpt-NNNNNN (the next number), points `latest` at it and removes all but the `keep` newest
 * checkpoints (keep >= 1). Frees w, also on failure (the temporary directory is then removed). */
LG_API enum lg_status lg_ckpt_commit(lg_ckpt_writer_t *w, int keep);
/* Removes the temporary directory and frees w. */
LG_API void lg_ckpt_abort(lg_ckpt_writer_t *w);

/* The directory `latest` names under root, after checking every file of its manifest (sizes and hashes).
 * LG_ERR_IO with the reason when there is none or it does not verify. */
LG_API enum lg_status lg_ckpt_latest(const char *root, char *dir, size_t n);
/* Removes every checkpoint and the `latest` pointer under root (a fresh run replacing an earlier one's);
 * *removed is how many checkpoints there were. A missing root is fine. */
LG_API enum lg_status lg_ckpt_clear(const char *root, int *removed);
/* Checks one checkpoint directory against its manifest: every file it lists (size and hash), and no regular file
 * in the directory that it does not list. */
LG_API enum lg_status lg_ckpt_verify(const char *dir);

#ifdef __cplusplus
}
#endif
#endif
