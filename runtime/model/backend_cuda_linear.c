/* backend_cuda_linear.c: LoRA linear layers of the CUDA backend, each a FusedMultiLoRA layer (lg_mlora.h): one
 * to three modules reading one input (q/k/v, gate/up merged), one slot per adapter and module, the
 * microbatch's segment table built once for all layers. Merged outputs (q/k/v, gate/up) are written side by
 * side into the caller's buffer, which the decoder's ops then read as strided views (no copies). A layer whose
 * input rows have the room linear_in_ld asks for (the decoder's x1 and x2: q/k/v and gate/up) runs strategy
 * (a): S in X's tail, one GEMM over [X | S] and no pass over Y; the others (o, down: their inputs are
 * attention's and SwiGLU's packed outputs) run (b) with S in a buffer of the layer's own, kept from the forward
 * to the backward. LORAGEN_MLORA_STRATEGY=b puts every layer on (b), for side-by-side timing.
 *
 * The layer keeps fp32 masters of A and B (what the optimizer updates); its dtype copies live in the
 * FusedMultiLoRA weight buffer, where the optimizer's launch refreshes them (lg_lora_params.a_half/b_half) and
 * linear_sync rewrites them from the masters after an upload. */
#include "backend_cuda.h"

#include "lg_half.h"

#include <stdlib.h>
#include <string.h>

#define D(a) ((CUdeviceptr)(a))

struct lg_lora_linear {
    struct lg_lora_linear_desc d;
    struct lg_lora_slot *slots; /* [nadapters * nout] */
    lg_mlora_t *ml;
    int64_t ysum, col[LG_LINEAR_MAX_OUT]; /* ΣM and each module's first column */
    CUdeviceptr s;                        /* S [max_tokens, lds] */
    int64_t lds;
    CUdeviceptr *ma, *mb; /* fp32 masters per slot (0 for rank 0) */
};

static struct cuda_be *cb(lg_backend_t *be) { return (struct cuda_be *)be; }

static uint16_t *to_bits(enum lg_dtype t, const float *x, int64_t n)
{
    uint16_t *b = malloc((size_t)(n ? n : 1) * sizeof *b);
    for (int64_t i = 0; b && i < n; i++)
        b[i] = lg_f32_to_half(t, x[i]);
    return b;
}

void lg_cuda_linear_free(lg_backend_t *be, lg_lora_linear_t *l)
{
    if (!l)
        return;
    for (int i = 0; l->ma && i < l->d.nadapters * l->d.nout; i++) {
        if (l->ma[i])
            cuMemFree(l->ma[i]);
        if (l->mb[i])
            cuMemFree(l->mb[i]);
    }
    if (l->s)
        cuMemFree(l->s);
    lg_mlora_free(l->ml);
    free(l->ma);
    free(l->mb);
    free(l->slots);
    free(l);
}

static enum lg_status set_weights(lg_backend_t *be, lg_lora_linear_t *l, const float *const *w, const float *const *bias)
{
    enum lg_status s = LG_OK;
    for (int m = 0; s == LG_OK && m < l->d.nout; m++) {
        uint16_t *wb = to_bits(be->weight, w[m], l->d.out[m] * l->d.in);
        uint16_t *bb = l->d.has_bias ? to_bits(be->weight, bias[m], l->d.out[m]) : NULL;
        s = wb && (!l->d.has_bias || bb) ? lg_mlora_set_weights(l->ml, m, wb, bb)
                                         : lg_fail(LG_ERR_OOM, "cuda linear: out of memory");
        free(wb);
        free(bb);
    }
    return s;
}

static enum lg_status alloc_masters(lg_lora_linear_t *l)
{
    int n = l->d.nadapters * l->d.nout;
    l->ma = calloc((size_t)n + 1, sizeof *l->ma);
    l->mb = calloc((size_t)n + 1, sizeof *l->mb);
    if (!l->ma || !l->mb)
        return lg_fail(LG_ERR_OOM, "cuda linear: out of memory");
    enum lg_status s = LG_OK;
    for (int i = 0; s == LG_OK && i < n; i++) {
        int r = l->slots[i].rank, m = i % l->d.nout;
        if (!r)
            continue;
        size_t na = (size_t)r * (size_t)l->d.in * 4, nb = (size_t)r * (size_t)l->d.out[m] * 4;
        s = lg_cu_check(cuMemAlloc(&l->ma[i], na), "cuMemAlloc");
        if (s == LG_OK)
            s = lg_cu_check(cuMemAlloc(&l->mb[i], nb), "cuMemAlloc");
        if (s == LG_OK)
            s = lg_cu_check(cuMemsetD8(l->ma[i], 0, na), "cuMemsetD8");
        if (s == LG_OK)
            s = lg_cu_check(cuMemsetD8(l->mb[i], 0, nb), "cuMemsetD8");
    }
    return s;
}

