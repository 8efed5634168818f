/* train_memory.c: the decoder and the run's memory plan. The decoder's activation arena is sized for the
 * largest microbatch before the first step. With a fixed capacity that is the capacity. With
 * batching.capacity = "auto" and no memory_budget_gb, the trainer sizes it from the device:
 *   1. the decoder is built at the smallest capacity the job can run at (its longest sample, padded), so the
 *      weights, the LoRA slots and the arena's fixed part are in device memory and measured, not predicted;
 *   2. what is left is min(free now - headroom, training.memory_gb - taken so far), less the adapters' AdamW
 *      moments still to come; each more token of capacity costs lg_decoder_token_bytes (the arena's slope and
 *      the linear layers' saved S), which gives the capacity, rounded down to the pad multiple and capped at
 *      what a microbatch can hold (one global batch of every adapter);
 *   3. the arena is sized again (lg_decoder_reserve) and the job is loaded again at that capacity, so the
 *      scheduler plans it and the oversize policy applies at it. Ranks of a multi-process run take the least.
 *      A resumed run takes the capacity its checkpoint was planned at (another would plan another order of
 *      samples), and is refused when the device no longer holds it.
 * The headroom (2 GiB and 4% of the device on a GPU; 5% of the host's memory on the CPU backend) is for what
 * grows during the first steps: cuBLASLt's and attention's workspaces, FusedMultiLoRA's backward workspace
 * (one, shared by the layers: at most about 36 KiB per token on Llama-3.1-8B's gate/up), NCCL's buffers.
 * With a fixed capacity and training.memory_gb, the run is refused when it cannot fit the limit. */
#include "train_internal.h"

#include <stdlib.h>
#include <string.h>

#define GIB (1024.0 * 1024.0 * 1024.0)

static struct lg_decoder_params decoder_params(const struct lg_trainer *tr, uint32_t capacity)
{
    struct lg_decoder_params dp = {.cfg = &tr->mc, .nadapters = tr->nad, .adapters = tr->dad,
                                   .ckpt_every = tr->tc.checkpoint_layers, .max_tokens = capacity,
                                   .max_seqs = (int)capacity};
    if (tr->stages > 1)
        lg_pp_split(tr->mc.num_hidden_layers, tr->stages, tr->stage, &dp.layer_from, &dp.layer_to);
    return dp;
}

static uint32_t round_up(uint64_t x, uint32_t m) { return (uint32_t)((x + m - 1) / m * m); }

/* The longest kept sample of any adapter, padded: the smallest capacity the job runs at. */
static uint32_t capacity_floor(const struct lg_trainer *tr, uint32_t pad)
{
    uint32_t longest = 1;
    for (int a = 0; a < tr->nad; a++)
        for (size_t i = 0; i < lg_job_dataset_size(tr->job, a); i++) {
            uint32_t len = lg_job_sample_length(tr->job, a, i);
            if (len > longest)
                longest = len;
        }
    return round_up(longest, pad);
}

/* The most a microbatch can hold: one global batch of every adapter (the tokens of each adapter's largest). */
static uint64_t capacity_useful(const struct lg_trainer *tr, uint32_t pad)
{
    uint64_t sum = 0;
    for (int a = 0; a < tr->nad; a++) {
        struct lg_adapter_info info;
        if (lg_job_adapter(tr->job, a, &info) != LG_OK || !info.batches)
            continue;
        uint64_t *tok = calloc(info.batches, sizeof *tok), most = 0;
        if (!tok)
            return 1u << 24;
        for (size_t i = 0; i < lg_job_dataset_size(tr->job, a); i++) {
            long g = lg_job_sample_batch(tr->job, a, i);
            if (g >= 0 && (size_t)g < info.batches && (tok[g] += lg_job_sample_length(tr->job, a, i)) > most)
                most = tok[g];
        }
        free(tok);
        sum += most;
    }
    return round_up(sum ? sum : 1, pad);
}

/* What the run allocates after the decoder: every adapter's AdamW moments on this stage's layers (fp32 m and v
 * of A and B, lg_ad_init) and, over several processes, the buffer one adapter's gradients are packed into for
 * the all-reduce (train_dp.c). */
