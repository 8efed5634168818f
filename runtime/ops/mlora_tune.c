/* mlora_tune.c: FusedMultiLoRA and the tuning database: the key a layer is tuned and looked up under, its tiles
 * as an entry's named parameters, and the arch heuristic where no entry matches (a generator default that
 * breaks the arch's rules, e.g. the dY pass's three stages at rank 96 or 128 on sm_86/sm_89, gets the nearest
 * variant that passes). mlora_run.c consults it once per token bucket unless the caller set tiles;
 * runtime/tuner/tuner_mlora.c writes entries through the same names. */
#include "mlora_internal.h"
#include "lg_base.h"
#include "lg_tune.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    size_t off;
} TILES[] = {
#define T(f) {#f, offsetof(struct lg_mlora_tiles, f)}
    T(down_wm), T(down_wk), T(down_mt), T(down_u), T(dy_nct), T(dy_st), T(expand_nct),
    T(down_minb), T(dy_minb), T(da_minb), T(fwd_algo), T(dx_algo), T(split),
#undef T
};
#define NTILES ((int)(sizeof TILES / sizeof TILES[0]))
_Static_assert(sizeof TILES / sizeof TILES[0] <= LG_TUNE_MAX_PARAMS, "an entry holds every tile");

static int *tile_ptr(struct lg_mlora_tiles *t, int i) { return (int *)((char *)t + TILES[i].off); }

static int any_dropout(const lg_mlora_t *l)
{
    for (int i = 0; i < l->nad * l->nmod; i++)
        if (l->hs[i].rank && l->hs[i].thresh16)
            return 1;
    return 0;
}

void lg_mlora_tune_key(const lg_mlora_t *l, int64_t n, struct lg_tune_key *k)
{
    memset(k, 0, sizeof *k);
    snprintf(k->op, sizeof k->op, "mlora");
    char ms[40] = "";
    size_t len = 0;
    for (int m = 0; m < l->nmod; m++)
        len += (size_t)snprintf(ms + len, sizeof ms - len, "%s%lld", m ? "x" : "", (long long)l->M[m]);
    snprintf(k->shape, sizeof k->shape, "k%lld_m%s_r%d_a%d_p%d", (long long)l->K, ms, l->R, l->nad, any_dropout(l));
    k->tokens = lg_tune_bucket(n);
    k->dtype = l->dtype;
    k->arch = lg_ctx_arch(l->ctx);
    snprintf(k->gpu, sizeof k->gpu, "%s", lg_ctx_device_name(l->ctx));
    k->sm_count = lg_ctx_sm_count(l->ctx);
}

void lg_mlora_tiles_from_entry(const struct lg_tune_entry *e, struct lg_mlora_tiles *t)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; e && i < NTILES; i++)
        *tile_ptr(t, i) = lg_tune_entry_param(e, TILES[i].name, 0);
}

void lg_mlora_tiles_to_entry(const struct lg_mlora_tiles *t, struct lg_tune_entry *e)
{
    struct lg_mlora_tiles c = *t;
    e->nparams = 0;
    for (int i = 0; i < NTILES; i++)
        if (*tile_ptr(&c, i)) {
            snprintf(e->params[e->nparams].name, sizeof e->params[0].name, "%s", TILES[i].name);
            e->params[e->nparams++].value = *tile_ptr(&c, i);
        }
}

void lg_mlora_get_tiles(const lg_mlora_t *l, struct lg_mlora_tiles *t) { *t = l->tiles; }

/* ---- the arch heuristic ---- */

struct group {
    enum lg_kernel_op op;
    const char *fields[5];
    const char *tiles[5];
};
static const struct group GROUPS[] = {
    {LG_OP_MLORA_DOWN, {"wm", "wk", "mt", "u", "minb"}, {"down_wm", "down_wk", "down_mt", "down_u", "down_minb"}},
    {LG_OP_MLORA_DY, {"nct", "st", "minb"}, {"dy_nct", "dy_st", "dy_minb"}},
    {LG_OP_MLORA_DA, {"minb"}, {"da_minb"}},
    {LG_OP_MLORA_EXPAND, {"nct"}, {"expand_nct"}},
};

static int tile_index(const char *name)
{
    for (int i = 0; i < NTILES; i++)
        if (!strcmp(TILES[i].name, name))
            return i;
    return -1;
}

/* The group's kernel as the layer requests it, at its largest shared-memory need (fused dA, with dropout). */
static struct lg_kernel_cfg base_cfg(const lg_mlora_t *l, enum lg_kernel_op op)
{
    struct lg_kernel_cfg c;
    memset(&c, 0, sizeof c);
    c.op = op, c.dtype = l->dtype, c.rank = l->R;
    if (op == LG_OP_MLORA_DOWN || op == LG_OP_MLORA_DA)
        c.nmod = l->nmod;
    if (op == LG_OP_MLORA_DA)
        c.fuse = 1, c.drop = 1;
    return c;
}