enum lg_status lg_cuda_linear_init(lg_backend_t *be, const struct lg_lora_linear_desc *d, const float *const *w,
                                   const float *const *bias, lg_lora_linear_t **out)
{
    struct cuda_be *c = cb(be);
    int64_t T = d->max_tokens > 0 ? d->max_tokens : c->max_tokens;
    if (T < 1)
        return lg_fail(LG_ERR_INTERNAL, "cuda linear: no max_tokens (the largest microbatch)");
    lg_lora_linear_t *l = calloc(1, sizeof *l);
    if (!l)
        return lg_fail(LG_ERR_OOM, "cuda linear: out of memory");
    l->d = *d;
    int ns = d->nadapters * d->nout;
    l->slots = calloc((size_t)ns + 1, sizeof *l->slots);
    struct lg_mlora_slot_params *sp = calloc((size_t)ns + 1, sizeof *sp);
    enum lg_status s = l->slots && sp ? LG_OK : lg_fail(LG_ERR_OOM, "cuda linear: out of memory");
    for (int i = 0; s == LG_OK && i < ns; i++) {
        l->slots[i] = d->slots[i];
        sp[i] = (struct lg_mlora_slot_params){d->slots[i].rank, d->slots[i].alpha, d->slots[i].dropout};
    }
    l->d.slots = l->slots;
    struct lg_mlora_params mp = {.in_features = d->in, .nmod = d->nout, .nadapters = d->nadapters, .slots = sp,
                                 .dtype = be->act, .has_bias = d->has_bias, .layer_id = d->layer_id};
    for (int m = 0; m < d->nout; m++) {
        mp.out_features[m] = d->out[m];
        l->col[m] = l->ysum;
        l->ysum += d->out[m];
    }
    if (s == LG_OK && !c->mlws)
        s = lg_mlora_ws_init(&c->mlws);
    if (s == LG_OK && (s = lg_mlora_init(c->ctx, &mp, &l->ml)) == LG_OK)
        lg_mlora_share_ws(l->ml, c->mlws);
    free(sp);
    if (s == LG_OK)
        s = set_weights(be, l, w, bias);
    if (s == LG_OK)
        s = alloc_masters(l);
    if (s == LG_OK) {
        l->lds = (lg_mlora_compact_cols(l->ml) + 7) / 8 * 8;
        if (l->lds < 8)
            l->lds = 8;
        s = lg_cu_check(cuMemAlloc(&l->s, (size_t)(T * l->lds) * 2), "cuMemAlloc");
    }
    if (s != LG_OK) {
        lg_cuda_linear_free(be, l);
        if (s == LG_ERR_OOM) {
            size_t fr = 0, tot = 0;
            cuMemGetInfo_v2(&fr, &tot);
            return lg_fail_wrap(s, "loading the frozen weights (layer %u): %.1f of %.1f GiB free: the model does "
                                   "not fit this GPU in %s; use a larger GPU or split the layers over several "
                                   "(pipeline parallelism): ",
                                d->layer_id / 8, (double)fr / (1u << 30), (double)tot / (1u << 30),
                                lg_dtype_name(be->weight));
        }
        return s;
    }
    *out = l;
    return LG_OK;
}

/* S [max_tokens, lds] again, for another largest microbatch (lg_decoder_reserve). */
enum lg_status lg_cuda_linear_reserve(lg_backend_t *be, lg_lora_linear_t *l, int64_t max_tokens)
{
    struct cuda_be *c = cb(be);
    enum lg_status s = lg_cu_check(cuStreamSynchronize(c->stream), "cuStreamSynchronize");
    if (s != LG_OK)
        return s;
    if (l->s)
        cuMemFree(l->s);
    l->s = 0;
    l->d.max_tokens = max_tokens;
    return lg_cu_check(cuMemAlloc(&l->s, (size_t)(max_tokens * l->lds) * 2), "cuMemAlloc");
}

