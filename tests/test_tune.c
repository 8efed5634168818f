/* test_tune.c: the tuner's search spaces without a GPU: each arch's limits, pruning against them (synthetic
 * resource figures for each rule, and the generator's real configurations: an attention tile that fits sm_90
 * only, one that fits sm_80 and sm_90 but not sm_89), every op's default or a neighbour fitting every arch, the
 * search space's order and filtering, and the tuners' groups as the GPU walks them. The database and the CLI:
 * test_tune_db.c. */
#include "lg_gen.h"
#include "lg_test.h"
#include "lg_tune.h"
#include "lg_tuner.h"

#include <check.h>
#include <stddef.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lg_gen_t *gen;

static void gen_up(void) { CHECK(lg_gen_init(&gen)); }
static void gen_down(void) { lg_gen_free(gen); }

static struct lg_arch_limits limits(int arch)
{
    struct lg_arch_limits a;
    CHECK(lg_arch_limits_get(arch, &a));
    return a;
}

/* ---- arch limits ---- */

START_TEST(arch_tables)
{
    struct lg_arch_limits a80 = limits(80), a89 = limits(89), a90 = limits(90);
    ck_assert_int_eq(a80.smem_block, 166912);
    ck_assert_int_eq(a89.smem_block, 101376);
    ck_assert_int_eq(a90.smem_block, 232448);
    ck_assert_int_eq(a89.threads_sm, 1536);
    ck_assert_int_eq(a80.threads_sm, 2048);
    ck_assert_int_eq(a90.regs_sm, 65536);
    struct lg_arch_limits x;
    ck_assert_int_eq(lg_arch_limits_get(75, &x), LG_ERR_UNSUPPORTED);
    ck_assert_msg(strstr(lg_last_error(), "sm_75") && strstr(lg_last_error(), "sm_90"), "%s", lg_last_error());
}
END_TEST

/* ---- pruning: one synthetic configuration per rule ---- */

static int ok_on(int arch, struct lg_kernel_res r, char *why)
{
    struct lg_kernel_cfg c = {.op = LG_OP_DOWN};
    struct lg_arch_limits a = limits(arch);
    return lg_tune_prune_ok(&c, &r, &a, NULL, why, 160);
}

START_TEST(prune_rules)
{
    char why[160];
    /* shared memory per block: 120 KiB fits sm_80 and sm_90, not sm_89 */
    struct lg_kernel_res r = {.threads = 128, .smem = 120 * 1024, .regs = 64, .minb = 1};
    ck_assert(ok_on(80, r, why) && ok_on(90, r, why));
    ck_assert(!ok_on(89, r, why));
    ck_assert_msg(strstr(why, "shared memory per block") && strstr(why, "sm_89"), "%s", why);
    /* 200 KiB: sm_90 only */
    r.smem = 200 * 1024;
    ck_assert(!ok_on(80, r, why) && !ok_on(89, r, why) && ok_on(90, r, why));
    /* threads per SM: 2 blocks of 1024 fit sm_80 and sm_90 (2048), not sm_89 (1536) */
    r = (struct lg_kernel_res){.threads = 1024, .smem = 0, .regs = 32, .minb = 2};
    ck_assert(ok_on(80, r, why) && ok_on(90, r, why));
    ck_assert(!ok_on(89, r, why));
    ck_assert_msg(strstr(why, "do not fit"), "%s", why);
    /* registers under the minb cap: 3 blocks of 256 threads leave 85 -> 80 registers; 96 needed spills */
    r = (struct lg_kernel_res){.threads = 256, .smem = 0, .regs = 80, .minb = 3};
    ck_assert(ok_on(90, r, why));
    r.regs = 96;
    ck_assert(!ok_on(90, r, why));
    ck_assert_msg(strstr(why, "caps registers at 80"), "%s", why);
    /* minb blocks needing more shared memory than an SM has still run (the cap buys no occupancy): kept */
    r = (struct lg_kernel_res){.threads = 128, .smem = 56 * 1024, .regs = 64, .minb = 4};
    ck_assert(ok_on(90, r, why) && ok_on(80, r, why));
    /* threads per block and registers per thread, everywhere */
    r = (struct lg_kernel_res){.threads = 2048, .smem = 0, .regs = 32, .minb = 1};
    ck_assert(!ok_on(80, r, why) && !ok_on(89, r, why) && !ok_on(90, r, why));
    r = (struct lg_kernel_res){.threads = 128, .smem = 0, .regs = 300, .minb = 1};
    ck_assert(!ok_on(90, r, why));
}
END_TEST

