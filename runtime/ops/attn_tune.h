/* attn_tune.h: attention's side of the tuning database (attn_tune.c), for attention.c. */
#ifndef LG_ATTN_TUNE_H
#define LG_ATTN_TUNE_H

#include "lg_attention.h"

/* 1 with *t filled from the process database's entry for (ctx's GPU, p); 0 (and *t zero) when none matches. */
int lg_ops_attn_tuned_tiles(lg_ctx_t *ctx, const struct lg_attn_params *p, struct lg_attn_tiles *t);

#endif
