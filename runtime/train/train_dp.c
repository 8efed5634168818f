/* train_dp.c: data parallelism. Every rank holds the whole model and every adapter; data-parallel rank d runs
 * the plan's microbatches of rank d, in their order. An adapter's gradients are all-reduced (summed) when every
 * rank has run its share of the global batch, and then the same optimizer step runs on every rank, so the
 * adapters stay identical everywhere (the sum is rank 0's bytes on every rank).
 *
 * The all-reduces are collectives: every rank must issue them in the same order. The order is computed from
 * the plan alone, identically on every rank: batch (a, g) is ready on rank d after its last microbatch of (a, g)
 * there (at once when it has none); batches are sorted by the latest of those positions over the ranks (a
 * batch never before the adapter's previous one), and each rank issues each all-reduce at the first position
 * that is both past its own share and not before the all-reduce ahead of it. A rank that reaches a microbatch
 * of batch g + 1 before g's all-reduce would wait for a step that cannot come: such a plan is rejected before
 * the epoch starts, naming the rank and the microbatch. The wait itself is the all-reduce: a rank that is done
 * with its share blocks in it until the slowest rank has run its part. */
#include "train_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct key {
    size_t key;
    int adapter;
    size_t batch;
    size_t k; /* index in the flattened (adapter, batch) list */
};

static int by_key(const void *x, const void *y)
{
    const struct key *a = x, *b = y;
    if (a->key != b->key)
        return a->key < b->key ? -1 : 1;
    if (a->adapter != b->adapter)
        return a->adapter < b->adapter ? -1 : 1;
    return a->batch < b->batch ? -1 : a->batch > b->batch;
}

struct build {
    int D;
    size_t K, nmb;
    size_t *off;         /* [nad + 1]: first flattened index of each adapter */
    size_t **loc;        /* [D][cnt]: plan indices per rank, in position order */
    size_t *cnt;
    size_t *ready;       /* [D * K] local position after the rank's last microbatch of the batch (0: none) */
    size_t *first;       /* [D * K] local position of the rank's first microbatch of the batch (SIZE_MAX: none) */
    size_t *first_mb;    /* [D * K] its plan index */
    struct key *keys;    /* [K] */
};

static void build_free(struct build *b)
{
    for (int d = 0; b->loc && d < b->D; d++)
        free(b->loc[d]);
    free(b->loc);
    free(b->cnt);
    free(b->off);
    free(b->ready);
    free(b->first);
    free(b->first_mb);
    free(b->keys);
}

static const lg_plan_t *sort_plan; /* qsort has no user pointer; the trainer is single-threaded */
static int by_pos(const void *x, const void *y)
{
    struct lg_mb_view a, b;
    lg_plan_mb(sort_plan, *(const size_t *)x, &a);
    lg_plan_mb(sort_plan, *(const size_t *)y, &b);
    return a.pos < b.pos ? -1 : a.pos > b.pos;
}

