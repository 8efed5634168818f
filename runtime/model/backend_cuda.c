/* backend_cuda.c: the CUDA backend of the op interface (lg_backend.h): one GPU, one stream, bf16 (or fp16)
 * activations and frozen weights, fp32 masters, gradients, moments and statistics. Every op is one of the
 * generated kernels' launchers (lg_decoder_ops.h, lg_attention.h) or cuBLASLt; the LoRA linear layers are
 * FusedMultiLoRA layers (backend_cuda_linear.c). Addresses are CUdeviceptr values.
 *
 * Per-shape op objects (norm, RoPE, SwiGLU, embedding, cross-entropy, attention) are made on first use and kept;
 * AdamW objects per tensor list. The microbatch inputs go up asynchronously through pinned staging; what
 * synchronises is the AdamW status read after each optimizer step (and a sync or download the caller asks
 * for): the loss comes back asynchronously (download_async), delivered at the next synchronisation. */
#include "backend_cuda.h"

#include "lg_half.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define D(a) ((CUdeviceptr)(a))
#define CU(call, what)                                                                                         \
    do {                                                                                                       \
        enum lg_status s_ = lg_cu_check((call), what);                                                         \
        if (s_ != LG_OK)                                                                                       \
            return s_;                                                                                         \
    } while (0)

static struct cuda_be *cb(lg_backend_t *be) { return (struct cuda_be *)be; }

static void cuda_destroy(lg_backend_t *be)
{
    struct cuda_be *c = cb(be);
    if (c->stream)
        cuStreamSynchronize(c->stream);
    for (int i = 0; i < c->nadamw; i++)
        lg_adamw_free(c->adamw[i].obj);
    free(c->adamw);
    lg_norm_free(c->norm);
    lg_rope_free(c->rope);
    lg_swiglu_free(c->swiglu);
    lg_embed_free(c->embed);
    lg_xent_free(c->xent);
    lg_attn_free(c->attn);
    lg_cuda_linear_scratch_free(c);
    if (c->staging)
        cuMemFreeHost(c->staging);
    if (c->readback)
        cuMemFreeHost(c->readback);
    free(c->pending);
    lg_cuda_prof_free(c);
    if (c->stream)
        cuStreamDestroy(c->stream);
    lg_ctx_free(c->ctx);
    free(c);
}

static enum lg_status cuda_alloc(lg_backend_t *be, size_t bytes, lg_addr *out)
{
    CUdeviceptr p = 0;
    CUresult r = cuMemAlloc(&p, bytes ? bytes : 256);
    if (r == CUDA_ERROR_OUT_OF_MEMORY) {
        size_t fr = 0, tot = 0;
        cuMemGetInfo_v2(&fr, &tot);
        return lg_fail(LG_ERR_OOM, "out of GPU memory: %.1f MiB asked for, %.1f of %.1f GiB free on %s",
                       (double)bytes / (1u << 20), (double)fr / (1u << 30), (double)tot / (1u << 30),
                       lg_ctx_device_name(cb(be)->ctx));
    }
    enum lg_status s = lg_cu_check(r, "cuMemAlloc");
    if (s != LG_OK)
        return lg_fail_wrap(s, "cuda backend: %.1f MiB: ", (double)bytes / (1u << 20));
    *out = (lg_addr)p;
    return LG_OK;
}

static void cuda_release(lg_backend_t *be, lg_addr p)
{
    if (p)
        cuMemFree(D(p));
}

/* The stream is idle: the asynchronous downloads are in the readback buffer; copy each to its destination. */
static void deliver(struct cuda_be *c)
{
    for (int i = 0; i < c->npending; i++)
        memcpy(c->pending[i].dst, c->readback + c->pending[i].at, c->pending[i].n);
    c->npending = 0;
    c->readback_used = 0;
    c->staged = 0;
}

