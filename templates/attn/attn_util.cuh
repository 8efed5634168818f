/* attn_util.cuh: what the attention kernels share: shared-memory tiles, their cp.async loads, and the mma
 * fragment loads in the four orientations flash attention needs.
 *
 * Tiles are row-major [rows][LD] arrays of 16-bit values with LD = head_dim (or block width) + 8: the 16-byte
 * pad shifts consecutive rows by 4 banks, so the 8 row addresses of every ldmatrix hit distinct banks and the
 * 16-byte cp.async writes stay aligned.
 *
 * Fragment layouts (PTX ISA, mma.m16n8k16, g = lane/4, t = lane%4): A (16x16, row-major) a0 = (g, 2t..2t+1),
 * a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..); B (16x8, k x n) b0 = (k 2t..2t+1, n g),
 * b1 = (k 2t+8.., n g); C (16x8) c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..). ldmatrix.x4: lane l addresses row
 * l%8 of matrix l/8 and receives (row l/4, cols 2(l%4)..) of each matrix, or with .trans (rows 2(l%4).., col
 * l/4). */
#ifndef LG_ATTN_UTIL_CUH
#define LG_ATTN_UTIL_CUH

#define LG_ATTN_PAD 8
#define LG_ATTN_LOG2E 1.4426950408889634f
#define LG_ATTN_LN2 0.6931471805599453f
#define LG_ATTN_NEG_INF (-__int_as_float(0x7f800000)) /* NVRTC here has no math headers (no INFINITY) */

/* Copies rows [0, ROWS) x HD of a [tokens, heads, HD] tensor (src: the tile's first row at its head) into a
 * [ROWS][HD + PAD] tile; rows >= nvalid become zeros and read nothing. Issues, does not commit. */
template <int ROWS, int HD, int NT>
static __device__ __forceinline__ void lg_attn_load_rows(lg_h16 *dst, const lg_h16 *src, lg_attn_i64 ld,
                                                         int nvalid)
{
    constexpr int CPR = HD / 8; /* 16-byte chunks per row */
#pragma unroll
    for (int c = threadIdx.x; c < ROWS * CPR; c += NT) {
        const int r = c / CPR, cc = c % CPR;
        const bool ok = r < nvalid;
        lg_cp_async16(dst + r * (HD + LG_ATTN_PAD) + cc * 8, src + (ok ? (lg_attn_i64)r * ld : 0) + cc * 8,
                      ok ? 16 : 0);
    }
}

/* ROWS fp32 statistics src[r·stride] into dst[r]; rows >= nvalid become zeros. Issues, does not commit. */
template <int ROWS, int NT>
static __device__ __forceinline__ void lg_attn_load_stat(float *dst, const float *src, lg_attn_i64 stride,
                                                         int nvalid)
{
    for (int r = threadIdx.x; r < ROWS; r += NT) {
        const bool ok = r < nvalid;
        lg_attn_cp_async4(dst + r, src + (ok ? (lg_attn_i64)r * stride : 0), ok ? 4 : 0);
    }
}

/* A fragment of rows m0..m0+15, k0..k0+15 of a row-major [m][LD] tile. */
template <int LD>
static __device__ __forceinline__ void lg_attn_lda(lg_h32 a[4], const lg_h16 *tile, int m0, int k0, int lane)
{
    lg_ldsm_x4(a, tile + (m0 + (lane & 15)) * LD + k0 + (lane >> 4) * 8);
}

/* A fragment of rows m0..m0+15, k0..k0+15 of the transpose of a [k][LD] tile (the tile holds Aᵀ). */
template <int LD>
static __device__ __forceinline__ void lg_attn_lda_t(lg_h32 a[4], const lg_h16 *tile, int m0, int k0, int lane)
{
    const int q = lane >> 3;
    lg_ldsm_x4_t(a, tile + (k0 + (q >> 1) * 8 + (lane & 7)) * LD + m0 + (q & 1) * 8);
}

/* B fragments of the two n-tiles n0..n0+7 (b[0], b[1]) and n0+8..n0+15 (b[2], b[3]), k0..k0+15, from a
 * tile stored [n][LD] (row = n: B is the tile transposed, e.g. K in q·kᵀ). */
template <int LD>
static __device__ __forceinline__ void lg_attn_ldb_nk(lg_h32 b[4], const lg_h16 *tile, int n0, int k0, int lane)
{
    lg_ldsm_x4(b, tile + (n0 + (lane >> 4) * 8 + (lane & 7)) * LD + k0 + ((lane >> 3) & 1) * 8);
}

/* The same two n-tiles from a tile stored [k][LD] (row = k: B as stored, e.g. V in p·v). */
template <int LD>
static __device__ __forceinline__ void lg_attn_ldb_kn(lg_h32 b[4], const lg_h16 *tile, int k0, int n0, int lane)
{
    lg_ldsm_x4_t(b, tile + (k0 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD + n0 + (lane >> 4) * 8);
}

/* The A fragment of k-step kk from two C tiles (n-tiles 2kk and 2kk+1 of a 16-row accumulator), rounded to
 * dtype: how P and dS feed the next product without leaving registers. */
static __device__ __forceinline__ void lg_attn_c_to_a(lg_h32 a[4], const float c0[4], const float c1[4])
{
    a[0] = lg_pack2(c0[0], c0[1]);
    a[1] = lg_pack2(c0[2], c0[3]);
    a[2] = lg_pack2(c1[0], c1[1]);
    a[3] = lg_pack2(c1[2], c1[3]);
}

/* Waits for a cp.async ring stage: with ST stages, one group per stage committed in order, "stage `it` has
 * landed" is wait_group(ST - 2) (runtime ST is a template constant). */
template <int ST> static __device__ __forceinline__ void lg_attn_wait_stage()
{
    lg_cp_async_wait<(ST >= 2 ? ST - 2 : 0)>();
}

/* Writes a warp's 16·MT accumulator rows (cols 0..HD), row i scaled by rmul[i] (i = 2·mt + half: rows g and
 * g+8 of m-tile mt), as dtype through the warp's own rows of a shared tile (`stage`, row stride HD + PAD),
 * then to global rows r < nvalid of dst with 16-byte stores. acc[mt][nt][e] is the C layout. Only this warp's
 * rows of `stage` are touched, so no block barrier is needed around it. */
template <int MT, int HD>
static __device__ __forceinline__ void lg_attn_store_rows(const float (*acc)[HD / 8][4], const float *rmul,
                                                          lg_h16 *stage, lg_h16 *dst, lg_attn_i64 ld, int nvalid,
                                                          int lane)
{
    constexpr int LD = HD + LG_ATTN_PAD, CPR = HD / 8;
    const int g = lane >> 2, t = lane & 3;
    __syncwarp();
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const float m = rmul[mt * 2 + hh];
#pragma unroll
            for (int nt = 0; nt < HD / 8; nt++)
                *(lg_h32 *)(stage + (mt * 16 + g + 8 * hh) * LD + nt * 8 + 2 * t) =
                    lg_pack2(acc[mt][nt][2 * hh] * m, acc[mt][nt][2 * hh + 1] * m);
        }
    __syncwarp();
#pragma unroll
    for (int c = lane; c < 16 * MT * CPR; c += 32) {
        const int r = c / CPR, cc = c % CPR;
        if (r < nvalid)
            lg_st16(dst + (lg_attn_i64)r * ld + cc * 8, lg_ld16(stage + r * LD + cc * 8));
    }
}

#endif
