/* regroup.c: the last step of filling a bin (fill.c). Pacing decides how many tokens each global
 * batch gives the bin (its urgent share), and the shares are taken longest sample first; nearly all of a bin is
 * filled that way, and what is left (~3% of C on average) is room that no single sample fits. Measured on the
 * target traces: no sample of any batch that may run fits the room of ~40% of the bins.
 *
 * The room often closes when a batch gives a different subset of its samples. So the bin is re-chosen as a
 * group knapsack: each batch that may run (on pace or early) is a group; its options are the subsets of (its
 * samples in the bin + its unplaced ones) that give at least as many tokens as it already gives, so no batch
 * falls behind its pace. A bitset over the room finds the fullest combination, and the samples are swapped.
 * For each option sum, the subset with the fewest samples is kept: longer samples go in, the short ones that
 * later bins need stay in the pool. Filling bins to the brim with any subset at all (no per-batch minimum)
 * was tried and is much worse: batches finish early, their successors wait S slots, and later bins starve
 * (docs/perf.md). */
#include "sched_pack.h"
#include "lg_base.h"

#include <stdlib.h>
#include <string.h>

#define RG_ITEMS 12                /* candidate samples per batch: 4096 subsets */
#define RG_WORDS (LG_SCHED_RG_ROOM / 64 + 1)

struct lg_rg_group {
    size_t b;
    uint32_t k[RG_ITEMS], n;
    uint32_t base;                       /* tokens the bin holds from b: the least any option gives */
    uint16_t mask[LG_SCHED_RG_ROOM + 1]; /* by tokens above base: the subset, or NONE */
    uint32_t sums[1u << RG_ITEMS];       /* scratch: every subset's tokens */
};

struct lg_sched_rg {
    struct lg_rg_group *g;       /* [A] */
    uint64_t (*reach)[RG_WORDS]; /* [A + 1]: the sums the first i groups reach */
    uint16_t *pick;              /* [A] */
};

#define NONE 0xffffu

enum lg_status lg_sched_pk_regroup_init(struct lg_sched_pk *p)
{
    p->rg = calloc(1, sizeof *p->rg);
    if (!p->rg)
        return lg_fail(LG_ERR_OOM, "plan: out of memory");
    size_t ng = (size_t)(p->A < p->kcand ? p->A : p->kcand); /* groups: the slot's candidates at most */
    p->rg->g = malloc(ng * sizeof *p->rg->g);
    p->rg->reach = malloc((ng + 1) * sizeof *p->rg->reach);
    p->rg->pick = malloc(ng * sizeof *p->rg->pick);
    if (!p->rg->g || !p->rg->reach || !p->rg->pick)
        return lg_fail(LG_ERR_OOM, "plan: out of memory");
    return LG_OK;
}

void lg_sched_pk_regroup_free(struct lg_sched_pk *p)
{
    if (p->rg) {
        free(p->rg->g);
        free(p->rg->reach);
        free(p->rg->pick);
        free(p->rg);
    }
}

/* Batch b as a group: its samples in the bin, then unplaced ones (longest first) that could fit. 0 when it
 * holds more samples in the bin than a group can take (it then stays as it is). */
static int group_of(const struct lg_sched_pk *p, size_t b, uint32_t room, struct lg_rg_group *g)
{
    g->b = b;
    g->n = 0;
    g->base = 0;
    for (size_t i = 0; i < p->ncur; i++)
        if (lg_sched_pk_batch_of(p, p->cur[i]) == b) {
            if (g->n == RG_ITEMS)
                return 0;
            g->k[g->n++] = p->cur[i];
            g->base += p->it[p->cur[i]].len;
        }
    const struct lg_sched_pk_batch *bt = &p->bt[b];
    for (uint32_t k = bt->first; k < bt->first + bt->n && g->n < RG_ITEMS; k++)
        if (p->it[k].bin < 0 && p->it[k].len <= g->base + room)
            g->k[g->n++] = k;
    return 1;
}

/* For each number of tokens above base up to room, the subset with the fewest samples. */
static void options(const struct lg_sched_pk *p, struct lg_rg_group *g, uint32_t room)
{
    for (uint32_t e = 0; e <= room; e++)
        g->mask[e] = NONE;
    uint32_t *sums = g->sums;
    sums[0] = 0;
    for (uint32_t m = 1; m < (1u << g->n); m++) /* a subset's sum: one sample more than a smaller subset */
        sums[m] = sums[m & (m - 1)] + p->it[g->k[__builtin_ctz(m)]].len;
    for (uint32_t m = 0; m < (1u << g->n); m++) {
        uint32_t sum = sums[m];
        if (sum < g->base || sum - g->base > room)
            continue;
        uint32_t e = sum - g->base;
        if (g->mask[e] == NONE || __builtin_popcount(m) < __builtin_popcount(g->mask[e]))
            g->mask[e] = (uint16_t)m;
    }
}

