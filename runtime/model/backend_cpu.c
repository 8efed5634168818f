/* backend_cpu.c: the CPU backend of the op interface (lg_backend.h): fp32 everywhere, every op one call into
 * the reference (runtime/ref), addresses are host pointers. It is the backend CI trains tiny models with and
 * the one the CUDA backend's training runs are compared against, so it favours obviously-right over fast. The
 * LoRA linear layers live in backend_cpu_linear.c. */
#include "backend_cpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define P(a) ((void *)(uintptr_t)(a))
#define F(a) ((float *)(uintptr_t)(a))
#define CF(a) ((const float *)(uintptr_t)(a))
#define I32(a) ((const int32_t *)(uintptr_t)(a))

/* The backend counts the bytes it holds (mem_info's used): each block carries its size in a 64-byte header. */
struct cpu_be {
    lg_backend_t base; /* first: the backend handle is this struct */
    size_t used;
};

#define HDR 64

static void cpu_destroy(lg_backend_t *be) { free(be); }

static enum lg_status cpu_alloc(lg_backend_t *be, size_t bytes, lg_addr *out)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, HDR + (bytes ? bytes : 64)) != 0)
        return lg_fail(LG_ERR_OOM, "cpu backend: out of memory allocating %.1f MiB", (double)bytes / (1u << 20));
    *(size_t *)p = bytes;
    ((struct cpu_be *)be)->used += bytes;
    *out = (lg_addr)(uintptr_t)((char *)p + HDR);
    return LG_OK;
}

static void cpu_release(lg_backend_t *be, lg_addr p)
{
    if (!p)
        return;
    char *b = (char *)P(p) - HDR;
    ((struct cpu_be *)be)->used -= *(size_t *)b;
    free(b);
}

static enum lg_status cpu_upload(lg_backend_t *be, lg_addr dst, const void *src, size_t n)
{
    memcpy(P(dst), src, n);
    return LG_OK;
}

static enum lg_status cpu_download(lg_backend_t *be, void *dst, lg_addr src, size_t n)
{
    memcpy(dst, P(src), n);
    return LG_OK;
}

static enum lg_status cpu_zero(lg_backend_t *be, lg_addr p, size_t n)
{
    memset(P(p), 0, n);
    return LG_OK;
}

static enum lg_status cpu_copy(lg_backend_t *be, lg_addr dst, lg_addr src, size_t n)
{
    memmove(P(dst), P(src), n);
    return LG_OK;
}

static enum lg_status cpu_sync(lg_backend_t *be) { return LG_OK; }

static enum lg_status cpu_upload_weight(lg_backend_t *be, lg_addr dst, const float *src, int64_t count)
{
    memcpy(P(dst), src, (size_t)count * sizeof(float));
    return LG_OK;
}

/* The host's memory: MemAvailable and MemTotal of /proc/meminfo (sysconf's pages where it cannot be read);
 * used: the bytes of the blocks this backend holds (the linear layers' own host buffers are not counted). */
static enum lg_status cpu_mem_info(lg_backend_t *be, size_t *free_bytes, size_t *total_bytes, size_t *used_bytes)
{
    *used_bytes = ((struct cpu_be *)be)->used;
    unsigned long long avail = 0, total = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        unsigned long long kb;
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            avail = kb * 1024;
        else if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
            total = kb * 1024;
    }
    if (f)
        fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    if (!total && page > 0)
        total = (unsigned long long)sysconf(_SC_PHYS_PAGES) * (unsigned long long)page;
    if (!avail && page > 0)
        avail = (unsigned long long)sysconf(_SC_AVPHYS_PAGES) * (unsigned long long)page;
    if (!total)
        return lg_fail(LG_ERR_UNSUPPORTED, "cpu backend: the host's memory size cannot be read");
    *free_bytes = (size_t)avail;
    *total_bytes = (size_t)total;
    return LG_OK;
}

static size_t cpu_weight_size(const lg_backend_t *be, int64_t count) { return (size_t)count * sizeof(float); }

static enum lg_status cpu_embed(lg_backend_t *be, int64_t n, int64_t d, lg_addr ids, lg_addr table, int64_t vocab,
                                lg_addr out)
{
    return lg_ref_embed(n, vocab, d, I32(ids), CF(table), F(out));
}