START_TEST(prune_shape_rules)
{
    char why[160];
    struct lg_arch_limits a = limits(90);
    struct lg_kernel_res r = {.threads = 128, .smem = 128, .regs = 64, .minb = 1};
    struct lg_kernel_cfg n = {.op = LG_OP_NORM_FWD, .vpt = 2};
    struct lg_tune_shape s = {.k = 4096};
    ck_assert(!lg_tune_prune_ok(&n, &r, &a, &s, why, sizeof why)); /* 128 x 2 x 8 = 2048 < 4096 */
    n.vpt = 4;
    ck_assert(lg_tune_prune_ok(&n, &r, &a, &s, why, sizeof why));
    n.vpt = 16; /* four times the row */
    ck_assert(!lg_tune_prune_ok(&n, &r, &a, &s, why, sizeof why));
    struct lg_kernel_cfg at = {.op = LG_OP_ATTN_FWD, .hd = 64};
    struct lg_tune_shape sh = {.head_dim = 128};
    ck_assert(!lg_tune_prune_ok(&at, &r, &a, &sh, why, sizeof why));
    ck_assert_msg(strstr(why, "head dim 64"), "%s", why);
}
END_TEST

/* ---- pruning the generator's real configurations ---- */

static struct lg_kernel_res res_of(struct lg_kernel_cfg c)
{
    struct lg_kernel_res r;
    CHECK(lg_gen_resources(gen, &c, &r));
    return r;
}

static int real_ok(int arch, struct lg_kernel_cfg c)
{
    char why[160];
    struct lg_kernel_res r = res_of(c);
    struct lg_arch_limits a = limits(arch);
    return lg_tune_prune_ok(&c, &r, &a, NULL, why, sizeof why);
}

START_TEST(prune_attention_tiles)
{
    /* 128 x 136 x 2 + 2 stages x 2 x 128 x 136 x 2 = 174080 bytes: sm_90 only */
    struct lg_kernel_cfg big = {.op = LG_OP_ATTN_FWD, .dtype = LG_BF16, .hd = 128, .bm = 128, .bn = 128, .nw = 8, .st = 2};
    ck_assert_int_eq(res_of(big).smem, 174080);
    ck_assert(!real_ok(80, big) && !real_ok(89, big) && real_ok(90, big));
    /* bn = 64: 104448 bytes: sm_80 and sm_90, not sm_89's 99 KiB */
    struct lg_kernel_cfg mid = big;
    mid.bn = 64;
    ck_assert_int_eq(res_of(mid).smem, 104448);
    ck_assert(real_ok(80, mid) && !real_ok(89, mid) && real_ok(90, mid));
    /* the default fits every target */
    struct lg_kernel_cfg def = {.op = LG_OP_ATTN_FWD, .dtype = LG_BF16};
    ck_assert(real_ok(80, def) && real_ok(89, def) && real_ok(90, def));
}
END_TEST