/* Uploads are ordered on the stream: the bytes go through a pinned staging buffer and an asynchronous copy, so
 * a microbatch's inputs need no host synchronisation. A staging byte is reused only after the stream has been
 * synchronised (every download and sync does, and the staging is then empty again). */
static enum lg_status cuda_upload(lg_backend_t *be, lg_addr dst, const void *src, size_t n)
{
    struct cuda_be *c = cb(be);
    if (n > LG_CUDA_STAGING) { /* large (weights, init): synchronous, straight from the caller's memory */
        CU(cuStreamSynchronize(c->stream), "cuStreamSynchronize");
        deliver(c);
        CU(cuMemcpyHtoD(D(dst), src, n), "cuMemcpyHtoD");
        return LG_OK;
    }
    if (!c->staging)
        CU(cuMemAllocHost((void **)&c->staging, LG_CUDA_STAGING), "cuMemAllocHost");
    if (c->staged + n > LG_CUDA_STAGING) {
        CU(cuStreamSynchronize(c->stream), "cuStreamSynchronize");
        deliver(c);
    }
    memcpy(c->staging + c->staged, src, n);
    CU(cuMemcpyHtoDAsync(D(dst), c->staging + c->staged, n, c->stream), "cuMemcpyHtoDAsync");
    c->staged += (n + 255) / 256 * 256;
    return LG_OK;
}

static enum lg_status cuda_download(lg_backend_t *be, void *dst, lg_addr src, size_t n)
{
    struct cuda_be *c = cb(be);
    CU(cuStreamSynchronize(c->stream), "cuStreamSynchronize");
    deliver(c);
    CU(cuMemcpyDtoH(dst, D(src), n), "cuMemcpyDtoH");
    return LG_OK;
}

/* Into the pinned readback buffer on the stream; a full buffer grows (after a synchronisation that delivers
 * what it held). */
static enum lg_status cuda_download_async(lg_backend_t *be, void *dst, lg_addr src, size_t n)
{
    struct cuda_be *c = cb(be);
    size_t need = (n + 255) / 256 * 256;
    if (c->readback_used + need > c->readback_cap) {
        CU(cuStreamSynchronize(c->stream), "cuStreamSynchronize");
        deliver(c);
        if (need > c->readback_cap) {
            size_t cap = c->readback_cap ? c->readback_cap : 1u << 20;
            while (cap < need)
                cap *= 2;
            if (c->readback)
                cuMemFreeHost(c->readback);
            c->readback = NULL;
            c->readback_cap = 0;
            CU(cuMemAllocHost((void **)&c->readback, cap), "cuMemAllocHost");
            c->readback_cap = cap;
        }
    }
    if (c->npending == c->cap_pending) {
        int cap = c->cap_pending ? 2 * c->cap_pending : 64;
        void *grown = realloc(c->pending, (size_t)cap * sizeof *c->pending);
        if (!grown)
            return lg_fail(LG_ERR_OOM, "cuda backend: out of memory");
        c->pending = grown;
        c->cap_pending = cap;
    }
    CU(cuMemcpyDtoHAsync(c->readback + c->readback_used, D(src), n, c->stream), "cuMemcpyDtoHAsync");
    c->pending[c->npending++] = (struct cuda_pending){dst, c->readback_used, n};
    c->readback_used += need;
    return LG_OK;
}

static enum lg_status cuda_zero(lg_backend_t *be, lg_addr p, size_t n)
{
    CU(cuMemsetD8Async(D(p), 0, n, cb(be)->stream), "cuMemsetD8Async");
    return LG_OK;
}

static enum lg_status cuda_copy(lg_backend_t *be, lg_addr dst, lg_addr src, size_t n)
{
    CU(cuMemcpyDtoDAsync(D(dst), D(src), n, cb(be)->stream), "cuMemcpyDtoDAsync");
    return LG_OK;
}

static enum lg_status cuda_sync(lg_backend_t *be)
{
    CU(cuStreamSynchronize(cb(be)->stream), "cuStreamSynchronize");
    deliver(cb(be));
    return LG_OK;
}

