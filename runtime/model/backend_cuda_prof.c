/* backend_cuda_prof.c: the CUDA backend with every op timed (lg_backend_cuda_params.profile, `loragen train
 * --profile`). The same ops as lg_cuda_ops, each bracketed by two CUDA events on the backend's stream and
 * filed under an op family. Events are read back only where the backend synchronises anyway (a download, a
 * sync, the AdamW status) or when the pool is full, so profiling adds two event records per op and no
 * synchronisation of its own.
 *
 * The report gives, per family, the GPU time, its share and the calls; "GPU idle between ops" is the time
 * inside the timed windows (from an op's start to the last op's end before a read-back) when no op ran:
 * launch gaps the host could not fill. Host work between windows (the scheduler, uploads' preparation, the
 * read-backs themselves) is what the trainer's wall time has beyond the windows. */
#include "backend_cuda.h"

#include "lg_hf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum fam {
    F_EMBED, F_NORM_F, F_NORM_B, F_ROPE, F_ATTN_F, F_ATTN_B, F_SWIGLU_F, F_SWIGLU_B, F_XENT,
    F_QKV_F, F_QKV_B, F_O_F, F_O_B, F_GU_F, F_GU_B, F_DOWN_F, F_DOWN_B, F_ADAMW, F_MEM, F_COUNT
};

static const char *const fam_name[F_COUNT] = {
    "embedding", "rmsnorm fwd (+residual)", "rmsnorm bwd", "rope fwd+bwd", "attention fwd", "attention bwd",
    "swiglu fwd", "swiglu bwd", "lm head + cross-entropy", "q/k/v linear fwd", "q/k/v linear bwd",
    "o linear fwd", "o linear bwd", "gate/up linear fwd", "gate/up linear bwd", "down linear fwd",
    "down linear bwd", "adamw", "copies, zeroing, uploads",
};

#define POOL 4096 /* events in flight: 2 per op */

struct lg_cuda_prof {
    CUevent ev[POOL];
    int fam[POOL / 2];
    int n;      /* ops recorded since the last read-back */
    int ready;  /* events created */
    double ms[F_COUNT];
    long long calls[F_COUNT];
    double window_ms; /* first start to last end, summed over windows */
};

static struct cuda_be *cb(lg_backend_t *be) { return (struct cuda_be *)be; }

void lg_cuda_prof_free(struct cuda_be *c)
{
    struct lg_cuda_prof *p = c->prof;
    if (!p)
        return;
    for (int i = 0; i < p->ready; i++)
        cuEventDestroy(p->ev[i]);
    free(p);
    c->prof = NULL;
}

/* Waits for the recorded ops and adds their times. */
static enum lg_status flush(struct cuda_be *c)
{
    struct lg_cuda_prof *p = c->prof;
    if (!p || !p->n)
        return LG_OK;
    enum lg_status s = lg_cu_check(cuEventSynchronize(p->ev[2 * p->n - 1]), "cuEventSynchronize");
    for (int i = 0; s == LG_OK && i < p->n; i++) {
        float ms = 0;
        s = lg_cu_check(cuEventElapsedTime(&ms, p->ev[2 * i], p->ev[2 * i + 1]), "cuEventElapsedTime");
        p->ms[p->fam[i]] += ms;
        p->calls[p->fam[i]]++;
    }
    float w = 0;
    if (s == LG_OK)
        s = lg_cu_check(cuEventElapsedTime(&w, p->ev[0], p->ev[2 * p->n - 1]), "cuEventElapsedTime");
    p->window_ms += w;
    p->n = 0;
    return s;
}

static enum lg_status mark(lg_backend_t *be, int f)
{
    struct cuda_be *c = cb(be);
    struct lg_cuda_prof *p = c->prof;
    if (!p) {
        p = c->prof = calloc(1, sizeof *p);
        if (!p)
            return lg_fail(LG_ERR_OOM, "cuda profile: out of memory");
        for (; p->ready < POOL; p->ready++)
            if (cuEventCreate(&p->ev[p->ready], CU_EVENT_DEFAULT) != CUDA_SUCCESS)
                return lg_fail(LG_ERR_CUDA, "cuda profile: cannot create events");
    }
    if (p->n == POOL / 2) {
        enum lg_status s = flush(c);
        if (s != LG_OK)
            return s;
    }
    p->fam[p->n] = f;
    return lg_cu_check(cuEventRecord(p->ev[2 * p->n], c->stream), "cuEventRecord");
}

