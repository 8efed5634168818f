/* tuner_space.c: the candidates of one tile group of a descent, from the generator's pruned search space
 * (lg_tune_space), and the FusedLoRA and attention groups as the tuners walk them. Needs no GPU: `loragen tune
 * --dry-run` and CI list the same candidates the GPU tunes. */
#include "tuner_internal.h"
#include "lg_base.h"
#include "common/lg_philox.h"
#include "lg_mlora.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int *fld(void *tiles, size_t off) { return (int *)((char *)tiles + off); }

static int field_index(const char *name)
{
    int nf;
    const struct lg_kernel_field *kf = lg_kernel_fields(&nf);
    for (int k = 0; k < nf; k++)
        if (!strcmp(kf[k].name, name))
            return k;
    return -1;
}

enum lg_status lg_tuner_build_group(lg_gen_t *gen, int arch, const struct lg_tune_shape *shape,
                                    const struct lg_kernel_cfg *base_in, const struct lg_tuner_tgroup *g,
                                    const void *cur, size_t tsize, int max, void *cand, int *n,
                                    struct lg_tuner_space_info *info)
{
    int nf;
    const struct lg_kernel_field *kf = lg_kernel_fields(&nf);
    struct lg_kernel_cfg base = *base_in;
    unsigned vary = 0;
    int idx[5];
    for (int f = 0; f < 5 && g->fields[f]; f++) {
        if ((idx[f] = field_index(g->fields[f])) < 0)
            return lg_fail(LG_ERR_INTERNAL, "tuner: group %s names no field '%s'", g->name, g->fields[f]);
        vary |= 1u << idx[f];
        int v = *fld((void *)cur, g->off[f]);
        if (v)
            *(int *)((char *)&base + kf[idx[f]].offset) = v;
    }
    struct lg_tune_cand *c;
    int nc;
    enum lg_status st = lg_tune_space(gen, &base, vary, arch, shape, &c, &nc);
    if (st != LG_OK)
        return st;
    memcpy(cand, cur, tsize);
    int k = 1, pruned = 0;
    for (int i = 1; i < nc; i++) {
        if (c[i].pruned) {
            pruned++;
            continue;
        }
        if (k > max)
            continue;
        void *t = (char *)cand + (size_t)k * tsize;
        memcpy(t, cur, tsize);
        for (int f = 0; f < 5 && g->fields[f]; f++)
            *fld(t, g->off[f]) = lg_kernel_cfg_get(&c[i].cfg, &kf[idx[f]]);
        k++;
    }
    free(c);
    *n = k;
    if (info)
        *info = (struct lg_tuner_space_info){.variants = nc - 1, .pruned = pruned, .timed = k - 1};
    return LG_OK;
}

/* ---- FusedLoRA's groups ---- */

#define LT(f) offsetof(struct lg_lora_tiles, f)
static const struct lg_tuner_tgroup LORA_GROUPS[LG_TUNER_LORA_GROUPS] = {
    {"down", {"wm", "wk", "mt", "u", "minb"}, {LT(down_wm), LT(down_wk), LT(down_mt), LT(down_u), LT(down_minb)}},
    {"dy", {"nct", "st", "minb"}, {LT(dy_nct), LT(dy_st), LT(dy_minb)}},
    {"da", {"minb"}, {LT(da_minb)}},
};
static const enum lg_layer_slot LORA_SLOTS[LG_TUNER_LORA_GROUPS] = {LG_SLOT_DOWN, LG_SLOT_DY, LG_SLOT_DA_DX_TAIL};

const char *lg_tuner_lora_group_name(int g) { return g >= 0 && g < LG_TUNER_LORA_GROUPS ? LORA_GROUPS[g].name : "?"; }

enum lg_status lg_tuner_lora_group(lg_gen_t *gen, int arch, const struct lg_lora_params *p, int g,
                                   const struct lg_lora_tiles *cur, int max, struct lg_lora_tiles *cand, int *n,
                                   struct lg_tuner_space_info *info)
{
    if (g < 0 || g >= LG_TUNER_LORA_GROUPS)
        return lg_fail(LG_ERR_INVALID, "lg_tuner_lora_group: group %d is not 0..%d", g, LG_TUNER_LORA_GROUPS - 1);
    struct lg_kernel_cfg plan[LG_SLOT_COUNT];
    const double drop = lg_dropout_thresh16(p->dropout) ? p->dropout : 0.0;
    enum lg_status st = lg_gen_layer_kernels(gen, p->dtype, p->rank, drop, plan);
    if (st != LG_OK)
        return st;
    struct lg_tune_shape sh = {.k = p->in_features, .m = p->out_features};
    return lg_tuner_build_group(gen, arch, &sh, &plan[LORA_SLOTS[g]], &LORA_GROUPS[g], cur, sizeof *cur, max, cand,
                                n, info);
}

/* ---- attention's groups ---- */