/* used: the device's free memory when the backend was made less what is free now (anything this process, or
 * another one on the same GPU, took since). */
static enum lg_status cuda_mem_info(lg_backend_t *be, size_t *free_bytes, size_t *total_bytes, size_t *used_bytes)
{
    CU(cuMemGetInfo_v2(free_bytes, total_bytes), "cuMemGetInfo");
    size_t f0 = cb(be)->free_at_init;
    *used_bytes = f0 > *free_bytes ? f0 - *free_bytes : 0;
    return LG_OK;
}

static size_t cuda_weight_size(const lg_backend_t *be, int64_t count) { return (size_t)count * 2; }

/* fp32 host -> the weight dtype on the device, a slice at a time. */
static enum lg_status cuda_upload_weight(lg_backend_t *be, lg_addr dst, const float *src, int64_t count)
{
    const int64_t chunk = 1 << 22;
    uint16_t *buf = malloc((size_t)(count < chunk ? count : chunk) * sizeof *buf);
    if (!buf)
        return lg_fail(LG_ERR_OOM, "cuda backend: out of memory converting weights");
    enum lg_status s = lg_cu_check(cuStreamSynchronize(cb(be)->stream), "cuStreamSynchronize");
    for (int64_t at = 0; s == LG_OK && at < count; at += chunk) {
        int64_t n = count - at < chunk ? count - at : chunk;
        for (int64_t i = 0; i < n; i++)
            buf[i] = lg_f32_to_half(be->weight, src[at + i]);
        s = lg_cu_check(cuMemcpyHtoD(D(dst) + (CUdeviceptr)(at * 2), buf, (size_t)n * 2), "cuMemcpyHtoD");
    }
    free(buf);
    return s;
}

/* ---- row ops ---- */

static enum lg_status cuda_embed(lg_backend_t *be, int64_t n, int64_t d, lg_addr ids, lg_addr table, int64_t vocab,
                                 lg_addr out)
{
    struct cuda_be *c = cb(be);
    if (!c->embed) {
        struct lg_embed_params p = {.hidden = d, .vocab = vocab, .dtype = be->act};
        enum lg_status s = lg_embed_init(c->ctx, &p, &c->embed);
        if (s != LG_OK)
            return s;
    }
    struct lg_embed_run r = {.n = n, .ids = D(ids), .table = D(table), .ldt = d, .out = D(out), .ldo = d};
    return lg_embed_gather(c->embed, &r, c->stream);
}

static enum lg_status norm_obj(struct cuda_be *c, int64_t d, float eps)
{
    if (c->norm)
        return LG_OK;
    struct lg_norm_params p = {.hidden = d, .eps = eps, .dtype = c->base.act};
    return lg_norm_init(c->ctx, &p, &c->norm);
}

static enum lg_status cuda_rmsnorm_fwd(lg_backend_t *be, int64_t n, int64_t d, lg_addr res, lg_addr x, lg_addr h,
                                       lg_addr w, float eps, lg_addr y, lg_addr rstd, int64_t ldy)
{
    struct cuda_be *c = cb(be);
    enum lg_status s = norm_obj(c, d, eps);
    if (s != LG_OK)
        return s;
    if (!x && h != res) { /* the op writes no h without an x: the residual is copied where it is kept */
        CU(cuMemcpyDtoDAsync(D(h), D(res), (size_t)(n * d) * 2, c->stream), "cuMemcpyDtoDAsync");
        res = h;
    }
    struct lg_norm_fwd f = {.n = n, .x = D(x), .ldx = d, .res = D(res), .ldres = d, .h = D(h), .ldh = d,
                            .gamma = D(w), .y = D(y), .ldy = ldy ? ldy : d, .rstd = D(rstd)};
    return lg_norm_forward(c->norm, &f, c->stream);
}

