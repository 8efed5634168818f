/* xent.cuh: softmax, cross-entropy loss and dlogits of one chunk of logits, in place (the LM head's chunk
 * buffer: [rows, v], written by the logits GEMM, read back by the dX GEMM).
 *
 * One block per row. Pass 1 reads the row once (16-byte vectors, kept in L2 for pass 2) with an online
 * max/sum-exp per thread; the block combines the (max, sum) pairs in a fixed order (xor butterfly in each
 * warp, then the warps in order: every thread gets the same bits), lse = max + log(sum). The label's logit is
 * read before anything is overwritten. Pass 2 (with grad) re-reads the row and writes
 * grad_scale · w · (softmax - onehot) over it, evict-first. Ignored rows (label -100, or a label outside
 * [0, v), which also counts in *bad) get loss 0 and, with grad, a zero row, without reading the logits.
 * exp via exp2f of prescaled arguments; fp32 throughout; deterministic. */

#define LG_XENT_L2E 1.4426950408889634f
#define LG_XENT_NEG_INF (-__int_as_float(0x7f800000))

static __device__ __forceinline__ void lg_xent_combine(float &m, float &s, float m2, float s2)
{
    const float M = fmaxf(m, m2);
    const float a = (m == M) ? s : s * exp2f((m - M) * LG_XENT_L2E);
    const float b = (m2 == M) ? s2 : s2 * exp2f((m2 - M) * LG_XENT_L2E);
    m = M;
    s = a + b;
}

static __device__ __forceinline__ void lg_xent(const struct lg_xent_args &p)
{
    __shared__ float wm[32], ws[32];
    __shared__ float zlab;
    const int row = blockIdx.x, tid = threadIdx.x, nt = blockDim.x, nw = nt >> 5;
    lg_h16 *z = (lg_h16 *)p.logits + (lg_i64)row * p.ldl;
    const int label = p.labels[row];
    const int nvec = p.v >> 3;
    const lg_dec_policy ef = lg_dec_evict_first();

    if (label < 0 || label >= p.v) {
        if (tid == 0) {
            p.loss[row] = 0.f;
            if (p.lse)
                p.lse[row] = 0.f;
            if (label != -100)
                atomicAdd(p.bad, 1);
        }
        if (p.grad)
            for (int c = tid; c < nvec; c += nt)
                lg_dec_st16_ef(z + 8 * c, lg_dec_zero16(), ef);
        return;
    }
    if (tid == 0)
        zlab = lg_to_f32(z[label]);

    float m = LG_XENT_NEG_INF, s = 0.f;
    for (int c = tid; c < nvec; c += nt) {
        float f[8];
        lg_dec_unpack8(lg_dec_ld16(z + 8 * c), f);
        float mx = f[0];
#pragma unroll
        for (int e = 1; e < 8; e++)
            mx = fmaxf(mx, f[e]);
        if (mx > m) {
            s = (m == LG_XENT_NEG_INF) ? 0.f : s * exp2f((m - mx) * LG_XENT_L2E);
            m = mx;
        }
        float add = 0.f;
#pragma unroll
        for (int e = 0; e < 8; e++)
            add += exp2f((f[e] - m) * LG_XENT_L2E);
        s += add;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        lg_xent_combine(m, s, m2, s2);
    }
    if ((tid & 31) == 0)
        wm[tid >> 5] = m, ws[tid >> 5] = s;
    __syncthreads();
    m = wm[0], s = ws[0];
    for (int w = 1; w < nw; w++)
        lg_xent_combine(m, s, wm[w], ws[w]);
    const float lse = m + logf(s);
    const float w = p.weight[row];
    if (tid == 0) {
        p.loss[row] = w * (lse - zlab);
        if (p.lse)
            p.lse[row] = lse;
    }
    if (!p.grad)
        return;
    const float coef = p.grad_scale * w, ls = lse * LG_XENT_L2E;
    for (int c = tid; c < nvec; c += nt) {
        float f[8];
        lg_dec_unpack8(lg_dec_ld16_ef(z + 8 * c, ef), f);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            float pr = exp2f(fmaf(f[e], LG_XENT_L2E, -ls));
            if (8 * c + e == label)
                pr -= 1.0f;
            f[e] = coef * pr;
        }
        lg_dec_st16_ef(z + 8 * c, lg_dec_pack8(f), ef);
    }
}
