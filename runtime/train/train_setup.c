/* train_setup.c: everything a run needs before its first step, in order: the job's training settings and its
 * scheduler job, the model's config and weights (checked against each other), each adapter's token datasets
 * (checked against the vocabulary and against the scheduler's view of the same files), the backend, the
 * decoder with its arena for the largest microbatch, and each adapter's tensors. Each failure names the file
 * and what to change. */
#include "train_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Why the CUDA backend cannot run this model ("" when it can): the generated kernels' shape rules. */
static const char *cuda_unfit(const struct lg_trainer *tr)
{
    const struct lg_model_config *c = &tr->mc;
    if (c->head_dim != 64 && c->head_dim != 128)
        return "attention kernels need head_dim 64 or 128";
    if (c->hidden_size % 64 || c->intermediate_size % 64 || (c->num_attention_heads * c->head_dim) % 64 ||
        (c->num_key_value_heads * c->head_dim) % 64)
        return "the LoRA kernels need feature sizes that are multiples of 64";
    for (int i = 0; i < tr->nad; i++)
        if (tr->tc.adapters[i].rank % 4 || tr->tc.adapters[i].rank > 128)
            return "the LoRA kernels need ranks that are multiples of 4 up to 128";
    return "";
}

/* "cuda": the GPU or an error; "cpu": the CPU backend; "auto": the GPU when there is one and the model fits
 * its kernels, else the CPU (saying why). */
static enum lg_status pick_backend(struct lg_trainer *tr, const char *want)
{
    if (!want || !*want)
        want = tr->tc.backend ? tr->tc.backend : "auto";
    if (strcmp(want, "cpu") && strcmp(want, "auto") && strcmp(want, "cuda"))
        return lg_fail(LG_ERR_INVALID, "backend \"%s\": expected \"auto\", \"cpu\" or \"cuda\"", want);
    if (!strcmp(want, "cpu"))
        return lg_backend_cpu_init(&tr->be);
    const char *why = cuda_unfit(tr);
    if (*why && !strcmp(want, "cuda"))
        return lg_fail(LG_ERR_UNSUPPORTED, "backend \"cuda\": %s (model %s)", why, tr->tc.model_dir);
    if (!*why) {
        struct lg_backend_cuda_params p = {.device = tr->local_rank, .dtype = tr->mc.has_dtype && tr->mc.dtype == LG_FP16 ? LG_FP16
                                                                                                       : LG_BF16,
                                           .deterministic = tr->tc.deterministic, .max_tokens = tr->capacity, .nadapters = tr->nad,
                                           .profile = tr->opts && tr->opts->profile};
        enum lg_status s = lg_backend_cuda_init(&p, &tr->be);
        if (s == LG_OK || !strcmp(want, "cuda"))
            return s;
        lg_report_info(tr, "backend auto: no usable GPU (%s): training on the CPU backend", lg_last_error());
    } else {
        lg_report_info(tr, "backend auto: the CUDA backend cannot run this model (%s): training on the CPU", why);
    }
    return lg_backend_cpu_init(&tr->be);
}

/* The token dataset of an adapter must be the same samples the scheduler planned. */
static enum lg_status load_tokens(struct lg_trainer *tr, struct lg_ad_state *a)
{
    const struct lg_train_adapter *c = a->cfg;
    enum lg_status s = lg_tokens_load(c->dataset, tr->mc.vocab_size, &a->train);
    if (s != LG_OK)
        return lg_fail_wrap(s, "%s:%d: adapter '%s': ", tr->tc.path, c->line, c->name);
    size_t want = lg_job_dataset_size(tr->job, a->index);
    if (lg_tokens_count(a->train) != want)
        return lg_fail(LG_ERR_INTERNAL, "%s: %zu samples, but the scheduler read %zu", c->dataset,
                       lg_tokens_count(a->train), want);
    for (size_t i = 0; i < want; i++) {
        int64_t n;
        lg_tokens_sample(a->train, i, NULL, NULL, &n);
        if (lg_job_sample_length(tr->job, a->index, i) > (uint32_t)n)
            return lg_fail(LG_ERR_INTERNAL, "%s:%zu: the scheduler's length exceeds the sample's", c->dataset,
                           lg_tokens_line(a->train, i));
    }
    if (c->validation && (s = lg_tokens_load(c->validation, tr->mc.vocab_size, &a->val)) != LG_OK)
        return lg_fail_wrap(s, "%s:%d: adapter '%s': validation: ", tr->tc.path, c->line, c->name);
    return LG_OK;
}

