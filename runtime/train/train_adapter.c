/* train_adapter.c: one adapter's trainable state: the A/B pair of every (layer, module) it targets (the
 * decoder's LoRA slots), the AdamW moments beside them, the initialisation, the learning-rate schedule, the
 * optimizer step, and the PEFT files in and out.
 *
 * Initialisation is PEFT's: A ~ kaiming_uniform(a = √5), which for a [r, in] matrix is U(-1/√in, 1/√in), and
 * B = 0, so the adapted model starts equal to the base. The draws come from the adapter's seed (splitmix64
 * per tensor), so the same seed gives the same adapter on every backend. */
#include "train_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BE (tr->be)

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

enum lg_status lg_ad_init(struct lg_trainer *tr, struct lg_ad_state *a)
{
    int L = tr->mc.num_hidden_layers;
    a->t = calloc((size_t)L * LG_PEFT_MODULE_COUNT, sizeof *a->t);
    a->opt = calloc((size_t)L * LG_PEFT_MODULE_COUNT * 2, sizeof *a->opt);
    if (!a->t || !a->opt)
        return lg_fail(LG_ERR_OOM, "trainer: out of memory");
    enum lg_status s = LG_OK;
    for (int l = 0; s == LG_OK && l < L; l++)
        for (int m = 0; s == LG_OK && m < LG_PEFT_MODULE_COUNT; m++) {
            struct lg_lora_params p;
            if ((s = lg_decoder_lora(tr->dec, l, (enum lg_peft_module)m, a->index, &p)) != LG_OK || !p.rank)
                continue;
            struct lg_ad_tensor *t = &a->t[a->nt++];
            t->layer = l;
            t->mod = (enum lg_peft_module)m;
            t->p = p;
            size_t na = (size_t)(p.rank * p.in) * sizeof(float), nb = (size_t)(p.rank * p.out) * sizeof(float);
            s = BE->ops->alloc(BE, na, &t->ma);
            if (s == LG_OK)
                s = BE->ops->alloc(BE, na, &t->va);
            if (s == LG_OK)
                s = BE->ops->alloc(BE, nb, &t->mb);
            if (s == LG_OK)
                s = BE->ops->alloc(BE, nb, &t->vb);
            if (s == LG_OK)
                s = BE->ops->zero(BE, t->ma, na);
            if (s == LG_OK)
                s = BE->ops->zero(BE, t->va, na);
            if (s == LG_OK)
                s = BE->ops->zero(BE, t->mb, nb);
            if (s == LG_OK)
                s = BE->ops->zero(BE, t->vb, nb);
            int k = 2 * (a->nt - 1);
            a->opt[k] = (struct lg_opt_tensor){p.a, p.da, t->ma, t->va, (int64_t)p.rank * p.in, p.a_half,
                                               p.half_ld, p.in};
            a->opt[k + 1] = (struct lg_opt_tensor){p.b, p.db, t->mb, t->vb, (int64_t)p.rank * p.out, p.b_half,
                                                   p.half_ld, p.rank};
        }
    if (s == LG_OK && a->nt == 0)
        return lg_fail(LG_ERR_INVALID, "%s:%d: adapter '%s' targets no module of this model", tr->tc.path,
                       a->cfg->line, a->cfg->name);
    return s;
}

void lg_ad_free(struct lg_trainer *tr, struct lg_ad_state *a)
{
    for (int i = 0; i < a->nt && BE; i++) {
        BE->ops->release(BE, a->t[i].ma);
        BE->ops->release(BE, a->t[i].va);
        BE->ops->release(BE, a->t[i].mb);
        BE->ops->release(BE, a->t[i].vb);
    }
    free(a->t);
    free(a->opt);
    free(a->batch_left);
    free(a->batch_weight);
    free(a->hist);
    free(a->vhist);
    lg_tokens_free(a->train);
    lg_tokens_free(a->val);
}

enum lg_status lg_ad_init_weights(struct lg_trainer *tr, struct lg_ad_state *a)
{
    enum lg_status s = LG_OK;
    for (int i = 0; s == LG_OK && i < a->nt; i++) {
        const struct lg_lora_params *p = &a->t[i].p;
        size_t na = (size_t)(p->rank * p->in);
        float *buf = malloc(na * sizeof *buf);
        if (!buf)
            return lg_fail(LG_ERR_OOM, "trainer: out of memory");
        uint64_t st = a->cfg->seed ^ (0x6c6f7261ull << 32) ^ ((uint64_t)a->t[i].layer << 8) ^ (uint64_t)a->t[i].mod;
        splitmix(&st);
        double bound = 1.0 / sqrt((double)p->in);
        for (size_t k = 0; k < na; k++)
            buf[k] = (float)((2.0 * ((double)(splitmix(&st) >> 11) * 0x1.0p-53) - 1.0) * bound);
        s = BE->ops->upload(BE, p->a, buf, na * sizeof *buf);
        free(buf);
        if (s == LG_OK)
            s = BE->ops->zero(BE, p->b, (size_t)(p->rank * p->out) * sizeof(float));
    }
    if (s == LG_OK)
        s = lg_decoder_lora_sync(tr->dec, a->index);
    return s == LG_OK ? lg_ad_zero_grads(tr, a) : s;
}