/* out = the sums in `in` plus each option's tokens, up to room. */
static void knap_step(const uint64_t *in, uint64_t *out, const struct lg_rg_group *g, uint32_t room)
{
    uint32_t words = room / 64 + 1, tail = room & 63;
    memset(out, 0, words * sizeof *out);
    for (uint32_t e = 0; e <= room; e++) {
        if (g->mask[e] == NONE)
            continue;
        uint32_t sw = e >> 6, sb = e & 63;
        for (uint32_t j = sw; j < words; j++) {
            uint64_t v = in[j - sw] << sb;
            if (sb && j > sw)
                v |= in[j - sw - 1] >> (64 - sb);
            out[j] |= v;
        }
    }
    out[words - 1] &= tail == 63 ? ~0ull : (2ull << tail) - 1;
}

static int has(const uint64_t *r, uint32_t s) { return (int)(r[s >> 6] >> (s & 63) & 1); }

/* Swaps in the chosen subsets, unless the bin would cost more than a lone sample of tau tokens. That is
 * looser than the filling's limit (1.03 x a tau-token bin at the mean cost per token): a bin of one long
 * sample and a short one is no dearer than the long-sample bins every plan has, and the smoothing gathers
 * those into runs. With the filling's limit the regroup gains 2 microbatches fewer on the target traces. */
static void apply(struct lg_sched_pk *p, size_t bi, const struct lg_rg_group *g, int ng, const uint16_t *pick)
{
    struct lg_sched_pk_bin *bn = &p->bin[bi];
    double cost = bn->cost;
    for (int i = 0; i < ng; i++)
        for (uint32_t j = 0; j < g[i].n; j++)
            cost += ((pick[i] >> j & 1) - (p->it[g[i].k[j]].bin >= 0)) * p->it[g[i].k[j]].cost;
    if (!p->tokens_only && cost > p->klim_max && cost > bn->cost)
        return;
    for (int i = 0; i < ng; i++)
        for (uint32_t j = 0; j < g[i].n; j++)
            if (p->it[g[i].k[j]].bin >= 0 && !(pick[i] >> j & 1))
                lg_sched_pk_unplace(p, bi, g[i].k[j]);
    for (int i = 0; i < ng; i++)
        for (uint32_t j = 0; j < g[i].n; j++)
            if (p->it[g[i].k[j]].bin < 0 && (pick[i] >> j & 1))
                lg_sched_pk_place(p, bi, g[i].b, g[i].k[j]);
}

void lg_sched_pk_regroup(struct lg_sched_pk *p, size_t bi, long t)
{
    const struct lg_sched_pk_bin *bn = &p->bin[bi];
    if (bn->n == 0 || bn->tokens >= p->tau || p->tau - bn->tokens > LG_SCHED_RG_ROOM)
        return;
    uint32_t room = p->tau - bn->tokens;
    struct lg_rg_group *g = p->rg->g;
    uint64_t(*reach)[RG_WORDS] = p->rg->reach;
    int ng = 0;
    for (int i = 0; i < p->ncand; i++) {
        size_t b;
        if (lg_sched_pk_eligible(p, p->cand[i], t, 1, &b) && group_of(p, b, room, &g[ng]))
            options(p, &g[ng++], room);
    }
    memset(reach[0], 0, sizeof reach[0]);
    reach[0][0] = 1;
    for (int i = 0; i < ng; i++)
        knap_step(reach[i], reach[i + 1], &g[i], room);
    uint32_t best = room;
    while (best > 0 && !has(reach[ng], best))
        best--;
    if (best == 0)
        return;
    uint16_t *pick = p->rg->pick;
    for (int i = ng - 1; i >= 0; i--) { /* back through the groups: any option that leaves a reachable rest */
        uint32_t e = 0;
        while (g[i].mask[e] == NONE || !has(reach[i], best - e))
            e++;
        pick[i] = g[i].mask[e];
        best -= e;
    }
    apply(p, bi, g, ng, pick);
}
