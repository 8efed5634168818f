/* dec_adamw.c: AdamW over one adapter's LoRA tensors (lg_decoder_ops.h). At init the tensor list becomes a
 * device table (each tensor cut into chunks of `chunk` elements, numbered tensor after tensor), with one
 * double per chunk for the norm's first stage and the adapter's state (step count, norm, clip, skip flag).
 * A step is three launches: chunk sums of g², the finish (norm, skip flag before anything changes, clip,
 * bias corrections), and the update of every tensor and its half copy. */
#include "dec_internal.h"
#include "lg_base.h"
#include "lg_gpu.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#define ADAMW_CHUNK 8192

struct lg_adamw {
    lg_ctx_t *ctx;
    enum lg_dtype dtype;
    int ntensors, chunk, nchunks;
    CUdeviceptr table, part, state;
    int64_t step_host; /* lg_adamw_set_step's source, kept alive for the asynchronous copy */
    const struct lg_kernel *k_sq, *k_fin, *k_upd;
};

static enum lg_status check_tensor(int i, const struct lg_adamw_tensor *t)
{
    static const char *fn = "lg_adamw_init";
    if (t->count < 4 || t->count % 4 || t->count > INT32_MAX)
        return lg_fail(LG_ERR_INVALID, "%s: tensor %d: count = %lld must be a multiple of 4 in 4..%d", fn, i,
                       (long long)t->count, INT32_MAX);
    const CUdeviceptr a[4] = {t->p, t->g, t->m, t->v};
    static const char *names[4] = {"p", "g", "m", "v"};
    for (int k = 0; k < 4; k++)
        if (!a[k] || a[k] % 16)
            return lg_fail(LG_ERR_INVALID, "%s: tensor %d: %s is NULL or not 16-byte aligned", fn, i, names[k]);
    if (!t->half)
        return LG_OK;
    if (t->half % 8)
        return lg_fail(LG_ERR_INVALID, "%s: tensor %d: half is not 8-byte aligned", fn, i);
    if (t->half_cols < 4 || t->half_cols % 4 || t->count % t->half_cols)
        return lg_fail(LG_ERR_INVALID, "%s: tensor %d: half_cols = %lld must be a multiple of 4 dividing count %lld",
                       fn, i, (long long)t->half_cols, (long long)t->count);
    if (t->half_ld < t->half_cols || t->half_ld % 4)
        return lg_fail(LG_ERR_INVALID, "%s: tensor %d: half_ld = %lld must be >= half_cols and a multiple of 4", fn,
                       i, (long long)t->half_ld);
    return LG_OK;
}

static enum lg_status upload_table(lg_adamw_t *a, const struct lg_adamw_params *p)
{
    struct lg_adamw_entry *e = calloc((size_t)p->ntensors, sizeof *e);
    if (!e)
        return lg_fail(LG_ERR_OOM, "lg_adamw_init: out of memory");
    int64_t chunks = 0;
    for (int i = 0; i < p->ntensors; i++) {
        const struct lg_adamw_tensor *t = &p->tensors[i];
        e[i] = (struct lg_adamw_entry){.p = (float *)t->p, .g = (const float *)t->g, .m = (float *)t->m,
                                       .v = (float *)t->v, .half = (void *)t->half, .ldh = t->half_ld,
                                       .cols = t->half ? t->half_cols : 1, .n = t->count, .chunk0 = chunks};
        chunks += lg_ops_dec_cdiv(t->count, a->chunk);
    }
    enum lg_status st = LG_OK;
    if (chunks > INT32_MAX / 2)
        st = lg_fail(LG_ERR_INVALID, "lg_adamw_init: %lld chunks: too many elements", (long long)chunks);
    a->nchunks = (int)chunks;
    const size_t tb = sizeof *e * (size_t)p->ntensors;
    if (st == LG_OK)
        st = lg_cu_check(cuMemAlloc(&a->table, tb), "lg_adamw_init: table");
    if (st == LG_OK)
        st = lg_cu_check(cuMemcpyHtoD(a->table, e, tb), "lg_adamw_init: table upload");
    free(e);
    if (st == LG_OK)
        st = lg_cu_check(cuMemAlloc(&a->part, sizeof(double) * (size_t)a->nchunks), "lg_adamw_init: partial sums");
    if (st == LG_OK)
        st = lg_cu_check(cuMemAlloc(&a->state, sizeof(struct lg_adamw_state)), "lg_adamw_init: state");
    if (st == LG_OK)
        st = lg_cu_check(cuMemsetD8(a->state, 0, sizeof(struct lg_adamw_state)), "lg_adamw_init: state");
    return st;
}

