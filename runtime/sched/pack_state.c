/* pack_state.c: the state of our planner (sched_pack.h) and the moves on it. Setting it up lays out each
 * global batch's items longest first, paces the batches' nominal starts over the window in proportion to
 * their tokens, and fixes the cost limits of a bin; the moves open a bin, place an item in it, take it back
 * out, and say which batch of an adapter may run in a slot. The slot loop (pack.c), the filling (fill.c) and the
 * regroup (regroup.c) all move items this way, so the counters (tokens and items left, open batches) cannot
 * disagree; this file calls none of them. */
#include "sched_pack.h"
#include "lg_base.h"

#include <math.h>
#include <stdlib.h>

static double item_cost(const struct lg_sched_pk *p, double len, int rank)
{
    const struct lg_costmodel *cm = &p->job->p.cost;
    if (p->tokens_only)
        return len;
    double lin = cm->token_us * len + cm->token_rank_us * len * rank, att = cm->attn_us * len * len;
    return (1 + cm->bwd_linear) * lin + (1 + cm->bwd_attn) * att;
}

static int cmp_len_desc(const void *x, const void *y)
{
    const struct lg_sched_pk_item *a = x, *b = y;
    if (a->len != b->len)
        return a->len < b->len ? 1 : -1;
    return (a->sample > b->sample) - (a->sample < b->sample);
}

static enum lg_status pk_alloc(struct lg_sched_pk *p)
{
    const lg_job_t *job = p->job;
    p->nit = p->nbt = 0;
    for (int a = 0; a < p->A; a++) {
        p->nit += job->ad[a].info.samples;
        p->nbt += job->ad[a].nbatches;
    }
    size_t A = (size_t)p->A;
    p->it = malloc((p->nit + 1) * sizeof *p->it);
    p->cur = malloc((p->nit + 1) * sizeof *p->cur);
    p->trade = malloc((p->nit + 1) * sizeof *p->trade);
    p->bt = malloc((p->nbt + 1) * sizeof *p->bt);
    p->bbase = malloc((A + 1) * sizeof *p->bbase);
    p->next = malloc(A * sizeof *p->next);
    p->ready = calloc(A, sizeof *p->ready);
    p->open = malloc(A * sizeof *p->open);
    p->rank_cost = calloc((size_t)p->D, sizeof *p->rank_cost);
    if (!p->it || !p->cur || !p->trade || !p->bt || !p->bbase || !p->next || !p->ready || !p->open || !p->rank_cost)
        return lg_fail(LG_ERR_OOM, "plan: out of memory");
    return LG_OK;
}

/* Items per batch, longest first; paced starts and deadlines; the cost limit of a bin. */
enum lg_status lg_sched_pk_init(struct lg_sched_pk *p)
{
    const lg_job_t *job = p->job;
    enum lg_status s = pk_alloc(p);
    if (s != LG_OK)
        return s;
    double tokens = 0, cost = 0;
    for (int a = 0; a < p->A; a++)
        for (size_t k = 0; k < job->ad[a].info.samples; k++) {
            double l = job->ad[a].len[job->ad[a].order[k]];
            tokens += l;
            cost += item_cost(p, l, job->ad[a].p.rank);
        }
    double slots = ceil(tokens / ((double)p->D * p->tau));
    size_t i = 0, b = 0;
    for (int a = 0; a < p->A; a++) {
        const struct lg_adapter *ad = &job->ad[a];
        p->bbase[a] = p->next[a] = b;
        p->open[a] = -1;
        double cum = 0, tot = (double)ad->info.tokens;
        for (size_t g = 0; g < ad->nbatches; g++, b++) {
            struct lg_sched_pk_batch *bt = &p->bt[b];
            *bt = (struct lg_sched_pk_batch){.a = a, .g = (uint32_t)g, .first = (uint32_t)i};
            for (size_t k = ad->batch_start[g]; k < ad->batch_start[g + 1]; k++, i++) {
                uint32_t smp = ad->order[k];
                p->it[i] = (struct lg_sched_pk_item){.sample = smp, .len = ad->len[smp], .b = (uint32_t)b, .bin = -1,
                                                     .cost = item_cost(p, ad->len[smp], ad->p.rank)};
                bt->tok_left += ad->len[smp];
            }
            bt->n = bt->left = (uint32_t)(i - bt->first);
            qsort(&p->it[bt->first], bt->n, sizeof *p->it, cmp_len_desc);
            bt->start_nom = slots * cum / tot;
            cum += (double)bt->tok_left;
            bt->deadline = g + 1 < ad->nbatches ? slots * cum / tot - p->S : slots - 1;
            bt->deadline = fmax(bt->deadline, bt->start_nom);
        }
    }
    p->bbase[p->A] = b;
    p->unplaced = i;
    /* a bin's cost limit: a target-sized bin at the job's mean cost per token, plus 3% */
    p->c0 = p->tokens_only ? 0 : 2 * job->p.cost.layer_us;
    p->klim = 1.03 * (p->c0 + p->tau * cost / tokens);
    /* the regroup's limit: a bin as dear as one target-long sample alone, the dearest bin any plan must have
     * (of the largest LoRA rank) */
    int rmax = 0;
    for (int a = 0; a < p->A; a++)
        rmax = job->ad[a].p.rank > rmax ? job->ad[a].p.rank : rmax;
    p->klim_max = p->c0 + item_cost(p, p->tau, rmax);
    if (p->klim_max < p->klim)
        p->klim_max = p->klim;
    return LG_OK;
}

