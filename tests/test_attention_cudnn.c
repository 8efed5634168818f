/* test_attention_cudnn.c: the cuDNN attention backend's host side, on any machine (no GPU needed): the
 * run-time loading (lg_attn_cudnn_version), the call shapes (b and s rounded up for the plan cache, the
 * distinct offset multipliers), the per-call lengths and ragged offsets, and every tensor and operation
 * descriptor of the forward and backward SDPA graphs, which cuDNN itself validates and finalizes here for
 * GQA 1/4/8, head dims 64 and 128, bf16 and fp16, packed and strided rows; the build then stops where an
 * operation graph needs a handle, with a message saying so. A deliberately broken shape checks that a refused
 * descriptor names the graph, the tensor, the attribute or call and cuDNN's status. Without libcudnn.so.9
 * the descriptor cases are skipped and the backend must report LG_ERR_UNSUPPORTED naming the library.
 * tests/test_attention_cudnn_gpu.c runs the backend on a GPU. */
#include "attention_cudnn_graph.h"
#include "attention_internal.h"
#include "lg_test.h"

#include <check.h>
#include <string.h>

static const struct lg_attn_params base = {.hq = 32, .hkv = 8, .head_dim = 128, .dtype = LG_BF16};

static struct lg_attn_seqs seqs(int n, const int32_t *cu)
{
    int longest = 0;
    for (int i = 0; i < n; i++)
        longest = cu[i + 1] - cu[i] > longest ? cu[i + 1] - cu[i] : longest;
    return (struct lg_attn_seqs){.nseq = n, .cu_host = cu, .cu = 256, .tokens = cu[n], .max_len = longest};
}

START_TEST(version_and_init)
{
    const int v = lg_attn_cudnn_version();
    printf("  cuDNN version %d\n", v);
    struct lg_ops_attn_cudnn *d = NULL;
    enum lg_status st = lg_ops_attn_cudnn_init(&base, 0.088f, &d);
    printf("  lg_ops_attn_cudnn_init: %s: %s\n", lg_status_str(st), st == LG_OK ? "ok" : lg_last_error());
    if (v == 0) {
        ck_assert_int_eq(st, LG_ERR_UNSUPPORTED);
        ck_assert_ptr_nonnull(strstr(lg_last_error(), "libcudnn"));
        return;
    }
    ck_assert_int_ge(v, 90000);
    ck_assert_int_lt(v, 100000);
    if (st == LG_OK) /* a machine with a GPU */
        lg_ops_attn_cudnn_free(d);
    else
        ck_assert_int_eq(st, LG_ERR_UNSUPPORTED);
    struct lg_attn_params det = base;
    det.flags = LG_ATTN_DETERMINISTIC;
    ck_assert_int_eq(lg_ops_attn_cudnn_init(&det, 0.088f, &d), LG_ERR_UNSUPPORTED);
    ck_assert_ptr_null(d);
}
END_TEST

START_TEST(shapes_round_up_and_share_offsets)
{
    const int32_t cu[4] = {0, 100, 1100, 1117};
    const struct lg_attn_seqs sq = seqs(3, cu);
    const int64_t ld[LG_DNN_NLD] = {4096, 1024, 1024, 4096, 4096, 4096, 1024, 1024};
    struct lg_ops_dnn_shape s;
    CHECK(lg_ops_attn_cudnn_shape(&base, 91400, 90, 0, 1, &sq, ld, &s));
    ck_assert_int_eq(s.b, 4);
    ck_assert_int_eq(s.s, 1024);
    ck_assert_int_eq(s.nmult, 3); /* 4096 (q, o, dO, dQ), 1024 (k, v, dK, dV), 32 (the LSE) */
    ck_assert_int_eq(s.slot[LG_DNN_LD_Q], s.slot[LG_DNN_LD_DQ]);
    ck_assert_int_eq(s.slot[LG_DNN_LD_K], s.slot[LG_DNN_LD_DV]);
    ck_assert_int_ne(s.slot[LG_DNN_LD_Q], s.slot[LG_DNN_LD_K]);
    ck_assert_int_eq(s.mult[s.slot_stats], 32);
    ck_assert(s.thd_workspace && !s.second_padding);
    CHECK(lg_ops_attn_cudnn_shape(&base, 90800, 80, 1, 1, &sq, ld, &s));
    ck_assert_int_eq(s.b, 3);
    ck_assert_int_eq(s.s, 1000);
    ck_assert(!s.thd_workspace && s.second_padding);
    /* the same call twice is the same key; another stride is another */
    struct lg_ops_dnn_shape a, b;
    CHECK(lg_ops_attn_cudnn_shape(&base, 91400, 90, 0, 0, &sq, ld, &a));
    CHECK(lg_ops_attn_cudnn_shape(&base, 91400, 90, 0, 0, &sq, ld, &b));
    ck_assert(!memcmp(&a, &b, sizeof a));
    int64_t ld2[LG_DNN_NLD];
    memcpy(ld2, ld, sizeof ld2), ld2[LG_DNN_LD_K] = 6144;
    CHECK(lg_ops_attn_cudnn_shape(&base, 91400, 90, 0, 0, &sq, ld2, &b));
    ck_assert(memcmp(&a, &b, sizeof a));
    /* offsets past int32 */
    const int32_t big[2] = {0, 1 << 20};
    const struct lg_attn_seqs bs = seqs(1, big);
    ck_assert_int_eq(lg_ops_attn_cudnn_shape(&base, 91400, 90, 0, 0, &bs, ld, &s), LG_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "int32"));
}
END_TEST