static double moment_bytes(const struct lg_trainer *tr, const struct lg_decoder_params *dp)
{
    int from = dp->layer_from, to = dp->layer_to ? dp->layer_to : tr->mc.num_hidden_layers;
    double b = 0, largest = 0;
    for (int a = 0; a < tr->nad; a++) {
        double params = 0;
        for (int m = 0; m < LG_PEFT_MODULE_COUNT; m++)
            if (tr->dad[a].targets >> m & 1u) {
                int64_t in, out;
                lg_module_shape(&tr->mc, (enum lg_peft_module)m, &in, &out);
                params += (double)tr->dad[a].rank * (double)(in + out) * (to - from);
            }
        b += 2.0 * sizeof(float) * params;
        largest = params > largest ? params : largest;
    }
    return b + (tr->world > 1 ? sizeof(float) * largest : 0);
}

static enum lg_status build(struct lg_trainer *tr, uint32_t capacity)
{
    struct lg_decoder_params dp = decoder_params(tr, capacity);
    enum lg_status s = lg_decoder_init(tr->be, &dp, tr->st, &tr->dec);
    if (s != LG_OK)
        return s;
    tr->capacity = capacity;
    return LG_OK;
}

/* The least of every rank's value (a multi-process run plans one capacity for all). */
static enum lg_status least_over_ranks(struct lg_trainer *tr, double *v)
{
    if (tr->world <= 1 || !tr->comm)
        return LG_OK;
    double *all = calloc((size_t)tr->world, sizeof *all);
    if (!all)
        return lg_fail(LG_ERR_OOM, "trainer: out of memory");
    all[tr->rank] = *v;
    enum lg_status s = lg_comm_allreduce_host_f64(tr->comm, all, (size_t)tr->world);
    for (int r = 0; s == LG_OK && r < tr->world; r++)
        if (all[r] < *v)
            *v = all[r];
    free(all);
    return s;
}

/* capacity = "auto": steps 2 and 3 above, once the decoder holds the smallest capacity. */
static enum lg_status size_from_device(struct lg_trainer *tr, uint32_t pad, uint32_t floor_cap)
{
    const struct lg_backend_ops *o = tr->be->ops;
    size_t fr, total, used;
    enum lg_status s = o->mem_info(tr->be, &fr, &total, &used);
    if (s != LG_OK)
        return s;
    int gpu = strcmp(o->name, "cpu") != 0;
    double headroom = gpu ? 2.0 * GIB + 0.04 * (double)total : 0.05 * (double)total;
    double room = (double)fr - headroom;
    const char *by = gpu ? "the GPU's free memory" : "the host's available memory";
    if (tr->tc.memory_gb > 0 && tr->tc.memory_gb * GIB - (double)used < room) {
        room = tr->tc.memory_gb * GIB - (double)used;
        by = "training.memory_gb";
    }
    struct lg_decoder_params dp = decoder_params(tr, floor_cap);
    room -= moment_bytes(tr, &dp);
    double per = lg_decoder_token_bytes(tr->be, &dp);
    uint64_t useful = capacity_useful(tr, pad);
    double cap = room < 0 ? 0 : (double)floor_cap + room / per;
    if ((s = least_over_ranks(tr, &cap)) != LG_OK) /* every rank fails alike when one has no room */
        return s;
    /* a resumed run plans at the capacity its checkpoint was planned at: another would reorder the samples */
    const uint32_t resumed = tr->opts->resume ? lg_ckpt_capacity(tr) : 0;
    if (resumed && (double)resumed > cap)
        return lg_fail(LG_ERR_OOM, "%s: batching.capacity = \"auto\": the checkpoint to resume was planned at %u "
                       "tokens per microbatch, but %s now holds %.0f (%.2f GiB free of %.2f): free the device, "
                       "resume on one with more memory, or start afresh without --resume", tr->tc.path, resumed, by,
                       cap, (double)fr / GIB, (double)total / GIB);
    if (cap > (double)useful)
        cap = (double)useful;
    uint32_t c = resumed ? resumed : (uint32_t)cap / pad * pad;
    if (c < floor_cap)
        return lg_fail(LG_ERR_OOM, "%s: batching.capacity = \"auto\": %s leaves no room for microbatches of the "
                       "longest sample (%u tokens): %.2f GiB taken by weights, LoRA and the arena, %.2f GiB free "
                       "of %.2f; checkpoint more layers (training.checkpoint_layers), truncate or skip long "
                       "samples (batching.oversize), %s", tr->tc.path, by, floor_cap, (double)used / GIB,
                       (double)fr / GIB, (double)total / GIB,
                       tr->tc.memory_gb > 0 ? "or raise training.memory_gb" : "or free the device");
    if (c > floor_cap && (s = lg_decoder_reserve(tr->dec, c, (int)c)) != LG_OK)
        return lg_fail_wrap(s, "%s: batching.capacity = \"auto\" (%u tokens): ", tr->tc.path, c);
    tr->capacity = c;
    /* the scheduler's job at the chosen capacity */
    lg_job_t *job;
    if ((s = lg_job_load_device(tr->tc.path, c, &job)) != LG_OK)
        return lg_fail_wrap(s, "capacity \"auto\" = %u tokens (from %s): ", c, by);
    lg_job_free(tr->job);
    tr->job = job;
    struct lg_decoder_params fin = decoder_params(tr, c);
    lg_report_info(tr, "capacity \"auto\": %u tokens per microbatch (%s; %.3f MiB per token; arena %.1f MiB; "
                   "%.2f GiB free of %.2f before it)%s", c, resumed ? "the checkpoint's" : by, per / (1u << 20),
                   (double)lg_decoder_arena_bytes(tr->be, &fin) / (1u << 20), (double)fr / GIB, (double)total / GIB,
                   resumed ? ""
                   : (uint64_t)c == useful ? ": one global batch of every adapter, the most a microbatch holds" : "");
    return LG_OK;
}

