/* mlora_seg.c: FusedMultiLoRA's segment table (lg_mlora.h): validated on the host, then uploaded once per
 * microbatch for every layer. Besides the segments it holds, for each group height G = 16 << gi, the prefix
 * counts of the G-token groups every segment splits into (lg_mlora_args.h), so that each kernel finds its
 * group by a binary search on the device and the host knows every grid size without reading anything back. */
#include "mlora_internal.h"
#include "lg_base.h"
#include "lg_gpu.h"

#include <stdlib.h>
#include <string.h>

enum lg_status lg_mlora_segments_check(int64_t n, int nadapters, const struct lg_mlora_seg *seg, int nseg)
{
    static const char *fn = "lg_mlora_segments";
    if (n < 1 || n > INT32_MAX)
        return lg_fail(LG_ERR_INVALID, "%s: n = %lld tokens is out of range", fn, (long long)n);
    if (nseg < 1 || !seg)
        return lg_fail(LG_ERR_INVALID, "%s: no segments", fn);
    if (nadapters < 1)
        return lg_fail(LG_ERR_INVALID, "%s: nadapters = %d must be >= 1", fn, nadapters);
    unsigned char *seen = calloc((size_t)nadapters, 1);
    if (!seen)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", fn);
    int64_t at = 0;
    enum lg_status st = LG_OK;
    for (int i = 0; i < nseg && st == LG_OK; i++) {
        const struct lg_mlora_seg *g = &seg[i];
        if (g->len < 0)
            st = lg_fail(LG_ERR_INVALID, "%s: segment %d has length %lld", fn, i, (long long)g->len);
        else if (g->start != at)
            st = lg_fail(LG_ERR_INVALID, "%s: segment %d starts at %lld, not where the segments before it end "
                         "(%lld): segments must not overlap or leave gaps", fn, i, (long long)g->start, (long long)at);
        else if (g->adapter < -1 || g->adapter >= nadapters)
            st = lg_fail(LG_ERR_INVALID, "%s: segment %d: adapter id %d is out of range (-1..%d)", fn, i,
                         g->adapter, nadapters - 1);
        else if (g->adapter >= 0 && seen[g->adapter])
            st = lg_fail(LG_ERR_INVALID, "%s: segment %d: adapter %d already has a segment (one per adapter)", fn,
                         i, g->adapter);
        else if (g->adapter >= 0)
            seen[g->adapter] = 1;
        at += g->len;
    }
    free(seen);
    if (st == LG_OK && at != n)
        st = lg_fail(LG_ERR_INVALID, "%s: the segments hold %lld tokens but n = %lld", fn, (long long)at,
                     (long long)n);
    return st;
}

enum lg_status lg_mlora_segments_init(lg_ctx_t *ctx, int max_segments, lg_mlora_segments_t **out)
{
    if (!out || max_segments < 1)
        return lg_fail(LG_ERR_INVALID, "lg_mlora_segments_init: max_segments = %d must be >= 1", max_segments);
    if (!ctx)
        return lg_fail(LG_ERR_INVALID, "lg_mlora_segments_init: ctx is NULL");
    lg_mlora_segments_t *s = calloc(1, sizeof *s);
    if (!s)
        return lg_fail(LG_ERR_OOM, "lg_mlora_segments_init: out of memory");
    s->max = max_segments;
    s->bytes = (size_t)max_segments * sizeof(struct lg_mlora_segrec) +
               (size_t)LG_MLORA_NG * (size_t)(max_segments + 1) * sizeof(int);
    void *h = NULL;
    enum lg_status st = lg_cu_check(cuMemAllocHost(&h, s->bytes), "lg_mlora_segments_init: pinned table");
    s->h = h;
    if (st == LG_OK)
        st = lg_cu_check(cuMemAlloc(&s->d, s->bytes), "lg_mlora_segments_init: device table");
    if (st == LG_OK)
        st = lg_cu_check(cuEventCreate(&s->uploaded, CU_EVENT_DISABLE_TIMING), "lg_mlora_segments_init: event");
    if (st != LG_OK) {
        lg_mlora_segments_free(s);
        return st;
    }
    *out = s;
    return LG_OK;
}