enum lg_status lg_ad_zero_grads(struct lg_trainer *tr, struct lg_ad_state *a)
{
    enum lg_status s = LG_OK;
    for (int i = 0; s == LG_OK && i < a->nt; i++) {
        const struct lg_lora_params *p = &a->t[i].p;
        s = BE->ops->zero(BE, p->da, (size_t)(p->rank * p->in) * sizeof(float));
        if (s == LG_OK)
            s = BE->ops->zero(BE, p->db, (size_t)(p->rank * p->out) * sizeof(float));
    }
    return s;
}

/* Hugging Face's schedules (get_{constant,linear,cosine}_schedule_with_warmup): the k-th step (0-based) uses
 * lr · λ(k), λ rising linearly from 0 over the warm-up steps, so the first step of a warm-up is at lr 0. */
double lg_ad_lr(const struct lg_ad_state *a, int64_t k)
{
    const struct lg_train_adapter *c = a->cfg;
    int64_t total = a->steps, w = c->warmup < 1 ? (int64_t)ceil(c->warmup * (double)total) : (int64_t)c->warmup;
    if (k < w)
        return c->lr * (double)k / (double)(w > 1 ? w : 1);
    double progress = (double)(k - w) / (double)(total - w > 1 ? total - w : 1);
    switch (c->schedule) {
    case LG_LR_CONSTANT: return c->lr;
    case LG_LR_LINEAR: return c->lr * fmax(0.0, (double)(total - k) / (double)(total - w > 1 ? total - w : 1));
    default: return c->lr * fmax(0.0, 0.5 * (1.0 + cos(M_PI * progress)));
    }
}

enum lg_status lg_ad_step(struct lg_trainer *tr, struct lg_ad_state *a, double *lr, double *norm, int *skipped)
{
    const struct lg_train_adapter *c = a->cfg;
    *lr = lg_ad_lr(a, a->step);
    struct lg_opt_step st = {.lr = (float)*lr, .beta1 = (float)c->beta1, .beta2 = (float)c->beta2,
                               .eps = (float)c->eps, .weight_decay = (float)c->weight_decay, .step = a->step + 1,
                               .max_norm = (float)c->grad_clip};
    enum lg_status s = BE->ops->adamw(BE, a->opt, 2 * a->nt, &st, skipped, norm);
    /* a backend whose layers keep copies the optimizer does not refresh in its launch is told to refresh them */
    if (s == LG_OK && !*skipped && !a->opt[0].half)
        s = lg_decoder_lora_sync(tr->dec, a->index);
    if (s == LG_OK)
        s = lg_ad_zero_grads(tr, a);
    return s;
}

/* ---- PEFT files ---- */

static enum lg_status peft_config_of(const struct lg_trainer *tr, const struct lg_ad_state *a,
                                     struct lg_peft_config *pc)
{
    memset(pc, 0, sizeof *pc);
    pc->r = a->cfg->rank;
    pc->lora_alpha = a->cfg->alpha;
    pc->lora_dropout = a->cfg->dropout;
    pc->target_modules = a->cfg->targets;
    snprintf(pc->base_model_name_or_path, sizeof pc->base_model_name_or_path, "%s", tr->tc.model_dir);
    return LG_OK;
}