static enum lg_status done(lg_backend_t *be, enum lg_status s)
{
    struct cuda_be *c = cb(be);
    struct lg_cuda_prof *p = c->prof;
    enum lg_status e = lg_cu_check(cuEventRecord(p->ev[2 * p->n + 1], c->stream), "cuEventRecord");
    p->n++;
    return s != LG_OK ? s : e;
}

#define TIMED(fam, call)                                                                                       \
    do {                                                                                                       \
        enum lg_status m_ = mark(be, fam);                                                                     \
        return m_ != LG_OK ? m_ : done(be, (call));                                                            \
    } while (0)

static enum lg_status p_upload(lg_backend_t *be, lg_addr dst, const void *src, size_t n)
{
    TIMED(F_MEM, lg_cuda_ops.upload(be, dst, src, n));
}

static enum lg_status p_download(lg_backend_t *be, void *dst, lg_addr src, size_t n)
{
    enum lg_status s = lg_cuda_ops.download(be, dst, src, n);
    return s != LG_OK ? s : flush(cb(be));
}

static enum lg_status p_zero(lg_backend_t *be, lg_addr p, size_t n) { TIMED(F_MEM, lg_cuda_ops.zero(be, p, n)); }

static enum lg_status p_copy(lg_backend_t *be, lg_addr dst, lg_addr src, size_t n)
{
    TIMED(F_MEM, lg_cuda_ops.copy(be, dst, src, n));
}

static enum lg_status p_sync(lg_backend_t *be)
{
    enum lg_status s = lg_cuda_ops.sync(be);
    return s != LG_OK ? s : flush(cb(be));
}

static enum lg_status p_begin(lg_backend_t *be, const struct lg_mb *mb) { TIMED(F_MEM, lg_cuda_ops.begin(be, mb)); }

static enum lg_status p_embed(lg_backend_t *be, int64_t n, int64_t d, lg_addr ids, lg_addr table, int64_t vocab,
                              lg_addr out)
{
    TIMED(F_EMBED, lg_cuda_ops.embed(be, n, d, ids, table, vocab, out));
}

static enum lg_status p_norm_f(lg_backend_t *be, int64_t n, int64_t d, lg_addr res, lg_addr x, lg_addr h, lg_addr w,
                               float eps, lg_addr y, lg_addr rstd, int64_t ldy)
{
    TIMED(F_NORM_F, lg_cuda_ops.rmsnorm_fwd(be, n, d, res, x, h, w, eps, y, rstd, ldy));
}

static enum lg_status p_norm_b(lg_backend_t *be, int64_t n, int64_t d, lg_addr x, lg_addr w, lg_addr rstd,
                               lg_addr dy, lg_addr dx, int acc)
{
    TIMED(F_NORM_B, lg_cuda_ops.rmsnorm_bwd(be, n, d, x, w, rstd, dy, dx, acc));
}

static enum lg_status p_rope(lg_backend_t *be, const struct lg_mb *mb, const struct lg_ref_rope *r, lg_addr q, int hq,
                             lg_addr k, int hkv, int64_t ld, int dir)
{
    TIMED(F_ROPE, lg_cuda_ops.rope(be, mb, r, q, hq, k, hkv, ld, dir));
}

static enum lg_status p_attn_f(lg_backend_t *be, const struct lg_mb *mb, int hq, int hkv, int d, lg_addr q,
                               lg_addr k, lg_addr v, int64_t ld, lg_addr o, lg_addr lse)
{
    TIMED(F_ATTN_F, lg_cuda_ops.attn_fwd(be, mb, hq, hkv, d, q, k, v, ld, o, lse));
}

static enum lg_status p_attn_b(lg_backend_t *be, const struct lg_mb *mb, int hq, int hkv, int d, lg_addr q,
                               lg_addr k, lg_addr v, int64_t ld, lg_addr o, lg_addr lse, lg_addr dout, lg_addr dq,
                               lg_addr dk, lg_addr dv, int64_t ldd)
{
    TIMED(F_ATTN_B, lg_cuda_ops.attn_bwd(be, mb, hq, hkv, d, q, k, v, ld, o, lse, dout, dq, dk, dv, ldd));
}

static enum lg_status p_swiglu_f(lg_backend_t *be, int64_t n, int64_t f, lg_addr g, lg_addr u, int64_t ld, lg_addr a)
{
    TIMED(F_SWIGLU_F, lg_cuda_ops.swiglu_fwd(be, n, f, g, u, ld, a));
}

static enum lg_status p_swiglu_b(lg_backend_t *be, int64_t n, int64_t f, lg_addr g, lg_addr u, int64_t ld,
                                 lg_addr da, lg_addr dg, lg_addr du, int64_t ldd)
{
    TIMED(F_SWIGLU_B, lg_cuda_ops.swiglu_bwd(be, n, f, g, u, ld, da, dg, du, ldd));
}