void lg_mlora_segments_free(lg_mlora_segments_t *s)
{
    if (!s)
        return;
    if (s->pending)
        cuEventSynchronize(s->uploaded);
    if (s->uploaded)
        cuEventDestroy(s->uploaded);
    if (s->d)
        cuMemFree(s->d);
    if (s->h)
        cuMemFreeHost(s->h);
    free(s->present);
    free(s);
}

int64_t lg_mlora_segments_tokens(const lg_mlora_segments_t *s) { return s ? s->n : 0; }

static int *pre_of(const lg_mlora_segments_t *s) { return (int *)(s->h + s->max); }

enum lg_status lg_mlora_segments_set(lg_mlora_segments_t *s, int64_t n, int nadapters,
                                     const struct lg_mlora_seg *seg, int nseg, CUstream stream)
{
    if (!s)
        return lg_fail(LG_ERR_INVALID, "lg_mlora_segments_set: null table");
    enum lg_status st = lg_mlora_segments_check(n, nadapters, seg, nseg);
    if (st != LG_OK)
        return st;
    int kept = 0;
    for (int i = 0; i < nseg; i++)
        kept += seg[i].len > 0;
    if (kept > s->max)
        return lg_fail(LG_ERR_INVALID, "lg_mlora_segments_set: %d non-empty segments, the table holds %d", kept,
                       s->max);
    if (nadapters > s->present_cap) {
        unsigned char *p = realloc(s->present, (size_t)nadapters);
        if (!p)
            return lg_fail(LG_ERR_OOM, "lg_mlora_segments_set: out of memory");
        s->present = p, s->present_cap = nadapters;
    }
    /* the pinned copy is rewritten only once the previous upload has run */
    if (s->pending && (st = lg_cu_check(cuEventSynchronize(s->uploaded), "lg_mlora_segments_set: wait")) != LG_OK)
        return st;
    s->pending = 0;
    memset(s->present, 0, (size_t)nadapters);
    int *pre = pre_of(s), k = 0;
    for (int gi = 0; gi < LG_MLORA_NG; gi++)
        pre[gi * (kept + 1)] = 0;
    for (int i = 0; i < nseg; i++) {
        if (!seg[i].len)
            continue;
        s->h[k] = (struct lg_mlora_segrec){.adapter = seg[i].adapter, .start = (int)seg[i].start,
                                            .len = (int)seg[i].len, .first = 1};
        if (seg[i].adapter >= 0)
            s->present[seg[i].adapter] = 1;
        for (int gi = 0; gi < LG_MLORA_NG; gi++) {
            const int64_t G = (int64_t)16 << gi;
            pre[gi * (kept + 1) + k + 1] = pre[gi * (kept + 1) + k] + (int)((seg[i].len + G - 1) / G);
        }
        k++;
    }
    for (int gi = 0; gi < LG_MLORA_NG; gi++)
        s->total[gi] = pre[gi * (kept + 1) + kept];
    s->nseg = kept, s->n = n, s->nadapters = nadapters;
    st = lg_cu_check(cuMemcpyHtoDAsync(s->d, s->h, s->bytes, stream), "lg_mlora_segments_set: upload");
    if (st == LG_OK)
        st = lg_cu_check(cuEventRecord(s->uploaded, stream), "lg_mlora_segments_set: event");
    s->pending = st == LG_OK;
    return st;
}

struct lg_mlora_segs lg_mlora_segs_view(const struct lg_mlora_segments *s)
{
    struct lg_mlora_segs v = {.seg = (const struct lg_mlora_segrec *)s->d,
                              .pre = (const int *)(s->d + (CUdeviceptr)s->max * sizeof(struct lg_mlora_segrec)),
                              .nseg = s->nseg, .n = (int)s->n};
    return v;
}
