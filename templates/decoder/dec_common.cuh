/* dec_common.cuh: device helpers the decoder kernels share: L2 cache-policy loads and stores for streams that
 * must not push reusable data out of L2, block reductions in a fixed order, and the two LoRA pieces a kernel
 * folds into its pass over an activation:
 *   - S = s·(y ⊙ mask)·Aᵀ, computed exactly as templates/lora/lora_down.cuh does it (same fragments, same
 *     MMA order, same K split over WK warps, same fixed-order reduction), so S equals FusedLoRA's down kernel
 *     output bit for bit when that kernel runs with the default tiles (wm = mt = 1, u = 2, wk as ours);
 *   - the masked dX correction keep · mask ⊙ (dS·A) of a 16-row tile, as MMAs whose B operand (A, stored
 *     [rank, k]) is transposed in registers with movmatrix, so every load stays a 16-byte row access.
 * Fragment layouts: PTX ISA "mma.m16n8k16" and "movmatrix"; lane = 4g + t. */
#ifndef LG_DEC_COMMON_CUH
#define LG_DEC_COMMON_CUH

/* ---- cache policies ---- */

typedef unsigned long long lg_dec_policy;

/* Lines loaded or stored under this policy are the first L2 evicts: streams read or written once. */
static __device__ __forceinline__ lg_dec_policy lg_dec_evict_first()
{
    lg_dec_policy p;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
    return p;
}

static __device__ __forceinline__ lg_v16 lg_dec_ld16_ef(const void *ptr, lg_dec_policy pol)
{
    lg_v16 v;
    asm volatile("ld.global.L1::no_allocate.L2::cache_hint.v4.u32 {%0,%1,%2,%3}, [%4], %5;"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(ptr), "l"(pol));
    return v;
}

static __device__ __forceinline__ void lg_dec_st16_ef(void *ptr, lg_v16 v, lg_dec_policy pol)
{
    asm volatile("st.global.L2::cache_hint.v4.u32 [%0], {%1,%2,%3,%4}, %5;" ::"l"(ptr), "r"(v.x), "r"(v.y),
                 "r"(v.z), "r"(v.w), "l"(pol)
                 : "memory");
}

/* Ordinary (coherent) 16-byte load and store that the compiler keeps in program order with the asm ones. */
static __device__ __forceinline__ lg_v16 lg_dec_ld16(const void *ptr)
{
    lg_v16 v;
    asm volatile("ld.global.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(ptr));
    return v;
}

static __device__ __forceinline__ void lg_dec_st16(void *ptr, lg_v16 v)
{
    asm volatile("st.global.v4.u32 [%0], {%1,%2,%3,%4};" ::"l"(ptr), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
                 : "memory");
}

static __device__ __forceinline__ lg_v16 lg_dec_zero16() { return lg_v16{0u, 0u, 0u, 0u}; }

/* ---- 8 values as floats ---- */

static __device__ __forceinline__ void lg_dec_unpack8(const lg_v16 &v, float f[8])
{
    const unsigned w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[2 * i] = lg_lo_f32(w[i]);
        f[2 * i + 1] = lg_hi_f32(w[i]);
    }
}

static __device__ __forceinline__ lg_v16 lg_dec_pack8(const float f[8])
{
    return lg_v16{lg_pack2(f[0], f[1]), lg_pack2(f[2], f[3]), lg_pack2(f[4], f[5]), lg_pack2(f[6], f[7])};
}

/* ---- fixed-order block reductions (every thread gets the result) ---- */

/* Sum over the block of one value per thread: xor-butterfly in each warp, then the warps' sums in warp order.
 * scratch: at least blockDim.x / 32 floats; the call ends with the block synchronised. */
static __device__ __forceinline__ float lg_dec_block_sum(float v, float *scratch)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads(); /* scratch may still be read by a previous call */
    if ((threadIdx.x & 31) == 0)
        scratch[warp] = v;
    __syncthreads();
    float s = scratch[0];
    for (int w = 1; w < nw; w++)
        s += scratch[w];
    return s;
}

/* ---- S = scale · (y ⊙ mask)·Aᵀ (lora_down's arithmetic) ---- */

/* The A fragments of one 32-column K block for NT n-tiles: row 8j+g of A, columns col..col+7 (col = 32kb+8t);
 * rows at or past `rank` (and K blocks past the end: valid = false) are zero, as in lora_down. */
template <int NT>
static __device__ __forceinline__ void lg_dec_a_frags(lg_v16 (&b)[NT], const lg_h16 *a, lg_i64 lda, int rank,
                                                      int g, lg_i64 col, bool valid)
{
#pragma unroll
    for (int j = 0; j < NT; j++)
        b[j] = (valid && j * 8 + g < rank) ? lg_ld16(a + (lg_i64)(j * 8 + g) * lda + col) : lg_dec_zero16();
}

/* acc += (rows g, g+8 of the tile) · Aᵀ over one K block: lora_down's two MMAs per n-tile, in its order. */
template <int NT>
static __device__ __forceinline__ void lg_dec_s_mma(float (&acc)[NT][4], const lg_v16 &v0, const lg_v16 &v1,
                                                    const lg_v16 (&b)[NT])
{
#pragma unroll
    for (int j = 0; j < NT; j++) {
        lg_mma16816(acc[j], v0.x, v1.x, v0.y, v1.y, b[j].x, b[j].y);
        lg_mma16816(acc[j], v0.z, v1.z, v0.w, v1.w, b[j].z, b[j].w);
    }
}