static enum lg_status load_model(struct lg_trainer *tr)
{
    const char *dir = tr->tc.model_dir;
    enum lg_status s = lg_model_config_read(dir, &tr->mc);
    if (s == LG_OK)
        s = lg_st_open_model(dir, &tr->st);
    if (s == LG_OK)
        s = lg_model_config_check_weights(&tr->mc, tr->st);
    if (s != LG_OK)
        return lg_fail_wrap(s, "model %s: ", dir);
    if (tr->mc.warnings[0])
        lg_report_info(tr, "warning: %s/config.json: %s", dir, tr->mc.warnings);
    return LG_OK;
}

/* The processes of the run: the environment's world against the job's pipeline shape. */
static enum lg_status read_world(struct lg_trainer *tr)
{
    const struct lg_job_params *jp = lg_job_get_params(tr->job);
    tr->world = 1;
    tr->stages = 1;
    tr->dp = jp->data_parallel;
    if (!tr->opts->distributed)
        return LG_OK;
    struct lg_comm_params cp;
    enum lg_status s = lg_comm_params_from_env(&cp);
    if (s != LG_OK)
        return s;
    tr->rank = cp.rank;
    tr->world = cp.world;
    tr->local_rank = cp.local_rank;
    if (tr->world == 1)
        return LG_OK;
    if (tr->world != jp->data_parallel * jp->stages)
        return lg_fail(LG_ERR_INVALID, "%s: pipeline = { data_parallel = %d, stages = %d } needs %d processes, but "
                       "WORLD_SIZE is %d (loragen train --procs/--gpus N starts N)", tr->tc.path, jp->data_parallel,
                       jp->stages, jp->data_parallel * jp->stages, tr->world);
    if (jp->stages > tr->mc.num_hidden_layers)
        return lg_fail(LG_ERR_INVALID, "%s: pipeline.stages = %d, but the model has %d layers", tr->tc.path,
                       jp->stages, tr->mc.num_hidden_layers);
    if (jp->stages > 1 && tr->tc.checkpoint_layers)
        return lg_fail(LG_ERR_UNSUPPORTED, "%s: training.checkpoint_layers = %d: activation checkpointing inside a "
                       "pipeline stage is not built yet; set it to 0 with pipeline.stages > 1", tr->tc.path,
                       tr->tc.checkpoint_layers);
    tr->stages = jp->stages;
    tr->stage = tr->rank % jp->stages;
    tr->dp_rank = tr->rank / jp->stages;
    return LG_OK;
}

/* The communicator, once the backend is up: NCCL between GPUs when it loads (LORAGEN_COMM=tcp keeps TCP),
 * else TCP, which carries host copies of the gradients. */
static enum lg_status init_comm(struct lg_trainer *tr)
{
    if (tr->world == 1)
        return LG_OK;
    struct lg_comm_params cp;
    enum lg_status s = lg_comm_params_from_env(&cp);
    if (s != LG_OK)
        return s;
    const char *want = getenv("LORAGEN_COMM");
    if (want && *want && strcmp(want, "tcp") && strcmp(want, "nccl"))
        return lg_fail(LG_ERR_INVALID, "environment: LORAGEN_COMM=%s: expected tcp or nccl", want);
    int gpu = strcmp(tr->be->ops->name, "cpu") != 0;
    if (want && !strcmp(want, "nccl") && !gpu)
        return lg_fail(LG_ERR_INVALID, "LORAGEN_COMM=nccl needs the CUDA backend (this run is on the %s backend)",
                       tr->be->ops->name);
    cp.transport = gpu && (want && *want ? !strcmp(want, "nccl") : lg_comm_nccl_available()) ? LG_COMM_NCCL
                                                                                              : LG_COMM_TCP;
    if ((s = lg_comm_init(&cp, &tr->comm)) != LG_OK)
        return s;
    lg_report_info(tr, "rank %d of %d (data-parallel rank %d of %d, stage %d of %d): %s between the ranks", tr->rank,
                   tr->world, tr->dp_rank, tr->dp, tr->stage, tr->stages, lg_comm_transport_name(cp.transport));
    return LG_OK;
}

