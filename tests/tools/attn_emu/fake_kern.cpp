/* fake_kern.cpp: the attention kernels as the fake driver (fake_cuda.cpp) runs them, compiled once per dtype
 * (-DLG_DTYPE=0 -DEMU_NS=emu_bf16, and 1/emu_fp16): each translation unit holds its own emulator state in its
 * namespace. EMU_NS_launch(name, grid, threads, args) parses a generated kernel's name (generator/ops/attn.lua
 * names every tile) and runs the matching instantiation below; EMU_NS_smem(name) is its `<name>_smem`. A name
 * without an instantiation here aborts naming it: add it to the lists. */
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#define STR2(a) #a
#define STR(a) STR2(a)
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)

#define EMU_SWITCH CAT(EMU_NS, _switch)
#define EMU_SWITCH_NAME STR(EMU_SWITCH)
namespace EMU_NS {
#include "emu_device.h"

#include "common/lg_attn_args.h"
#include "attn/attn_util.cuh"
#include "attn/attn_fwd.cuh"
#include "attn/attn_bwd.cuh"
#include "attn/attn_sched.cuh"

struct req {
    int hd, bm, bn, nw, st, atomic;
};

/* The instantiations: every default of lg_ops_attn_default_tiles (both smem classes), the tile sets of
 * test_attention_gpu and bench_attention's sweep. */
template <int HD> static size_t fwd(const req &r, unsigned gx, unsigned gy, const void *a)
{
#define F(BM, BN, NW, ST)                                                                                         \
    if (r.bm == BM && r.bn == BN && r.nw == NW && r.st == ST) {                                                    \
        if (a) {                                                                                                   \
            const lg_attn_fwd_args &p = *(const lg_attn_fwd_args *)a;                                               \
            emu::launch("attn_fwd", gx, gy, 32 * NW, sizeof(lg_attn_fwd_smem<HD, BM, BN, ST>),                      \
                        [&] { lg_attn_fwd<HD, BM, BN, NW, ST>(p); });                                              \
        }                                                                                                          \
        return sizeof(lg_attn_fwd_smem<HD, BM, BN, ST>);                                                           \
    }
    F(64, 64, 4, 2) F(64, 64, 4, 1) F(128, 64, 4, 2) F(128, 128, 8, 2) F(128, 64, 8, 2) F(64, 128, 4, 2)
#undef F
    return 0;
}
template <int HD> static size_t dkv(const req &r, unsigned gx, unsigned gy, const void *a)
{
#define D(BM, NW, ST, AT)                                                                                          \
    if (r.bm == BM && r.nw == NW && r.st == ST && r.atomic == AT) {                                                \
        if (a) {                                                                                                   \
            const lg_attn_bwd_args &p = *(const lg_attn_bwd_args *)a;                                               \
            emu::launch("attn_bwd_dkv", gx, gy, 32 * NW, sizeof(lg_attn_dkv_smem<HD, BM, 16 * NW, ST, AT>),         \
                        [&] { lg_attn_bwd_dkv<HD, BM, 16 * NW, NW, ST, AT>(p); });                                 \
        }                                                                                                          \
        return sizeof(lg_attn_dkv_smem<HD, BM, 16 * NW, ST, AT>);                                                  \
    }
    D(64, 4, 1, 0) D(64, 4, 1, 1) D(64, 8, 2, 0) D(64, 8, 2, 1) D(64, 4, 2, 0) D(64, 4, 2, 1) D(64, 8, 1, 0)
    D(64, 8, 1, 1) D(128, 8, 1, 0) D(128, 8, 1, 1)
#undef D
    return 0;
}
template <int HD> static size_t dq(const req &r, unsigned gx, unsigned gy, const void *a)
{
#define Q(BM, BN, NW, ST)                                                                                          \
    if (r.bm == BM && r.bn == BN && r.nw == NW && r.st == ST) {                                                    \
        if (a) {                                                                                                   \
            const lg_attn_bwd_args &p = *(const lg_attn_bwd_args *)a;                                               \
            emu::launch("attn_bwd_dq", gx, gy, 32 * NW, sizeof(lg_attn_dq_smem<HD, BM, BN, ST>),                    \
                        [&] { lg_attn_bwd_dq<HD, BM, BN, NW, ST>(p); });                                           \
        }                                                                                                          \
        return sizeof(lg_attn_dq_smem<HD, BM, BN, ST>);                                                            \
    }
    Q(64, 64, 4, 1) Q(64, 64, 4, 2) Q(64, 128, 4, 2) Q(128, 64, 8, 2)
#undef Q
    return 0;
}

/* Runs (args != NULL) or sizes (args == NULL) the kernel `name`; returns its dynamic shared memory, or
 * (size_t)-1 when the name is not an attention kernel of this dtype. */
static size_t dispatch(const char *name, unsigned gx, unsigned gy, unsigned bx, const void *args)
{
    const char *dt = LG_DTYPE == 0 ? "bf16" : "fp16";
    char pfx[64];
    req r{};
    char mode[16] = "";
    auto is = [&](const char *op) {
        snprintf(pfx, sizeof pfx, "lg_%s_%s", op, dt);
        return !strncmp(name, pfx, strlen(pfx));
    };
    const char *rest = name;
    size_t sm = 0;
    bool found = false;
    if (is("attn_sched") && !name[strlen(pfx)]) {
        if (args) {
            const lg_attn_sched_args &p = *(const lg_attn_sched_args *)args;
            emu::launch("attn_sched", gx, gy, (int)bx, 0, [&] { lg_attn_sched(p); });
        }
        return 0;
    }
    if (is("attn_fwd") && (rest = name + strlen(pfx), sscanf(rest, "_d%d_m%dn%dw%ds%d", &r.hd, &r.bm, &r.bn, &r.nw, &r.st) == 5)) {
        sm = r.hd == 64 ? fwd<64>(r, gx, gy, args) : fwd<128>(r, gx, gy, args);
        found = sm > 0;
    } else if (is("attn_bwd_dkv") &&
               (rest = name + strlen(pfx), sscanf(rest, "_d%d_m%dn%dw%ds%d_%15s", &r.hd, &r.bm, &r.bn, &r.nw, &r.st, mode) == 6)) {
        r.atomic = !strcmp(mode, "atomic");
        sm = r.hd == 64 ? dkv<64>(r, gx, gy, args) : dkv<128>(r, gx, gy, args);
        found = sm > 0;
    } else if (is("attn_bwd_dq") && (rest = name + strlen(pfx), sscanf(rest, "_d%d_m%dn%dw%ds%d", &r.hd, &r.bm, &r.bn, &r.nw, &r.st) == 5)) {
        sm = r.hd == 64 ? dq<64>(r, gx, gy, args) : dq<128>(r, gx, gy, args);
        found = sm > 0;
    } else if (is("attn_bwd_pre") && sscanf(name + strlen(pfx), "_d%d", &r.hd) == 1) {
        if (args) {
            const lg_attn_pre_args &p = *(const lg_attn_pre_args *)args;
            if (r.hd == 64)
                emu::launch("attn_bwd_pre", gx, gy, (int)bx, 0, [&] { lg_attn_bwd_pre<64>(p); });
            else
                emu::launch("attn_bwd_pre", gx, gy, (int)bx, 0, [&] { lg_attn_bwd_pre<128>(p); });
        }
        return 0;
    } else if (is("attn_dq_cvt") && sscanf(name + strlen(pfx), "_d%d", &r.hd) == 1) {
        if (args) {
            const lg_attn_cvt_args &p = *(const lg_attn_cvt_args *)args;
            if (r.hd == 64)
                emu::launch("attn_dq_cvt", gx, gy, (int)bx, 0, [&] { lg_attn_dq_cvt<64>(p); });
            else
                emu::launch("attn_dq_cvt", gx, gy, (int)bx, 0, [&] { lg_attn_dq_cvt<128>(p); });
        }
        return 0;
    } else {
        return (size_t)-1;
    }
    if (!found) {
        fprintf(stderr, "fake driver: no emulated instantiation for %s (tests/tools/attn_emu/fake_kern.cpp)\n", name);
        exit(3);
    }
    return sm;
}
} // namespace EMU_NS

extern "C" size_t CAT(EMU_NS, _kernel)(const char *name, unsigned gx, unsigned gy, unsigned bx, const void *args)
{
    return EMU_NS::dispatch(name, gx, gy, bx, args);
}
