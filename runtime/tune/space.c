/* space.c: the tuner's search space. The generator lists every valid configuration of a kernel
 * (lg_gen_variants) and estimates what each asks of an SM (lg_gen_resources); this file keeps the variants a
 * caller lets vary, orders them (the base first, then the nearest), and prunes those an arch cannot run
 * before anything is compiled or timed: shared memory per block, registers per thread under the
 * __launch_bounds__ cap, threads per block and per SM, and the shape's own rules. */
#include "lg_tune.h"
#include "lg_base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct lg_arch_limits ARCHS[] = {
    /* arch  smem/block  smem/SM  regs/SM  regs/thread  threads/block  threads/SM  blocks/SM */
    {80, 163 * 1024, 164 * 1024, 65536, 255, 1024, 2048, 32},
    {86, 99 * 1024, 100 * 1024, 65536, 255, 1024, 1536, 16},
    {89, 99 * 1024, 100 * 1024, 65536, 255, 1024, 1536, 24},
    {90, 227 * 1024, 228 * 1024, 65536, 255, 1024, 2048, 32},
};
#define NARCHS ((int)(sizeof ARCHS / sizeof ARCHS[0]))

enum lg_status lg_arch_limits_get(int arch, struct lg_arch_limits *out)
{
    for (int i = 0; i < NARCHS; i++)
        if (ARCHS[i].arch == arch) {
            *out = ARCHS[i];
            return LG_OK;
        }
    return lg_fail(LG_ERR_UNSUPPORTED, "no limits table for sm_%d (known: sm_80, sm_86, sm_89, sm_90)", arch);
}

/* Registers a thread gets when minb blocks of `threads` must fit in the register file: the allocation is per
 * warp in units of 256, so the per-thread cap is a multiple of 8. */
static int reg_cap(const struct lg_arch_limits *a, int threads, int minb)
{
    int warps = (threads + 31) / 32 * minb;
    int per_warp = a->regs_sm / warps / 256 * 256;
    int cap = per_warp / 32;
    return cap < a->regs_thread ? cap : a->regs_thread;
}

/* The rules that depend on the shape the kernel runs on. */
static int shape_ok(const struct lg_kernel_cfg *c, const struct lg_tune_shape *s, char *why, size_t n)
{
    if (!s)
        return 1;
    switch (c->op) {
    case LG_OP_NORM_FWD:
    case LG_OP_NORM_BWD:
        if (s->k > 0 && s->k > (int64_t)1024 * c->vpt) {
            snprintf(why, n, "a row of %lld values does not fit in 128 threads x %d vectors of 8",
                     (long long)s->k, c->vpt);
            return 0;
        }
        /* more vector slots than the row has 8-value vectors: every thread holds dead registers */
        if (s->k > 0 && (int64_t)128 * 8 * c->vpt >= 2 * s->k && c->vpt > 1) {
            snprintf(why, n, "vpt = %d holds more than twice the row of %lld values", c->vpt, (long long)s->k);
            return 0;
        }
        return 1;
    case LG_OP_ATTN_FWD:
    case LG_OP_ATTN_BWD_PRE:
    case LG_OP_ATTN_BWD_DKV:
    case LG_OP_ATTN_BWD_DQ:
    case LG_OP_ATTN_DQ_CVT:
        if (s->head_dim > 0 && c->hd != s->head_dim) {
            snprintf(why, n, "head dim %d is not the shape's %d", c->hd, s->head_dim);
            return 0;
        }
        return 1;
    case LG_OP_DY:
    case LG_OP_MLORA_DY:
        /* a block covers nct 64-column tiles of dY: wider than the layer leaves blocks without work */
        if (s->m > 0 && (int64_t)64 * c->nct > s->m) {
            snprintf(why, n, "nct = %d covers %d columns, more than the layer's %lld", c->nct, 64 * c->nct,
                     (long long)s->m);
            return 0;
        }
        return 1;
    default:
        return 1;
    }
}