START_TEST(prune_lora_tiles)
{
    /* the dY kernel's stages: st x (64 x 72 + 2 x 64 x (r + 8)) x 2 bytes */
    struct lg_kernel_cfg dy = {.op = LG_OP_DY, .dtype = LG_BF16, .rank = 64, .nct = 2, .st = 4};
    ck_assert_int_eq(res_of(dy).smem, 4 * (64 * 72 + 2 * 64 * 72) * 2);
    /* 110592 bytes: sm_89 cannot hold it */
    ck_assert(real_ok(80, dy) && !real_ok(89, dy) && real_ok(90, dy));
    /* 512 threads x minb 3 leave 40 registers: the down-projection's accumulators do not fit */
    struct lg_kernel_cfg down = {.op = LG_OP_DOWN, .dtype = LG_BF16, .rank = 16, .wm = 2, .wk = 8, .mt = 1, .u = 2, .minb = 3};
    ck_assert(!real_ok(90, down));
    down.wm = 1; /* 256 threads: 80 registers */
    ck_assert(real_ok(90, down));
}
END_TEST

/* The generator's defaults are what runs on a GPU without a tuned entry. Where one breaks an arch's rules, the
 * arch heuristic (lora_tune.c) takes the nearest variant that passes: there must be one, differing only in
 * tile fields. Today that is the dY kernels' three stages at rank >= 96 on sm_86/sm_89 (> 99 KiB). */
static unsigned tile_fields(void)
{
    static const char *t[] = {"wm", "wk", "mt", "u", "nct", "st", "minb", "bm", "bn", "nw", "vpt"};
    unsigned m = 0;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        m |= lg_tune_field_bit(t[i]);
    return m;
}

START_TEST(defaults_or_a_neighbour_fit_every_arch)
{
    static const int ranks[] = {8, 16, 24, 32, 64, 96, 128};
    static const int archs[] = {80, 86, 89, 90};
    int checked = 0, broken = 0, dy89 = 0;
    for (int op = 0; op < LG_OP_COUNT; op++)
        for (size_t ri = 0; ri < sizeof ranks / sizeof ranks[0]; ri++) {
            struct lg_kernel_cfg c = {.op = (enum lg_kernel_op)op, .dtype = LG_BF16, .rank = ranks[ri]};
            struct lg_kernel_src src;
            if (lg_gen_kernel(gen, &c, "test", &src) != LG_OK) {
                lg_clear_error(); /* a rankless op given a rank */
                c.rank = 0;
                if (ri || lg_gen_kernel(gen, &c, "test", &src) != LG_OK) {
                    lg_clear_error();
                    continue;
                }
            }
            struct lg_kernel_cfg n = src.cfg;
            lg_kernel_src_free(&src);
            struct lg_kernel_res r = res_of(n);
            ck_assert_int_gt(r.threads, 0);
            for (size_t ai = 0; ai < sizeof archs / sizeof archs[0]; ai++) {
                char why[160];
                struct lg_arch_limits a = limits(archs[ai]);
                checked++;
                if (lg_tune_prune_ok(&n, &r, &a, NULL, why, sizeof why))
                    continue;
                broken++;
                dy89 += n.op == LG_OP_DY && archs[ai] == 89;
                struct lg_tune_cand *cs;
                int nc, ok = 0;
                CHECK(lg_tune_space(gen, &n, tile_fields(), archs[ai], NULL, &cs, &nc));
                ck_assert_msg(cs[0].why[0], "the space's base does not say why it breaks the rules");
                for (int i = 1; i < nc && !ok; i++)
                    ok = !cs[i].pruned;
                ck_assert_msg(ok, "%s r%d on sm_%d: the default breaks a rule (%s) and no tile variant passes",
                              lg_kernel_op_name(n.op), n.rank, archs[ai], why);
                free(cs);
            }
        }
    ck_assert_int_gt(checked, 100);
    ck_assert_int_eq(dy89, 2); /* r96, r128 */
    ck_assert_int_ge(broken, dy89);
}
END_TEST

/* ---- the search space ---- */

