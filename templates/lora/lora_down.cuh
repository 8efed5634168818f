/* lora_down.cuh: forward down-projection, S = scale · (X ⊙ mask)·Aᵀ, in one pass over X.
 *
 * X is the big operand ([N,K], read once, streamed); A ([r,K]) is small and stays in L1/L2. Each warp owns
 * MT 16-row tiles and a 1/WK share of K; tensor-core m16n8k16 MMAs accumulate in fp32.
 *
 * No shared memory for X: a thread loads 16 contiguous bytes (8 values, cols 8t..8t+7 of a 32-wide K block)
 * of rows g and g+8, and feeds them to two MMAs under a fixed permutation of K within the block. The B
 * fragments (rows of A) are loaded under the same permutation, so the dot products are exact while every
 * load is a coalesced 16-byte access. The dropout mask of those 8 values is one Philox call.
 *
 * Template parameters: R rank (multiple of 8), WM warps along rows, WK warps along K, MT 16-row tiles per
 * warp, U K-blocks in flight per warp, DROP (0: p = 0, no mask code at all). Needs K % 32 == 0. */

template <int R, int WM, int WK, int MT, int U, int DROP>
static __device__ __forceinline__ void lg_lora_down(const struct lg_down_args &p)
{
    constexpr int NT = R / 8;
    constexpr int ROWS = 16 * MT * WM;
    constexpr int RED = (WK > 1) ? (WK - 1) * WM * MT * NT * 4 * 32 : 1;
    __shared__ float red[RED];

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = warp % WM, wk = warp / WM;
    const int g = lane >> 2, t = lane & 3;
    const lg_i64 row0 = (lg_i64)blockIdx.x * ROWS + wm * 16 * MT;
    const lg_h16 *x = (const lg_h16 *)p.x;
    const lg_h16 *a = (const lg_h16 *)p.a;

    const lg_h16 *xr[MT][2];
    lg_i64 row[MT][2];
    bool ok[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            row[mt][h] = row0 + mt * 16 + g + 8 * h;
            ok[mt][h] = row[mt][h] < p.n;
            xr[mt][h] = x + (ok[mt][h] ? row[mt][h] : 0) * p.ldx + 8 * t;
        }

    float acc[MT][NT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                acc[mt][j][e] = 0.f;

    /* Software pipeline: the loads of K block i+1 (X and A fragments) are in flight while block i is masked
     * and multiplied, so each warp always has U·MT·2 + U·NT 16-byte loads outstanding. */
    const int nkb = p.k >> 5;
    lg_v16 xv[U][MT][2], bw[U][NT];
    auto load = [&](int kb0, lg_v16 (&xo)[U][MT][2], lg_v16 (&bo)[U][NT]) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const bool vk = kb0 + u < nkb;
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int h = 0; h < 2; h++)
                    xo[u][mt][h] = (vk && ok[mt][h]) ? lg_ld16_stream(xr[mt][h] + (kb0 + u) * 32)
                                                     : lg_v16{0u, 0u, 0u, 0u};
#pragma unroll
            for (int j = 0; j < NT; j++)
                bo[u][j] = vk ? lg_ld16(a + (lg_i64)(j * 8 + g) * p.lda + (kb0 + u) * 32 + 8 * t)
                              : lg_v16{0u, 0u, 0u, 0u};
        }
    };
    int kb0 = wk * U;
    if (kb0 < nkb)
        load(kb0, xv, bw);
    while (kb0 < nkb) {
        const int kbn = kb0 + WK * U;
        lg_v16 xn[U][MT][2], bn[U][NT];
        if (kbn < nkb)
            load(kbn, xn, bn);
        if (DROP) {
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const lg_u64 e = (lg_u64)row[mt][h] * (lg_u64)p.k + (lg_u64)((kb0 + u) * 32 + 8 * t);
                        lg_u32 m[4];
                        lg_dropout_mask4(p.drop.seed, p.drop.layer, e >> 3, p.drop.thresh16, m);
                        xv[u][mt][h].x &= m[0], xv[u][mt][h].y &= m[1], xv[u][mt][h].z &= m[2],
                            xv[u][mt][h].w &= m[3];
                    }
        }
        /* blocks past the end were loaded as zeros: their MMAs add nothing */
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    lg_mma16816(acc[mt][j], xv[u][mt][0].x, xv[u][mt][1].x, xv[u][mt][0].y, xv[u][mt][1].y,
                                bw[u][j].x, bw[u][j].y);
                    lg_mma16816(acc[mt][j], xv[u][mt][0].z, xv[u][mt][1].z, xv[u][mt][0].w, xv[u][mt][1].w,
                                bw[u][j].z, bw[u][j].w);
                }
        kb0 = kbn;
        if (kb0 < nkb) {
#pragma unroll
            for (int u = 0; u < U; u++) {
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
                    xv[u][mt][0] = xn[u][mt][0], xv[u][mt][1] = xn[u][mt][1];
#pragma unroll
                for (int j = 0; j < NT; j++)
                    bw[u][j] = bn[u][j];
            }
        }
    }

    if (WK > 1) {
        /* Fixed-order reduction over the K split: deterministic, no atomics. */
        if (wk > 0) {
            float *dst = red + (((wk - 1) * WM + wm) * MT * NT * 4) * 32 + lane;
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        dst[((mt * NT + j) * 4 + e) * 32] = acc[mt][j][e];
        }
        __syncthreads();
        if (wk > 0)
            return;
        for (int w = 1; w < WK; w++) {
            const float *src = red + (((w - 1) * WM + wm) * MT * NT * 4) * 32 + lane;
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        acc[mt][j][e] += src[((mt * NT + j) * 4 + e) * 32];
        }
    }

    lg_h16 *s = (lg_h16 *)p.s;
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            if (!ok[mt][h])
                continue;
            lg_h16 *srow = s + row[mt][h] * p.lds;
#pragma unroll
            for (int j = 0; j < NT; j++)
                *(lg_h32 *)(srow + j * 8 + 2 * t) =
                    lg_pack2(p.scale * acc[mt][j][2 * h], p.scale * acc[mt][j][2 * h + 1]);
        }
}
