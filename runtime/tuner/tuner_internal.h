/* tuner_internal.h: what the tuner's files share: a tile group's candidates from the pruned search space
 * (tuner_space.c), for the FusedLoRA and attention tuners and their public group listings. */
#ifndef LG_TUNER_INTERNAL_H
#define LG_TUNER_INTERNAL_H

#include "lg_tuner.h"

/* A tile group: kernel configuration fields and where each lives in the caller's tiles struct. */
struct lg_tuner_tgroup {
    const char *name;
    const char *fields[5]; /* struct lg_kernel_cfg field names; NULL-terminated when fewer */
    size_t off[5];         /* byte offsets of the matching int in the tiles struct */
};

/* cand[0] = *cur; then, for each variant of base (the group's fields taken from cur where non-zero) that the
 * arch and shape allow, nearest first and at most max of them, cur with the group's fields set to the
 * variant's. Tiles structs are tsize bytes; cand holds max + 1. */
enum lg_status lg_tuner_build_group(lg_gen_t *gen, int arch, const struct lg_tune_shape *shape,
                                    const struct lg_kernel_cfg *base, const struct lg_tuner_tgroup *g,
                                    const void *cur, size_t tsize, int max, void *cand, int *n,
                                    struct lg_tuner_space_info *info);

#endif