static enum lg_status cpu_rmsnorm_fwd(lg_backend_t *be, int64_t n, int64_t d, lg_addr res, lg_addr x, lg_addr h,
                                      lg_addr w, float eps, lg_addr y, lg_addr rstd, int64_t ldy)
{
    float *ho = F(h);
    const float *r = CF(res), *dx = x ? CF(x) : NULL;
    if (dx)
        for (int64_t i = 0; i < n * d; i++)
            ho[i] = r[i] + dx[i];
    else if (h != res)
        memcpy(ho, r, (size_t)(n * d) * sizeof *ho);
    struct lg_ref_rmsnorm p = {.H = d, .eps = eps, .w = CF(w)};
    if (!ldy || ldy == d) {
        lg_ref_rmsnorm_forward(&p, n, ho, F(y), F(rstd));
        return LG_OK;
    }
    float *t = malloc((size_t)(n * d) * sizeof *t);
    if (!t)
        return lg_fail(LG_ERR_OOM, "cpu backend: out of memory");
    lg_ref_rmsnorm_forward(&p, n, ho, t, F(rstd));
    lg_cpu_unpack(F(y), ldy, t, n, d);
    free(t);
    return LG_OK;
}

static enum lg_status cpu_rmsnorm_bwd(lg_backend_t *be, int64_t n, int64_t d, lg_addr x, lg_addr w, lg_addr rstd,
                                      lg_addr dy, lg_addr dx, int accumulate)
{
    struct lg_ref_rmsnorm p = {.H = d, .w = CF(w)};
    if (!accumulate) {
        lg_ref_rmsnorm_backward(&p, n, CF(x), CF(rstd), CF(dy), F(dx));
        return LG_OK;
    }
    float *t = malloc((size_t)(n * d) * sizeof *t);
    if (!t)
        return lg_fail(LG_ERR_OOM, "cpu backend: out of memory");
    lg_ref_rmsnorm_backward(&p, n, CF(x), CF(rstd), CF(dy), t);
    float *o = F(dx);
    for (int64_t i = 0; i < n * d; i++)
        o[i] += t[i];
    free(t);
    return LG_OK;
}

static struct lg_ref_seqs seqs_of(const struct lg_mb *mb)
{
    return (struct lg_ref_seqs){.n = mb->n, .nseq = mb->nseq, .cu = mb->cu};
}

float *lg_cpu_pack(const float *src, int64_t ld, int64_t n, int64_t w)
{
    float *p = malloc((size_t)(n * w > 0 ? n * w : 1) * sizeof *p);
    for (int64_t t = 0; p && t < n; t++)
        memcpy(p + t * w, src + t * ld, (size_t)w * sizeof *p);
    return p;
}

void lg_cpu_unpack(float *dst, int64_t ld, const float *src, int64_t n, int64_t w)
{
    for (int64_t t = 0; t < n; t++)
        memcpy(dst + t * ld, src + t * w, (size_t)w * sizeof *dst);
}

static enum lg_status oom(void) { return lg_fail(LG_ERR_OOM, "cpu backend: out of memory"); }

/* RoPE in place on the heads of one strided view. */
static enum lg_status rope_view(const struct lg_ref_rope *r, const struct lg_ref_seqs *s, int h, float *x,
                                int64_t ld, int dir)
{
    int64_t w = (int64_t)h * r->d;
    float *p = lg_cpu_pack(x, ld ? ld : w, s->n, w);
    if (!p)
        return oom();
    enum lg_status st = dir > 0 ? lg_ref_rope_forward(r, s, h, p, p) : lg_ref_rope_backward(r, s, h, p, p);
    lg_cpu_unpack(x, ld ? ld : w, p, s->n, w);
    free(p);
    return st;
}

static enum lg_status cpu_rope(lg_backend_t *be, const struct lg_mb *mb, const struct lg_ref_rope *r, lg_addr q,
                               int hq, lg_addr k, int hkv, int64_t ld, int dir)
{
    struct lg_ref_seqs s = seqs_of(mb);
    enum lg_status st = rope_view(r, &s, hq, F(q), ld, dir);
    return st == LG_OK ? rope_view(r, &s, hkv, F(k), ld, dir) : st;
}