static enum lg_status cuda_rmsnorm_bwd(lg_backend_t *be, int64_t n, int64_t d, lg_addr x, lg_addr w, lg_addr rstd,
                                       lg_addr dy, lg_addr dx, int accumulate)
{
    struct cuda_be *c = cb(be);
    if (!c->norm)
        return lg_fail(LG_ERR_INTERNAL, "cuda backend: norm backward before any forward");
    struct lg_norm_bwd b = {.n = n, .dy = D(dy), .lddy = d, .h = D(x), .ldh = d, .rstd = D(rstd), .gamma = D(w),
                            .dres = D(dx), .lddres = d, .accumulate = accumulate};
    return lg_norm_backward(c->norm, &b, c->stream);
}

static enum lg_status cuda_rope(lg_backend_t *be, const struct lg_mb *mb, const struct lg_ref_rope *r, lg_addr q,
                                int hq, lg_addr k, int hkv, int64_t ld, int dir)
{
    struct cuda_be *c = cb(be);
    if (!c->rope) {
        float inv[1024];
        enum lg_status s = r->d / 2 <= 1024 ? lg_ref_rope_inv_freq(r, inv)
                                            : lg_fail(LG_ERR_UNSUPPORTED, "cuda backend: head_dim %lld", (long long)r->d);
        struct lg_rope_params p = {.head_dim = r->d, .dtype = be->act, .inv_freq = inv};
        if (s == LG_OK)
            s = lg_rope_init(c->ctx, &p, &c->rope);
        if (s != LG_OK)
            return s;
    }
    struct lg_rope_run run = {.n = mb->n, .q = D(q), .ldq = ld ? ld : (int64_t)hq * r->d, .hq = hq, .k = D(k),
                              .ldk = ld ? ld : (int64_t)hkv * r->d, .hk = hkv, .cu_seqlens = D(mb->cu_dev), .nseq = mb->nseq,
                              .backward = dir < 0};
    return lg_rope_apply(c->rope, &run, c->stream);
}

/* The attention backend (docs/attention.md): in a run that is not deterministic, cuDNN's where it loads (on the
 * 8B benchmark it made 4 x 2048 microbatches 4.6% and the packed mix ~8% faster than the generated kernels,
 * with every plan of an epoch made before its first step; docs/perf.md, 2026-12-02), else the generated
 * kernels, which are also the only backend of deterministic runs (cuDNN sums dQ with atomics).
 * LORAGEN_ATTN_BACKEND=generated|cudnn chooses; asking for cuDNN makes its refusal the error. */
static enum lg_status attn_obj(struct cuda_be *c, int hq, int hkv, int d)
{
    if (c->attn)
        return LG_OK;
    struct lg_attn_params p = {.hq = hq, .hkv = hkv, .head_dim = d, .dtype = c->base.act,
                               .backend = LG_ATTN_GENERATED, .flags = c->deterministic ? LG_ATTN_DETERMINISTIC : 0};
    const char *env = getenv("LORAGEN_ATTN_BACKEND");
    if (env && env[0] && strcmp(env, "generated") && strcmp(env, "cudnn"))
        return lg_fail(LG_ERR_INVALID, "LORAGEN_ATTN_BACKEND is '%s'; it takes generated or cudnn", env);
    const int asked = env && !strcmp(env, "cudnn"), auto_pick = !env || !env[0];
    if (asked || (auto_pick && !c->deterministic)) {
        p.backend = LG_ATTN_CUDNN;
        enum lg_status s = lg_attn_init(c->ctx, &p, &c->attn);
        if (s == LG_OK || asked || s == LG_ERR_OOM)
            return s;
        lg_clear_error(); /* no cuDNN here, too old, or refusing this shape: the generated kernels */
        p.backend = LG_ATTN_GENERATED;
    }
    return lg_attn_init(c->ctx, &p, &c->attn);
}