enum lg_status lg_ad_write_peft(struct lg_trainer *tr, struct lg_ad_state *a, const char *dir)
{
    struct lg_peft_config pc;
    peft_config_of(tr, a, &pc);
    enum lg_status s = lg_peft_config_write(dir, &pc);
    if (s != LG_OK)
        return s;
    struct lg_st_write_tensor *w = calloc((size_t)(2 * a->nt), sizeof *w);
    char (*names)[LG_PEFT_NAME_MAX] = calloc((size_t)(2 * a->nt), sizeof *names);
    float **bufs = calloc((size_t)(2 * a->nt), sizeof *bufs);
    s = w && names && bufs ? LG_OK : lg_fail(LG_ERR_OOM, "trainer: out of memory");
    for (int i = 0; s == LG_OK && i < a->nt; i++)
        for (int ab = 0; s == LG_OK && ab < 2; ab++) {
            const struct lg_lora_params *p = &a->t[i].p;
            int k = 2 * i + ab;
            int64_t rows = ab ? p->out : p->rank, cols = ab ? p->rank : p->in;
            size_t bytes = (size_t)(rows * cols) * sizeof(float);
            s = lg_peft_tensor_name(a->t[i].layer, lg_peft_module_name(a->t[i].mod), ab ? 'B' : 'A', names[k],
                                    sizeof names[k]);
            if (s == LG_OK && !(bufs[k] = malloc(bytes)))
                s = lg_fail(LG_ERR_OOM, "trainer: out of memory");
            if (s == LG_OK)
                s = BE->ops->download(BE, bufs[k], ab ? p->b : p->a, bytes);
            w[k] = (struct lg_st_write_tensor){.name = names[k], .dtype = LG_ST_F32, .ndim = 2,
                                               .shape = {rows, cols}, .data = bufs[k]};
        }
    char path[1200];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (s == LG_OK)
        s = lg_st_write(path, w, (size_t)(2 * a->nt), NULL);
    for (int k = 0; bufs && k < 2 * a->nt; k++)
        free(bufs[k]);
    free(bufs);
    free(names);
    free(w);
    return s;
}

/* An init_adapter's tensor must be finite: a NaN or infinity (a diverged or damaged adapter) would make every
 * batch of the adapter non-finite, and the numerical guard would stop the run only after LG_TRAIN_BAD_STEPS
 * skipped batches without saying why. */
static enum lg_status finite_weights(const struct lg_trainer *tr, const struct lg_ad_state *a, const char *path,
                                     const char *tensor, const float *w, size_t n)
{
    size_t bad = 0, first = 0;
    for (size_t i = n; i-- > 0;)
        if (!isfinite(w[i]))
            bad++, first = i;
    if (!bad)
        return LG_OK;
    return lg_fail(LG_ERR_INVALID, "%s:%d: adapter '%s': init_adapter %s: tensor %s holds %zu non-finite value(s), "
                   "the first %g at element %zu (a diverged or damaged adapter)", tr->tc.path, a->cfg->line,
                   a->cfg->name, path, tensor, bad, w[first], first);
}

/* Continues from a PEFT adapter: its settings must be this adapter's, its tensors every targeted one, each finite. */
enum lg_status lg_ad_load_peft(struct lg_trainer *tr, struct lg_ad_state *a, const char *dir)
{
    struct lg_peft_config pc;
    enum lg_status s = lg_peft_config_read(dir, &pc);
    if (s != LG_OK)
        return lg_fail_wrap(s, "init_adapter %s: ", dir);
    const struct lg_train_adapter *c = a->cfg;
    if (pc.r != c->rank || pc.target_modules != c->targets || fabs(pc.lora_alpha - c->alpha) > 1e-9 * c->alpha)
        return lg_fail(LG_ERR_INVALID, "%s:%d: adapter '%s': init_adapter %s has r = %d, lora_alpha = %g and its "
                       "own target_modules; give the adapter the same rank, alpha and targets",
                       tr->tc.path, c->line, c->name, dir, pc.r, pc.lora_alpha);
    char path[1200];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    lg_st_t *st;
    if ((s = lg_st_open(path, &st)) != LG_OK)
        return s;
    for (int i = 0; s == LG_OK && i < a->nt; i++)
        for (int ab = 0; s == LG_OK && ab < 2; ab++) {
            const struct lg_lora_params *p = &a->t[i].p;
            int64_t shape[2] = {ab ? p->out : p->rank, ab ? p->rank : p->in};
            char name[LG_PEFT_NAME_MAX];
            s = lg_peft_tensor_name(a->t[i].layer, lg_peft_module_name(a->t[i].mod), ab ? 'B' : 'A', name,
                                    sizeof name);
            float *buf = s == LG_OK ? malloc((size_t)(shape[0] * shape[1]) * sizeof *buf) : NULL;
            if (s == LG_OK && !buf)
                s = lg_fail(LG_ERR_OOM, "trainer: out of memory");
            if (s == LG_OK)
                s = lg_st_read_f32(st, name, 2, shape, buf);
            if (s == LG_OK)
                s = finite_weights(tr, a, path, name, buf, (size_t)(shape[0] * shape[1]));
            if (s == LG_OK)
                s = BE->ops->upload(BE, ab ? p->b : p->a, buf, (size_t)(shape[0] * shape[1]) * sizeof *buf);
            free(buf);
        }
    lg_st_close(st);
    if (s == LG_OK)
        s = lg_decoder_lora_sync(tr->dec, a->index);
    return s == LG_OK ? lg_ad_zero_grads(tr, a) : s;
}
