/* lora_tune.c: FusedLoRA and the tuning database: the key a layer is tuned and looked up under, its tiles as
 * an entry's named parameters, and the arch heuristic used where no entry matches. lora.c consults the process
 * database (lg_tune_default) once per token bucket unless the caller chose the tiles; the tuner
 * (runtime/tuner/) writes entries through the same names, so the two cannot drift apart.
 *
 * The arch heuristic: the generator's default of each tiled kernel, unless the arch's limits say it cannot run
 * there (lg_tune_space's rules: the dY kernel's three stages at rank 96 or 128 need more shared memory than an
 * sm_89 block has); then the nearest variant that can (fewest fields changed). Worked out once per (kernel,
 * arch) per process. */
#include "lora_tune.h"
#include "lg_base.h"
#include "lg_tune.h"
#include "common/lg_philox.h"

#include <pthread.h>
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

int lg_lora_tune_lookup(lg_ctx_t *ctx, const struct lg_lora_params *p, const struct lg_kernel_cfg plan[LG_SLOT_COUNT],
                        int64_t n, struct lg_lora_tiles *t)
{
    struct lg_tune_key k;
    lg_lora_tune_key(ctx, p, n, &k);
    const struct lg_tune_entry *e = lg_tune_lookup_at(&k, n, ctx);
    lg_lora_tiles_from_entry(e, t);
    /* an entry from another build could hold an index set_tiles refuses: the heuristic instead */
    if (t->fwd_algo < 0 || t->fwd_algo >= 8 || t->dx_algo < 0 || t->dx_algo >= 8)
        e = NULL;
    if (!e)
        lg_lora_tune_arch_tiles(ctx, plan, t);
    return k.tokens;
}

/* ---- the arch heuristic ---- */

struct group {
    enum lg_layer_slot slot;
    const char *fields[5];
    const char *tiles[5];
};

static const struct group GROUPS[] = {
    {LG_SLOT_DOWN, {"wm", "wk", "mt", "u", "minb"}, {"down_wm", "down_wk", "down_mt", "down_u", "down_minb"}},
    {LG_SLOT_DY, {"nct", "st", "minb"}, {"dy_nct", "dy_st", "dy_minb"}},
    {LG_SLOT_DA_DX_TAIL, {"minb"}, {"da_minb"}},
};
#define NGROUPS ((int)(sizeof GROUPS / sizeof GROUPS[0]))

static int tile_index(const char *name)
{
    for (int i = 0; i < NTILES; i++)
        if (!strcmp(TILES[i].name, name))
            return i;
    return -1;
}

/* Process-wide memo: (kernel configuration, arch) -> the values of the group's fields to use (0: default). */
struct memo {
    struct lg_kernel_cfg cfg;
    int arch;
    int vals[5];
};
static pthread_mutex_t memo_mu = PTHREAD_MUTEX_INITIALIZER;
static struct memo memo[128];
static int nmemo;

static void group_fallback(lg_ctx_t *ctx, const struct group *g, const struct lg_kernel_cfg *base, int vals[5])
{
    memset(vals, 0, 5 * sizeof *vals);
    unsigned vary = 0;
    for (int f = 0; f < 5 && g->fields[f]; f++)
        vary |= lg_tune_field_bit(g->fields[f]);
    struct lg_tune_cand *c;
    int n;
    /* the default alone first: the whole space only where it breaks a rule */
    if (lg_tune_space(lg_ctx_gen(ctx), base, 0, lg_ctx_arch(ctx), NULL, &c, &n) != LG_OK) {
        lg_clear_error(); /* no limits table for this arch: the defaults, as before */
        return;
    }
    int fine = !c[0].why[0];
    free(c);
    if (fine || lg_tune_space(lg_ctx_gen(ctx), base, vary, lg_ctx_arch(ctx), NULL, &c, &n) != LG_OK) {
        lg_clear_error();
        return;
    }
    if (c[0].why[0]) /* the default breaks a rule of this arch */
        for (int i = 1; i < n; i++)
            if (!c[i].pruned) {
                int nf;
                const struct lg_kernel_field *kf = lg_kernel_fields(&nf);
                for (int f = 0; f < 5 && g->fields[f]; f++)
                    for (int k = 0; k < nf; k++)
                        if (!strcmp(kf[k].name, g->fields[f]))
                            vals[f] = lg_kernel_cfg_get(&c[i].cfg, &kf[k]);
                break;
            }
    free(c);
}

void lg_lora_tune_arch_tiles(lg_ctx_t *ctx, const struct lg_kernel_cfg plan[LG_SLOT_COUNT], struct lg_lora_tiles *t)
{
    memset(t, 0, sizeof *t);
    const int arch = lg_ctx_arch(ctx);
    for (int gi = 0; gi < NGROUPS; gi++) {
        const struct group *g = &GROUPS[gi];
        int vals[5], found = 0;
        pthread_mutex_lock(&memo_mu);
        for (int i = 0; i < nmemo && !found; i++)
            if (memo[i].arch == arch && !memcmp(&memo[i].cfg, &plan[g->slot], sizeof memo[i].cfg))
                memcpy(vals, memo[i].vals, sizeof vals), found = 1;
        pthread_mutex_unlock(&memo_mu);
        if (!found) {
            group_fallback(ctx, g, &plan[g->slot], vals);
            pthread_mutex_lock(&memo_mu);
            if (nmemo < (int)(sizeof memo / sizeof memo[0])) {
                memo[nmemo].cfg = plan[g->slot], memo[nmemo].arch = arch;
                memcpy(memo[nmemo++].vals, vals, sizeof vals);
            }
            pthread_mutex_unlock(&memo_mu);
        }
        for (int f = 0; f < 5 && g->fields[f]; f++) {
            int ti = tile_index(g->tiles[f]);
            if (ti >= 0 && vals[f])
                *tile_ptr(t, ti) = vals[f];
        }
    }
}

enum lg_status lg_lora_arch_tiles(lg_ctx_t *ctx, const struct lg_lora_params *p, struct lg_lora_tiles *t)
{
    struct lg_kernel_cfg plan[LG_SLOT_COUNT];
    const double drop = lg_dropout_thresh16(p->dropout) ? p->dropout : 0.0;
    enum lg_status st = lg_gen_layer_kernels(lg_ctx_gen(ctx), p->dtype, p->rank, drop, plan);
    if (st != LG_OK)
        return st;
    lg_lora_tune_arch_tiles(ctx, plan, t);
    return LG_OK;
}