/* training.memory_gb with a fixed capacity: the run must fit it. */
static enum lg_status check_limit(struct lg_trainer *tr)
{
    size_t fr, total, used;
    enum lg_status s = tr->be->ops->mem_info(tr->be, &fr, &total, &used);
    if (s != LG_OK)
        return s;
    struct lg_decoder_params dp = decoder_params(tr, tr->capacity);
    double need = (double)used + moment_bytes(tr, &dp);
    if (need > tr->tc.memory_gb * GIB)
        return lg_fail(LG_ERR_OOM, "%s: training.memory_gb = %g: the run takes %.2f GiB at capacity %u (weights, "
                       "LoRA and an arena of %.2f GiB), more than the limit: lower batching.capacity, set it to "
                       "\"auto\", checkpoint more layers (training.checkpoint_layers) or raise the limit",
                       tr->tc.path, tr->tc.memory_gb, need / GIB, tr->capacity,
                       (double)lg_decoder_arena_bytes(tr->be, &dp) / GIB);
    return LG_OK;
}

enum lg_status lg_train_init_decoder(struct lg_trainer *tr)
{
    tr->dad = calloc((size_t)tr->nad, sizeof *tr->dad);
    if (!tr->dad)
        return lg_fail(LG_ERR_OOM, "trainer: out of memory");
    for (int i = 0; i < tr->nad; i++) {
        const struct lg_train_adapter *c = &tr->tc.adapters[i];
        tr->dad[i] = (struct lg_decoder_adapter){c->rank, (float)c->alpha, (float)c->dropout, c->targets};
    }
    struct lg_decoder_params dp = decoder_params(tr, tr->capacity);
    if (tr->stages > 1)
        lg_report_info(tr, "pipeline stage %d of %d: layers %d..%d (each stage its own)%s", tr->stage, tr->stages,
                       dp.layer_from, dp.layer_to - 1, tr->tc.eval_every > 0 ? "; validation runs at the end only "
                       "under pipeline parallelism" : "");
    uint32_t pad = (uint32_t)lg_job_get_params(tr->job)->pad_multiple;
    uint32_t floor_cap = capacity_floor(tr, pad);
    enum lg_status s = build(tr, tr->tc.capacity_auto ? floor_cap : tr->capacity);
    if (s == LG_OK && tr->tc.capacity_auto)
        s = size_from_device(tr, pad, floor_cap);
    else if (s == LG_OK && tr->tc.memory_gb > 0)
        s = check_limit(tr);
    if (s != LG_OK)
        return s;
    dp = decoder_params(tr, tr->capacity);
    lg_report_info(tr, "model %s: %d layers, hidden %d, vocab %d; %s; arena %.1f MiB for %u-token microbatches",
                   tr->tc.model_dir, tr->mc.num_hidden_layers, tr->mc.hidden_size, tr->mc.vocab_size, tr->be->desc,
                   (double)lg_decoder_arena_bytes(tr->be, &dp) / (1u << 20), tr->capacity);
    return LG_OK;
}