int lg_tune_prune_ok(const struct lg_kernel_cfg *c, const struct lg_kernel_res *r, const struct lg_arch_limits *a,
                     const struct lg_tune_shape *shape, char *why, size_t n)
{
    const int minb = r->minb > 1 ? r->minb : 1;
    if (r->threads > a->threads_block) {
        snprintf(why, n, "%d threads per block > sm_%d's %d", r->threads, a->arch, a->threads_block);
        return 0;
    }
    if (r->smem > a->smem_block) {
        snprintf(why, n, "%d bytes of shared memory per block > sm_%d's %d", r->smem, a->arch, a->smem_block);
        return 0;
    }
    if (r->regs > a->regs_thread) {
        snprintf(why, n, "needs at least %d registers per thread > sm_%d's %d", r->regs, a->arch, a->regs_thread);
        return 0;
    }
    if (minb > 1) {
        if (r->threads * minb > a->threads_sm || minb > a->blocks_sm) {
            snprintf(why, n, "minb = %d blocks of %d threads do not fit one sm_%d SM (%d threads, %d blocks)", minb,
                     r->threads, a->arch, a->threads_sm, a->blocks_sm);
            return 0;
        }
        /* (minb blocks needing more shared memory than an SM has is not pruned: the kernel runs, its
         * register cap merely buys no occupancy, and the timing says whether that matters) */
        int cap = reg_cap(a, r->threads, minb);
        if (cap < r->regs) {
            snprintf(why, n, "minb = %d caps registers at %d per thread on sm_%d, below the %d it needs (spills)",
                     minb, cap, a->arch, r->regs);
            return 0;
        }
    }
    return shape_ok(c, shape, why, n);
}

unsigned lg_tune_field_bit(const char *name)
{
    int nf;
    const struct lg_kernel_field *f = lg_kernel_fields(&nf);
    for (int i = 0; i < nf; i++)
        if (!strcmp(f[i].name, name))
            return 1u << i;
    return 0;
}

/* Fields of a and b (normalised, same op) that differ; *outside: whether any differing field is not in vary. */
static int count_diff(const struct lg_kernel_cfg *a, const struct lg_kernel_cfg *b, unsigned vary, int *outside)
{
    int nf, d = 0;
    const struct lg_kernel_field *f = lg_kernel_fields(&nf);
    *outside = 0;
    for (int i = 0; i < nf; i++)
        if (lg_kernel_cfg_get(a, &f[i]) != lg_kernel_cfg_get(b, &f[i])) {
            d++;
            if (!(vary >> i & 1))
                *outside = 1;
        }
    return d;
}

static int by_distance(const void *x, const void *y)
{
    const struct lg_tune_cand *a = x, *b = y;
    return a->differs - b->differs;
}

static enum lg_status normalise(lg_gen_t *gen, const struct lg_kernel_cfg *c, struct lg_kernel_cfg *out)
{
    struct lg_kernel_src src;
    enum lg_status st = lg_gen_kernel(gen, c, "tuner", &src);
    if (st != LG_OK)
        return st;
    *out = src.cfg;
    lg_kernel_src_free(&src);
    return LG_OK;
}

enum lg_status lg_tune_space(lg_gen_t *gen, const struct lg_kernel_cfg *base, unsigned vary, int arch,
                             const struct lg_tune_shape *shape, struct lg_tune_cand **out, int *count)
{
    struct lg_arch_limits lim;
    enum lg_status st = lg_arch_limits_get(arch, &lim);
    if (st != LG_OK)
        return st;
    struct lg_kernel_cfg b;
    if ((st = normalise(gen, base, &b)) != LG_OK)
        return lg_fail_wrap(st, "tuner: the base configuration: ");
    struct lg_kernel_cfg *vars = NULL;
    int nv = 0;
    if (vary && (st = lg_gen_variants(gen, b.op, b.dtype, b.rank, &vars, &nv)) != LG_OK)
        return st;
    struct lg_tune_cand *c = calloc((size_t)nv + 1, sizeof *c);
    if (!c) {
        free(vars);
        return lg_fail(LG_ERR_OOM, "tuner: out of memory");
    }
    int n = 0;
    c[n++].cfg = b;
    for (int i = 0; i < nv; i++) {
        int outside, d = count_diff(&vars[i], &b, vary, &outside);
        if (d == 0 || outside)
            continue;
        c[n].cfg = vars[i];
        c[n].cfg.op = b.op, c[n].cfg.dtype = b.dtype;
        c[n++].differs = d;
    }
    free(vars);
    qsort(c + 1, (size_t)(n - 1), sizeof *c, by_distance);
    for (int i = 0; i < n && st == LG_OK; i++) {
        st = lg_gen_resources(gen, &c[i].cfg, &c[i].res);
        if (st == LG_OK)
            c[i].pruned = !lg_tune_prune_ok(&c[i].cfg, &c[i].res, &lim, shape, c[i].why, sizeof c[i].why);
    }
    /* the base is what the runtime launches without a tuned entry: it stays, as the reference (a note in why
     * says what the rules found; a base that truly cannot run fails when timed, and the tuner reports it) */
    c[0].pruned = 0;
    if (st != LG_OK) {
        free(c);
        return st;
    }
    *out = c;
    *count = n;
    return LG_OK;
}
