/* attn_sched.cuh: the block table of one attention launch, built on the device from the sample offsets (so
 * the host never waits for the GPU and no table is copied up per microbatch).
 *
 * Entries are the (sample, block) pairs of blocks of `rows` tokens, Σ ceil(len / rows) of them, sorted by
 * decreasing work and then by (sample, block): the launch order is the table order, so the longest blocks
 * start first and the short ones fill the tail of the last wave. Causal work is monotone in the block index
 * inside a sample (non-decreasing for query blocks, non-increasing for key blocks; lg_attn_args.h), so every
 * count below is a binary search and each thread places its own pair directly:
 *   position = Σ_samples #(work > w) + Σ_earlier samples #(work == w) + rank among its sample's work-w blocks.
 * One thread per entry, O(nseq · log) each: nothing for a microbatch's tens to thousands of samples. */

static __device__ __forceinline__ int lg_attn_work(const struct lg_attn_sched_args &p, int len, int b)
{
    if (p.mode == 0) {
        const int end = min((b + 1) * p.rows, len);
        return (end + p.kv_rows - 1) / p.kv_rows;
    }
    return (len + p.kv_rows - 1) / p.kv_rows - (b * p.rows) / p.kv_rows;
}

/* The first block index b in [0, nb] of a sample where "work has dropped to w or below" (mode 1) or "work has
 * risen above w" (mode 0); the predicate is monotone in b. */
static __device__ __forceinline__ int lg_attn_first(const struct lg_attn_sched_args &p, int len, int nb, int w)
{
    int lo = 0, hi = nb;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        const int wm = lg_attn_work(p, len, mid);
        if (p.mode == 0 ? wm > w : wm <= w)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* Blocks of a sample with work > w. */
static __device__ __forceinline__ int lg_attn_above(const struct lg_attn_sched_args &p, int len, int nb, int w)
{
    const int f = lg_attn_first(p, len, nb, w);
    return p.mode == 0 ? nb - f : f;
}

static __device__ __forceinline__ void lg_attn_sched(const struct lg_attn_sched_args &p)
{
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= p.entries)
        return;
    /* entry e in (sample, block) order */
    int s = 0, before = 0, len = 0, nb = 0;
    for (; s < p.nseq; s++) {
        len = p.cu[s + 1] - p.cu[s];
        nb = (len + p.rows - 1) / p.rows;
        if (e < before + nb)
            break;
        before += nb;
    }
    const int b = e - before, w = lg_attn_work(p, len, b);
    /* rank among the sample's own blocks of work w: they are contiguous, starting where work reaches w */
    const int start = p.mode == 0 ? lg_attn_first(p, len, nb, w - 1) : lg_attn_first(p, len, nb, w);
    int pos = b - start;
    for (int s2 = 0; s2 < p.nseq; s2++) {
        const int l2 = p.cu[s2 + 1] - p.cu[s2], n2 = (l2 + p.rows - 1) / p.rows;
        const int gt = lg_attn_above(p, l2, n2, w);
        pos += gt;
        if (s2 < s)
            pos += lg_attn_above(p, l2, n2, w - 1) - gt; /* its blocks of work exactly w */
    }
    p.table[2 * pos] = s;
    p.table[2 * pos + 1] = b;
}
