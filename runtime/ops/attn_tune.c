/* attn_tune.c: attention and the tuning database: the key a generated-backend layer is tuned and looked up
 * under, and its tiles as an entry's named parameters. lg_attn_init applies a matching entry over the per-arch
 * defaults; runtime/tuner/tuner_attn.c writes entries through the same names. */
#include "attn_tune.h"
#include "lg_tune.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    size_t off;
} TILES[] = {
#define T(f) {#f, offsetof(struct lg_attn_tiles, f)}
    T(fwd_bm), T(fwd_bn), T(fwd_nw), T(fwd_st), T(dkv_bm), T(dkv_nw), T(dkv_st),
    T(dq_bm), T(dq_bn), T(dq_nw), T(dq_st),
#undef T
};
#define NTILES ((int)(sizeof TILES / sizeof TILES[0]))
_Static_assert(sizeof TILES / sizeof TILES[0] <= LG_TUNE_MAX_PARAMS, "an entry holds every tile");

static int *tile_ptr(struct lg_attn_tiles *t, int i) { return (int *)((char *)t + TILES[i].off); }

void lg_attn_tune_key(lg_ctx_t *ctx, const struct lg_attn_params *p, struct lg_tune_key *k)
{
    memset(k, 0, sizeof *k);
    snprintf(k->op, sizeof k->op, "attn");
    snprintf(k->shape, sizeof k->shape, "hq%d_hkv%d_d%d_%s", p->hq, p->hkv, p->head_dim,
             (p->flags & LG_ATTN_DETERMINISTIC) ? "det" : "atomic");
    k->tokens = 0;
    k->dtype = p->dtype;
    k->arch = lg_ctx_arch(ctx);
    snprintf(k->gpu, sizeof k->gpu, "%s", lg_ctx_device_name(ctx));
    k->sm_count = lg_ctx_sm_count(ctx);
}

void lg_attn_tiles_from_entry(const struct lg_tune_entry *e, struct lg_attn_tiles *t)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; e && i < NTILES; i++)
        *tile_ptr(t, i) = lg_tune_entry_param(e, TILES[i].name, 0);
}

void lg_attn_tiles_to_entry(const struct lg_attn_tiles *t, struct lg_tune_entry *e)
{
    struct lg_attn_tiles c = *t;
    e->nparams = 0;
    for (int i = 0; i < NTILES; i++)
        if (*tile_ptr(&c, i)) {
            snprintf(e->params[e->nparams].name, sizeof e->params[0].name, "%s", TILES[i].name);
            e->params[e->nparams++].value = *tile_ptr(&c, i);
        }
}

int lg_ops_attn_tuned_tiles(lg_ctx_t *ctx, const struct lg_attn_params *p, struct lg_attn_tiles *t)
{
    struct lg_tune_key k;
    lg_attn_tune_key(ctx, p, &k);
    const struct lg_tune_entry *e = lg_tune_lookup_at(&k, 0, ctx); /* the generated backend's (attention.c) */
    lg_attn_tiles_from_entry(e, t);
    return e != NULL;
}