#define AT(f) offsetof(struct lg_attn_tiles, f)
static const struct lg_tuner_tgroup ATTN_GROUPS[LG_TUNER_ATTN_GROUPS] = {
    {"fwd", {"bm", "bn", "nw", "st"}, {AT(fwd_bm), AT(fwd_bn), AT(fwd_nw), AT(fwd_st)}},
    {"dkv", {"bm", "nw", "st"}, {AT(dkv_bm), AT(dkv_nw), AT(dkv_st)}},
    {"dq", {"bm", "bn", "nw", "st"}, {AT(dq_bm), AT(dq_bn), AT(dq_nw), AT(dq_st)}},
};
static const enum lg_kernel_op ATTN_OPS[LG_TUNER_ATTN_GROUPS] = {LG_OP_ATTN_FWD, LG_OP_ATTN_BWD_DKV,
                                                                  LG_OP_ATTN_BWD_DQ};

const char *lg_tuner_attn_group_name(int g) { return g >= 0 && g < LG_TUNER_ATTN_GROUPS ? ATTN_GROUPS[g].name : "?"; }

int lg_tuner_attn_groups(const struct lg_attn_params *p)
{
    return (p->flags & LG_ATTN_DETERMINISTIC) ? 3 : 2; /* the atomic backward has no dQ pass */
}

enum lg_status lg_tuner_attn_group(lg_gen_t *gen, int arch, const struct lg_attn_params *p, int g,
                                   const struct lg_attn_tiles *cur, int max, struct lg_attn_tiles *cand, int *n,
                                   struct lg_tuner_space_info *info)
{
    if (g < 0 || g >= lg_tuner_attn_groups(p))
        return lg_fail(LG_ERR_INVALID, "lg_tuner_attn_group: group %d is not 0..%d", g, lg_tuner_attn_groups(p) - 1);
    struct lg_kernel_cfg base = {.op = ATTN_OPS[g], .dtype = p->dtype, .hd = p->head_dim,
                                 .atomic = ATTN_OPS[g] == LG_OP_ATTN_BWD_DKV && !(p->flags & LG_ATTN_DETERMINISTIC)};
    struct lg_tune_shape sh = {.head_dim = p->head_dim};
    return lg_tuner_build_group(gen, arch, &sh, &base, &ATTN_GROUPS[g], cur, sizeof *cur, max, cand, n, info);
}

/* ---- FusedMultiLoRA's groups ---- */

#define MT_(f) offsetof(struct lg_mlora_tiles, f)
static const struct lg_tuner_tgroup MLORA_GROUPS[LG_TUNER_MLORA_GROUPS] = {
    {"down", {"wm", "wk", "mt", "u", "minb"}, {MT_(down_wm), MT_(down_wk), MT_(down_mt), MT_(down_u), MT_(down_minb)}},
    {"dy", {"nct", "st", "minb"}, {MT_(dy_nct), MT_(dy_st), MT_(dy_minb)}},
    {"da", {"minb"}, {MT_(da_minb)}},
    {"expand", {"nct"}, {MT_(expand_nct)}},
};
static const enum lg_kernel_op MLORA_OPS[LG_TUNER_MLORA_GROUPS] = {LG_OP_MLORA_DOWN, LG_OP_MLORA_DY, LG_OP_MLORA_DA,
                                                                    LG_OP_MLORA_EXPAND};

const char *lg_tuner_mlora_group_name(int g)
{
    return g >= 0 && g < LG_TUNER_MLORA_GROUPS ? MLORA_GROUPS[g].name : "?";
}

/* The kernels' rank: the slots' rank rounded up to 8 (lg_mlora.h). */
static int kernel_rank(int r) { return (r + 7) / 8 * 8; }

enum lg_status lg_tuner_mlora_group(lg_gen_t *gen, int arch, const struct lg_tuner_mlora_shape *s, int g,
                                    const struct lg_mlora_tiles *cur, int max, struct lg_mlora_tiles *cand, int *n,
                                    struct lg_tuner_space_info *info)
{
    if (g < 0 || g >= LG_TUNER_MLORA_GROUPS)
        return lg_fail(LG_ERR_INVALID, "lg_tuner_mlora_group: group %d is not 0..%d", g, LG_TUNER_MLORA_GROUPS - 1);
    const enum lg_kernel_op op = MLORA_OPS[g];
    struct lg_kernel_cfg base = {.op = op, .dtype = s->dtype, .rank = kernel_rank(s->rank)};
    if (op == LG_OP_MLORA_DOWN || op == LG_OP_MLORA_DA)
        base.nmod = s->nmod;
    const int drop = lg_dropout_thresh16(s->dropout) != 0;
    if (op == LG_OP_MLORA_DOWN)
        base.drop = drop;
    if (op == LG_OP_MLORA_DA) /* the backend's layout: dS apart from dY, so the dA pass adds the dX correction */
        base.fuse = 1, base.drop = drop;
    int64_t mmin = s->out_features[0];
    for (int m = 1; m < s->nmod; m++)
        mmin = s->out_features[m] < mmin ? s->out_features[m] : mmin;
    struct lg_tune_shape sh = {.k = s->in_features, .m = mmin};
    return lg_tuner_build_group(gen, arch, &sh, &base, &MLORA_GROUPS[g], cur, sizeof *cur, max, cand, n, info);
}
