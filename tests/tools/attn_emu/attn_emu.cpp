/* attn_emu.cpp: runs the attention kernels of templates/attn/ on the CPU (emu_rt.h, emu_device.h) and checks
 * them against the CPU reference (lg_ref_attn_forward/backward) and against themselves under two
 * schedules (eager copies, warp 0 first / lazy copies, warp 0 last), which must agree bit for bit.
 *
 * What it covers without a GPU: every index, fragment layout, mask, cp.async ring and barrier of the block
 * table builder, the forward, the D preprocess, both dK/dV variants (atomic dQ and not), the deterministic dQ
 * pass and the dQ conversion, for a table of tile configurations and packs of odd sample lengths with GQA.
 * What it cannot: timing, real memory-model effects beyond the two schedules, ex2.approx's last bits.
 *
 * Build and run: bash tests/tools/attn_emu/run.sh [build dir with libloragen.a]. */
#include "emu_device.h"

#include "common/lg_attn_args.h"
#include "attn/attn_util.cuh"
#include "attn/attn_fwd.cuh"
#include "attn/attn_bwd.cuh"
#include "attn/attn_sched.cuh"

#include "lg_ref_ops.h"

#include <algorithm>
#include <string>

/* ---- data ---- */

static uint64_t rng_state;
static float urand()
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) / (double)(1ull << 24)) * 2.f - 1.f;
}

static float rnd_dtype(float x) { return lg_to_f32(lg_emu_round(x)); }

struct Tensor {
    std::vector<float> f;   /* values as the device holds them (dtype-rounded) */
    std::vector<lg_h16> h;  /* the device copy */
};

static Tensor make(size_t n, float scale)
{
    Tensor t;
    t.f.resize(n), t.h.resize(n);
    for (size_t i = 0; i < n; i++) {
        t.h[i] = lg_emu_round(urand() * scale);
        t.f[i] = lg_to_f32(t.h[i]);
    }
    return t;
}

static std::vector<float> to_f32(const std::vector<lg_h16> &h)
{
    std::vector<float> f(h.size());
    for (size_t i = 0; i < h.size(); i++)
        f[i] = lg_to_f32(h[i]);
    return f;
}

/* ---- block tables (mirrors runtime/ops/attention.c) ---- */

static int entries_of(const std::vector<int> &cu, int rows)
{
    int n = 0;
    for (size_t i = 0; i + 1 < cu.size(); i++)
        n += (cu[i + 1] - cu[i] + rows - 1) / rows;
    return n;
}

static int host_work(int mode, int len, int b, int rows, int kv_rows)
{
    if (mode == 0)
        return (std::min((b + 1) * rows, len) + kv_rows - 1) / kv_rows;
    return (len + kv_rows - 1) / kv_rows - b * rows / kv_rows;
}

static std::vector<int> build_table(const std::vector<int> &cu, int rows, int kv_rows, int mode)
{
    const int n = entries_of(cu, rows);
    std::vector<int> table((size_t)(2 * n), -1);
    lg_attn_sched_args a{};
    a.cu = cu.data(), a.table = table.data(), a.nseq = (int)cu.size() - 1, a.entries = n;
    a.rows = rows, a.kv_rows = kv_rows, a.mode = mode;
    emu::launch("attn_sched", (unsigned)((n + 127) / 128), 1, 128, 0, [&] { lg_attn_sched(a); });
    /* a permutation of every (sample, block), work never increasing, ties in (sample, block) order */
    std::vector<char> seen((size_t)n, 0);
    std::vector<int> first(cu.size(), 0);
    for (size_t s = 1; s < cu.size(); s++)
        first[s] = first[s - 1] + (cu[s] - cu[s - 1] + rows - 1) / rows;
    int prev_w = 1 << 30, prev_key = -1;
    for (int e = 0; e < n; e++) {
        const int s = table[(size_t)(2 * e)], b = table[(size_t)(2 * e + 1)];
        if (s < 0 || s >= (int)cu.size() - 1 || b < 0 || first[(size_t)s] + b >= first[(size_t)s + 1]) {
            fprintf(stderr, "block table entry %d = (%d, %d) is not a block\n", e, s, b);
            exit(1);
        }
        const int key = first[(size_t)s] + b;
        if (seen[(size_t)key]++) {
            fprintf(stderr, "block table lists (%d, %d) twice\n", s, b);
            exit(1);
        }
        const int w = host_work(mode, cu[(size_t)s + 1] - cu[(size_t)s], b, rows, kv_rows);
        if (w > prev_w || (w == prev_w && key < prev_key)) {
            fprintf(stderr, "block table out of order at entry %d (work %d after %d)\n", e, w, prev_w);
            exit(1);
        }
        prev_w = w, prev_key = key;
    }
    return table;
}