START_TEST(meta_holds_lengths_and_offsets)
{
    const int32_t cu[4] = {0, 5, 6, 20};
    const struct lg_attn_seqs sq = seqs(3, cu);
    const int64_t ld[LG_DNN_NLD] = {[LG_DNN_LD_Q] = 48, [LG_DNN_LD_K] = 16, [LG_DNN_LD_V] = 16, [LG_DNN_LD_O] = 56};
    const struct lg_attn_params p = {.hq = 4, .hkv = 1, .head_dim = 64, .dtype = LG_FP16};
    struct lg_ops_dnn_shape s;
    CHECK(lg_ops_attn_cudnn_shape(&p, 91400, 90, 0, 0, &sq, ld, &s));
    ck_assert_int_eq(s.b, 4);
    ck_assert_int_eq(s.nmult, 4); /* 48, 16, 56, and the LSE's 4 */
    int32_t m[4 + 4 * 5];
    lg_ops_attn_cudnn_meta(&s, &sq, m);
    const int32_t lens[4] = {5, 1, 14, 0};
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(m[i], lens[i]);
    for (int k = 0; k < s.nmult; k++)
        for (int i = 0; i <= 4; i++)
            ck_assert_int_eq(m[4 + k * 5 + i], cu[i < 3 ? i : 3] * (int32_t)s.mult[k]);
}
END_TEST

/* Every descriptor of both graphs for one parameter set; stops at the handle (none here, or even with a
 * GPU: this passes NULL on purpose). */
static void build_both(const struct lg_attn_params *p, int fused)
{
    const int32_t cu[5] = {0, 1, 18, 146, 1146};
    const struct lg_attn_seqs sq = seqs(4, cu);
    const int64_t qr = (int64_t)p->hq * p->head_dim, kr = (int64_t)p->hkv * p->head_dim;
    const int64_t f = fused ? qr + 2 * kr : 0;
    const int64_t ld[LG_DNN_NLD] = {fused ? f : qr, fused ? f : kr, fused ? f : kr, qr + 8 * fused,
                                 qr + 8 * fused, qr + 8 * fused, kr + 8 * fused, kr + 8 * fused};
    for (int bwd = 0; bwd < 2; bwd++) {
        int64_t use[LG_DNN_NLD];
        memcpy(use, ld, sizeof use);
        if (!bwd)
            use[LG_DNN_LD_DO] = use[LG_DNN_LD_DQ] = use[LG_DNN_LD_DK] = use[LG_DNN_LD_DV] = 0;
        for (int k = 0; k < 3; k++) { /* cuDNN 9.8 (mask twice), 9.14, 9.14 with the padded-Stats fallback */
            const int version = k ? 91400 : 90800;
            struct lg_ops_dnn_shape s;
            CHECK(lg_ops_attn_cudnn_shape(p, version, 90, 0, bwd, &sq, use, &s));
            if (k == 2) {
                s.padded_stats = 1, s.thd_workspace = 0;
                lg_ops_dnn_shape_slots(&s);
                ck_assert_int_eq(s.slot_stats, -1);
            }
            struct lg_ops_dnn b;
            lg_dnn_t exec = NULL;
            int64_t ws = -1;
            char note[64];
            enum lg_status st = lg_ops_attn_cudnn_build(&s, NULL, &b, &exec, &ws, note, sizeof note);
            printf("  %s hq %d/%d d %d %s %s (as cuDNN %d%s): %d descriptors, %d operations: %s\n",
                   bwd ? "backward" : "forward ", p->hq, p->hkv, p->head_dim, lg_dtype_name(p->dtype),
                   fused ? "strided" : "packed", version, k == 2 ? ", padded Stats" : "", b.nall, b.nops,
                   lg_last_error());
            ck_assert_int_eq(st, LG_ERR_UNSUPPORTED);
            ck_assert_msg(strstr(lg_last_error(), "needs a cuDNN handle"), "%s", lg_last_error());
            ck_assert_ptr_null(exec);
            /* forward 20; backward 28, 2 more to reduce GQA's dK and dV, 6 for the mask after the stats */
            const int want = !bwd ? 20 : 28 + (p->hq != p->hkv ? 2 : 0) + (s.second_padding ? 6 : 0);
            ck_assert_int_eq(b.nops, want);
            lg_ops_dnn_free(&b);
        }
    }
}

