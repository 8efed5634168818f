/* attn_bwd.cuh: flash-attention backward over packed samples, causal per sample, GQA. With P = exp(s - lse)
 * recomputed from the forward's LSE, D = rowsum(dO ∘ O) and dS = P ∘ (dO·Vᵀ - D):
 *   dV = Pᵀ·dO,  dK = scale·dSᵀ·Q,  dQ = scale·dS·K   (no [len x len] matrix is ever stored).
 *
 * lg_attn_bwd_pre: D per (token, head), fp32, into dd[h][t].
 * lg_attn_bwd_dkv: one block per key block of BN = 16·NW keys and KV head (table entry, longest first). Warp w
 *   owns keys 16w..16w+15: it computes Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ for its keys against a BM-row query block,
 *   turns them into Pᵀ and dSᵀ in registers and adds Pᵀ·dO and dSᵀ·Q into its dV and dK accumulators, which
 *   stay in registers over every query block at or after the key block, for every q head of the GQA group.
 *   So dK and dV are summed in one fixed order by one block and written once: deterministic, no atomics.
 *   Q, dO and their LSE/D rows stream through an ST-stage cp.async ring; K and V stay in shared memory.
 *   ATOMIC = 1 also computes dQ here: dSᵀ goes to shared memory and the block adds its dS·K into the fp32
 *   dq_acc with red.global.add (fast, not bitwise reproducible); lg_attn_dq_cvt scales and converts it.
 * lg_attn_bwd_dq: the deterministic dQ: one block per query block and q head (as the forward), recomputing
 *   S and dP per key block and accumulating dS·K in registers over the key blocks in order.
 * lg_attn_dq_cvt: dq = scale·dq_acc as dtype. */

/* ---- D = rowsum(dO ∘ O) ---- */

template <int HD>
static __device__ __forceinline__ void lg_attn_bwd_pre(const struct lg_attn_pre_args &p)
{
    constexpr int TPR = HD / 8; /* threads per (token, head) row, 8 values each */
    const lg_attn_i64 idx = (lg_attn_i64)blockIdx.x * blockDim.x + threadIdx.x;
    const lg_attn_i64 row = idx / TPR, rows = p.tokens * p.hq;
    const int part = (int)(idx % TPR);
    float acc = 0.f;
    lg_attn_i64 tok = 0;
    int h = 0;
    if (row < rows) {
        tok = row / p.hq, h = (int)(row % p.hq);
        const lg_v16 a = lg_ld16((const lg_h16 *)p.o + tok * p.ldo + h * HD + part * 8);
        const lg_v16 b = lg_ld16((const lg_h16 *)p.dout + tok * p.lddo + h * HD + part * 8);
        const lg_h32 av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
        for (int i = 0; i < 4; i++)
            acc += lg_lo_f32(av[i]) * lg_lo_f32(bv[i]) + lg_hi_f32(av[i]) * lg_hi_f32(bv[i]);
    }
#pragma unroll
    for (int off = 1; off < TPR; off <<= 1)
        acc += lg_attn_shfl_xor(acc, off);
    if (row < rows && part == 0)
        p.dd[(lg_attn_i64)h * p.dd_ld + tok] = acc;
}

/* ---- dK, dV (and the atomic dQ) per key block ---- */

template <int HD, int BM, int BN, int ST, int ATOMIC> struct lg_attn_dkv_smem {
    lg_h16 k[BN][HD + LG_ATTN_PAD];
    lg_h16 v[BN][HD + LG_ATTN_PAD];
    lg_h16 q[ST][BM][HD + LG_ATTN_PAD];
    lg_h16 dout[ST][BM][HD + LG_ATTN_PAD];
    float lse[ST][BM];
    float dd[ST][BM];
    lg_h16 ds[ATOMIC ? BN : 1][BM + LG_ATTN_PAD]; /* dSᵀ: [key][query] */
};

/* The warp tiling of the block's dQ product [BM x HD]: WQM warps along the rows, WQN along the columns. */
template <int BM, int HD, int NW> struct lg_attn_dq_tiling {
    static constexpr int WQM = (BM / 16 < NW) ? BM / 16 : NW;
    static constexpr int WQN = NW / WQM;
    static constexpr int QMT = BM / 16 / WQM; /* m-tiles per warp */
    static constexpr int QNT = HD / 8 / WQN;  /* n-tiles per warp */
};

