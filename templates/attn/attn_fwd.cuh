/* attn_fwd.cuh: flash-attention forward over packed samples, causal per sample, GQA.
 *
 * One block computes BM query rows of one sample for one q head (grid: x = q head, y = block-table entry,
 * so the heads of one KV group run side by side and share K/V in L2, and the table's longest-first order is
 * the launch order). NW warps each own 16·MT consecutive query rows (BM = 16·MT·NW) and every column of O.
 * The Q tile stays in shared memory; K and V blocks of BN keys stream through an ST-stage cp.async ring.
 * Per key block: S = Q·Kᵀ (m16n8k16 MMAs, fp32), the causal mask on blocks that reach past the warp's
 * first row, the online softmax in the log2 domain (row max and partial row sums per thread, quads combine
 * maxima by shuffles; the sums only at the end), then P (rounded to dtype, straight from the S registers)
 * times V into the O accumulators. Only key blocks up to the block's last row are visited: nothing of the
 * masked upper triangle is loaded or multiplied. Rows past the sample's end read zeros and are not stored.
 * The epilogue writes O = acc / rowsum as dtype through shared memory (16-byte stores) and the natural-log
 * LSE = (m + log2(rowsum))·ln 2 per (token, head). */

template <int HD, int BM, int BN, int ST> struct lg_attn_fwd_smem {
    lg_h16 q[BM][HD + LG_ATTN_PAD];
    lg_h16 k[ST][BN][HD + LG_ATTN_PAD];
    lg_h16 v[ST][BN][HD + LG_ATTN_PAD];
};

template <int HD, int BM, int BN, int NW, int ST>
static __device__ __forceinline__ void lg_attn_fwd(const struct lg_attn_fwd_args &p)
{
    constexpr int NT = 32 * NW, MT = BM / (16 * NW), LD = HD + LG_ATTN_PAD;
    constexpr int NS = BN / 8, ND = HD / 8;
    static_assert(MT >= 1 && MT * 16 * NW == BM, "BM must be 16·MT·NW");
    static_assert(BN % 16 == 0 && HD % 16 == 0, "tiles are multiples of 16");
    extern __shared__ __align__(16) unsigned char lg_attn_smem[];
    lg_attn_fwd_smem<HD, BM, BN, ST> &sm = *(lg_attn_fwd_smem<HD, BM, BN, ST> *)lg_attn_smem;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int h = blockIdx.x, hk = h / (p.hq / p.hkv);
    const int s = p.table[2 * blockIdx.y], qb = p.table[2 * blockIdx.y + 1];
    const int b0 = p.cu[s], len = p.cu[s + 1] - b0;
    const int q0 = qb * BM, qrows = min(BM, len - q0);
    const int nkv = (q0 + qrows - 1) / BN + 1; /* key blocks 0..nkv-1 reach the block's last row */
    const int wrow = warp * 16 * MT;           /* the warp's first row in the block */
    const lg_h16 *kg = (const lg_h16 *)p.k + (lg_attn_i64)b0 * p.ldk + hk * HD;
    const lg_h16 *vg = (const lg_h16 *)p.v + (lg_attn_i64)b0 * p.ldv + hk * HD;

    lg_attn_load_rows<BM, HD, NT>(&sm.q[0][0], (const lg_h16 *)p.q + (lg_attn_i64)(b0 + q0) * p.ldq + h * HD,
                                  p.ldq, qrows);
    lg_cp_async_commit();
    /* stage j: key block j into ring buffer j % ST; one group per stage, empty past the end */
    auto issue = [&](int j) {
        if (j < nkv) {
            const int kv0 = j * BN;
            lg_attn_load_rows<BN, HD, NT>(&sm.k[j % ST][0][0], kg + (lg_attn_i64)kv0 * p.ldk, p.ldk, len - kv0);
            lg_attn_load_rows<BN, HD, NT>(&sm.v[j % ST][0][0], vg + (lg_attn_i64)kv0 * p.ldv, p.ldv, len - kv0);
        }
        lg_cp_async_commit();
    };
#pragma unroll
    for (int i = 0; i < ST - 1; i++)
        issue(i);

    float o[MT][ND][4], m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int nd = 0; nd < ND; nd++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                o[mt][nd][e] = 0.f;
        m[mt][0] = m[mt][1] = LG_ATTN_NEG_INF;
        l[mt][0] = l[mt][1] = 0.f;
    }

    for (int j = 0; j < nkv; j++) {
        if (ST == 1) {
            __syncthreads(); /* everyone is done with the previous block's buffer */
            issue(j);
            lg_cp_async_wait<0>();
        } else {
            lg_attn_wait_stage<ST>(); /* Q and key block j have landed (this thread's copies) */
        }
        __syncthreads(); /* ... everyone's copies; and buffer (j-1) % ST is free for stage j+ST-1 */
        if (ST > 1)
            issue(j + ST - 1);
        const lg_h16 *kt = &sm.k[j % ST][0][0], *vt = &sm.v[j % ST][0][0];

        /* S = Q·Kᵀ for the warp's rows */
        float sc[MT][NS][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < NS; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    sc[mt][nt][e] = 0.f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
            lg_h32 a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                lg_attn_lda<LD>(a[mt], &sm.q[0][0], wrow + mt * 16, kk * 16, lane);
#pragma unroll
            for (int np = 0; np < NS / 2; np++) {
                lg_h32 b[4];
                lg_attn_ldb_nk<LD>(b, kt, np * 16, kk * 16, lane);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    lg_mma16816(sc[mt][2 * np], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[0], b[1]);
                    lg_mma16816(sc[mt][2 * np + 1], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[2], b[3]);
                }
            }
        }

        /* causal mask: only where a key of the block can lie after one of the warp's rows */
        const int kv0 = j * BN;
        if (kv0 + BN - 1 > q0 + wrow) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int nt = 0; nt < NS; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int row = q0 + wrow + mt * 16 + g + 8 * (e >> 1), col = kv0 + nt * 8 + 2 * t + (e & 1);
                        if (col > row)
                            sc[mt][nt][e] = LG_ATTN_NEG_INF;
                    }
        }

        /* online softmax, log2 domain: m is the running max of scale·log2(e)·s */
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                float mx = LG_ATTN_NEG_INF;
#pragma unroll
                for (int nt = 0; nt < NS; nt++)
                    mx = fmaxf(mx, fmaxf(sc[mt][nt][2 * hh], sc[mt][nt][2 * hh + 1]));
                mx = fmaxf(mx, lg_attn_shfl_xor(mx, 1));
                mx = fmaxf(mx, lg_attn_shfl_xor(mx, 2));
                const float mnew = fmaxf(m[mt][hh], mx * p.scale_log2);
                const float mb = mnew == LG_ATTN_NEG_INF ? 0.f : mnew; /* a row with nothing visible yet */
                const float alpha = lg_attn_exp2(m[mt][hh] - mb);
                m[mt][hh] = mnew;
                float rs = 0.f;