static struct lg_attn_seqs seqs_of(const struct lg_mb *mb)
{
    return (struct lg_attn_seqs){.nseq = mb->nseq, .cu_host = mb->cu, .cu = D(mb->cu_dev), .tokens = mb->n,
                                 .max_len = mb->max_len};
}

static enum lg_status cuda_attn_fwd(lg_backend_t *be, const struct lg_mb *mb, int hq, int hkv, int d, lg_addr q,
                                    lg_addr k, lg_addr v, int64_t ld, lg_addr o, lg_addr lse)
{
    struct cuda_be *c = cb(be);
    enum lg_status s = attn_obj(c, hq, hkv, d);
    if (s != LG_OK)
        return s;
    int64_t lq = (int64_t)hq * d, lk = (int64_t)hkv * d;
    struct lg_attn_fwd f = {.seqs = seqs_of(mb), .q = D(q), .k = D(k), .v = D(v), .ldq = ld ? ld : lq,
                            .ldk = ld ? ld : lk, .ldv = ld ? ld : lk, .o = D(o), .ldo = lq, .lse = D(lse)};
    return lg_attn_forward(c->attn, &f, c->stream);
}

static enum lg_status cuda_attn_prepare(lg_backend_t *be, const struct lg_mb *mb, int hq, int hkv, int d, int64_t ld,
                                        int64_t ldd)
{
    struct cuda_be *c = cb(be);
    enum lg_status s = attn_obj(c, hq, hkv, d);
    if (s != LG_OK)
        return s;
    const int64_t lq = (int64_t)hq * d, lk = (int64_t)hkv * d;
    const struct lg_attn_seqs sq = {.nseq = mb->nseq, .tokens = mb->n, .max_len = mb->max_len};
    struct lg_attn_fwd f = {.seqs = sq, .ldq = ld ? ld : lq, .ldk = ld ? ld : lk, .ldv = ld ? ld : lk, .ldo = lq};
    struct lg_attn_bwd b = {.seqs = sq, .ldq = ld ? ld : lq, .ldk = ld ? ld : lk, .ldv = ld ? ld : lk, .ldo = lq,
                            .lddo = lq, .lddq = ldd ? ldd : lq, .lddk = ldd ? ldd : lk, .lddv = ldd ? ldd : lk};
    return lg_attn_prepare(c->attn, &f, &b, c->stream);
}

static enum lg_status cuda_attn_bwd(lg_backend_t *be, const struct lg_mb *mb, int hq, int hkv, int d, lg_addr q,
                                    lg_addr k, lg_addr v, int64_t ld, lg_addr o, lg_addr lse, lg_addr dout,
                                    lg_addr dq, lg_addr dk, lg_addr dv, int64_t ldd)
{
    struct cuda_be *c = cb(be);
    enum lg_status s = attn_obj(c, hq, hkv, d);
    if (s != LG_OK)
        return s;
    int64_t lq = (int64_t)hq * d, lk = (int64_t)hkv * d;
    struct lg_attn_bwd b = {.seqs = seqs_of(mb), .q = D(q), .k = D(k), .v = D(v), .o = D(o), .dout = D(dout),
                            .ldq = ld ? ld : lq, .ldk = ld ? ld : lk, .ldv = ld ? ld : lk, .ldo = lq, .lddo = lq,
                            .lse = D(lse), .dq = D(dq), .dk = D(dk), .dv = D(dv), .lddq = ldd ? ldd : lq,
                            .lddk = ldd ? ldd : lk, .lddv = ldd ? ldd : lk};
    return lg_attn_backward(c->attn, &b, c->stream);
}

static enum lg_status swiglu_obj(struct cuda_be *c, int64_t f)
{
    if (c->swiglu)
        return LG_OK;
    struct lg_swiglu_params p = {.inter = f, .dtype = c->base.act};
    return lg_swiglu_init(c->ctx, &p, &c->swiglu);
}