START_TEST(space_order_and_filter)
{
    struct lg_kernel_cfg base = {.op = LG_OP_DOWN, .dtype = LG_BF16, .rank = 16, .drop = 1};
    unsigned vary = lg_tune_field_bit("wm") | lg_tune_field_bit("wk") | lg_tune_field_bit("mt") |
                    lg_tune_field_bit("u") | lg_tune_field_bit("minb");
    ck_assert(vary && lg_tune_field_bit("no_such_field") == 0);
    struct lg_tune_cand *c;
    int n;
    CHECK(lg_tune_space(gen, &base, vary, 90, NULL, &c, &n));
    ck_assert_int_gt(n, 20);
    ck_assert_int_eq(c[0].differs, 0);
    ck_assert_int_eq(c[0].pruned, 0);
    ck_assert_int_eq(c[0].cfg.wk, 8); /* the generator's default for r = 16 */
    int pruned = 0;
    struct lg_arch_limits a = limits(90);
    for (int i = 1; i < n; i++) {
        ck_assert_int_eq(c[i].cfg.drop, 1);
        ck_assert_int_eq(c[i].cfg.rank, 16);
        ck_assert_int_ge(c[i].differs, c[i - 1].differs);
        ck_assert_int_gt(c[i].differs, 0);
        char why[160];
        ck_assert_int_eq(!c[i].pruned, lg_tune_prune_ok(&c[i].cfg, &c[i].res, &a, NULL, why, sizeof why));
        if (c[i].pruned) {
            pruned++;
            ck_assert_msg(c[i].why[0], "pruned without a reason");
        }
    }
    ck_assert_int_gt(pruned, 0);
    free(c);
    /* vary nothing: only the base */
    CHECK(lg_tune_space(gen, &base, 0, 90, NULL, &c, &n));
    ck_assert_int_eq(n, 1);
    free(c);
}
END_TEST

START_TEST(space_per_arch)
{
    struct lg_kernel_cfg base = {.op = LG_OP_ATTN_FWD, .dtype = LG_BF16};
    unsigned vary = lg_tune_field_bit("bm") | lg_tune_field_bit("bn") | lg_tune_field_bit("nw") |
                    lg_tune_field_bit("st");
    struct lg_tune_shape sh = {.head_dim = 128};
    int kept[3] = {0}, archs[3] = {80, 89, 90}, total = 0;
    for (int k = 0; k < 3; k++) {
        struct lg_tune_cand *c;
        int n;
        CHECK(lg_tune_space(gen, &base, vary, archs[k], &sh, &c, &n));
        total = n;
        for (int i = 0; i < n; i++) {
            ck_assert_int_eq(c[i].cfg.hd, 128);
            kept[k] += !c[i].pruned;
        }
        free(c);
    }
    ck_assert_int_lt(kept[1], kept[0]); /* sm_89 < sm_80 < sm_90 */
    ck_assert_int_lt(kept[0], kept[2]);
    ck_assert_int_le(kept[2], total);
    struct lg_tune_cand *c;
    int n;
    ck_assert_int_eq(lg_tune_space(gen, &base, vary, 70, &sh, &c, &n), LG_ERR_UNSUPPORTED);
}
END_TEST

/* ---- the tuners' groups, as the GPU walks them ---- */

/* Every FusedLoRA group's candidates differ from the current tiles only in the group's own fields, and the
 * kernel each asks for passes the arch's rules. */
