/* lg_sched_build.h (sched's face): building a dataset one sample at a time, for the readers in io (JSONL and
 * length traces), which know what the public lg_dataset_from_lengths cannot take: each sample's loss-token
 * count, the line it came from, and the file's path, all kept for the job's error messages. The dataset's
 * layout stays private to sched; a reader sees only these calls and the public accessors of lg_sched.h. */
#ifndef LG_SCHED_BUILD_H
#define LG_SCHED_BUILD_H

#include "lg_sched.h"

/* An empty dataset read from `path` (copied; NULL or "" for one built in memory). Free it with
 * lg_dataset_free. */
enum lg_status lg_sched_dataset_init(const char *path, lg_dataset_t **out);
/* Appends a sample of len tokens with `loss` loss tokens (counted after the causal shift, so loss < len),
 * from source line `line` (1-based). The caller has checked len > 0 and loss < len. */
enum lg_status lg_sched_dataset_push(lg_dataset_t *ds, uint32_t len, uint32_t loss, uint32_t line);

#endif