/* ---- one case ---- */

struct Shape {
    std::vector<int> lens;
    int hq, hkv;
};

struct Outputs {
    std::vector<lg_h16> o, dq, dk, dv;
    std::vector<float> lse;
};

struct FwdCfg { int bm, bn, nw, st; };
struct BwdCfg { int bm, nw, st, atomic, dq_bm, dq_bn, dq_nw, dq_st; };

template <int HD, int BM, int BN, int NW, int ST>
static void run_fwd(const lg_attn_fwd_args &a, unsigned entries)
{
    emu::launch("attn_fwd", (unsigned)a.hq, entries, 32 * NW, sizeof(lg_attn_fwd_smem<HD, BM, BN, ST>),
                [&] { lg_attn_fwd<HD, BM, BN, NW, ST>(a); });
}
template <int HD, int BM, int NW, int ST, int ATOMIC>
static void run_dkv(const lg_attn_bwd_args &a, unsigned entries)
{
    emu::launch(ATOMIC ? "attn_bwd_dkv(atomic)" : "attn_bwd_dkv", (unsigned)a.hkv, entries, 32 * NW,
                sizeof(lg_attn_dkv_smem<HD, BM, 16 * NW, ST, ATOMIC>),
                [&] { lg_attn_bwd_dkv<HD, BM, 16 * NW, NW, ST, ATOMIC>(a); });
}
template <int HD, int BM, int BN, int NW, int ST>
static void run_dq(const lg_attn_bwd_args &a, unsigned entries)
{
    emu::launch("attn_bwd_dq", (unsigned)a.hq, entries, 32 * NW, sizeof(lg_attn_dq_smem<HD, BM, BN, ST>),
                [&] { lg_attn_bwd_dq<HD, BM, BN, NW, ST>(a); });
}

/* The instantiated configurations (a template per tile choice, like the generator's variants). */
template <int HD> static bool dispatch_fwd(const FwdCfg &c, const lg_attn_fwd_args &a, unsigned n)
{
#define F(BM, BN, NW, ST)                                                                                         \
    if (c.bm == BM && c.bn == BN && c.nw == NW && c.st == ST)                                                      \
        return run_fwd<HD, BM, BN, NW, ST>(a, n), true;
    F(64, 64, 4, 2) F(128, 64, 4, 2) F(64, 32, 4, 1) F(128, 128, 8, 2) F(128, 128, 8, 3) F(64, 128, 4, 2)
#undef F
    return false;
}
template <int HD> static bool dispatch_dkv(const BwdCfg &c, const lg_attn_bwd_args &a, unsigned n)
{
#define D(BM, NW, ST, AT)                                                                                          \
    if (c.bm == BM && c.nw == NW && c.st == ST && c.atomic == AT)                                                  \
        return run_dkv<HD, BM, NW, ST, AT>(a, n), true;
    D(64, 4, 1, 0) D(64, 4, 1, 1) D(64, 8, 2, 1) D(128, 4, 2, 0) D(64, 8, 2, 0)
#undef D
    return false;
}
template <int HD> static bool dispatch_dq(const BwdCfg &c, const lg_attn_bwd_args &a, unsigned n)
{
#define Q(BM, BN, NW, ST)                                                                                          \
    if (c.dq_bm == BM && c.dq_bn == BN && c.dq_nw == NW && c.dq_st == ST)                                          \
        return run_dq<HD, BM, BN, NW, ST>(a, n), true;
    Q(64, 64, 4, 1) Q(128, 32, 4, 2) Q(128, 128, 8, 2) Q(64, 32, 4, 2)
#undef Q
    return false;
}

