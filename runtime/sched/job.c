/* job.c: the job object: pipeline shape, capacity policy, cost model and the adapters with their
 * datasets cut into global batches. Adding an adapter applies the oversize policy and fixes which samples form
 * each global batch (dataset order, or a seeded shuffle), so the planners and the verifier agree on it;
 * lg_job_reshuffle re-forms the batches from another seed for the next epoch. */
#include "sched_internal.h"
#include "lg_base.h"

#include <stdlib.h>
#include <string.h>

struct lg_job_params lg_job_params_default(void)
{
    struct lg_job_params p = {
        .stages = 1, .data_parallel = 1, .pad_multiple = 16,
        .capacity_policy = LG_CAPACITY_FIXED, .capacity = 4096,
        .oversize = LG_OVERSIZE_ERROR,
    };
    struct lg_model_dims d = lg_model_dims_default();
    lg_costmodel_from_dims(&d, &p.cost);
    return p;
}

static enum lg_status check_params(const struct lg_job_params *p, uint32_t *cap)
{
    if (p->stages < 1 || p->stages > LG_SCHED_MAX_STAGES)
        return lg_fail(LG_ERR_INVALID, "pipeline.stages must be in 1..%d (got %d)", LG_SCHED_MAX_STAGES,
                       p->stages);
    if (p->data_parallel < 1)
        return lg_fail(LG_ERR_INVALID, "pipeline.data_parallel must be >= 1 (got %d)", p->data_parallel);
    if (p->pad_multiple < 1)
        return lg_fail(LG_ERR_INVALID, "batching.pad_multiple must be >= 1 (got %d)", p->pad_multiple);
    const struct lg_costmodel *c = &p->cost;
    if (c->layers < p->stages)
        return lg_fail(LG_ERR_INVALID, "the model has %d layers, fewer than the %d pipeline stages", c->layers,
                       p->stages);
    if (!(c->token_us >= 0) || !(c->attn_us >= 0) || !(c->layer_us >= 0) || !(c->token_rank_us >= 0) ||
        !(c->bwd_linear > 0) || !(c->bwd_attn > 0) || !(c->token_us + c->layer_us > 0))
        return lg_fail(LG_ERR_INVALID, "cost model: coefficients must be >= 0 (and not all zero), backward "
                                       "factors > 0");
    if (!(p->p2p_us >= 0) || !(p->optimizer_us >= 0))
        return lg_fail(LG_ERR_INVALID, "pipeline: p2p_us and optimizer_us must be >= 0");
    if (p->capacity_policy == LG_CAPACITY_FIXED) {
        if (p->capacity < 1)
            return lg_fail(LG_ERR_INVALID, "batching.capacity must be >= 1");
        if (p->capacity % (uint32_t)p->pad_multiple)
            return lg_fail(LG_ERR_INVALID, "batching.capacity %u is not a multiple of pad_multiple (%d)",
                           p->capacity, p->pad_multiple);
        *cap = p->capacity;
    } else if (p->capacity_policy == LG_CAPACITY_AUTO) {
        if (!(p->memory_budget_bytes > 0) || !(c->act_bytes > 0))
            return lg_fail(LG_ERR_INVALID, "capacity \"auto\" needs a memory budget and activation bytes per "
                                           "token");
        *cap = lg_sched_memory_capacity(p);
        if (*cap == 0)
            return lg_fail(LG_ERR_INVALID,
                           "batching.memory_budget_gb: %.3g GB holds no microbatch: %d in flight x %d layers x "
                           "%.0f bytes per token need more",
                           p->memory_budget_bytes / 1e9, p->stages, lg_sched_stage_layers(c, p->stages, 0),
                           c->act_bytes);
    } else {
        return lg_fail(LG_ERR_INVALID, "unknown capacity policy %d", (int)p->capacity_policy);
    }
    if (p->oversize < LG_OVERSIZE_ERROR || p->oversize > LG_OVERSIZE_SKIP)
        return lg_fail(LG_ERR_INVALID, "unknown oversize policy %d", (int)p->oversize);
    return LG_OK;
}

