/* adamw.cuh: AdamW (torch.optim.AdamW, decoupled weight decay, amsgrad off) with clip_grad_norm_ over every
 * tensor of one adapter, in three launches that read a multi-tensor table on the device:
 *   adamw_sq   one block per chunk of `chunk` elements: part[c] = Σ g² of the chunk (double; the chunk-to-
 *              element mapping is fixed, so the sum is deterministic);
 *   adamw_fin  one block: norm = sqrt of the chunk sums added in a fixed order; a non-finite norm marks the
 *              step skipped BEFORE any weight changes; else step += 1, the clip factor
 *              c = max_norm / (norm + 1e-6) (when < 1) and the bias corrections, in double;
 *   adamw_upd  one block per chunk, nothing when skipped: per element (fp32, float4 accesses)
 *                g ← g·c (double product, rounded, as the reference clips);  m ← β1 m + (1-β1) g;
 *                v ← β2 v + (1-β2) g²;  p ← p·(1 - lr·wd) - step_size · m / (sqrt(v)/sqrt(1-β2^t) + eps)
 *              and the dtype copy of p written into its half buffer (FusedLoRA's [[W,B],[A,0]] layout: row
 *              stride ldh, rows of `cols` elements). The gradients themselves are not modified.
 * Every tensor's element count is a multiple of 4 and its arrays 16-byte aligned (the host checks). */

/* The table entry holding chunk c: the last entry whose chunk0 <= c. */
static __device__ __forceinline__ int lg_adamw_find(const struct lg_adamw_args &p, int c)
{
    int lo = 0, hi = p.ntensors;
    while (hi - lo > 1) {
        const int mid = (lo + hi) >> 1;
        if (p.table[mid].chunk0 <= c)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static __device__ __forceinline__ double lg_adamw_block_sum(double v, double *scratch)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if ((threadIdx.x & 31) == 0)
        scratch[warp] = v;
    __syncthreads();
    double s = scratch[0];
    for (int w = 1; w < nw; w++)
        s += scratch[w];
    return s;
}

static __device__ __forceinline__ void lg_adamw_sq(const struct lg_adamw_args &p)
{
    __shared__ double scratch[32];
    const int c = blockIdx.x;
    const struct lg_adamw_entry T = p.table[lg_adamw_find(p, c)]; /* by value: the stores cannot alias it */
    const lg_i64 e0 = (lg_i64)(c - T.chunk0) * p.chunk;
    const lg_i64 e1 = e0 + p.chunk < T.n ? e0 + p.chunk : T.n;
    double s = 0.0;
    for (lg_i64 e = e0 + 4 * threadIdx.x; e < e1; e += 4 * blockDim.x) {
        const float4 g = *(const float4 *)(T.g + e);
        s += (double)g.x * g.x + (double)g.y * g.y + (double)g.z * g.z + (double)g.w * g.w;
    }
    s = lg_adamw_block_sum(s, scratch);
    if (threadIdx.x == 0)
        p.part[c] = s;
}

static __device__ __forceinline__ void lg_adamw_fin(const struct lg_adamw_args &p)
{
    __shared__ double scratch[32];
    double s = 0.0;
    for (int c = threadIdx.x; c < p.nchunks; c += blockDim.x)
        s += p.part[c];
    s = lg_adamw_block_sum(s, scratch);
    if (threadIdx.x != 0)
        return;
    struct lg_adamw_state *st = p.state;
    const double norm = sqrt(s);
    st->norm = norm;
    if (!isfinite(norm)) {
        st->skipped = 1;
        return;
    }
    st->skipped = 0;
    const lg_i64 t = st->step + 1;
    st->step = t;
    double c = 1.0;
    if (p.max_norm > 0.0 && isfinite(p.max_norm)) {
        c = p.max_norm / (norm + 1e-6);
        if (!(c < 1.0))
            c = 1.0;
    }
    st->clip = c;
    st->step_size = p.lr / (1.0 - pow(p.beta1, (double)t));
    st->bc2_sqrt = sqrt(1.0 - pow(p.beta2, (double)t));
}

static __device__ __forceinline__ void lg_adamw_upd(const struct lg_adamw_args &p)
{
    const struct lg_adamw_state *st = p.state;
    if (st->skipped)
        return;
    const int c = blockIdx.x;
    const struct lg_adamw_entry T = p.table[lg_adamw_find(p, c)]; /* by value: the stores cannot alias it */
    const lg_i64 e0 = (lg_i64)(c - T.chunk0) * p.chunk;
    const lg_i64 e1 = e0 + p.chunk < T.n ? e0 + p.chunk : T.n;
    const double clip = st->clip;
    const float b1 = (float)p.beta1, b2 = (float)p.beta2, eps = (float)p.eps;
    const float ob1 = (float)(1.0 - p.beta1), ob2 = (float)(1.0 - p.beta2);
    const float decay = (float)(1.0 - p.lr * p.weight_decay);
    const float step = (float)st->step_size, bc2 = (float)st->bc2_sqrt;
    lg_h16 *half = (lg_h16 *)T.half;
    for (lg_i64 e = e0 + 4 * threadIdx.x; e < e1; e += 4 * blockDim.x) {
        float4 g = *(const float4 *)(T.g + e), m = *(const float4 *)(T.m + e), v = *(const float4 *)(T.v + e);
        float4 w = *(const float4 *)(T.p + e);
        float gs[4] = {g.x, g.y, g.z, g.w}, ms[4] = {m.x, m.y, m.z, m.w}, vs[4] = {v.x, v.y, v.z, v.w};
        float ps[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float gc = clip < 1.0 ? (float)((double)gs[i] * clip) : gs[i];
            ms[i] = b1 * ms[i] + ob1 * gc;
            vs[i] = b2 * vs[i] + ob2 * gc * gc;
            ps[i] = ps[i] * decay - step * ms[i] / (sqrtf(vs[i]) / bc2 + eps);
        }
        *(float4 *)(T.m + e) = make_float4(ms[0], ms[1], ms[2], ms[3]);
        *(float4 *)(T.v + e) = make_float4(vs[0], vs[1], vs[2], vs[3]);
        *(float4 *)(T.p + e) = make_float4(ps[0], ps[1], ps[2], ps[3]);
        if (half) { /* tensors hold fewer than 2^31 elements: 32-bit division */
            const unsigned r = (unsigned)e / (unsigned)T.cols, col = (unsigned)e % (unsigned)T.cols;
            lg_h32 *dst = (lg_h32 *)(half + (lg_i64)r * T.ldh + col);
            dst[0] = lg_pack2(ps[0], ps[1]);
            dst[1] = lg_pack2(ps[2], ps[3]);
        }
    }
}
