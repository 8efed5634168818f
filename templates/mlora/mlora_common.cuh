/* mlora_common.cuh: what every FusedMultiLoRA kernel shares: finding the group of tokens a block owns in the
 * segment table (lg_mlora_args.h), and the slot of a (segment, module). The generator puts this file before
 * each mlora kernel's own template. */

/* Rows [r0, r1) of one group; all of them belong to segment `seg` and so to one adapter (-1: base). */
struct lg_mlora_grp {
    int seg, adapter, r0, r1;
};

/* Group b of height 16 << gi: the segment s with pre[s] <= b < pre[s + 1] (binary search; every listed segment
 * is non-empty, so pre is strictly increasing), and its rows. */
static __device__ __forceinline__ lg_mlora_grp lg_mlora_group(const struct lg_mlora_segs &g, int gi, int b)
{
    const int *pre = g.pre + gi * (g.nseg + 1);
    int lo = 0, hi = g.nseg;
    while (hi - lo > 1) {
        const int mid = (lo + hi) >> 1;
        if (pre[mid] <= b)
            lo = mid;
        else
            hi = mid;
    }
    const lg_mlora_segrec sr = g.seg[lo];
    lg_mlora_grp r;
    r.seg = lo;
    r.adapter = sr.adapter;
    r.r0 = sr.start + (b - pre[lo]) * (16 << gi);
    r.r1 = min(r.r0 + (16 << gi), sr.start + sr.len);
    return r;
}

/* The segment holding token t (segments tile [0, n) in order). */
static __device__ __forceinline__ int lg_mlora_seg_of(const struct lg_mlora_segs &g, int t)
{
    int lo = 0, hi = g.nseg;
    while (hi - lo > 1) {
        const int mid = (lo + hi) >> 1;
        if (g.seg[mid].start <= t)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* The group count of segment s at height 16 << gi, and its first group's index. */
static __device__ __forceinline__ int lg_mlora_groups(const struct lg_mlora_segs &g, int gi, int s, int *first)
{
    const int *pre = g.pre + gi * (g.nseg + 1);
    *first = pre[s];
    return pre[s + 1] - pre[s];
}

/* Column where slot sl starts in the layout in use. */
static __device__ __forceinline__ int lg_mlora_colbase(const lg_mlora_slot &sl, int ext)
{
    return ext ? sl.col : sl.off;
}

/* Module m's output columns [moff, moff + mlen), read without indexing the parameter block at run time (which
 * would copy all of it to local memory). */
static __device__ __forceinline__ void lg_mlora_module(const struct lg_mlora_layer &L, int m, int *moff, int *mlen)
{
    *moff = L.moff[0], *mlen = L.mlen[0];
#pragma unroll
    for (int i = 1; i < LG_MLORA_MAXMOD; i++)
        if (i == m)
            *moff = L.moff[i], *mlen = L.mlen[i];
}

/* The module a block of column blocks (of `cols` columns each, modules in order) serves, and the block's
 * index inside it. */
static __device__ __forceinline__ int lg_mlora_colblock(const struct lg_mlora_layer &L, int cols, int b, int *cb)
{
    int m = 0;
#pragma unroll
    for (int i = 0; i < LG_MLORA_MAXMOD - 1; i++) {
        const int nb = (L.mlen[i] + cols - 1) / cols;
        if (m == i && i + 1 < L.nmod && b >= nb)
            b -= nb, m = i + 1;
    }
    *cb = b;
    return m;
}
