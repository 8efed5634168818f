/* emu_rt.h: a CPU emulator of just enough of a CUDA thread block to run the attention templates as written.
 *
 * Each CUDA thread of a block is a fiber on one OS thread; blocks of a grid run one after another.
 * __syncthreads is a block barrier and every warp-wide instruction (mma.sync, ldmatrix, shuffles, __syncwarp)
 * a warp barrier at which the last lane to arrive computes all 32 lanes' results from the PTX ISA's fragment
 * definitions. Divergent warp instructions, barriers not reached by every thread, misaligned or out-of-range
 * shared/global accesses of the emulated instructions abort with the thread named.
 *
 * Races show up as differences between runs: cp.async copies land either at issue ("eager": a copy into a
 * buffer another warp still reads clobbers it) or at the cp.async.wait_group that guarantees them ("lazy":
 * a read before the wait sees stale data), and the fibers run in one of two orders (warp 0 first or last),
 * each running until it blocks, so warps drift apart as far as the barriers allow. Shared memory is filled
 * with 0xff (NaN) before every block. The emulator checks index math and synchronisation, not speed. */
#ifndef LG_EMU_RT_H
#define LG_EMU_RT_H

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#ifndef EMU_SWITCH /* one switch routine per translation unit that includes this (fake_kern.cpp has two) */
#define EMU_SWITCH lg_emu_switch
#define EMU_SWITCH_NAME "lg_emu_switch"
#endif

struct lg_emu_dim3 {
    unsigned x, y, z;
};

/* The templates' `extern __shared__ unsigned char lg_attn_smem[]`: one block runs at a time. */
alignas(16) unsigned char lg_attn_smem[232 * 1024];