/* v with the dropout mask of its 8 elements e..e+7 (e = row·k + col, a multiple of 8) applied. */
static __device__ __forceinline__ lg_v16 lg_dec_masked(lg_v16 v, const struct lg_dropout &d, lg_u64 e)
{
    lg_u32 m[4];
    lg_dropout_mask4(d.seed, d.layer, e >> 3, d.thresh16, m);
    v.x &= m[0], v.y &= m[1], v.z &= m[2], v.w &= m[3];
    return v;
}

/* The WK warps' partial S of one 16-row tile summed in warp order (warp 0 adds warps 1..WK-1 one after the
 * other, as lora_down), scaled and written by warp 0: rows row_g and row_g + 8 (each when < n), columns
 * 8j+2t, 8j+2t+1 for 8j < rank. red: (WK-1)·NT·128 floats. Every thread of the block must call it. */
template <int NT, int WK>
static __device__ __forceinline__ void lg_dec_s_store(float (&acc)[NT][4], float *red, const struct lg_dec_lora &L,
                                                      lg_i64 row_g, int n, int wk, int lane)
{
    if (WK > 1) {
        if (wk > 0) {
            float *dst = red + ((wk - 1) * NT * 4) * 32 + lane;
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    dst[(j * 4 + e) * 32] = acc[j][e];
        }
        __syncthreads();
        if (wk == 0)
            for (int w = 1; w < WK; w++) {
                const float *src = red + ((w - 1) * NT * 4) * 32 + lane;
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        acc[j][e] += src[(j * 4 + e) * 32];
            }
    }
    if (wk == 0) {
        const int t = lane & 3;
        lg_h16 *s = (lg_h16 *)L.s;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const lg_i64 row = row_g + 8 * h;
            if (row >= n)
                continue;
            lg_h16 *srow = s + row * L.lds;
#pragma unroll
            for (int j = 0; j < NT; j++)
                if (j * 8 < L.rank)
                    *(lg_h32 *)(srow + j * 8 + 2 * t) = lg_pack2(L.scale * acc[j][2 * h], L.scale * acc[j][2 * h + 1]);
        }
    }
    __syncthreads(); /* red is free again */
}

/* ---- the masked dX correction of a 16-row tile ---- */

static __device__ __forceinline__ lg_h32 lg_dec_movt(lg_h32 a)
{
    lg_h32 d;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(d) : "r"(a));
    return d;
}

/* dS fragments (the MMA A operand, 16 rows x 16 ranks per k-step) of rows row_g, row_g + 8 of the tile,
 * loaded once per tile: f[ks] = {dS[g][16ks+2t..], dS[g+8][16ks+2t..], dS[g][16ks+8+2t..], dS[g+8][16ks+8+2t..]};
 * ranks at or past `rank` and rows at or past n are zero. */
template <int KS>
static __device__ __forceinline__ void lg_dec_ds_frags(lg_h32 (&f)[KS][4], const struct lg_dec_lora &L, lg_i64 row_g,
                                                       int n, int t)
{
    const lg_h16 *ds = (const lg_h16 *)L.ds;
#pragma unroll
    for (int ks = 0; ks < KS; ks++)
#pragma unroll
        for (int q = 0; q < 4; q++) {
            const lg_i64 row = row_g + 8 * (q & 1);
            const int c = 16 * ks + 8 * (q >> 1) + 2 * t;
            f[ks][q] = (row < n && c < L.rank) ? *(const lg_h32 *)(ds + row * L.ldds + c) : 0u;
        }
}

/* c[i] = (dS·A) of this thread's tile elements in K block columns col0 + 8t .. +7 (col0 = 32kb):
 * c[i][0..1] at row g, columns 8t+2i, 8t+2i+1; c[i][2..3] at row g+8, the same columns. The B operand of
 * n-tile i is the 8x8 tile of A (ranks x those columns) that the thread's 16-byte row load holds in word i,
 * transposed by movmatrix: n-tile i's column n = 2t'+e stands for column 8t'+2i+e. */
template <int KS>
static __device__ __forceinline__ void lg_dec_corr(float (&c)[4][4], const lg_h32 (&f)[KS][4], const struct lg_dec_lora &L,
                                                   int g, lg_i64 col)
{
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            c[i][e] = 0.f;
    const lg_h16 *a = (const lg_h16 *)L.a;
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
        const int r0 = 16 * ks + g, r1 = r0 + 8;
        const lg_v16 lo = r0 < L.rank ? lg_ld16(a + (lg_i64)r0 * L.lda + col) : lg_dec_zero16();
        const lg_v16 hi = r1 < L.rank ? lg_ld16(a + (lg_i64)r1 * L.lda + col) : lg_dec_zero16();
        const unsigned lw[4] = {lo.x, lo.y, lo.z, lo.w}, hw[4] = {hi.x, hi.y, hi.z, hi.w};
#pragma unroll
        for (int i = 0; i < 4; i++)
            lg_mma16816(c[i], f[ks][0], f[ks][1], f[ks][2], f[ks][3], lg_dec_movt(lw[i]), lg_dec_movt(hw[i]));
    }
}

/* dy (8 values of row g + 8h at columns 8t..8t+7, as floats) += keep · mask ⊙ c, for h = 0 or 1. */
static __device__ __forceinline__ void lg_dec_corr_add(float dy[8], const float (&c)[4][4], int h, const lg_u32 m[4],
                                                       float keep)
{
#pragma unroll
    for (int i = 0; i < 4; i++) {
        if (m[i] & 0xffffu)
            dy[2 * i] += keep * c[i][2 * h];
        if (m[i] >> 16)
            dy[2 * i + 1] += keep * c[i][2 * h + 1];
    }
}

#endif