static enum lg_status alloc_buffers(struct lg_trainer *tr)
{
    size_t T = tr->capacity;
    tr->maxseg = 2 * tr->nad + 2;
    tr->ids = malloc(T * sizeof *tr->ids);
    tr->target = malloc(T * sizeof *tr->target);
    tr->cu = malloc((T + 1) * sizeof *tr->cu);
    tr->weight = malloc(T * sizeof *tr->weight);
    tr->loss = malloc(T * sizeof *tr->loss);
    tr->seg = malloc((size_t)tr->maxseg * sizeof *tr->seg);
    if (!tr->ids || !tr->target || !tr->cu || !tr->weight || !tr->loss || !tr->seg)
        return lg_fail(LG_ERR_OOM, "trainer: out of memory");
    return LG_OK;
}

enum lg_status lg_train_setup(struct lg_trainer *tr, const struct lg_train_opts *o, int for_eval)
{
    tr->opts = o;
    tr->t0 = lg_train_now();
    enum lg_status s = lg_train_config_load(o->job, &tr->tc);
    if (s != LG_OK)
        return s;
    tr->nad = tr->tc.nadapters;
    snprintf(tr->out_root, sizeof tr->out_root, "%s", tr->tc.output_dir);
    if ((s = load_model(tr)) != LG_OK)
        return s;
    if ((s = lg_job_load_device(o->job, 0, &tr->job)) != LG_OK)
        return s;
    if ((s = read_world(tr)) != LG_OK)
        return s;
    tr->capacity = lg_job_capacity_limit(tr->job);
    tr->shuffle_base = lg_job_get_params(tr->job)->shuffle_seed;
    tr->ad = calloc((size_t)tr->nad, sizeof *tr->ad);
    if (!tr->ad)
        return lg_fail(LG_ERR_OOM, "trainer: out of memory");
    for (int i = 0; i < tr->nad; i++) {
        struct lg_ad_state *a = &tr->ad[i];
        a->index = i;
        a->cfg = &tr->tc.adapters[i];
        snprintf(a->out_dir, sizeof a->out_dir, "%s", a->cfg->output_dir);
        if ((s = load_tokens(tr, a)) != LG_OK)
            return s;
    }
    if ((s = pick_backend(tr, o->backend)) != LG_OK || (s = init_comm(tr)) != LG_OK || (s = lg_train_init_decoder(tr)) != LG_OK ||
        (s = alloc_buffers(tr)) != LG_OK)
        return s;
    for (int i = 0; i < tr->nad; i++)
        if ((s = lg_ad_init(tr, &tr->ad[i])) != LG_OK)
            return s;
    (void)for_eval;
    return LG_OK;
}

void lg_train_teardown(struct lg_trainer *tr)
{
    lg_comm_free(tr->comm); /* first: NCCL's stream lives in the backend's context */
    lg_train_free_pending(tr);
    lg_dp_free(tr);
    for (int i = 0; tr->ad && i < tr->nad; i++)
        lg_ad_free(tr, &tr->ad[i]);
    free(tr->ad);
    lg_decoder_free(tr->dec);
    if (tr->be)
        tr->be->ops->destroy(tr->be);
    lg_plan_free(tr->plan);
    lg_job_free(tr->job);
    lg_st_close(tr->st);
    lg_train_config_free(&tr->tc);
    free(tr->dad);
    free(tr->ids);
    free(tr->target);
    free(tr->cu);
    free(tr->weight);
    free(tr->loss);
    free(tr->seg);
    memset(tr, 0, sizeof *tr);
}