/* Each rank's microbatches in position order, and where each batch starts and ends on each rank. */
static enum lg_status gather(struct lg_trainer *tr, struct build *b)
{
    b->D = lg_plan_ranks(tr->plan);
    b->nmb = lg_plan_mb_count(tr->plan);
    b->off = calloc((size_t)tr->nad + 1, sizeof *b->off);
    b->loc = calloc((size_t)b->D, sizeof *b->loc);
    b->cnt = calloc((size_t)b->D, sizeof *b->cnt);
    if (!b->off || !b->loc || !b->cnt)
        return lg_fail(LG_ERR_OOM, "trainer: out of memory");
    for (int a = 0; a < tr->nad; a++)
        b->off[a + 1] = b->off[a] + tr->ad[a].nbatches;
    b->K = b->off[tr->nad];
    for (int d = 0; d < b->D; d++)
        if (!(b->loc[d] = malloc((b->nmb + 1) * sizeof **b->loc)))
            return lg_fail(LG_ERR_OOM, "trainer: out of memory");
    for (size_t i = 0; i < b->nmb; i++) {
        struct lg_mb_view v;
        enum lg_status s = lg_plan_mb(tr->plan, i, &v);
        if (s != LG_OK)
            return s;
        if (v.rank < 0 || v.rank >= b->D)
            return lg_fail(LG_ERR_INTERNAL, "plan: microbatch %zu has rank %d of %d", i, v.rank, b->D);
        b->loc[v.rank][b->cnt[v.rank]++] = i;
    }
    sort_plan = tr->plan;
    for (int d = 0; d < b->D; d++)
        qsort(b->loc[d], b->cnt[d], sizeof **b->loc, by_pos);
    size_t DK = (size_t)b->D * b->K + 1;
    b->ready = calloc(DK, sizeof *b->ready);
    b->first = malloc(DK * sizeof *b->first);
    b->first_mb = calloc(DK, sizeof *b->first_mb);
    b->keys = calloc(b->K + 1, sizeof *b->keys);
    if (!b->ready || !b->first || !b->first_mb || !b->keys)
        return lg_fail(LG_ERR_OOM, "trainer: out of memory");
    for (size_t k = 0; k < DK; k++)
        b->first[k] = SIZE_MAX;
    for (int d = 0; d < b->D; d++)
        for (size_t p = 0; p < b->cnt[d]; p++) {
            struct lg_mb_view v;
            lg_plan_mb(tr->plan, b->loc[d][p], &v);
            for (size_t j = 0; j < v.nseg; j++) {
                struct lg_seg_view sv;
                enum lg_status s = lg_plan_seg(tr->plan, b->loc[d][p], j, &sv);
                if (s != LG_OK)
                    return s;
                if (sv.batch >= tr->ad[sv.adapter].nbatches)
                    return lg_fail(LG_ERR_INTERNAL, "plan: batch %zu of adapter %d out of range", sv.batch,
                                   sv.adapter);
                size_t k = (size_t)d * b->K + b->off[sv.adapter] + sv.batch;
                b->ready[k] = p + 1;
                if (b->first[k] == SIZE_MAX) {
                    b->first[k] = p;
                    b->first_mb[k] = b->loc[d][p];
                }
            }
        }
    return LG_OK;
}

/* The global order of the all-reduces, and this rank's position for each; rejects a plan whose order a rank
 * cannot follow. */
static enum lg_status schedule(struct lg_trainer *tr, struct build *b, int my)
{
    for (int a = 0; a < tr->nad; a++)
        for (size_t g = 0; g < tr->ad[a].nbatches; g++) {
            size_t k = b->off[a] + g, key = 0;
            for (int d = 0; d < b->D; d++)
                if (b->ready[(size_t)d * b->K + k] > key)
                    key = b->ready[(size_t)d * b->K + k];
            if (g && b->keys[k - 1].key > key)
                key = b->keys[k - 1].key;
            b->keys[k] = (struct key){key, a, g, k};
        }
    qsort(b->keys, b->K, sizeof *b->keys, by_key);
    struct lg_dp_sched *ds = &tr->dps;
    free(ds->order);
    free(ds->steps);
    memset(ds, 0, sizeof *ds);
    ds->steps = malloc((b->K + 1) * sizeof *ds->steps);
    ds->order = malloc((b->cnt[my] + 1) * sizeof *ds->order);
    size_t *ip = calloc((size_t)b->D, sizeof *ip);
    if (!ds->steps || !ds->order || !ip) {
        free(ip);
        return lg_fail(LG_ERR_OOM, "trainer: out of memory");
    }
    memcpy(ds->order, b->loc[my], b->cnt[my] * sizeof *ds->order);
    ds->norder = b->cnt[my];
    enum lg_status s = LG_OK;
    for (size_t q = 0; q < b->K && s == LG_OK; q++) {
        const struct key *e = &b->keys[q];
        const struct lg_ad_state *a = &tr->ad[e->adapter];
        for (int d = 0; d < b->D && s == LG_OK; d++) {
            size_t r = b->ready[(size_t)d * b->K + e->k];
            if (r > ip[d])
                ip[d] = r;
            size_t nk = (size_t)d * b->K + e->k + 1, need = e->batch + 1 < a->nbatches ? b->first[nk] : SIZE_MAX;
            if (ip[d] > need)
                s = lg_fail(LG_ERR_INVALID, "plan: epoch %d: data-parallel rank %d would run microbatch %zu (batch "
                            "%zu of adapter '%s') before batch %zu's gradients are all-reduced: the ranks all-reduce "
                            "in one order, which this plan's order on rank %d cannot follow, so the run would "
                            "deadlock. Use a plan built for data_parallel %d by this scheduler", tr->epoch + 1, d,
                            b->first_mb[nk], e->batch + 1, a->cfg->name, e->batch, d, b->D);
        }
        ds->steps[ds->nsteps++] = (struct lg_dp_step){e->adapter, e->batch, ip[my]};
    }
    free(ip);
    return s;
}