START_TEST(graphs_build_every_descriptor)
{
    if (!lg_attn_cudnn_version()) {
        printf("  skipped: %s\n", lg_cudnn_error());
        return;
    }
    static const struct {
        int hq, hkv, d;
        enum lg_dtype t;
        int fused;
    } c[] = {{8, 8, 128, LG_BF16, 0}, {32, 8, 128, LG_BF16, 0}, {16, 4, 64, LG_FP16, 0},
             {8, 1, 64, LG_BF16, 1},  {10, 2, 128, LG_FP16, 1}};
    const struct lg_attn_params p = {.hq = c[_i].hq, .hkv = c[_i].hkv, .head_dim = c[_i].d, .dtype = c[_i].t};
    build_both(&p, c[_i].fused);
}
END_TEST

/* The packed copies: none for packed rows; for the trainer's layout (each gradient strided like its input)
 * none with MISMATCH, k/v/dk/dv with AUTO under GQA; the mismatched pairs' strided members for fused q/k/v
 * with padded gradients; none in the forward by default; every strided tensor with ALWAYS, none with NEVER. */
START_TEST(packed_copies_only_for_mismatched_pairs)
{
    const struct lg_attn_params p = {.hq = 10, .hkv = 2, .head_dim = 128, .dtype = LG_FP16};
    const int64_t qr = 1280, kr = 256, F = qr + 2 * kr;
    const int64_t packed[LG_DNN_NLD] = {qr, kr, kr, qr, qr, qr, kr, kr};
    const int64_t train[LG_DNN_NLD] = {F, F, F, qr, qr, F, F, F};
    const int64_t fused[LG_DNN_NLD] = {F, F, F, qr + 8, qr + 8, qr + 8, kr + 8, kr + 8};
    const int64_t fwd[LG_DNN_NLD] = {F, F, F, qr + 8, 0, 0, 0, 0};
    const unsigned qkv = 1u << LG_DNN_LD_Q | 1u << LG_DNN_LD_K | 1u << LG_DNN_LD_V;
    const unsigned grads = 1u << LG_DNN_LD_DQ | 1u << LG_DNN_LD_DK | 1u << LG_DNN_LD_DV;
    const unsigned od = 1u << LG_DNN_LD_O | 1u << LG_DNN_LD_DO;
    ck_assert_uint_eq(lg_ops_attn_cudnn_stage_mask(&p, LG_DNN_STAGE_MISMATCH, 1, packed), 0);
    ck_assert_uint_eq(lg_ops_attn_cudnn_stage_mask(&p, LG_DNN_STAGE_MISMATCH, 1, train), 0);
    ck_assert_uint_eq(lg_ops_attn_cudnn_stage_mask(&p, LG_DNN_STAGE_MISMATCH, 1, fused), qkv | grads);
    ck_assert_uint_eq(lg_ops_attn_cudnn_stage_mask(&p, LG_DNN_STAGE_MISMATCH, 0, fwd), 0);
    ck_assert_uint_eq(lg_ops_attn_cudnn_stage_mask(&p, LG_DNN_STAGE_ALWAYS, 1, fused), qkv | grads | od);
    ck_assert_uint_eq(lg_ops_attn_cudnn_stage_mask(&p, LG_DNN_STAGE_ALWAYS, 1, train), qkv | grads);
    ck_assert_uint_eq(lg_ops_attn_cudnn_stage_mask(&p, LG_DNN_STAGE_ALWAYS, 0, fwd), qkv | 1u << LG_DNN_LD_O);
    ck_assert_uint_eq(lg_ops_attn_cudnn_stage_mask(&p, LG_DNN_STAGE_NEVER, 1, fused), 0);
    /* AUTO: the mismatched pairs, and with GQA k, v, dk, dv when one is strided; MHA as MISMATCH */
    const unsigned kvg = 1u << LG_DNN_LD_K | 1u << LG_DNN_LD_V | 1u << LG_DNN_LD_DK | 1u << LG_DNN_LD_DV;
    ck_assert_uint_eq(lg_ops_attn_cudnn_stage_mask(&p, LG_DNN_STAGE_AUTO, 1, packed), 0);
    ck_assert_uint_eq(lg_ops_attn_cudnn_stage_mask(&p, LG_DNN_STAGE_AUTO, 1, train), kvg);
    ck_assert_uint_eq(lg_ops_attn_cudnn_stage_mask(&p, LG_DNN_STAGE_AUTO, 1, fused), qkv | grads);
    ck_assert_uint_eq(lg_ops_attn_cudnn_stage_mask(&p, LG_DNN_STAGE_AUTO, 0, fwd), 0);
    const struct lg_attn_params mha = {.hq = 8, .hkv = 8, .head_dim = 64, .dtype = LG_BF16};
    const int64_t mtrain[LG_DNN_NLD] = {1536, 1536, 1536, 512, 512, 1536, 1536, 1536};
    ck_assert_uint_eq(lg_ops_attn_cudnn_stage_mask(&mha, LG_DNN_STAGE_AUTO, 1, mtrain), 0);
    /* dq padded but q packed: only dq is copied */
    int64_t one[LG_DNN_NLD];
    memcpy(one, packed, sizeof one);
    one[LG_DNN_LD_DQ] = qr + 8;
    ck_assert_uint_eq(lg_ops_attn_cudnn_stage_mask(&p, LG_DNN_STAGE_MISMATCH, 1, one), 1u << LG_DNN_LD_DQ);
}
END_TEST