enum lg_status lg_adamw_init(lg_ctx_t *ctx, const struct lg_adamw_params *p, lg_adamw_t **out)
{
    static const char *fn = "lg_adamw_init";
    if (!p || !out)
        return lg_fail(LG_ERR_INVALID, "%s: null argument", fn);
    enum lg_status st = lg_ops_dec_check_dtype(fn, p->dtype);
    if (st != LG_OK)
        return st;
    if (p->ntensors < 1 || !p->tensors)
        return lg_fail(LG_ERR_INVALID, "%s: ntensors = %d with %s tensor list", fn, p->ntensors,
                       p->tensors ? "a" : "a NULL");
    if (p->chunk < 0 || p->chunk % 1024)
        return lg_fail(LG_ERR_INVALID, "%s: chunk = %d must be a multiple of 1024 (0: %d)", fn, p->chunk, ADAMW_CHUNK);
    for (int i = 0; i < p->ntensors; i++)
        if ((st = check_tensor(i, &p->tensors[i])) != LG_OK)
            return st;
    if (!ctx)
        return lg_fail(LG_ERR_INVALID, "%s: ctx is NULL", fn);
    lg_adamw_t *a = calloc(1, sizeof *a);
    if (!a)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", fn);
    a->ctx = ctx;
    a->dtype = p->dtype;
    a->ntensors = p->ntensors;
    a->chunk = p->chunk ? p->chunk : ADAMW_CHUNK;
    st = upload_table(a, p);
    struct lg_kernel_cfg c = {.op = LG_OP_ADAMW_SQ, .dtype = p->dtype};
    if (st == LG_OK)
        st = lg_ctx_kernel(ctx, &c, &a->k_sq);
    c.op = LG_OP_ADAMW_FIN;
    if (st == LG_OK)
        st = lg_ctx_kernel(ctx, &c, &a->k_fin);
    c.op = LG_OP_ADAMW_UPD;
    if (st == LG_OK)
        st = lg_ctx_kernel(ctx, &c, &a->k_upd);
    if (st != LG_OK) {
        lg_adamw_free(a);
        return lg_fail_wrap(st, "%s: ", fn);
    }
    *out = a;
    return LG_OK;
}

void lg_adamw_free(lg_adamw_t *a)
{
    if (!a)
        return;
    if (a->table)
        cuMemFree(a->table);
    if (a->part)
        cuMemFree(a->part);
    if (a->state)
        cuMemFree(a->state);
    free(a);
}

static enum lg_status check_hyper(const struct lg_adamw_hyper *h)
{
    static const char *fn = "lg_adamw_step";
    if (!(h->lr >= 0) || !isfinite(h->lr))
        return lg_fail(LG_ERR_INVALID, "%s: lr = %g must be finite and >= 0", fn, h->lr);
    if (!(h->beta1 >= 0 && h->beta1 < 1) || !(h->beta2 >= 0 && h->beta2 < 1))
        return lg_fail(LG_ERR_INVALID, "%s: beta1 = %g and beta2 = %g must be in [0, 1)", fn, h->beta1, h->beta2);
    if (!(h->eps >= 0) || !isfinite(h->eps))
        return lg_fail(LG_ERR_INVALID, "%s: eps = %g must be finite and >= 0", fn, h->eps);
    if (!(h->weight_decay >= 0) || !isfinite(h->weight_decay))
        return lg_fail(LG_ERR_INVALID, "%s: weight_decay = %g must be finite and >= 0", fn, h->weight_decay);
    if (isnan(h->max_grad_norm))
        return lg_fail(LG_ERR_INVALID, "%s: max_grad_norm is NaN", fn);
    return LG_OK;
}

enum lg_status lg_adamw_step(lg_adamw_t *a, const struct lg_adamw_hyper *h, CUstream stream)
{
    if (!a || !h)
        return lg_fail(LG_ERR_INVALID, "lg_adamw_step: null argument");
    enum lg_status st = check_hyper(h);
    if (st != LG_OK)
        return st;
    struct lg_adamw_args x = {.table = (const struct lg_adamw_entry *)a->table, .ntensors = a->ntensors,
                              .nchunks = a->nchunks, .chunk = a->chunk, .part = (double *)a->part,
                              .state = (struct lg_adamw_state *)a->state, .lr = h->lr, .beta1 = h->beta1,
                              .beta2 = h->beta2, .eps = h->eps, .weight_decay = h->weight_decay,
                              .max_norm = h->max_grad_norm};
    if ((st = lg_kernel_launch(a->k_sq, (unsigned)a->nchunks, 1, &x, sizeof x, stream)) != LG_OK)
        return st;
    if ((st = lg_kernel_launch(a->k_fin, 1, 1, &x, sizeof x, stream)) != LG_OK)
        return st;
    return lg_kernel_launch(a->k_upd, (unsigned)a->nchunks, 1, &x, sizeof x, stream);
}

enum lg_status lg_adamw_read_status(lg_adamw_t *a, CUstream stream, struct lg_adamw_status *out)
{
    if (!a || !out)
        return lg_fail(LG_ERR_INVALID, "lg_adamw_read_status: null argument");
    struct lg_adamw_state s;
    enum lg_status st = lg_cu_check(cuStreamSynchronize(stream), "lg_adamw_read_status: cuStreamSynchronize");
    if (st == LG_OK)
        st = lg_cu_check(cuMemcpyDtoH(&s, a->state, sizeof s), "lg_adamw_read_status: read");
    if (st == LG_OK)
        *out = (struct lg_adamw_status){.norm = s.norm, .clip = s.clip, .step = s.step, .skipped = s.skipped};
    return st;
}

enum lg_status lg_adamw_set_step(lg_adamw_t *a, int64_t step, CUstream stream)
{
    if (!a || step < 0)
        return lg_fail(LG_ERR_INVALID, "lg_adamw_set_step: %s", a ? "step must be >= 0" : "null argument");
    a->step_host = step;
    return lg_cu_check(cuMemcpyHtoDAsync(a->state + offsetof(struct lg_adamw_state, step), &a->step_host,
                                         sizeof a->step_host, stream),
                       "lg_adamw_set_step");
}