/* Packed copies of the q, k, v views (NULL pointers when out of memory). */
struct qkv_pack {
    float *q, *k, *v;
};

static struct qkv_pack pack_qkv(const struct lg_mb *mb, int hq, int hkv, int d, lg_addr q, lg_addr k, lg_addr v,
                                int64_t ld)
{
    int64_t wq = (int64_t)hq * d, wk = (int64_t)hkv * d;
    return (struct qkv_pack){lg_cpu_pack(CF(q), ld ? ld : wq, mb->n, wq), lg_cpu_pack(CF(k), ld ? ld : wk, mb->n, wk),
                             lg_cpu_pack(CF(v), ld ? ld : wk, mb->n, wk)};
}

static void free_qkv(struct qkv_pack *p)
{
    free(p->q);
    free(p->k);
    free(p->v);
}

static enum lg_status cpu_attn_fwd(lg_backend_t *be, const struct lg_mb *mb, int hq, int hkv, int d, lg_addr q,
                                   lg_addr k, lg_addr v, int64_t ld, lg_addr o, lg_addr lse)
{
    struct qkv_pack p = pack_qkv(mb, hq, hkv, d, q, k, v, ld);
    enum lg_status s = p.q && p.k && p.v ? LG_OK : oom();
    struct lg_ref_attn a = {.seq = seqs_of(mb), .hq = hq, .hkv = hkv, .d = d, .q = p.q, .k = p.k, .v = p.v};
    if (s == LG_OK)
        s = lg_ref_attn_forward(&a, F(o), F(lse));
    free_qkv(&p);
    return s;
}

static enum lg_status cpu_attn_bwd(lg_backend_t *be, const struct lg_mb *mb, int hq, int hkv, int d, lg_addr q,
                                   lg_addr k, lg_addr v, int64_t ld, lg_addr o, lg_addr lse, lg_addr dout,
                                   lg_addr dq, lg_addr dk, lg_addr dv, int64_t ldd)
{
    int64_t n = mb->n, wq = (int64_t)hq * d, wk = (int64_t)hkv * d;
    struct qkv_pack p = pack_qkv(mb, hq, hkv, d, q, k, v, ld);
    float *gq = calloc((size_t)(n * wq) + 1, sizeof *gq), *gk = calloc((size_t)(n * wk) + 1, sizeof *gk),
          *gv = calloc((size_t)(n * wk) + 1, sizeof *gv);
    enum lg_status s = p.q && p.k && p.v && gq && gk && gv ? LG_OK : oom();
    struct lg_ref_attn a = {.seq = seqs_of(mb), .hq = hq, .hkv = hkv, .d = d, .q = p.q, .k = p.k, .v = p.v};
    if (s == LG_OK)
        s = lg_ref_attn_backward(&a, CF(o), CF(lse), CF(dout), gq, gk, gv);
    if (s == LG_OK) {
        lg_cpu_unpack(F(dq), ldd ? ldd : wq, gq, n, wq);
        lg_cpu_unpack(F(dk), ldd ? ldd : wk, gk, n, wk);
        lg_cpu_unpack(F(dv), ldd ? ldd : wk, gv, n, wk);
    }
    free_qkv(&p);
    free(gq);
    free(gk);
    free(gv);
    return s;
}

static enum lg_status cpu_swiglu_fwd(lg_backend_t *be, int64_t n, int64_t f, lg_addr g, lg_addr u, int64_t ld,
                                     lg_addr a)
{
    ld = ld ? ld : f;
    for (int64_t t = 0; t < n; t++)
        lg_ref_swiglu_forward(f, CF(g) + t * ld, CF(u) + t * ld, F(a) + t * f);
    return LG_OK;
}

static enum lg_status cpu_swiglu_bwd(lg_backend_t *be, int64_t n, int64_t f, lg_addr g, lg_addr u, int64_t ld,
                                     lg_addr da, lg_addr dg, lg_addr du, int64_t ldd)
{
    ld = ld ? ld : f;
    ldd = ldd ? ldd : f;
    for (int64_t t = 0; t < n; t++)
        lg_ref_swiglu_backward(f, CF(g) + t * ld, CF(u) + t * ld, CF(da) + t * f, F(dg) + t * ldd, F(du) + t * ldd);
    return LG_OK;
}