enum lg_status lg_job_init(const struct lg_job_params *p, lg_job_t **out)
{
    if (!p || !out)
        return lg_fail(LG_ERR_INVALID, "lg_job_init: null argument");
    uint32_t cap = 0;
    enum lg_status s = check_params(p, &cap);
    if (s != LG_OK)
        return s;
    lg_job_t *job = calloc(1, sizeof *job);
    if (!job || !(job->name = strdup("job"))) {
        free(job);
        return lg_fail(LG_ERR_OOM, "job: out of memory");
    }
    job->p = *p;
    job->cap_limit = cap;
    *out = job;
    return LG_OK;
}

static void adapter_free(struct lg_adapter *a)
{
    free(a->name);
    free(a->where);
    lg_dataset_free(a->ds);
    free(a->len);
    free(a->batch_of);
    free(a->order);
    free(a->batch_start);
    free(a->batch_loss);
}

void lg_job_free(lg_job_t *job)
{
    if (!job)
        return;
    for (int i = 0; i < job->nad; i++)
        adapter_free(&job->ad[i]);
    free(job->ad);
    free(job->names);
    free(job->name);
    free(job);
}

/* ---- the adapters by name: a job of 10,000 adapters checks each new name in O(1), not against all ---- */

static size_t name_slot(const lg_job_t *job, const char *name)
{
    uint64_t h[2];
    lg_hash128(name, strlen(name), 0, h);
    size_t i = (size_t)h[0] & (job->cap_names - 1);
    while (job->names[i] >= 0 && strcmp(job->ad[job->names[i]].name, name))
        i = (i + 1) & (job->cap_names - 1);
    return i;
}

static int name_used(const lg_job_t *job, const char *name)
{
    return job->cap_names && job->names[name_slot(job, name)] >= 0;
}

/* Indexes adapter a (already in job->ad) by its name, growing the table to keep it at most half full. */
static enum lg_status name_add(lg_job_t *job, int a)
{
    if (2 * ((size_t)job->nad + 1) > job->cap_names) {
        size_t nc = job->cap_names ? 2 * job->cap_names : 16;
        int *nt = malloc(nc * sizeof *nt);
        if (!nt)
            return lg_fail(LG_ERR_OOM, "job: out of memory");
        free(job->names);
        job->names = nt;
        job->cap_names = nc;
        for (size_t i = 0; i < nc; i++)
            nt[i] = -1;
        for (int k = 0; k < job->nad; k++)
            nt[name_slot(job, job->ad[k].name)] = k;
    }
    job->names[name_slot(job, job->ad[a].name)] = a;
    return LG_OK;
}

static uint64_t mix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Oversize policy: fixes each sample's effective length. Truncation keeps the prefix, and we assume the
 * masked prompt comes first, so the cut tokens are loss tokens first. */
static enum lg_status apply_oversize(const lg_job_t *job, struct lg_adapter *a, const char *where)
{
    const lg_dataset_t *ds = a->ds;
    uint32_t cap = job->cap_limit;
    for (size_t i = 0; i < ds->n; i++) {
        uint32_t l = ds->len[i];
        a->len[i] = l;
        if (l <= cap)
            continue;
        if (job->p.oversize == LG_OVERSIZE_ERROR)
            return lg_fail(LG_ERR_INVALID,
                           "%s: %s%s%u: sample %zu has %u tokens, more than the capacity %u (set batching.oversize "
                           "= \"truncate\" or \"skip\")",
                           where, ds->path, *ds->path ? ":" : "line ", ds->line[i], i, l, cap);
        if (job->p.oversize == LG_OVERSIZE_TRUNCATE) {
            a->len[i] = cap;
            a->info.truncated++;
        } else {
            a->len[i] = 0;
            a->info.skipped++;
        }
    }
    return LG_OK;
}

/* The kept samples of adapter `index`, in dataset order or shuffled by `seed` (0: dataset order). The
 * stream depends on the seed and the adapter's index, so each adapter gets its own order and the same
 * (seed, index) always gives the same one. */