static enum lg_status p_xent(lg_backend_t *be, int64_t n, int64_t h, int64_t vocab, lg_addr x, lg_addr head,
                             lg_addr target, lg_addr weight, lg_addr loss, lg_addr dx)
{
    TIMED(F_XENT, lg_cuda_ops.xent(be, n, h, vocab, x, head, target, weight, loss, dx));
}

static int linear_fam(const lg_lora_linear_t *l, int bwd)
{
    switch (lg_cuda_linear_module(l)) {
    case LG_PEFT_Q_PROJ: return bwd ? F_QKV_B : F_QKV_F;
    case LG_PEFT_O_PROJ: return bwd ? F_O_B : F_O_F;
    case LG_PEFT_GATE_PROJ: return bwd ? F_GU_B : F_GU_F;
    default: return bwd ? F_DOWN_B : F_DOWN_F;
    }
}

static enum lg_status p_linear_f(lg_backend_t *be, lg_lora_linear_t *l, const struct lg_mb *mb, lg_addr x,
                                 int64_t ldx, lg_addr y, int64_t ldy)
{
    TIMED(linear_fam(l, 0), lg_cuda_ops.linear_fwd(be, l, mb, x, ldx, y, ldy));
}

static enum lg_status p_linear_b(lg_backend_t *be, lg_lora_linear_t *l, const struct lg_mb *mb, lg_addr x,
                                 int64_t ldx, lg_addr dy, int64_t lddy, lg_addr dx)
{
    TIMED(linear_fam(l, 1), lg_cuda_ops.linear_bwd(be, l, mb, x, ldx, dy, lddy, dx));
}

/* AdamW reads its status back (a synchronisation): the window closes with it. */
static enum lg_status p_adamw(lg_backend_t *be, const struct lg_opt_tensor *t, int count, const struct lg_opt_step *st,
                              int *skipped, double *norm)
{
    enum lg_status s = mark(be, F_ADAMW);
    if (s == LG_OK)
        s = done(be, lg_cuda_ops.adamw(be, t, count, st, skipped, norm));
    return s != LG_OK ? s : flush(cb(be));
}

static enum lg_status p_profile(lg_backend_t *be, char *buf, size_t size)
{
    struct cuda_be *c = cb(be);
    enum lg_status s = flush(c);
    struct lg_cuda_prof *p = c->prof;
    if (size)
        buf[0] = 0;
    if (s != LG_OK || !p)
        return s;
    double total = 0;
    for (int f = 0; f < F_COUNT; f++)
        total += p->ms[f];
    size_t at = 0;
#define OUT(...)                                                                                               \
    do {                                                                                                       \
        int k_ = snprintf(buf + at, at < size ? size - at : 0, __VA_ARGS__);                                   \
        at += k_ > 0 ? (size_t)k_ : 0;                                                                         \
    } while (0)
    OUT("%-26s %12s %7s %9s\n", "op family (CUDA events)", "GPU ms", "share", "calls");
    for (int f = 0; f < F_COUNT; f++)
        if (p->calls[f])
            OUT("%-26s %12.1f %6.1f%% %9lld\n", fam_name[f], p->ms[f], total > 0 ? 100 * p->ms[f] / total : 0,
                p->calls[f]);
    OUT("%-26s %12.1f\n", "sum of ops", total);
    OUT("%-26s %12.1f %6.1f%%  (inside the timed windows, no op running)\n", "GPU idle between ops",
        p->window_ms - total, p->window_ms > 0 ? 100 * (p->window_ms - total) / p->window_ms : 0);
#undef OUT
    return LG_OK;
}

/* The profiled table: lg_cuda_ops with the timed ops in place of the plain ones. */
void lg_cuda_prof_table(struct lg_backend_ops *o)
{
    *o = lg_cuda_ops;
    o->upload = p_upload;
    o->download = p_download;
    o->zero = p_zero;
    o->copy = p_copy;
    o->sync = p_sync;
    o->begin = p_begin;
    o->embed = p_embed;
    o->rmsnorm_fwd = p_norm_f;
    o->rmsnorm_bwd = p_norm_b;
    o->rope = p_rope;
    o->attn_fwd = p_attn_f;
    o->attn_bwd = p_attn_b;
    o->swiglu_fwd = p_swiglu_f;
    o->swiglu_bwd = p_swiglu_b;
    o->xent = p_xent;
    o->linear_fwd = p_linear_f;
    o->linear_bwd = p_linear_b;
    o->adamw = p_adamw;
    o->profile = p_profile;
}