enum lg_status lg_cuda_linear_params(lg_backend_t *be, lg_lora_linear_t *l, int adapter, int out,
                                     struct lg_lora_params *p)
{
    if (adapter < 0 || adapter >= l->d.nadapters || out < 0 || out >= l->d.nout)
        return lg_fail(LG_ERR_INVALID, "cuda linear: adapter %d, output %d out of range", adapter, out);
    int i = adapter * l->d.nout + out, r = l->slots[i].rank;
    memset(p, 0, sizeof *p);
    p->rank = r;
    p->in = l->d.in;
    p->out = l->d.out[out];
    if (!r)
        return LG_OK;
    CUdeviceptr da, db, w;
    int64_t ldw;
    enum lg_status s = lg_mlora_grads(l->ml, adapter, out, &da, &db);
    if (s != LG_OK)
        return s;
    w = lg_mlora_weights(l->ml, &ldw);
    int64_t col = lg_mlora_slot_col(l->ml, adapter, out, 1), esz = 2;
    p->a = l->ma[i];
    p->b = l->mb[i];
    p->da = da;
    p->db = db;
    /* FusedMultiLoRA's buffer: A(a, m) in rows ΣM + col(a, m) (K columns); B(a, m) in module m's rows at
     * column K + col(a, m) (docs/fusedmultilora.md, "Buffers") */
    p->a_half = w + (CUdeviceptr)(((l->ysum + col) * ldw) * esz);
    p->b_half = w + (CUdeviceptr)((l->col[out] * ldw + l->d.in + col) * esz);
    p->half_ld = ldw;
    return LG_OK;
}

/* Rewrites the dtype copies of adapter `a` from its masters (after an upload: init, init_adapter, resume). */
enum lg_status lg_cuda_linear_sync(lg_backend_t *be, lg_lora_linear_t *l, int adapter)
{
    struct cuda_be *c = cb(be);
    enum lg_status s = lg_cu_check(cuStreamSynchronize(c->stream), "cuStreamSynchronize");
    for (int m = 0; s == LG_OK && m < l->d.nout; m++) {
        int i = adapter * l->d.nout + m, r = l->slots[i].rank;
        if (!r)
            continue;
        int64_t na = (int64_t)r * l->d.in, nb = (int64_t)r * l->d.out[m];
        float *fa = malloc((size_t)na * sizeof *fa), *fb = malloc((size_t)nb * sizeof *fb);
        s = fa && fb ? LG_OK : lg_fail(LG_ERR_OOM, "cuda linear: out of memory");
        if (s == LG_OK)
            s = lg_cu_check(cuMemcpyDtoH(fa, l->ma[i], (size_t)na * 4), "cuMemcpyDtoH");
        if (s == LG_OK)
            s = lg_cu_check(cuMemcpyDtoH(fb, l->mb[i], (size_t)nb * 4), "cuMemcpyDtoH");
        uint16_t *ba = s == LG_OK ? to_bits(be->act, fa, na) : NULL, *bb = s == LG_OK ? to_bits(be->act, fb, nb) : NULL;
        if (s == LG_OK)
            s = ba && bb ? lg_mlora_set_adapter(l->ml, adapter, m, ba, bb)
                         : lg_fail(LG_ERR_OOM, "cuda linear: out of memory");
        free(fa);
        free(fb);
        free(ba);
        free(bb);
    }
    return s;
}

/* A microbatch starts: its segment table, uploaded once for every layer. */
enum lg_status lg_cuda_begin(lg_backend_t *be, const struct lg_mb *mb)
{
    struct cuda_be *c = cb(be);
    enum lg_status s = LG_OK;
    if (!c->segs)
        s = lg_mlora_segments_init(c->ctx, 2 * c->nadapters + 8, &c->segs);
    struct lg_mlora_seg *sg = calloc((size_t)mb->nseg + 1, sizeof *sg);
    if (s == LG_OK && !sg)
        s = lg_fail(LG_ERR_OOM, "cuda linear: out of memory");
    for (int i = 0; s == LG_OK && i < mb->nseg; i++)
        sg[i] = (struct lg_mlora_seg){mb->seg[i].adapter, mb->seg[i].start, mb->seg[i].len};
    if (s == LG_OK)
        s = lg_mlora_segments_set(c->segs, mb->n, c->nadapters, sg, mb->nseg, c->stream);
    free(sg);
    return s;
}