template <int HD, int BM, int BN, int NW, int ST, int ATOMIC>
static __device__ __forceinline__ void lg_attn_bwd_dkv(const struct lg_attn_bwd_args &p)
{
    constexpr int NT = 32 * NW, LD = HD + LG_ATTN_PAD, LDS = BM + LG_ATTN_PAD;
    constexpr int NQ = BM / 8, ND = HD / 8;
    static_assert(BN == 16 * NW, "one 16-key m-tile per warp");
    static_assert(BM % 16 == 0 && HD % 16 == 0, "tiles are multiples of 16");
    extern __shared__ __align__(16) unsigned char lg_attn_smem[];
    lg_attn_dkv_smem<HD, BM, BN, ST, ATOMIC> &sm = *(lg_attn_dkv_smem<HD, BM, BN, ST, ATOMIC> *)lg_attn_smem;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int hk = blockIdx.x, grp = p.hq / p.hkv;
    const int s = p.table[2 * blockIdx.y], kb = p.table[2 * blockIdx.y + 1];
    const int b0 = p.cu[s], len = p.cu[s + 1] - b0;
    const int kv0 = kb * BN, kvrows = min(BN, len - kv0);
    const int qb0 = kv0 / BM, nq = (len + BM - 1) / BM - qb0; /* query blocks at or after the key block */
    const int iters = grp * nq;                                 /* (head, query block), head-major */
    const int wrow = warp * 16;

    lg_attn_load_rows<BN, HD, NT>(&sm.k[0][0], (const lg_h16 *)p.k + (lg_attn_i64)(b0 + kv0) * p.ldk + hk * HD,
                                  p.ldk, kvrows);
    lg_attn_load_rows<BN, HD, NT>(&sm.v[0][0], (const lg_h16 *)p.v + (lg_attn_i64)(b0 + kv0) * p.ldv + hk * HD,
                                  p.ldv, kvrows);
    lg_cp_async_commit();
    auto issue = [&](int it) {
        if (it < iters) {
            const int h = hk * grp + it / nq, q0 = (qb0 + it % nq) * BM, n = len - q0, b = it % ST;
            const lg_attn_i64 r0 = b0 + q0;
            lg_attn_load_rows<BM, HD, NT>(&sm.q[b][0][0], (const lg_h16 *)p.q + r0 * p.ldq + h * HD, p.ldq, n);
            lg_attn_load_rows<BM, HD, NT>(&sm.dout[b][0][0], (const lg_h16 *)p.dout + r0 * p.lddo + h * HD, p.lddo,
                                          n);
            lg_attn_load_stat<BM, NT>(sm.lse[b], p.lse + r0 * p.hq + h, p.hq, n);
            lg_attn_load_stat<BM, NT>(sm.dd[b], p.dd + (lg_attn_i64)h * p.dd_ld + r0, 1, n);
        }
        lg_cp_async_commit();
    };
#pragma unroll
    for (int i = 0; i < ST - 1; i++)
        issue(i);

    float dk[ND][4], dv[ND][4];
#pragma unroll
    for (int nd = 0; nd < ND; nd++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            dk[nd][e] = dv[nd][e] = 0.f;

    for (int it = 0; it < iters; it++) {
        if (ST == 1) {
            __syncthreads();
            issue(it);
            lg_cp_async_wait<0>();
        } else {
            lg_attn_wait_stage<ST>();
        }
        __syncthreads();
        if (ST > 1)
            issue(it + ST - 1);
        const int b = it % ST, h = hk * grp + it / nq, q0 = (qb0 + it % nq) * BM, qrows = min(BM, len - q0);
        const lg_h16 *qt = &sm.q[b][0][0], *ot = &sm.dout[b][0][0];

        /* Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ for the warp's 16 keys x BM queries */
        float st[NQ][4], dp[NQ][4];
#pragma unroll
        for (int nt = 0; nt < NQ; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                st[nt][e] = dp[nt][e] = 0.f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
            lg_h32 ak[4], av[4];
            lg_attn_lda<LD>(ak, &sm.k[0][0], wrow, kk * 16, lane);
            lg_attn_lda<LD>(av, &sm.v[0][0], wrow, kk * 16, lane);
#pragma unroll
            for (int np = 0; np < NQ / 2; np++) {
                lg_h32 bq[4], bo[4];
                lg_attn_ldb_nk<LD>(bq, qt, np * 16, kk * 16, lane);
                lg_attn_ldb_nk<LD>(bo, ot, np * 16, kk * 16, lane);
                lg_mma16816(st[2 * np], ak[0], ak[1], ak[2], ak[3], bq[0], bq[1]);
                lg_mma16816(st[2 * np + 1], ak[0], ak[1], ak[2], ak[3], bq[2], bq[3]);
                lg_mma16816(dp[2 * np], av[0], av[1], av[2], av[3], bo[0], bo[1]);
                lg_mma16816(dp[2 * np + 1], av[0], av[1], av[2], av[3], bo[2], bo[3]);
            }
        }

        /* Pᵀ = exp2(scale·log2e·s - log2e·lse[query]), masked where the key follows the query or the query is
         * past the sample; dSᵀ = Pᵀ ∘ (dPᵀ - D[query]) */
        const bool need_mask = q0 < kv0 + wrow + 15 || qrows < BM;
#pragma unroll
        for (int nt = 0; nt < NQ; nt++) {
            const int c = nt * 8 + 2 * t;
            const float2 l2 = *(const float2 *)&sm.lse[b][c], d2 = *(const float2 *)&sm.dd[b][c];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int qc = c + (e & 1), kr = wrow + g + 8 * (e >> 1);
                float pv = lg_attn_exp2(fmaf(st[nt][e], p.scale_log2, -LG_ATTN_LOG2E * ((e & 1) ? l2.y : l2.x)));
                if (need_mask && (kv0 + kr > q0 + qc || qc >= qrows))
                    pv = 0.f;
                st[nt][e] = pv;
                dp[nt][e] = pv * (dp[nt][e] - ((e & 1) ? d2.y : d2.x));
            }
        }

        /* dV += Pᵀ·dO, dK += dSᵀ·Q (k = the block's queries) */
#pragma unroll
        for (int kq = 0; kq < BM / 16; kq++) {
            lg_h32 ap[4], as[4];
            lg_attn_c_to_a(ap, st[2 * kq], st[2 * kq + 1]);
            lg_attn_c_to_a(as, dp[2 * kq], dp[2 * kq + 1]);
#pragma unroll
            for (int np = 0; np < ND / 2; np++) {
                lg_h32 bo[4], bq[4];
                lg_attn_ldb_kn<LD>(bo, ot, kq * 16, np * 16, lane);
                lg_attn_ldb_kn<LD>(bq, qt, kq * 16, np * 16, lane);
                lg_mma16816(dv[2 * np], ap[0], ap[1], ap[2], ap[3], bo[0], bo[1]);
                lg_mma16816(dv[2 * np + 1], ap[0], ap[1], ap[2], ap[3], bo[2], bo[3]);
                lg_mma16816(dk[2 * np], as[0], as[1], as[2], as[3], bq[0], bq[1]);
                lg_mma16816(dk[2 * np + 1], as[0], as[1], as[2], as[3], bq[2], bq[3]);
            }
        }

        if (ATOMIC) {
            /* dSᵀ of the warp's keys to shared memory; then dq_acc += dS·K over the whole block */
#pragma unroll
            for (int nt = 0; nt < NQ; nt++)
#pragma unroll
                for (int hh = 0; hh < 2; hh++)
                    *(lg_h32 *)&sm.ds[wrow + g + 8 * hh][nt * 8 + 2 * t] =
                        lg_pack2(dp[nt][2 * hh], dp[nt][2 * hh + 1]);
            __syncthreads();
            typedef lg_attn_dq_tiling<BM, HD, NW> T;
            const int wm = warp % T::WQM, wn = warp / T::WQM;
            float dq[T::QMT][T::QNT][4];
#pragma unroll
            for (int mt = 0; mt < T::QMT; mt++)
#pragma unroll
                for (int nt = 0; nt < T::QNT; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        dq[mt][nt][e] = 0.f;
#pragma unroll
            for (int kk = 0; kk < BN / 16; kk++) {
                lg_h32 a[T::QMT][4];
#pragma unroll
                for (int mt = 0; mt < T::QMT; mt++)
                    lg_attn_lda_t<LDS>(a[mt], &sm.ds[0][0], (wm * T::QMT + mt) * 16, kk * 16, lane);
#pragma unroll
                for (int np = 0; np < T::QNT / 2; np++) {
                    lg_h32 bk[4];
                    lg_attn_ldb_kn<LD>(bk, &sm.k[0][0], kk * 16, (wn * T::QNT + 2 * np) * 8, lane);
#pragma unroll
                    for (int mt = 0; mt < T::QMT; mt++) {
                        lg_mma16816(dq[mt][2 * np], a[mt][0], a[mt][1], a[mt][2], a[mt][3], bk[0], bk[1]);
                        lg_mma16816(dq[mt][2 * np + 1], a[mt][0], a[mt][1], a[mt][2], a[mt][3], bk[2], bk[3]);
                    }
                }
            }
#pragma unroll
            for (int mt = 0; mt < T::QMT; mt++)
#pragma unroll
                for (int hh = 0; hh < 2; hh++) {
                    const int row = (wm * T::QMT + mt) * 16 + g + 8 * hh;
                    if (row < qrows) {
                        float *dst = p.dq_acc + ((lg_attn_i64)(b0 + q0 + row) * p.hq + h) * HD + wn * T::QNT * 8 + 2 * t;
#pragma unroll
                        for (int nt = 0; nt < T::QNT; nt++)
                            lg_attn_red_add2(dst + nt * 8, dq[mt][nt][2 * hh], dq[mt][nt][2 * hh + 1]);
                    }
                }
        }
    }
    lg_cp_async_wait<0>();
    __syncthreads(); /* every warp is done reading K and V (the dQ product reads all their rows) */
    const float rk[2] = {p.scale, p.scale}, rv[2] = {1.f, 1.f};
    const lg_attn_i64 r0 = b0 + kv0 + wrow;
    lg_attn_store_rows<1, HD>(&dk, rk, &sm.k[wrow][0], (lg_h16 *)p.dk + r0 * p.lddk + hk * HD, p.lddk,
                              kvrows - wrow, lane);
    lg_attn_store_rows<1, HD>(&dv, rv, &sm.v[wrow][0], (lg_h16 *)p.dv + r0 * p.lddv + hk * HD, p.lddv,
                              kvrows - wrow, lane);
}

/* ---- deterministic dQ per query block ---- */

template <int HD, int BM, int BN, int ST> struct lg_attn_dq_smem {
    lg_h16 q[BM][HD + LG_ATTN_PAD];
    lg_h16 dout[BM][HD + LG_ATTN_PAD];
    lg_h16 k[ST][BN][HD + LG_ATTN_PAD];
    lg_h16 v[ST][BN][HD + LG_ATTN_PAD];
    float lse[BM];
    float dd[BM];
};

template <int HD, int BM, int BN, int NW, int ST>
static __device__ __forceinline__ void lg_attn_bwd_dq(const struct lg_attn_bwd_args &p)
{
    constexpr int NT = 32 * NW, MT = BM / (16 * NW), LD = HD + LG_ATTN_PAD;
    constexpr int NS = BN / 8, ND = HD / 8;
    static_assert(MT >= 1 && MT * 16 * NW == BM, "BM must be 16·MT·NW");
    extern __shared__ __align__(16) unsigned char lg_attn_smem[];
    lg_attn_dq_smem<HD, BM, BN, ST> &sm = *(lg_attn_dq_smem<HD, BM, BN, ST> *)lg_attn_smem;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int h = blockIdx.x, hk = h / (p.hq / p.hkv);
    const int s = p.table[2 * blockIdx.y], qb = p.table[2 * blockIdx.y + 1];
    const int b0 = p.cu[s], len = p.cu[s + 1] - b0;
    const int q0 = qb * BM, qrows = min(BM, len - q0);
    const int nkv = (q0 + qrows - 1) / BN + 1;
    const int wrow = warp * 16 * MT;
    const lg_attn_i64 r0 = b0 + q0;
    const lg_h16 *kg = (const lg_h16 *)p.k + (lg_attn_i64)b0 * p.ldk + hk * HD;
    const lg_h16 *vg = (const lg_h16 *)p.v + (lg_attn_i64)b0 * p.ldv + hk * HD;

    lg_attn_load_rows<BM, HD, NT>(&sm.q[0][0], (const lg_h16 *)p.q + r0 * p.ldq + h * HD, p.ldq, qrows);
    lg_attn_load_rows<BM, HD, NT>(&sm.dout[0][0], (const lg_h16 *)p.dout + r0 * p.lddo + h * HD, p.lddo, qrows);
    lg_attn_load_stat<BM, NT>(sm.lse, p.lse + r0 * p.hq + h, p.hq, qrows);
    lg_attn_load_stat<BM, NT>(sm.dd, p.dd + (lg_attn_i64)h * p.dd_ld + r0, 1, qrows);
    lg_cp_async_commit();
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

    float dq[MT][ND][4], lse2[MT][2], drow[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nd = 0; nd < ND; nd++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                dq[mt][nd][e] = 0.f;

    for (int j = 0; j < nkv; j++) {
        if (ST == 1) {
            __syncthreads();
            issue(j);
            lg_cp_async_wait<0>();
        } else {
            lg_attn_wait_stage<ST>();
        }
        __syncthreads();
        if (ST > 1)
            issue(j + ST - 1);
        if (j == 0)
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int hh = 0; hh < 2; hh++) {
                    const int row = wrow + mt * 16 + g + 8 * hh;
                    lse2[mt][hh] = sm.lse[row] * LG_ATTN_LOG2E;
                    drow[mt][hh] = sm.dd[row];
                }
        const lg_h16 *kt = &sm.k[j % ST][0][0], *vt = &sm.v[j % ST][0][0];

        /* S = Q·Kᵀ, dP = dO·Vᵀ */
        float sc[MT][NS][4], dp[MT][NS][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < NS; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    sc[mt][nt][e] = dp[mt][nt][e] = 0.f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
            lg_h32 aq[MT][4], ao[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                lg_attn_lda<LD>(aq[mt], &sm.q[0][0], wrow + mt * 16, kk * 16, lane);
                lg_attn_lda<LD>(ao[mt], &sm.dout[0][0], wrow + mt * 16, kk * 16, lane);
            }
#pragma unroll
            for (int np = 0; np < NS / 2; np++) {
                lg_h32 bk[4], bv[4];
                lg_attn_ldb_nk<LD>(bk, kt, np * 16, kk * 16, lane);
                lg_attn_ldb_nk<LD>(bv, vt, np * 16, kk * 16, lane);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    lg_mma16816(sc[mt][2 * np], aq[mt][0], aq[mt][1], aq[mt][2], aq[mt][3], bk[0], bk[1]);
                    lg_mma16816(sc[mt][2 * np + 1], aq[mt][0], aq[mt][1], aq[mt][2], aq[mt][3], bk[2], bk[3]);
                    lg_mma16816(dp[mt][2 * np], ao[mt][0], ao[mt][1], ao[mt][2], ao[mt][3], bv[0], bv[1]);
                    lg_mma16816(dp[mt][2 * np + 1], ao[mt][0], ao[mt][1], ao[mt][2], ao[mt][3], bv[2], bv[3]);
                }
            }
        }

        /* P and dS = P ∘ (dP - D), masked where the key follows the query */
        const int kv0 = j * BN;
        const bool need_mask = kv0 + BN - 1 > q0 + wrow;
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < NS; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int hh = e >> 1;
                    const int row = q0 + wrow + mt * 16 + g + 8 * hh, col = kv0 + nt * 8 + 2 * t + (e & 1);
                    float pv = lg_attn_exp2(fmaf(sc[mt][nt][e], p.scale_log2, -lse2[mt][hh]));
                    if (need_mask && col > row)
                        pv = 0.f;
                    dp[mt][nt][e] = pv * (dp[mt][nt][e] - drow[mt][hh]);
                }

        /* dQ += dS·K (k = the block's keys) */
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            lg_h32 a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                lg_attn_c_to_a(a[mt], dp[mt][2 * kk], dp[mt][2 * kk + 1]);
#pragma unroll
            for (int np = 0; np < ND / 2; np++) {
                lg_h32 b[4];
                lg_attn_ldb_kn<LD>(b, kt, kk * 16, np * 16, lane);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    lg_mma16816(dq[mt][2 * np], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[0], b[1]);
                    lg_mma16816(dq[mt][2 * np + 1], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[2], b[3]);
                }
            }
        }
    }
    lg_cp_async_wait<0>();
    float rs[2 * MT];