static enum lg_status cuda_swiglu_fwd(lg_backend_t *be, int64_t n, int64_t f, lg_addr g, lg_addr u, int64_t ld,
                                      lg_addr a)
{
    struct cuda_be *c = cb(be);
    enum lg_status s = swiglu_obj(c, f);
    if (s != LG_OK)
        return s;
    ld = ld ? ld : f;
    struct lg_swiglu_fwd r = {.n = n, .g = D(g), .ldg = ld, .u = D(u), .ldu = ld, .a = D(a), .lda = f};
    return lg_swiglu_forward(c->swiglu, &r, c->stream);
}

static enum lg_status cuda_swiglu_bwd(lg_backend_t *be, int64_t n, int64_t f, lg_addr g, lg_addr u, int64_t ld,
                                      lg_addr da, lg_addr dg, lg_addr du, int64_t ldd)
{
    struct cuda_be *c = cb(be);
    enum lg_status s = swiglu_obj(c, f);
    if (s != LG_OK)
        return s;
    ld = ld ? ld : f;
    ldd = ldd ? ldd : f;
    struct lg_swiglu_bwd r = {.n = n, .g = D(g), .ldg = ld, .u = D(u), .ldu = ld, .da = D(da), .ldda = f,
                              .dg = D(dg), .lddg = ldd, .du = D(du), .lddu = ldd};
    return lg_swiglu_backward(c->swiglu, &r, c->stream);
}

static enum lg_status cuda_xent(lg_backend_t *be, int64_t n, int64_t h, int64_t vocab, lg_addr x, lg_addr head,
                                lg_addr target, lg_addr weight, lg_addr loss, lg_addr dx)
{
    struct cuda_be *c = cb(be);
    if (!c->xent) {
        struct lg_xent_params p = {.hidden = h, .vocab = vocab, .dtype = be->act};
        enum lg_status s = lg_xent_init(c->ctx, &p, &c->xent);
        if (s != LG_OK)
            return s;
    }
    struct lg_xent_run r = {.n = n, .x = D(x), .ldx = h, .w = D(head), .ldw = h, .labels = D(target),
                            .weight = D(weight), .loss = D(loss), .dx = D(dx), .lddx = h, .dx_beta = 0,
                            .grad_scale = 1};
    return lg_xent_apply(c->xent, &r, c->stream);
}

/* One AdamW object per tensor list (an adapter's), made on its first step. */
static enum lg_status cuda_adamw(lg_backend_t *be, const struct lg_opt_tensor *t, int count,
                                 const struct lg_opt_step *st, int *skipped, double *norm)
{
    struct cuda_be *c = cb(be);
    lg_adamw_t *obj = NULL;
    for (int i = 0; i < c->nadamw && !obj; i++)
        if (c->adamw[i].key == t && c->adamw[i].count == count)
            obj = c->adamw[i].obj;
    enum lg_status s = LG_OK;
    if (!obj) {
        struct lg_adamw_tensor *tt = calloc((size_t)count + 1, sizeof *tt);
        void *grown = realloc(c->adamw, (size_t)(c->nadamw + 1) * sizeof *c->adamw);
        if (!tt || !grown) {
            free(tt);
            free(grown == c->adamw ? NULL : grown);
            return lg_fail(LG_ERR_OOM, "cuda backend: out of memory");
        }
        c->adamw = grown;
        for (int i = 0; i < count; i++)
            tt[i] = (struct lg_adamw_tensor){.p = D(t[i].p), .g = D(t[i].g), .m = D(t[i].m), .v = D(t[i].v),
                                             .count = t[i].n, .half = D(t[i].half), .half_ld = t[i].half_ld,
                                             .half_cols = t[i].half_cols};
        struct lg_adamw_params p = {.dtype = be->act, .ntensors = count, .tensors = tt};
        s = lg_adamw_init(c->ctx, &p, &obj);
        free(tt);
        if (s != LG_OK)
            return s;
        c->adamw[c->nadamw++] = (struct cuda_adamw){t, count, obj};
    }
    struct lg_adamw_hyper h = {.lr = st->lr, .beta1 = st->beta1, .beta2 = st->beta2, .eps = st->eps,
                               .weight_decay = st->weight_decay, .max_grad_norm = st->max_norm};
    s = lg_adamw_set_step(obj, st->step - 1, c->stream);
    if (s == LG_OK)
        s = lg_adamw_step(obj, &h, c->stream);
    struct lg_adamw_status as;
    if (s == LG_OK)
        s = lg_adamw_read_status(obj, c->stream, &as);
    if (s == LG_OK) {
        *skipped = as.skipped;
        *norm = as.norm;
    }
    return s;
}