/* Process-wide memo: the heuristic depends on (rank, modules, dtype, arch) only, and a model has hundreds of
 * layers sharing a few of those. */
struct memo {
    int R, nmod, arch;
    enum lg_dtype dtype;
    struct lg_mlora_tiles t;
};
static pthread_mutex_t memo_mu = PTHREAD_MUTEX_INITIALIZER;
static struct memo memo[64];
static int nmemo;

static void arch_tiles_uncached(const lg_mlora_t *l, struct lg_mlora_tiles *t);

enum lg_status lg_mlora_arch_tiles(const lg_mlora_t *l, struct lg_mlora_tiles *t)
{
    const int arch = lg_ctx_arch(l->ctx);
    pthread_mutex_lock(&memo_mu);
    for (int i = 0; i < nmemo; i++)
        if (memo[i].R == l->R && memo[i].nmod == l->nmod && memo[i].arch == arch && memo[i].dtype == l->dtype) {
            *t = memo[i].t;
            pthread_mutex_unlock(&memo_mu);
            return LG_OK;
        }
    pthread_mutex_unlock(&memo_mu);
    arch_tiles_uncached(l, t);
    pthread_mutex_lock(&memo_mu);
    if (nmemo < (int)(sizeof memo / sizeof memo[0]))
        memo[nmemo++] = (struct memo){.R = l->R, .nmod = l->nmod, .arch = arch, .dtype = l->dtype, .t = *t};
    pthread_mutex_unlock(&memo_mu);
    return LG_OK;
}

static void arch_tiles_uncached(const lg_mlora_t *l, struct lg_mlora_tiles *t)
{
    memset(t, 0, sizeof *t);
    lg_gen_t *gen = lg_ctx_gen(l->ctx);
    const int arch = lg_ctx_arch(l->ctx);
    int nf;
    const struct lg_kernel_field *kf = lg_kernel_fields(&nf);
    for (size_t g = 0; g < sizeof GROUPS / sizeof GROUPS[0]; g++) {
        struct lg_kernel_cfg base = base_cfg(l, GROUPS[g].op);
        struct lg_tune_cand *c;
        int n;
        if (lg_tune_space(gen, &base, 0, arch, NULL, &c, &n) != LG_OK) {
            lg_clear_error(); /* no limits table for this arch: the defaults */
            return;
        }
        int fine = !c[0].why[0];
        free(c);
        if (fine)
            continue;
        unsigned vary = 0;
        for (int f = 0; f < 5 && GROUPS[g].fields[f]; f++)
            vary |= lg_tune_field_bit(GROUPS[g].fields[f]);
        if (lg_tune_space(gen, &base, vary, arch, NULL, &c, &n) != LG_OK) {
            lg_clear_error();
            continue;
        }
        for (int i = 1; i < n; i++)
            if (!c[i].pruned) {
                for (int f = 0; f < 5 && GROUPS[g].fields[f]; f++)
                    for (int k = 0; k < nf; k++)
                        if (!strcmp(kf[k].name, GROUPS[g].fields[f]) && tile_index(GROUPS[g].tiles[f]) >= 0)
                            *tile_ptr(t, tile_index(GROUPS[g].tiles[f])) = lg_kernel_cfg_get(&c[i].cfg, &kf[k]);
                break;
            }
        free(c);
    }
}

void lg_ops_mlora_consult(lg_mlora_t *l, int64_t n)
{
    if (l->tiles_set || (l->tuned_bucket && lg_tune_bucket(n) == l->tuned_bucket))
        return;
    struct lg_tune_key k;
    lg_mlora_tune_key(l, n, &k);
    const struct lg_tune_entry *e = lg_tune_lookup_at(&k, n, l->ctx);
    struct lg_mlora_tiles t;
    lg_mlora_tiles_from_entry(e, &t);
    if (t.fwd_algo < 0 || t.fwd_algo >= 8 || t.dx_algo < 0 || t.dx_algo >= 8 || t.split < 0 || t.split > 1)
        e = NULL; /* a value set_tiles refuses: the heuristic instead */
    if (e)
        l->tiles = t;
    else {
        if (!l->arch_done) { /* per layer, once: it depends on the layer, not on n */
            lg_mlora_arch_tiles(l, &l->arch_tiles);
            l->arch_done = 1;
        }
        l->tiles = l->arch_tiles;
    }
    l->tuned_bucket = k.tokens;
}

enum lg_status lg_ops_mlora_gemm(const lg_mlora_t *l, struct lg_gemm *g, CUstream stream)
{
    enum lg_status st = lg_blas_gemm(lg_ctx_blas(l->ctx), g, stream);
    if (st == LG_ERR_INVALID && g->algo_index > 0 && !l->tiles_set) {
        g->algo_index = 0;
        lg_clear_error();
        st = lg_blas_gemm(lg_ctx_blas(l->ctx), g, stream);
    }
    return st;
}
