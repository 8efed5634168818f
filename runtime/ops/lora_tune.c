/* lora_tune.c: FusedLoRA and the tuning database: the key a layer is tuned and looked up under, and its tiles
 * as an entry's named parameters. lora.c consults the process database (lg_tune_default) once per token
 * bucket unless the caller chose the tiles; the tuner (runtime/tuner/) writes entries through the same names,
 * so the two cannot drift apart. */
#include "lora_tune.h"
#include "lg_base.h"
#include "lg_tune.h"
#include "common/lg_philox.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    size_t off;
} TILES[] = {
#define T(f) {#f, offsetof(struct lg_lora_tiles, f)}
    T(down_wm), T(down_wk), T(down_mt), T(down_u), T(dy_nct), T(dy_st),
    T(down_minb), T(dy_minb), T(da_minb), T(fwd_algo), T(dx_algo),
#undef T
};
#define NTILES ((int)(sizeof TILES / sizeof TILES[0]))
_Static_assert(sizeof TILES / sizeof TILES[0] <= LG_TUNE_MAX_PARAMS, "an entry holds every tile");

static int *tile_ptr(struct lg_lora_tiles *t, int i) { return (int *)((char *)t + TILES[i].off); }

void lg_lora_tune_key(lg_ctx_t *ctx, const struct lg_lora_params *p, int64_t n, struct lg_tune_key *k)
{
    memset(k, 0, sizeof *k);
    snprintf(k->op, sizeof k->op, "lora");
    /* the kernels follow the quantised dropout rate: a rate that rounds to no mask is p0 */
    int drop = lg_dropout_thresh16(p->dropout) != 0;
    snprintf(k->shape, sizeof k->shape, "k%lld_m%lld_r%d_p%d", (long long)p->in_features,
             (long long)p->out_features, p->rank, drop);
    k->tokens = lg_tune_bucket(n);
    k->dtype = p->dtype;
    k->arch = lg_ctx_arch(ctx);
    snprintf(k->gpu, sizeof k->gpu, "%s", lg_ctx_device_name(ctx));
    k->sm_count = lg_ctx_sm_count(ctx);
}

void lg_lora_tiles_from_entry(const struct lg_tune_entry *e, struct lg_lora_tiles *t)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; e && i < NTILES; i++)
        *tile_ptr(t, i) = lg_tune_entry_param(e, TILES[i].name, 0);
}

void lg_lora_tiles_to_entry(const struct lg_lora_tiles *t, struct lg_tune_entry *e)
{
    struct lg_lora_tiles c = *t;
    e->nparams = 0;
    for (int i = 0; i < NTILES; i++)
        if (*tile_ptr(&c, i)) {
            snprintf(e->params[e->nparams].name, sizeof e->params[0].name, "%s", TILES[i].name);
            e->params[e->nparams++].value = *tile_ptr(&c, i);
        }
}

int lg_lora_tune_bucket_same(int bucket, int64_t n) { return bucket && lg_tune_bucket(n) == bucket; }

int lg_lora_tune_lookup(lg_ctx_t *ctx, const struct lg_lora_params *p, int64_t n, struct lg_lora_tiles *t)
{
    struct lg_tune_key k;
    lg_lora_tune_key(ctx, p, n, &k);
    const struct lg_tune_entry *e = lg_tune_lookup(&k);
    lg_lora_tiles_from_entry(e, t);
    /* an entry from another build could hold an index set_tiles refuses: keep the defaults for it */
    if (t->fwd_algo < 0 || t->fwd_algo >= 8 || t->dx_algo < 0 || t->dx_algo >= 8)
        memset(t, 0, sizeof *t);
    return k.tokens;
}