int lg_cuda_linear_module(const lg_lora_linear_t *l) { return (int)(l->d.layer_id % 8); }

void lg_cuda_linear_scratch_free(struct cuda_be *c)
{
    lg_mlora_segments_free(c->segs);
    c->segs = NULL;
    lg_mlora_ws_free(c->mlws);
    c->mlws = NULL;
}

/* Merged modules write side by side into the caller's y (FusedMultiLoRA's layout): q/k/v and gate/up are
 * views of one buffer, so nothing is copied in or out. */
/* The input row stride for FusedMultiLoRA's strategy (a) (S in X's tail: one GEMM over [X | S], no expand pass
 * over Y) where the layer may take it (lg_mlora_pick: few enough LoRA columns), else in: strategy (b). */
int64_t lg_cuda_linear_in_ld(lg_backend_t *be, const lg_lora_linear_t *l)
{
    (void)be;
    const char *env = getenv("LORAGEN_MLORA_STRATEGY"); /* "b": every layer on (b), for side-by-side timing */
    if (env && !strcmp(env, "b"))
        return l->d.in;
    const int64_t ld = lg_mlora_ext_ld(l->ml);
    return lg_mlora_pick(l->ml, NULL, ld) == LG_MLORA_EXT_K ? ld : l->d.in;
}

/* The strategy both directions take for input rows of stride ldx: (a) where the rows have the room
 * lg_cuda_linear_in_ld asked for, else (b) with S in the layer's own buffer. */
static enum lg_mlora_strategy strategy_of(const lg_lora_linear_t *l, int64_t ldx)
{
    return ldx >= lg_mlora_ext_ld(l->ml) && lg_mlora_pick(l->ml, NULL, ldx) == LG_MLORA_EXT_K ? LG_MLORA_EXT_K
                                                                                             : LG_MLORA_EXPAND;
}

enum lg_status lg_cuda_linear_fwd(lg_backend_t *be, lg_lora_linear_t *l, const struct lg_mb *mb, lg_addr x,
                                  int64_t ldx, lg_addr y, int64_t ldy)
{
    struct cuda_be *c = cb(be);
    if (ldy < l->ysum)
        return lg_fail(LG_ERR_INVALID, "cuda linear: output row stride %lld below the %lld output columns",
                       (long long)ldy, (long long)l->ysum);
    ldx = ldx ? ldx : l->d.in;
    struct lg_mlora_fwd f = {.n = mb->n, .seg = c->segs, .x = D(x), .ldx = ldx, .s = l->s, .lds = l->lds,
                             .y = D(y), .ldy = ldy, .seed = mb->seed, .eval = !mb->train,
                             .strategy = strategy_of(l, ldx)};
    return lg_mlora_forward(l->ml, &f, c->stream);
}

enum lg_status lg_cuda_linear_bwd(lg_backend_t *be, lg_lora_linear_t *l, const struct lg_mb *mb, lg_addr x,
                                  int64_t ldx, lg_addr dy, int64_t lddy, lg_addr dx)
{
    struct cuda_be *c = cb(be);
    if (lddy < l->ysum)
        return lg_fail(LG_ERR_INVALID, "cuda linear: gradient row stride %lld below the %lld output columns",
                       (long long)lddy, (long long)l->ysum);
    ldx = ldx ? ldx : l->d.in;
    struct lg_mlora_bwd b = {.n = mb->n, .seg = c->segs, .x = D(x), .ldx = ldx, .s = l->s, .lds = l->lds,
                             .dy = D(dy), .lddy = lddy, .dx = D(dx), .lddx = l->d.in, .grad_beta = 1,
                             .seed = mb->seed, .strategy = strategy_of(l, ldx)};
    return lg_mlora_backward(l->ml, &b, c->stream);
}