#pragma unroll
                for (int nt = 0; nt < NS; nt++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const float pv = lg_attn_exp2(fmaf(sc[mt][nt][2 * hh + e], p.scale_log2, -mb));
                        sc[mt][nt][2 * hh + e] = pv;
                        rs += pv;
                    }
                l[mt][hh] = l[mt][hh] * alpha + rs;
#pragma unroll
                for (int nd = 0; nd < ND; nd++) {
                    o[mt][nd][2 * hh] *= alpha;
                    o[mt][nd][2 * hh + 1] *= alpha;
                }
            }

        /* O += P·V, P from the S registers */
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            lg_h32 a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                lg_attn_c_to_a(a[mt], sc[mt][2 * kk], sc[mt][2 * kk + 1]);
#pragma unroll
            for (int dp = 0; dp < ND / 2; dp++) {
                lg_h32 b[4];
                lg_attn_ldb_kn<LD>(b, vt, kk * 16, dp * 16, lane);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    lg_mma16816(o[mt][2 * dp], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[0], b[1]);
                    lg_mma16816(o[mt][2 * dp + 1], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[2], b[3]);
                }
            }
        }
    }
    lg_cp_async_wait<0>();

    /* epilogue: row sums across the quad, O / rowsum, LSE */
    float rinv[2 * MT];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            float ls = l[mt][hh];
            ls += lg_attn_shfl_xor(ls, 1);
            ls += lg_attn_shfl_xor(ls, 2);
            rinv[2 * mt + hh] = 1.f / ls;
            const int row = wrow + mt * 16 + g + 8 * hh;
            if (t == 0 && row < qrows)
                p.lse[(lg_attn_i64)(b0 + q0 + row) * p.hq + h] = (m[mt][hh] + log2f(ls)) * LG_ATTN_LN2;
        }
    lg_attn_store_rows<MT, HD>(o, rinv, &sm.q[wrow][0],
                               (lg_h16 *)p.o + (lg_attn_i64)(b0 + q0 + wrow) * p.ldo + h * HD, p.ldo, qrows - wrow,
                               lane);
}