START_TEST(lora_groups)
{
    struct lg_lora_params p = {.in_features = 4096, .out_features = 1024, .rank = 16, .alpha = 32, .dropout = 0.1f,
                               .dtype = LG_BF16};
    const int max = 6;
    struct lg_lora_tiles cand[7], cur = {0};
    cur.fwd_algo = 2, cur.dx_algo = 1; /* carried through every group untouched */
    static const size_t own[3][5] = {
        {offsetof(struct lg_lora_tiles, down_wm), offsetof(struct lg_lora_tiles, down_wk),
         offsetof(struct lg_lora_tiles, down_mt), offsetof(struct lg_lora_tiles, down_u),
         offsetof(struct lg_lora_tiles, down_minb)},
        {offsetof(struct lg_lora_tiles, dy_nct), offsetof(struct lg_lora_tiles, dy_st),
         offsetof(struct lg_lora_tiles, dy_minb), (size_t)-1, (size_t)-1},
        {offsetof(struct lg_lora_tiles, da_minb), (size_t)-1, (size_t)-1, (size_t)-1, (size_t)-1},
    };
    for (int g = 0; g < LG_TUNER_LORA_GROUPS; g++) {
        int n;
        struct lg_tuner_space_info in;
        CHECK(lg_tuner_lora_group(gen, 90, &p, g, &cur, max, cand, &n, &in));
        ck_assert_int_eq(n, in.timed + 1);
        ck_assert_int_le(in.timed, max);
        ck_assert_int_le(in.timed + in.pruned, in.variants);
        ck_assert_int_gt(in.timed, 0);
        ck_assert(!memcmp(&cand[0], &cur, sizeof cur));
        for (int i = 1; i < n; i++) {
            ck_assert_msg(memcmp(&cand[i], &cur, sizeof cur), "group %d candidate %d is the reference", g, i);
            for (size_t b = 0; b < sizeof cur; b += sizeof(int)) {
                int mine = 0;
                for (int f = 0; f < 5; f++)
                    mine |= own[g][f] == b;
                if (!mine)
                    ck_assert_int_eq(*(int *)((char *)&cand[i] + b), *(int *)((char *)&cur + b));
                else
                    ck_assert_int_gt(*(int *)((char *)&cand[i] + b), 0); /* set explicitly */
            }
        }
    }
    ck_assert_int_ne(lg_tuner_lora_group(gen, 90, &p, 3, &cur, max, cand, &(int){0}, NULL), LG_OK);
}
END_TEST

/* Attention's groups: the deterministic backward has a dQ group, the atomic one does not; on sm_89 the
 * 99 KiB limit prunes what sm_90 keeps. */
START_TEST(attn_groups)
{
    struct lg_attn_params det = {.hq = 32, .hkv = 8, .head_dim = 128, .dtype = LG_BF16, .flags = LG_ATTN_DETERMINISTIC};
    struct lg_attn_params at = det;
    at.flags = 0;
    ck_assert_int_eq(lg_tuner_attn_groups(&det), 3);
    ck_assert_int_eq(lg_tuner_attn_groups(&at), 2);
    struct lg_attn_tiles cand[17], cur = {0};
    int n90, n89;
    struct lg_tuner_space_info i90, i89;
    CHECK(lg_tuner_attn_group(gen, 90, &det, 0, &cur, 16, cand, &n90, &i90));
    CHECK(lg_tuner_attn_group(gen, 89, &det, 0, &cur, 16, cand, &n89, &i89));
    ck_assert_int_gt(i89.pruned, i90.pruned);
    ck_assert_int_lt(n89, n90);
    for (int i = 1; i < n90; i++)
        ck_assert(cand[i].fwd_bm > 0 && cand[i].dkv_bm == 0 && cand[i].dq_bm == 0);
    ck_assert_int_ne(lg_tuner_attn_group(gen, 90, &at, 2, &cur, 16, cand, &n90, NULL), LG_OK);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tune");
    TCase *t = tcase_create("prune");
    tcase_add_checked_fixture(t, gen_up, gen_down);
    tcase_add_test(t, arch_tables);
    tcase_add_test(t, prune_rules);
    tcase_add_test(t, prune_shape_rules);
    tcase_add_test(t, prune_attention_tiles);
    tcase_add_test(t, prune_lora_tiles);
    tcase_add_test(t, defaults_or_a_neighbour_fit_every_arch);
    tcase_add_test(t, space_order_and_filter);
    tcase_add_test(t, space_per_arch);
    tcase_add_test(t, lora_groups);
    tcase_add_test(t, attn_groups);
    suite_add_tcase(s, t);
    return lg_test_run(s, 0);
}