template <int HD>
static Outputs run_device(const Shape &sh, const std::vector<int> &cu, const Tensor &q, const Tensor &k,
                          const Tensor &v, const Tensor &dout, const FwdCfg &fc, const BwdCfg &bc)
{
    const int T = cu.back(), hq = sh.hq, hkv = sh.hkv;
    const float scale = 1.f / std::sqrt((float)HD);
    Outputs r;
    r.o.assign((size_t)T * hq * HD, 0xffff), r.lse.assign((size_t)T * hq, NAN);
    r.dq.assign((size_t)T * hq * HD, 0xffff), r.dk.assign((size_t)T * hkv * HD, 0xffff);
    r.dv.assign((size_t)T * hkv * HD, 0xffff);

    std::vector<int> tf = build_table(cu, fc.bm, fc.bn, 0);
    lg_attn_fwd_args fa{};
    fa.q = q.h.data(), fa.k = k.h.data(), fa.v = v.h.data(), fa.ldq = hq * HD, fa.ldk = hkv * HD, fa.ldv = hkv * HD;
    fa.o = r.o.data(), fa.ldo = hq * HD, fa.lse = r.lse.data(), fa.cu = cu.data(), fa.table = tf.data();
    fa.hq = hq, fa.hkv = hkv, fa.scale_log2 = scale * LG_ATTN_LOG2E;
    if (!dispatch_fwd<HD>(fc, fa, (unsigned)(tf.size() / 2)))
        fprintf(stderr, "no forward instantiation for this config\n"), exit(1);

    const int dd_ld = (T + 3) / 4 * 4;
    std::vector<float> dd((size_t)hq * dd_ld, NAN);
    lg_attn_pre_args pa{};
    pa.o = r.o.data(), pa.dout = dout.h.data(), pa.ldo = hq * HD, pa.lddo = hq * HD, pa.dd = dd.data();
    pa.tokens = T, pa.dd_ld = dd_ld, pa.hq = hq;
    const long pre_threads = (long)T * hq * (HD / 8);
    emu::launch("attn_bwd_pre", (unsigned)((pre_threads + 255) / 256), 1, 256, 0, [&] { lg_attn_bwd_pre<HD>(pa); });

    std::vector<float> acc;
    lg_attn_bwd_args ba{};
    ba.q = q.h.data(), ba.k = k.h.data(), ba.v = v.h.data(), ba.dout = dout.h.data();
    ba.ldq = hq * HD, ba.ldk = hkv * HD, ba.ldv = hkv * HD, ba.lddo = hq * HD;
    ba.lse = r.lse.data(), ba.dd = dd.data(), ba.dd_ld = dd_ld;
    ba.dq = r.dq.data(), ba.dk = r.dk.data(), ba.dv = r.dv.data();
    ba.lddq = hq * HD, ba.lddk = hkv * HD, ba.lddv = hkv * HD;
    if (bc.atomic) {
        acc.assign((size_t)T * hq * HD, 0.f);
        ba.dq_acc = acc.data();
    }
    ba.cu = cu.data(), ba.hq = hq, ba.hkv = hkv, ba.scale = scale, ba.scale_log2 = scale * LG_ATTN_LOG2E;
    std::vector<int> tk = build_table(cu, 16 * bc.nw, bc.bm, 1);
    ba.table = tk.data();
    if (!dispatch_dkv<HD>(bc, ba, (unsigned)(tk.size() / 2)))
        fprintf(stderr, "no dK/dV instantiation for this config\n"), exit(1);
    if (bc.atomic) {
        lg_attn_cvt_args ca{};
        ca.dq_acc = acc.data(), ca.dq = r.dq.data(), ca.lddq = hq * HD, ca.tokens = T, ca.hq = hq, ca.scale = scale;
        const long n8 = (long)T * hq * HD / 8;
        emu::launch("attn_dq_cvt", (unsigned)((n8 + 255) / 256), 1, 256, 0, [&] { lg_attn_dq_cvt<HD>(ca); });
    } else {
        std::vector<int> tq = build_table(cu, bc.dq_bm, bc.dq_bn, 0);
        ba.table = tq.data();
        if (!dispatch_dq<HD>(bc, ba, (unsigned)(tq.size() / 2)))
            fprintf(stderr, "no dQ instantiation for this config\n"), exit(1);
    }
    return r;
}