/* One row at a time: each row carries its own weight (its batch's 1/loss-tokens) and its own loss. */
static enum lg_status cpu_xent(lg_backend_t *be, int64_t n, int64_t h, int64_t vocab, lg_addr x, lg_addr head,
                               lg_addr target, lg_addr weight, lg_addr loss, lg_addr dx)
{
    const int32_t *tg = I32(target);
    const float *w = CF(weight);
    float *lo = F(loss), *g = dx ? F(dx) : NULL;
    for (int64_t t = 0; t < n; t++) {
        struct lg_ref_lm_head p = {.n = 1, .H = h, .V = vocab, .x = CF(x) + t * h, .w = CF(head),
                                   .labels = tg + t, .scale = w[t]};
        double l = 0;
        enum lg_status s = lg_ref_lm_head_loss(&p, &l, g ? g + t * h : NULL, NULL);
        if (s != LG_OK)
            return lg_fail_wrap(s, "cross-entropy at token %lld: ", (long long)t);
        lo[t] = (float)l;
    }
    return LG_OK;
}

static enum lg_status cpu_adamw(lg_backend_t *be, const struct lg_opt_tensor *t, int count,
                                const struct lg_opt_step *st, int *skipped, double *norm)
{
    float **p = malloc(4 * (size_t)(count ? count : 1) * sizeof *p);
    int64_t *n = malloc((size_t)(count ? count : 1) * sizeof *n);
    if (!p || !n) {
        free(p);
        free(n);
        return lg_fail(LG_ERR_OOM, "cpu backend: out of memory");
    }
    for (int i = 0; i < count; i++) {
        p[i] = F(t[i].p);
        p[count + i] = F(t[i].g);
        p[2 * count + i] = F(t[i].m);
        p[3 * count + i] = F(t[i].v);
        n[i] = t[i].n;
    }
    struct lg_ref_params l = {.n = count, .p = p, .g = p + count, .m = p + 2 * count, .v = p + 3 * count, .count = n};
    struct lg_ref_adamw o = {.lr = st->lr, .beta1 = st->beta1, .beta2 = st->beta2, .eps = st->eps,
                             .weight_decay = st->weight_decay, .max_grad_norm = st->max_norm};
    enum lg_status s = lg_ref_adamw_step(&o, &l, st->step, norm, skipped);
    free(p);
    free(n);
    return s;
}

static const struct lg_backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_upload,
    .download = cpu_download,
    .download_async = cpu_download, /* every op has run when it returns */
    .zero = cpu_zero,
    .copy = cpu_copy,
    .sync = cpu_sync,
    .mem_info = cpu_mem_info,
    .upload_weight = cpu_upload_weight,
    .weight_size = cpu_weight_size,
    .embed = cpu_embed,
    .rmsnorm_fwd = cpu_rmsnorm_fwd,
    .rmsnorm_bwd = cpu_rmsnorm_bwd,
    .rope = cpu_rope,
    .attn_fwd = cpu_attn_fwd,
    .attn_bwd = cpu_attn_bwd,
    .swiglu_fwd = cpu_swiglu_fwd,
    .swiglu_bwd = cpu_swiglu_bwd,
    .xent = cpu_xent,
    .linear_init = lg_cpu_linear_init,
    .linear_free = lg_cpu_linear_free,
    .linear_params = lg_cpu_linear_params,
    .linear_in_ld = lg_cpu_linear_in_ld,
    .linear_fwd = lg_cpu_linear_fwd,
    .linear_bwd = lg_cpu_linear_bwd,
    .linear_sync = lg_cpu_linear_sync,
    .adamw = cpu_adamw,
};

enum lg_status lg_backend_cpu_init(lg_backend_t **out)
{
    struct cpu_be *c = calloc(1, sizeof *c);
    if (!c)
        return lg_fail(LG_ERR_OOM, "cpu backend: out of memory");
    lg_backend_t *be = &c->base;
    be->ops = &cpu_ops;
    be->act = LG_FP32;
    be->weight = LG_FP32;
    snprintf(be->desc, sizeof be->desc, "cpu (fp32 reference ops)");
    *out = be;
    return LG_OK;
}