enum lg_status lg_sched_pk_new_bin(struct lg_sched_pk *p, long slot)
{
    if (p->nbin == p->cap_bin) {
        size_t nc = p->cap_bin ? 2 * p->cap_bin : 256;
        struct lg_sched_pk_bin *nb = realloc(p->bin, nc * sizeof *nb);
        if (!nb)
            return lg_fail(LG_ERR_OOM, "plan: out of memory");
        p->bin = nb;
        p->cap_bin = nc;
    }
    p->bin[p->nbin++] = (struct lg_sched_pk_bin){.slot = slot, .cost = p->c0};
    return LG_OK;
}

void lg_sched_pk_free(struct lg_sched_pk *p)
{
    free(p->it);
    free(p->cur);
    free(p->trade);
    free(p->bt);
    free(p->bbase);
    free(p->next);
    free(p->ready);
    free(p->open);
    free(p->bin);
    free(p->rank_cost);
}

size_t lg_sched_pk_batch_of(const struct lg_sched_pk *p, uint32_t k) { return p->it[k].b; }

void lg_sched_pk_place(struct lg_sched_pk *p, size_t bi, size_t b, uint32_t k)
{
    struct lg_sched_pk_item *it = &p->it[k];
    struct lg_sched_pk_bin *bn = &p->bin[bi];
    struct lg_sched_pk_batch *bt = &p->bt[b];
    it->bin = (int)bi;
    bn->tokens += it->len;
    bn->cost += it->cost;
    bn->n++;
    bt->left--;
    bt->tok_left -= it->len;
    p->unplaced--;
    p->cur[p->ncur++] = k;
    if (p->open[bt->a] < 0) {
        p->open[bt->a] = (long)b;
        p->next[bt->a] = b + 1;
        bt->opened = p->t;
        lg_sched_pk_opened(p, bt->a);
    }
}

void lg_sched_pk_unplace(struct lg_sched_pk *p, size_t bi, uint32_t k)
{
    struct lg_sched_pk_item *it = &p->it[k];
    struct lg_sched_pk_bin *bn = &p->bin[bi];
    struct lg_sched_pk_batch *bt = &p->bt[lg_sched_pk_batch_of(p, k)];
    it->bin = -1;
    bn->tokens -= it->len;
    bn->cost -= it->cost;
    bn->n--;
    bt->left++;
    bt->tok_left += it->len;
    p->unplaced++;
    for (size_t i = 0; i < p->ncur; i++)
        if (p->cur[i] == k) {
            p->cur[i] = p->cur[--p->ncur];
            break;
        }
}

void lg_sched_pk_move(struct lg_sched_pk *p, uint32_t k, size_t bi)
{
    struct lg_sched_pk_item *it = &p->it[k];
    struct lg_sched_pk_bin *from = &p->bin[it->bin], *to = &p->bin[bi];
    from->tokens -= it->len;
    from->cost -= it->cost;
    from->n--;
    to->tokens += it->len;
    to->cost += it->cost;
    to->n++;
    it->bin = (int)bi;
}

int lg_sched_pk_eligible(const struct lg_sched_pk *p, int a, long t, int early, size_t *b)
{
    if (p->open[a] >= 0) {
        *b = (size_t)p->open[a];
        return 1;
    }
    if (p->next[a] >= p->bbase[a + 1] || p->ready[a] > t)
        return 0;
    *b = p->next[a];
    return early || p->no_pacing || p->bt[*b].start_nom <= (double)t;
}