static size_t order_samples(struct lg_adapter *a, int index, uint64_t seed)
{
    size_t kept = 0;
    for (size_t i = 0; i < a->ds->n; i++)
        if (a->len[i])
            a->order[kept++] = (uint32_t)i;
    if (seed) {
        uint64_t st = seed ^ (0x5851f42d4c957f2dull * (uint64_t)(index + 1));
        for (size_t i = kept; i > 1; i--) {
            size_t j = (size_t)(mix64(&st) % i);
            uint32_t t = a->order[i - 1];
            a->order[i - 1] = a->order[j];
            a->order[j] = t;
        }
    }
    return kept;
}

/* Cuts the ordered samples into global batches: which samples each batch holds, its loss tokens, and the
 * adapter's totals. batch_start and batch_loss are allocated for nbatches + 1 and nbatches already. */
static void cut_batches(struct lg_adapter *a, size_t kept)
{
    const lg_dataset_t *ds = a->ds;
    size_t B = (size_t)a->p.global_batch, nb = a->nbatches;
    size_t used = nb * B < kept ? nb * B : kept;
    a->info.dropped = kept - used;
    a->info.tokens = a->info.loss_tokens = 0;
    a->info.max_len = 0;
    for (size_t i = 0; i < ds->n; i++)
        a->batch_of[i] = -1;
    for (size_t g = 0; g <= nb; g++)
        a->batch_start[g] = g * B < used ? g * B : used;
    memset(a->batch_loss, 0, nb * sizeof *a->batch_loss);
    for (size_t k = 0; k < used; k++) {
        uint32_t i = a->order[k];
        size_t g = k / B;
        a->batch_of[i] = (long)g;
        uint32_t cut = ds->len[i] - a->len[i];
        a->batch_loss[g] += ds->loss[i] > cut ? ds->loss[i] - cut : 0; /* cut positions are all >= 1 */
        a->info.tokens += a->len[i];
        if (a->len[i] > a->info.max_len)
            a->info.max_len = a->len[i];
    }
    for (size_t g = 0; g < nb; g++)
        a->info.loss_tokens += a->batch_loss[g];
    a->info.samples = used;
    a->info.batches = nb;
}

/* Orders the kept samples (the job's shuffle) and cuts them into global batches. */
static enum lg_status make_batches(const lg_job_t *job, struct lg_adapter *a, const char *where)
{
    const lg_dataset_t *ds = a->ds;
    size_t kept = order_samples(a, job->nad, job->p.shuffle_seed);
    size_t B = (size_t)a->p.global_batch;
    if (kept < B)
        return lg_fail(LG_ERR_INVALID, "%s: global_batch %zu is larger than the dataset %s (%zu samples%s)", where,
                       B, *ds->path ? ds->path : "(in memory)", kept,
                       a->info.skipped ? " after skipping oversize ones" : "");
    size_t nb = kept / B + (kept % B && !a->p.drop_last);
    a->batch_start = malloc((nb + 1) * sizeof *a->batch_start);
    a->batch_loss = calloc(nb + 1, sizeof *a->batch_loss);
    if (!a->batch_start || !a->batch_loss)
        return lg_fail(LG_ERR_OOM, "job: out of memory");
    a->nbatches = nb;
    cut_batches(a, kept);
    return LG_OK;
}

/* The kept samples and the number of batches do not change (the oversize policy ran once, when the adapter
 * was added), so the arrays are reused as they are. */
enum lg_status lg_job_reshuffle(lg_job_t *job, uint64_t seed)
{
    if (!job)
        return lg_fail(LG_ERR_INVALID, "lg_job_reshuffle: null argument");
    for (int i = 0; i < job->nad; i++)
        cut_batches(&job->ad[i], order_samples(&job->ad[i], i, seed));
    job->p.shuffle_seed = seed;
    return LG_OK;
}