enum lg_status lg_dp_build(struct lg_trainer *tr)
{
    struct build b;
    memset(&b, 0, sizeof b);
    enum lg_status s = gather(tr, &b);
    if (s == LG_OK && b.D != tr->dp)
        s = lg_fail(LG_ERR_INTERNAL, "plan: %d data-parallel ranks, the run has %d", b.D, tr->dp);
    if (s == LG_OK)
        s = schedule(tr, &b, tr->dp_rank);
    build_free(&b);
    tr->dps.next = 0;
    return s;
}

void lg_dp_free(struct lg_trainer *tr)
{
    if (tr->dp_scratch && tr->be)
        tr->be->ops->release(tr->be, tr->dp_scratch);
    tr->dp_scratch = 0;
    tr->dp_scratch_n = 0;
    free(tr->dps.order);
    free(tr->dps.steps);
    memset(&tr->dps, 0, sizeof tr->dps);
}

/* Sums adapter a's gradients and its batch loss over the ranks, one all-reduce for all of the adapter's
 * tensors. */
enum lg_status lg_dp_reduce(struct lg_trainer *tr, struct lg_ad_state *a)
{
    lg_backend_t *be = tr->be;
    enum lg_status s = be->ops->sync(be);
    if (s != LG_OK)
        return s;
    /* one all-reduce of the tensors packed in backend memory, where the transport reads that memory: NCCL on
     * the GPU, TCP on the CPU backend (whose memory is the host's); else (the GPU over TCP) through the host */
    int packed = lg_comm_get_transport(tr->comm) == LG_COMM_NCCL || !strcmp(be->ops->name, "cpu");
    if (packed) {
        size_t n = 0, at = 0;
        for (int i = 0; i < 2 * a->nt; i++)
            n += (size_t)a->opt[i].n;
        if (n > tr->dp_scratch_n) {
            if (tr->dp_scratch)
                be->ops->release(be, tr->dp_scratch);
            tr->dp_scratch = 0;
            tr->dp_scratch_n = 0;
            if ((s = be->ops->alloc(be, n * sizeof(float), &tr->dp_scratch)) != LG_OK)
                return lg_fail_wrap(s, "the all-reduce buffer of adapter '%s': ", a->cfg->name);
            tr->dp_scratch_n = n;
        }
        for (int i = 0; s == LG_OK && i < 2 * a->nt; at += (size_t)a->opt[i].n, i++)
            s = be->ops->copy(be, tr->dp_scratch + at * sizeof(float), a->opt[i].g, (size_t)a->opt[i].n * sizeof(float));
        if (s == LG_OK)
            s = be->ops->sync(be);
        if (s == LG_OK)
            s = lg_comm_allreduce_f32(tr->comm, (float *)(uintptr_t)tr->dp_scratch, n);
        at = 0;
        for (int i = 0; s == LG_OK && i < 2 * a->nt; at += (size_t)a->opt[i].n, i++)
            s = be->ops->copy(be, a->opt[i].g, tr->dp_scratch + at * sizeof(float), (size_t)a->opt[i].n * sizeof(float));
    } else {
        size_t n = 0;
        for (int i = 0; i < 2 * a->nt; i++)
            n += (size_t)a->opt[i].n;
        float *buf = malloc((n + 1) * sizeof *buf);
        if (!buf)
            return lg_fail(LG_ERR_OOM, "trainer: out of memory for the gradients of adapter '%s'", a->cfg->name);
        size_t at = 0;
        for (int i = 0; s == LG_OK && i < 2 * a->nt; at += (size_t)a->opt[i].n, i++)
            s = be->ops->download(be, buf + at, a->opt[i].g, (size_t)a->opt[i].n * sizeof *buf);
        if (s == LG_OK)
            s = lg_comm_allreduce_f32(tr->comm, buf, n);
        at = 0;
        for (int i = 0; s == LG_OK && i < 2 * a->nt; at += (size_t)a->opt[i].n, i++)
            s = be->ops->upload(be, a->opt[i].g, buf + at, (size_t)a->opt[i].n * sizeof *buf);
        free(buf);
    }
    double v[2] = {a->batch_loss, lg_train_stop_wanted(tr)};
    if (s == LG_OK && (s = lg_comm_allreduce_host_f64(tr->comm, v, 2)) == LG_OK) {
        a->batch_loss = v[0];
        tr->stop_all |= v[1] > 0; /* a rank was asked to stop: all stop after this step, at the same place */
    }
    if (s != LG_OK)
        return lg_fail_wrap(s, "all-reduce of adapter '%s' batch %lld: ", a->cfg->name,
                            (long long)a->stepped_batches + 1);
    return LG_OK;
}
