/* test_attention_gpu.c: packed causal GQA attention on the GPU (lg_attention.h) against the CPU reference
 * (lg_ref_attn_forward/backward), forward and backward, in both backward modes (fast: dQ by fp32 atomics;
 * deterministic), on fresh random inputs (seed printed) with every output poisoned with NaN first and every
 * element checked: samples of 1, 2, 17, 127, 128, 129, 1000 and 4096 tokens alone and mixed in one pack, GQA
 * ratios 1, 4, 5 and 8, head dims 64 and 128, bf16 and fp16, packed and fused-qkv (strided) layouts, and a
 * few tile variants. Sample isolation, reproducibility and bad calls: test_attention_gpu_calls.c; the
 * machinery both share: tests/util/lg_attn_gpu_util.c. Each case prints one row: the worst per-sample relative
 * L2 error of O, LSE, dQ, dK, dV and the verdict; a failure also prints the first bad element (token, head,
 * column). Exits 77 without a GPU. */
#include "lg_attention.h"
#include "lg_attn_gpu_util.h"
#include "lg_gpu_util.h"
#include "lg_half.h"
#include "lg_ref_ops.h"
#include "lg_test.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct acase cases[] = {
    {"len1", 1, {1}, 4, 4, 128, LG_BF16, 0},
    {"len2", 1, {2}, 8, 2, 64, LG_FP16, 0},
    {"len17", 1, {17}, 5, 1, 128, LG_BF16, 0},
    {"len127", 1, {127}, 8, 1, 64, LG_BF16, 0},
    {"len128", 1, {128}, 4, 1, 128, LG_FP16, 0},
    {"len129", 1, {129}, 8, 8, 64, LG_BF16, 1},
    {"len1000", 1, {1000}, 8, 2, 128, LG_BF16, 0},
    {"len4096", 1, {4096}, 8, 2, 128, LG_BF16, 0},
    {"mix-llama8b", 7, {1, 2, 17, 127, 128, 129, 1000}, 32, 8, 128, LG_BF16, 0},
    {"mix-qwen-gqa5", 6, {4096, 1, 129, 1000, 17, 2}, 10, 2, 128, LG_BF16, 1},
    {"mix-fp16-d64", 5, {1000, 128, 127, 1, 300}, 8, 1, 64, LG_FP16, 0},
    {"mix-d64-gqa4", 8, {33, 64, 65, 1, 2, 200, 129, 17}, 16, 4, 64, LG_BF16, 0},
    {"mix-fp16-d128", 4, {700, 1, 17, 129}, 4, 4, 128, LG_FP16, 1},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

START_TEST(cases_match_reference) { attn_run_case(&cases[_i], NULL, 0); }
END_TEST

/* A few tile sets beside the defaults, on one mixed pack per head dim (the CPU emulator in
 * tests/tools/attn_emu runs many more). */
START_TEST(tile_variants_match_reference)
{
    static const struct lg_attn_tiles t[] = {
        {.fwd_bm = 64, .fwd_bn = 64, .fwd_nw = 4, .fwd_st = 1, .dkv_bm = 64, .dkv_nw = 4, .dkv_st = 1, .dq_bm = 64,
         .dq_bn = 64, .dq_nw = 4, .dq_st = 1},
        {.fwd_bm = 128, .fwd_bn = 128, .fwd_nw = 8, .fwd_st = 2, .dkv_bm = 64, .dkv_nw = 8, .dkv_st = 2,
         .dq_bm = 128, .dq_bn = 64, .dq_nw = 8, .dq_st = 2},
    };
    static const struct acase c128 = {"tiles-d128", 5, {1, 129, 300, 17, 64}, 8, 2, 128, LG_BF16, 0};
    static const struct acase c64 = {"tiles-d64", 5, {1, 129, 300, 17, 64}, 8, 2, 64, LG_FP16, 0};
    attn_run_case(_i ? &c64 : &c128, t, 2);
}
END_TEST

static void add_tests(TCase *tc)
{
    tcase_add_loop_test(tc, cases_match_reference, 0, NCASES);
    tcase_add_loop_test(tc, tile_variants_match_reference, 0, 2);
}

int main(void) { return attn_gpu_main("attention_gpu", add_tests); }