namespace emu {

enum { READY, WAIT_BAR, WAIT_WARP, DONE };

struct Copy {
    void *dst;
    const void *src;
    int bytes, src_bytes;
    long group;
};

struct Fiber {
    void *sp = nullptr; /* saved stack pointer while switched out */
    char *stack = nullptr;
    lg_emu_dim3 tid{0, 0, 0};
    int state = DONE;
    std::vector<Copy> pending;
    long committed = 0;
};

struct Warp {
    int arrived = 0;
    const char *op = nullptr;
    uint32_t in[32][12];
    const void *ptr[32];
    uint32_t out[32][4];
};

constexpr size_t STACK = 256 * 1024;
constexpr size_t SMEM = 232 * 1024;

inline void *sched_sp;
inline std::vector<Fiber> fibers;
inline std::vector<Warp> warps;
inline Fiber *cur = nullptr;
inline int nthreads = 0, bar_arrived = 0;
inline bool lazy_copies = false;
inline bool reverse_order = false;
inline std::function<void()> *body = nullptr;
inline unsigned char *const smem = lg_attn_smem;
inline size_t smem_limit = SMEM;
inline lg_emu_dim3 block_idx, block_dim, grid_dim;
inline const char *kernel_name = "?";

[[noreturn]] inline void fail(const char *what)
{
    fprintf(stderr, "EMU ERROR in %s block (%u,%u) thread %u: %s\n", kernel_name, block_idx.x, block_idx.y,
            cur ? cur->tid.x : 0u, what);
    exit(2);
}

inline int tid() { return (int)cur->tid.x; }

/* x86-64 context switch: pushes the callee-saved registers, stores the stack pointer in *from, loads `to`
 * and pops the other side's (ucontext's swapcontext costs two syscalls per switch: 9x slower). */
extern "C" void EMU_SWITCH(void **from, void *to);
asm(".text\n.globl " EMU_SWITCH_NAME "\n.type " EMU_SWITCH_NAME ",@function\n" EMU_SWITCH_NAME ":\n"
    "pushq %rbp\npushq %rbx\npushq %r12\npushq %r13\npushq %r14\npushq %r15\n"
    "movq %rsp, (%rdi)\nmovq %rsi, %rsp\n"
    "popq %r15\npopq %r14\npopq %r13\npopq %r12\npopq %rbx\npopq %rbp\nret\n");

inline void block_wait(int state)
{
    cur->state = state;
    EMU_SWITCH(&cur->sp, sched_sp);
}

inline void check_smem(const void *p, size_t bytes, size_t align)
{
    const unsigned char *c = (const unsigned char *)p;
    if (c < smem || c + bytes > smem + smem_limit)
        fail("shared-memory access outside the block's dynamic shared memory");
    if ((uintptr_t)c % align)
        fail("misaligned shared-memory access");
}

inline void syncthreads()
{
    if (++bar_arrived == nthreads) {
        bar_arrived = 0;
        for (auto &f : fibers)
            if (f.state == WAIT_BAR)
                f.state = READY;
        return;
    }
    block_wait(WAIT_BAR);
}

/* The calling lane has filled its slot of w.in / w.ptr; compute(w) runs once all 32 lanes have arrived. */
template <class F> inline Warp &warp_op(const char *op, F &&compute)
{
    Warp &w = warps[tid() / 32];
    if (w.arrived == 0)
        w.op = op;
    else if (strcmp(w.op, op))
        fail("divergent warp: lanes reached different warp-wide instructions");
    if (++w.arrived == 32) {
        compute(w);
        w.arrived = 0;
        const int base = tid() / 32 * 32;
        for (int l = 0; l < 32; l++)
            if (fibers[base + l].state == WAIT_WARP)
                fibers[base + l].state = READY;
    } else {
        block_wait(WAIT_WARP);
    }
    return w;
}

inline void do_copy(const Copy &c)
{
    memcpy(c.dst, c.src, (size_t)c.src_bytes);
    memset((char *)c.dst + c.src_bytes, 0, (size_t)(c.bytes - c.src_bytes));
}

inline void cp_async(void *dst, const void *src, int bytes, int src_bytes)
{
    check_smem(dst, (size_t)bytes, (size_t)bytes);
    if ((uintptr_t)src % (uintptr_t)bytes)
        fail("misaligned cp.async source");
    if (src_bytes != 0 && src_bytes != bytes)
        fail("cp.async with a partial source size");
    Copy c{dst, src, bytes, src_bytes, cur->committed};
    if (lazy_copies)
        cur->pending.push_back(c);
    else
        do_copy(c);
}

inline void cp_wait(int n)
{
    auto &p = cur->pending;
    size_t k = 0;
    for (size_t i = 0; i < p.size(); i++) {
        if (p[i].group < cur->committed - n)
            do_copy(p[i]);
        else
            p[k++] = p[i];
    }
    p.resize(k);
}

inline void entry()
{
    (*body)();
    cur->state = DONE;
    EMU_SWITCH(&cur->sp, sched_sp); /* never resumed */
    abort();
}

/* A fresh fiber's stack: six zero registers for the pops, then entry() as the return address, with the stack
 * aligned as a call would leave it. */
inline void *fresh_stack(char *stack)
{
    uintptr_t top = ((uintptr_t)(stack + STACK)) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = nullptr;        /* entry()'s own return address: never used */
    *--sp = (void *)&entry; /* popped by ret */
    for (int i = 0; i < 6; i++)
        *--sp = nullptr;
    return sp;
}

inline void run_block(int threads, std::function<void()> &fn)
{
    nthreads = threads;
    bar_arrived = 0;
    body = &fn;
    if (fibers.size() < (size_t)threads)
        fibers.resize((size_t)threads);
    warps.assign((size_t)(threads + 31) / 32, Warp());
    memset(smem, 0xff, SMEM);
    for (int i = 0; i < threads; i++) {
        Fiber &f = fibers[(size_t)i];
        if (!f.stack)
            f.stack = (char *)malloc(STACK);
        f.sp = fresh_stack(f.stack);
        f.tid = {(unsigned)i, 0, 0};
        f.state = READY;
        f.pending.clear();
        f.committed = 0;
    }
    for (;;) {
        bool ran = false, all_done = true;
        for (int k = 0; k < threads; k++) {
            const int i = reverse_order ? threads - 1 - k : k;
            Fiber &f = fibers[(size_t)i];
            if (f.state == READY) {
                cur = &f;
                EMU_SWITCH(&sched_sp, f.sp);
                ran = true;
            }
            all_done = all_done && f.state == DONE;
        }
        if (all_done)
            break;
        if (!ran) {
            int bar = 0, warp = 0, done = 0;
            for (int i = 0; i < threads; i++)
                bar += fibers[(size_t)i].state == WAIT_BAR, warp += fibers[(size_t)i].state == WAIT_WARP,
                    done += fibers[(size_t)i].state == DONE;
            fprintf(stderr, "EMU ERROR in %s block (%u,%u): deadlock (%d at a barrier, %d at a warp instruction, "
                            "%d exited)\n", kernel_name, block_idx.x, block_idx.y, bar, warp, done);
            exit(2);
        }
    }
    cur = nullptr;
}

/* Runs fn as a kernel over grid (gx, gy) with `threads` threads per block and `smem_bytes` of dynamic shared
 * memory. Blocks run in launch order (x fastest). */
inline void launch(const char *name, unsigned gx, unsigned gy, int threads, size_t smem_bytes,
                   std::function<void()> fn)
{
    if (smem_bytes > SMEM) {
        fprintf(stderr, "EMU ERROR: %s needs %zu bytes of shared memory\n", name, smem_bytes);
        exit(2);
    }
    kernel_name = name;
    smem_limit = smem_bytes;
    grid_dim = {gx, gy, 1};
    block_dim = {(unsigned)threads, 1, 1};
    for (unsigned y = 0; y < gy; y++)
        for (unsigned x = 0; x < gx; x++) {
            block_idx = {x, y, 0};
            run_block(threads, fn);
        }
}

} // namespace emu

/* ---- what the kernels see of CUDA ---- */
#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__
#define __constant__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define threadIdx (emu::cur->tid)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)

using std::max;
using std::min;

struct alignas(8) float2 {
    float x, y;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }

inline float __int_as_float(int i)
{
    float f;
    memcpy(&f, &i, 4);
    return f;
}
inline float __uint_as_float(unsigned i)
{
    float f;
    memcpy(&f, &i, 4);
    return f;
}
inline unsigned __float_as_uint(float f)
{
    unsigned i;
    memcpy(&i, &f, 4);
    return i;
}

inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu)
{
    emu::warp_op("syncwarp", [](emu::Warp &) {});
}
inline float __shfl_xor_sync(unsigned mask, float v, int lanemask)
{
    if (mask != 0xffffffffu)
        emu::fail("shuffle with a partial mask");
    const int lane = emu::tid() % 32;
    emu::Warp &w0 = emu::warps[(size_t)emu::tid() / 32];
    w0.in[lane][0] = __float_as_uint(v);
    w0.in[lane][1] = (uint32_t)lanemask;
    emu::Warp &w = emu::warp_op("shfl.xor", [](emu::Warp &w) {
        for (int l = 0; l < 32; l++) {
            if (w.in[l][1] != w.in[0][1])
                emu::fail("shuffle lanes disagree on the lane mask");
            w.out[l][0] = w.in[l ^ (int)w.in[l][1]][0];
        }
    });
    return __uint_as_float(w.out[lane][0]);
}

#endif
