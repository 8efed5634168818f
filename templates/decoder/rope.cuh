/* rope.cuh: rotary position embedding in place on q and k, forward (sign +1) and backward (sign -1, the
 * transposed rotation), HF's rotate_half pairs (i, i + d/2).
 *
 * A block owns LG_ROPE_TOK tokens. It finds each token's position inside its packed sample (binary search of
 * cu_seqlens: position = t - cu[j] for cu[j] <= t < cu[j+1]), builds the cos/sin table of those tokens in
 * shared memory once (angle = fp32(inv_freq_i · fp32(pos)) as lg_ref_rope_table, cos and sin evaluated in
 * double and rounded to fp32, so the table equals the reference's), then rotates every head of q and k of
 * those tokens, 8 pairs per thread and step: 16-byte loads of x[i..i+7] and x[i+d/2..], one rotation in fp32,
 * two 16-byte stores. inv_freq comes from the host (lg_ref_rope_inv_freq's values): one implementation of the
 * frequencies. d % 16 == 0, d <= LG_ROPE_DMAX. A bad cu_seqlens gives wrong positions, never a bad access:
 * the search reads cu[0..nseq] only. */

#define LG_ROPE_TOK 8
#define LG_ROPE_DMAX 256

static __device__ __forceinline__ void lg_rope(const struct lg_rope_args &p)
{
    __shared__ float cs[LG_ROPE_TOK][LG_ROPE_DMAX / 2], sn[LG_ROPE_TOK][LG_ROPE_DMAX / 2];
    __shared__ int pos[LG_ROPE_TOK];
    const int half = p.d >> 1, tid = threadIdx.x;
    const lg_i64 t0 = (lg_i64)blockIdx.x * LG_ROPE_TOK;

    if (tid < LG_ROPE_TOK) {
        const lg_i64 tok = t0 + tid;
        int lo = 0, hi = p.nseq; /* invariant: cu[lo] <= tok < cu[hi] for a well-formed cu */
        while (hi - lo > 1) {
            const int mid = (lo + hi) >> 1;
            if (p.cu[mid] <= tok)
                lo = mid;
            else
                hi = mid;
        }
        pos[tid] = (int)(tok - p.cu[lo]);
    }
    __syncthreads();
    for (int i = tid; i < LG_ROPE_TOK * half; i += blockDim.x) {
        const int tt = i / half, f = i % half;
        const float ang = __fmul_rn(p.inv_freq[f], (float)pos[tt]);
        double s, c;
        sincos((double)ang, &s, &c);
        cs[tt][f] = (float)c;
        sn[tt][f] = p.sign * (float)s;
    }
    __syncthreads();

    const int chunks = half >> 3, heads = p.hq + p.hk;
    const int items = LG_ROPE_TOK * heads * chunks;
    lg_h16 *q = (lg_h16 *)p.q, *k = (lg_h16 *)p.k;
    for (int it = tid; it < items; it += blockDim.x) {
        const int c = it % chunks, rest = it / chunks, hh = rest % heads, tt = rest / heads;
        const lg_i64 tok = t0 + tt;
        if (tok >= p.n)
            continue;
        lg_h16 *base = hh < p.hq ? q + tok * p.ldq + (lg_i64)hh * p.d : k + tok * p.ldk + (lg_i64)(hh - p.hq) * p.d;
        float x1[8], x2[8];
        lg_dec_unpack8(lg_ld16(base + 8 * c), x1);
        lg_dec_unpack8(lg_ld16(base + half + 8 * c), x2);
        float y1[8], y2[8];
#pragma unroll
        for (int e = 0; e < 8; e++) {
            const float cv = cs[tt][8 * c + e], sv = sn[tt][8 * c + e];
            y1[e] = x1[e] * cv - x2[e] * sv;
            y2[e] = x2[e] * cv + x1[e] * sv;
        }
        lg_st16(base + 8 * c, lg_dec_pack8(y1));
        lg_st16(base + half + 8 * c, lg_dec_pack8(y2));
    }
}
