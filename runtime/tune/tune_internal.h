/* tune_internal.h: what the files of runtime/tune share (db.c and db_json.c). */
#ifndef LG_TUNE_INTERNAL_H
#define LG_TUNE_INTERNAL_H

#include "lg_tune.h"

/* Orders keys (GPU, SM count, arch, op, shape, dtype, tokens) so saved files are deterministic. */
int lg_tune_key_cmp(const struct lg_tune_key *a, const struct lg_tune_key *b);

#endif