START_TEST(refused_descriptor_is_named)
{
    if (!lg_attn_cudnn_version()) {
        printf("  skipped: %s\n", lg_cudnn_error());
        return;
    }
    const int32_t cu[2] = {0, 64};
    const struct lg_attn_seqs sq = seqs(1, cu);
    const int64_t ld[LG_DNN_NLD] = {4096, 1024, 1024, 4096};
    struct lg_ops_dnn_shape s;
    CHECK(lg_ops_attn_cudnn_shape(&base, 91400, 90, 1, 0, &sq, ld, &s));
    s.d = -8; /* no tensor can have a negative dimension */
    struct lg_ops_dnn b;
    lg_dnn_t exec;
    int64_t ws;
    char note[64];
    enum lg_status st = lg_ops_attn_cudnn_build(&s, NULL, &b, &exec, &ws, note, sizeof note);
    printf("  %s\n", lg_last_error());
    ck_assert_int_ne(st, LG_OK);
    const char *e = lg_last_error();
    ck_assert_ptr_nonnull(strstr(e, "cuDNN forward graph: tensor 'Q' (uid 1)"));
    ck_assert_ptr_nonnull(strstr(e, "cuDNN status"));
    ck_assert(strstr(e, "cudnnBackendFinalize") || strstr(e, "CUDNN_ATTR_TENSOR_"));
    lg_ops_dnn_free(&b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("attention_cudnn");
    TCase *tc = tcase_create("host");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, version_and_init);
    tcase_add_test(tc, shapes_round_up_and_share_offsets);
    tcase_add_test(tc, meta_holds_lengths_and_offsets);
    tcase_add_loop_test(tc, graphs_build_every_descriptor, 0, 5);
    tcase_add_test(tc, refused_descriptor_is_named);
    tcase_add_test(tc, packed_copies_only_for_mismatched_pairs);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 1) ? 1 : 0;
}