enum lg_status lg_job_add_adapter(lg_job_t *job, const struct lg_adapter_params *ap, lg_dataset_t *ds,
                                  const char *where)
{
    if (!job || !ap || !ds) {
        lg_dataset_free(ds);
        return lg_fail(LG_ERR_INVALID, "lg_job_add_adapter: null argument");
    }
    if (!where)
        where = ap->name ? ap->name : "adapter";
    enum lg_status s = LG_OK;
    if (!ap->name || !*ap->name)
        s = lg_fail(LG_ERR_INVALID, "%s: an adapter needs a name", where);
    else if (ap->global_batch < 1 || ap->rank < 1)
        s = lg_fail(LG_ERR_INVALID, "%s: global_batch and rank must be >= 1", where);
    else if (ds->n == 0)
        s = lg_fail(LG_ERR_INVALID, "%s: dataset %s has no samples", where, ds->path);
    if (s == LG_OK && name_used(job, ap->name))
        s = lg_fail(LG_ERR_INVALID, "%s: adapter name '%s' is used twice", where, ap->name);
    if (s == LG_OK && job->nad == job->cap_ad) {
        int nc = job->cap_ad ? 2 * job->cap_ad : 4;
        struct lg_adapter *na = realloc(job->ad, (size_t)nc * sizeof *na);
        if (!na)
            s = lg_fail(LG_ERR_OOM, "job: out of memory");
        else {
            job->ad = na;
            job->cap_ad = nc;
        }
    }
    if (s != LG_OK) {
        lg_dataset_free(ds);
        return s;
    }
    struct lg_adapter *a = &job->ad[job->nad];
    memset(a, 0, sizeof *a);
    a->ds = ds;
    a->p = *ap;
    a->name = strdup(ap->name);
    a->where = strdup(where);
    a->len = malloc(ds->n * sizeof *a->len);
    a->batch_of = malloc(ds->n * sizeof *a->batch_of);
    a->order = malloc(ds->n * sizeof *a->order);
    if (!a->name || !a->where || !a->len || !a->batch_of || !a->order)
        s = lg_fail(LG_ERR_OOM, "job: out of memory");
    if (s == LG_OK)
        s = apply_oversize(job, a, where);
    if (s == LG_OK)
        s = make_batches(job, a, where);
    if (s == LG_OK)
        s = name_add(job, job->nad);
    if (s != LG_OK) {
        adapter_free(a);
        return s;
    }
    a->p.name = a->name;
    a->info.name = a->name;
    a->info.global_batch = ap->global_batch;
    a->info.rank = ap->rank;
    a->info.alpha = ap->alpha;
    a->info.dropout = ap->dropout;
    a->info.lr = ap->lr;
    job->nad++;
    return LG_OK;
}

const struct lg_job_params *lg_job_get_params(const lg_job_t *job) { return &job->p; }
const char *lg_job_name(const lg_job_t *job) { return job->name; }

enum lg_status lg_job_set_name(lg_job_t *job, const char *name)
{
    if (!job || !name)
        return lg_fail(LG_ERR_INVALID, "lg_job_set_name: null argument");
    char *nm = strdup(name);
    if (!nm)
        return lg_fail(LG_ERR_OOM, "job: out of memory");
    free(job->name);
    job->name = nm;
    return LG_OK;
}

int lg_job_adapter_count(const lg_job_t *job) { return job ? job->nad : 0; }
uint32_t lg_job_capacity_limit(const lg_job_t *job) { return job->cap_limit; }

enum lg_status lg_job_adapter(const lg_job_t *job, int a, struct lg_adapter_info *out)
{
    if (!job || !out || a < 0 || a >= job->nad)
        return lg_fail(LG_ERR_INVALID, "lg_job_adapter: no adapter %d", a);
    *out = job->ad[a].info;
    return LG_OK;
}

size_t lg_job_dataset_size(const lg_job_t *job, int a)
{
    return a >= 0 && a < job->nad ? job->ad[a].ds->n : 0;
}

uint32_t lg_job_sample_length(const lg_job_t *job, int a, size_t i)
{
    if (a < 0 || a >= job->nad || i >= job->ad[a].ds->n)
        return 0;
    return job->ad[a].len[i];
}

long lg_job_sample_batch(const lg_job_t *job, int a, size_t i)
{
    if (a < 0 || a >= job->nad || i >= job->ad[a].ds->n)
        return -1;
    return job->ad[a].batch_of[i];
}

uint64_t lg_job_batch_loss_tokens(const lg_job_t *job, int a, size_t g)
{
    if (a < 0 || a >= job->nad || g >= job->ad[a].nbatches)
        return 0;
    return job->ad[a].batch_loss[g];
}