/* Relative L2 error of sample s's rows (hd values per head); +inf on any NaN. */
static double rel_err(const std::vector<float> &got, const std::vector<float> &ref, const std::vector<int> &cu,
                      int s, int width, int *worst)
{
    double num = 0, den = 0, wmax = -1;
    for (long i = (long)cu[(size_t)s] * width; i < (long)cu[(size_t)s + 1] * width; i++) {
        if (!std::isfinite(got[(size_t)i])) {
            *worst = (int)i;
            return INFINITY;
        }
        const double d = (double)got[(size_t)i] - ref[(size_t)i];
        num += d * d, den += (double)ref[(size_t)i] * ref[(size_t)i];
        if (std::fabs(d) > wmax)
            wmax = std::fabs(d), *worst = (int)i;
    }
    return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

static int failures;

static void compare(const char *what, const std::vector<float> &got, const std::vector<float> &ref,
                    const std::vector<int> &cu, int width, double tol)
{
    for (size_t s = 0; s + 1 < cu.size(); s++) {
        int worst = 0;
        const double e = rel_err(got, ref, cu, (int)s, width, &worst);
        if (!(e <= tol)) {
            failures++;
            fprintf(stderr, "  FAIL %s sample %zu (len %d): rel err %.3g > %.3g; worst at token %d col %d: %g vs %g\n",
                    what, s, cu[s + 1] - cu[s], e, tol, worst / width, worst % width, got[(size_t)worst],
                    ref[(size_t)worst]);
            return;
        }
    }
}

template <int HD> static void run_case(const Shape &sh, const FwdCfg &fc, const BwdCfg &bc)
{
    std::vector<int> cu(1, 0);
    for (int l : sh.lens)
        cu.push_back(cu.back() + l);
    const int T = cu.back(), hq = sh.hq, hkv = sh.hkv;
    printf("case hd=%d hq=%d hkv=%d lens=", HD, hq, hkv);
    for (int l : sh.lens)
        printf("%d,", l);
    printf(" fwd m%dn%dw%ds%d bwd m%dw%ds%d%s dq m%dn%dw%ds%d\n", fc.bm, fc.bn, fc.nw, fc.st, bc.bm, bc.nw, bc.st,
           bc.atomic ? "_atomic" : "", bc.dq_bm, bc.dq_bn, bc.dq_nw, bc.dq_st);
    fflush(stdout);
    const Tensor q = make((size_t)T * hq * HD, 1.5f), k = make((size_t)T * hkv * HD, 1.f);
    const Tensor v = make((size_t)T * hkv * HD, 1.f), dout = make((size_t)T * hq * HD, 1.f);

    emu::lazy_copies = false, emu::reverse_order = false;
    const Outputs a = run_device<HD>(sh, cu, q, k, v, dout, fc, bc);
    emu::lazy_copies = true, emu::reverse_order = true;
    const Outputs b = run_device<HD>(sh, cu, q, k, v, dout, fc, bc);
    const bool same = a.o == b.o && a.dk == b.dk && a.dv == b.dv && a.dq == b.dq &&
                      !memcmp(a.lse.data(), b.lse.data(), a.lse.size() * 4);
    if (!same) {
        failures++;
        fprintf(stderr, "  FAIL: the two schedules disagree (o %d lse %d dq %d dk %d dv %d): a race\n", a.o == b.o,
                !memcmp(a.lse.data(), b.lse.data(), a.lse.size() * 4), a.dq == b.dq, a.dk == b.dk, a.dv == b.dv);
    }

    lg_ref_attn ra{};
    ra.seq.n = T, ra.seq.nseq = (int64_t)sh.lens.size(), ra.seq.cu = cu.data();
    ra.hq = hq, ra.hkv = hkv, ra.d = HD, ra.q = q.f.data(), ra.k = k.f.data(), ra.v = v.f.data();
    std::vector<float> o((size_t)T * hq * HD), lse((size_t)T * hq);
    std::vector<float> dq((size_t)T * hq * HD), dk((size_t)T * hkv * HD), dv((size_t)T * hkv * HD);
    if (lg_ref_attn_forward(&ra, o.data(), lse.data()) != LG_OK ||
        lg_ref_attn_backward(&ra, o.data(), lse.data(), dout.f.data(), dq.data(), dk.data(), dv.data()) != LG_OK) {
        fprintf(stderr, "reference failed\n");
        exit(1);
    }
    const double tol = LG_DTYPE == 0 ? 1.5e-2 : 4e-3;
    compare("O", to_f32(a.o), o, cu, hq * HD, tol);
    for (size_t i = 0; i < lse.size(); i++)
        if (!(std::fabs(a.lse[i] - lse[i]) <= 2e-3)) {
            failures++;
            fprintf(stderr, "  FAIL LSE at token %zu head %zu: %g vs %g\n", i / hq, i % hq, a.lse[i], lse[i]);
            break;
        }
    compare("dQ", to_f32(a.dq), dq, cu, hq * HD, tol);
    compare("dK", to_f32(a.dk), dk, cu, hkv * HD, tol);
    compare("dV", to_f32(a.dv), dv, cu, hkv * HD, tol);
}

int main(int argc, char **argv)
{
    rng_state = argc > 1 ? strtoull(argv[1], nullptr, 0) : 12345;
    const int quick = argc > 2 && !strcmp(argv[2], "quick");
    printf("attn_emu: dtype %s, seed %llu\n", LG_DTYPE == 0 ? "bf16" : "fp16", (unsigned long long)rng_state);
    const Shape mix{{1, 2, 17, 127, 128, 129, 65}, 4, 2};
    const Shape gqa5{{77, 1, 130}, 5, 1};
    const Shape gqa4{{200, 33}, 8, 2};
    const Shape one{{300}, 2, 2};
    run_case<64>(mix, {64, 64, 4, 2}, {64, 4, 1, 0, 64, 64, 4, 1});
    run_case<128>(gqa5, {128, 64, 4, 2}, {64, 8, 2, 1, 64, 64, 4, 1});
    if (!quick) {
        run_case<64>(gqa4, {64, 32, 4, 1}, {128, 4, 2, 0, 128, 32, 4, 2});
        run_case<128>(mix, {128, 128, 8, 2}, {64, 4, 1, 1, 64, 64, 4, 1});
        run_case<64>(one, {128, 128, 8, 3}, {64, 8, 2, 0, 128, 128, 8, 2});
        run_case<128>(gqa4, {64, 128, 4, 2}, {64, 8, 2, 0, 64, 32, 4, 2});
        run_case<64>(gqa5, {128, 64, 4, 2}, {64, 4, 1, 1, 64, 64, 4, 1});
    }
    printf("attn_emu: %s (%d failure%s)\n", failures ? "FAIL" : "PASS", failures, failures == 1 ? "" : "s");
    return failures ? 1 : 0;
}