const struct lg_backend_ops lg_cuda_ops = {
    .name = "cuda",
    .destroy = cuda_destroy,
    .alloc = cuda_alloc,
    .release = cuda_release,
    .upload = cuda_upload,
    .download = cuda_download,
    .download_async = cuda_download_async,
    .zero = cuda_zero,
    .copy = cuda_copy,
    .sync = cuda_sync,
    .mem_info = cuda_mem_info,
    .upload_weight = cuda_upload_weight,
    .begin = lg_cuda_begin,
    .weight_size = cuda_weight_size,
    .embed = cuda_embed,
    .rmsnorm_fwd = cuda_rmsnorm_fwd,
    .rmsnorm_bwd = cuda_rmsnorm_bwd,
    .rope = cuda_rope,
    .attn_fwd = cuda_attn_fwd,
    .attn_prepare = cuda_attn_prepare,
    .attn_bwd = cuda_attn_bwd,
    .swiglu_fwd = cuda_swiglu_fwd,
    .swiglu_bwd = cuda_swiglu_bwd,
    .xent = cuda_xent,
    .linear_init = lg_cuda_linear_init,
    .linear_free = lg_cuda_linear_free,
    .linear_reserve = lg_cuda_linear_reserve,
    .linear_params = lg_cuda_linear_params,
    .linear_in_ld = lg_cuda_linear_in_ld,
    .linear_fwd = lg_cuda_linear_fwd,
    .linear_bwd = lg_cuda_linear_bwd,
    .linear_sync = lg_cuda_linear_sync,
    .adamw = cuda_adamw,
};

enum lg_status lg_backend_cuda_init(const struct lg_backend_cuda_params *p, lg_backend_t **out)
{
    struct cuda_be *c = calloc(1, sizeof *c);
    if (!c)
        return lg_fail(LG_ERR_OOM, "cuda backend: out of memory");
    struct lg_ctx_params cp = {.device = p ? p->device : 0};
    enum lg_status s = lg_ctx_init(&cp, &c->ctx);
    if (s == LG_OK)
        s = lg_cu_check(cuStreamCreate(&c->stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    if (s != LG_OK) {
        lg_ctx_free(c->ctx);
        free(c);
        return s;
    }
    c->base.ops = &lg_cuda_ops;
    if (p && p->profile) {
        lg_cuda_prof_table(&c->prof_ops);
        c->base.ops = &c->prof_ops;
    }
    c->base.act = c->base.weight = p && p->dtype == LG_FP16 ? LG_FP16 : LG_BF16;
    c->deterministic = p ? p->deterministic : 1;
    c->max_tokens = p ? p->max_tokens : 0;
    c->nadapters = p && p->nadapters > 0 ? p->nadapters : 1;
    size_t total = 0;
    if (cuMemGetInfo_v2(&c->free_at_init, &total) != CUDA_SUCCESS)
        c->free_at_init = 0;
    snprintf(c->base.desc, sizeof c->base.desc, "cuda: %s (sm_%d), %s", lg_ctx_device_name(c->ctx),
             lg_ctx_arch(c->ctx), lg_dtype_name(c->base.act));
    *out = &c->base;
    return LG_OK;
}