#pragma unroll
    for (int i = 0; i < 2 * MT; i++)
        rs[i] = p.scale;
    /* the warp's own Q rows are free once its last S product is done: stage dQ through them */
    lg_attn_store_rows<MT, HD>(dq, rs, &sm.q[wrow][0], (lg_h16 *)p.dq + (r0 + wrow) * p.lddq + h * HD, p.lddq,
                               qrows - wrow, lane);
}

/* ---- dq = scale·dq_acc ---- */

template <int HD>
static __device__ __forceinline__ void lg_attn_dq_cvt(const struct lg_attn_cvt_args &p)
{
    const lg_attn_i64 idx = (lg_attn_i64)blockIdx.x * blockDim.x + threadIdx.x; /* one per 8 values */
    const lg_attn_i64 per_tok = (lg_attn_i64)p.hq * (HD / 8);
    if (idx >= p.tokens * per_tok)
        return;
    const lg_attn_i64 tok = idx / per_tok;
    const int c = (int)(idx % per_tok) * 8; /* column within the token's hq·HD values */
    const float4 *src = (const float4 *)(p.dq_acc + idx * 8);
    const float4 a = src[0], b = src[1];
    lg_v16 v;
    v.x = lg_pack2(a.x * p.scale, a.y * p.scale);
    v.y = lg_pack2(a.z * p.scale, a.w * p.scale);
    v.z = lg_pack2(b.x * p.scale, b.y * p.scale);
    v.w = lg_pack2(b.z * p.scale, b.w * p.scale);
    lg_st16((lg_h16 *)p.dq + tok * p.lddq + c, v);
}
