/* test_tune_gpu.c: the tuner on a GPU (exits 77 without one).
 * - The harness: a candidate that fails to build scores +inf with its reason, one whose output differs
 *   scores +inf as a mismatch, the kept ones get finite medians, and the fastest is chosen.
 * - A short tune of a small FusedLoRA shape (p = 0.1 and p = 0): every kept candidate matches the default
 *   configuration within bf16's tolerance, none mismatches, the winner is never slower than the default in the
 *   side-by-side round, and its entry keys this GPU.
 * - The database in use: a layer that sets no tiles picks the winner up from $LORAGEN_TUNE_DB and computes
 *   what the explicitly tuned layer computes, bit for bit.
 * - A short tune of small attention shapes (head dim 64 with the atomic backward, 128 deterministic): no
 *   candidate mismatches the per-arch defaults, the winner is never slower.
 * - A short tune of a small FusedMultiLoRA layer (3 modules, 3 adapters, uneven segments): same checks, and a
 *   layer without tiles takes the database's winner.
 * - A spec's sweep (specs/tiny.lua at two token counts, FusedLoRA and FusedMultiLoRA): one entry per job.
 * - Online tuning: a layer of a new key is tuned on first use, takes the winner, and the file holds it.
 * LORAGEN_TUNE_TEST_CANDS (default 6) bounds the candidates per group. */
#include "lg_ctx.h"
#include "lg_gpu_util.h"
#include "lg_half.h"
#include "lg_lora.h"
#include "lg_mlora.h"
#include "lg_test.h"
#include "lg_tune.h"
#include "lg_tuner.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lg_ctx_t *ctx;
static int cands = 6;
static char *db_dir, *db_path; /* the process database: set before anything can read it */

static void print_line(void *u, const char *line) { printf("%s\n", line); }

/* ---- the harness, on a trivial kernel-free workload ---- */

struct fake {
    CUdeviceptr buf;
    size_t bytes[3];
    int cur;
};

static enum lg_status f_select(void *u, int i)
{
    struct fake *f = u;
    if (i == 2)
        return lg_fail(LG_ERR_NVRTC, "candidate 2 does not compile (on purpose)");
    f->cur = i;
    return LG_OK;
}

static enum lg_status f_run(void *u, CUstream s)
{
    struct fake *f = u;
    return cuMemsetD8Async(f->buf, 1, f->bytes[f->cur == 3 ? 0 : f->cur], s) == CUDA_SUCCESS ? LG_OK : LG_ERR_CUDA;
}

static enum lg_status f_check(void *u, int i, double *err, int *ok)
{
    *err = i == 1 ? 0.5 : 0.0;
    *ok = i != 1;
    return LG_OK;
}

START_TEST(harness_outcomes)
{
    struct fake f = {.bytes = {64u << 20, 64u << 20, 1}};
    CU_CHECK(cuMemAlloc(&f.buf, 64u << 20));
    /* 0: reference; 1: mismatch; 2: fails to build; 3: same work as 0 */
    struct lg_tune_bench b = {.ncand = 4, .u = &f, .select = f_select, .run = f_run, .check = f_check, .rounds = 5};
    struct lg_tune_result r[4];
    int best = -1;
    CHECK(lg_tune_measure(&b, r, &best));
    ck_assert_int_eq(r[0].outcome, LG_TUNE_KEPT);
    ck_assert_int_eq(r[1].outcome, LG_TUNE_MISMATCH);
    ck_assert_int_eq(r[2].outcome, LG_TUNE_FAILED);
    ck_assert_int_eq(r[3].outcome, LG_TUNE_KEPT);
    ck_assert(isinf(r[1].ms) && isinf(r[2].ms));
    ck_assert(r[0].ms > 0 && isfinite(r[0].ms) && r[3].ms > 0 && isfinite(r[3].ms));
    ck_assert_msg(strstr(r[2].why, "does not compile"), "%s", r[2].why);
    ck_assert_msg(strstr(r[1].why, "differs"), "%s", r[1].why);
    ck_assert(best == 0 || best == 3);
    cuMemFree(f.buf);
}
END_TEST

/* ---- FusedLoRA ---- */

static struct lg_lora_params small(float p)
{
    return (struct lg_lora_params){.in_features = 512, .out_features = 768, .rank = 16, .alpha = 32,
                                   .dropout = p, .dtype = LG_BF16, .layer_id = 3};
}

START_TEST(short_tune_matches_default)
{
    const float ps[2] = {0.1f, 0.0f};
    for (int k = 0; k < 2; k++) {
        struct lg_lora_params lp = small(ps[k]);
        struct lg_tuner_opts o = {.max_cands = cands, .rounds = 3, .log = print_line, .verbose = 1};
        struct lg_tuner_outcome r;
        CHECK(lg_tuner_lora(ctx, &lp, 1000, &o, &r));
        const struct lg_tune_entry *e = &r.entry;
        printf("p=%.1f: %d candidates timed, %d pruned, %d failed, %d mismatched, max err %.2e; default %.4f ms, "
               "winner %.4f ms\n", ps[k], e->candidates, r.pruned, r.failed, r.mismatched, r.max_err, e->default_ms,
               e->time_ms);
        ck_assert_int_eq(r.mismatched, 0);
        ck_assert(r.max_err <= 1e-2);
        ck_assert_int_gt(e->candidates, 3);
        ck_assert(e->time_ms > 0 && e->time_ms <= e->default_ms);
        ck_assert_str_eq(e->key.op, "lora");
        ck_assert_str_eq(e->key.shape, ps[k] > 0 ? "k512_m768_r16_p1" : "k512_m768_r16_p0");
        ck_assert_int_eq(e->key.tokens, 1024);
        ck_assert_str_eq(e->key.gpu, lg_ctx_device_name(ctx));
        ck_assert_int_eq(e->key.sm_count, lg_ctx_sm_count(ctx));
        ck_assert_int_eq(e->key.arch, lg_ctx_arch(ctx));
    }
}
END_TEST

/* Y, dX, dA of one fwd+bwd of a fresh layer at n tokens; tiles NULL: the layer's own choice, which *used gets. */
static void layer_outputs(const struct lg_lora_params *lp, int64_t n, const struct lg_lora_tiles *tiles, uint16_t *y,
                          uint16_t *dx, float *da, struct lg_lora_tiles *used)
{
    lg_lora_t *L;
    CHECK(lg_lora_init(ctx, lp, &L));
    const int64_t K = lp->in_features, M = lp->out_features, r = lp->rank;
    const int64_t ldx = lg_lora_ext_ld(K, (int)r), lddy = lg_lora_ext_ld(M, (int)r);
    float *h = malloc(sizeof(float) * (size_t)((M + r) * K + n * (ldx + lddy)));
    uint16_t *w = malloc(2 * (size_t)(M * K)), *a = malloc(2 * (size_t)(r * K)), *b = malloc(2 * (size_t)(M * r));
    lg_test_fill(h, (size_t)(M * K + r * K + M * r), 5, 0.05f);
    for (int64_t i = 0; i < M * K; i++)
        w[i] = lg_f32_to_half(LG_BF16, h[i]);
    for (int64_t i = 0; i < r * K; i++)
        a[i] = lg_f32_to_half(LG_BF16, h[M * K + i]);
    for (int64_t i = 0; i < M * r; i++)
        b[i] = lg_f32_to_half(LG_BF16, h[M * K + r * K + i]);
    CHECK(lg_lora_set_weights(L, w, a, b, NULL));
    if (tiles)
        CHECK(lg_lora_set_tiles(L, tiles));
    CUdeviceptr x, dy, yd, dxd, dad, dbd;
    CU_CHECK(cuMemAlloc(&x, (size_t)(n * ldx) * 2));
    CU_CHECK(cuMemAlloc(&dy, (size_t)(n * lddy) * 2));
    CU_CHECK(cuMemAlloc(&yd, (size_t)(n * M) * 2));
    CU_CHECK(cuMemAlloc(&dxd, (size_t)(n * K) * 2));
    CU_CHECK(cuMemAlloc(&dad, (size_t)(r * K) * 4));
    CU_CHECK(cuMemAlloc(&dbd, (size_t)(M * r) * 4));
    lg_test_fill(h, (size_t)(n * (ldx + lddy)), 6, 1.0f);
    lg_dev_upload(x, ldx, h, n, K, LG_BF16);
    lg_dev_upload(dy, lddy, h + n * ldx, n, M, LG_BF16);
    struct lg_lora_fwd f = {.n = n, .x = x, .ldx = ldx, .y = yd, .ldy = M, .seed = 9};
    CHECK(lg_lora_forward(L, &f, 0));
    struct lg_lora_bwd bw = {.n = n, .x = x, .ldx = ldx, .dy = dy, .lddy = lddy, .dx = dxd, .lddx = K, .da = dad,
                             .db = dbd, .seed = 9};
    CHECK(lg_lora_backward(L, &bw, 0));
    CU_CHECK(cuCtxSynchronize());
    CU_CHECK(cuMemcpyDtoH(y, yd, (size_t)(n * M) * 2));
    CU_CHECK(cuMemcpyDtoH(dx, dxd, (size_t)(n * K) * 2));
    CU_CHECK(cuMemcpyDtoH(da, dad, (size_t)(r * K) * 4));
    lg_lora_get_tiles(L, used);
    cuMemFree(x), cuMemFree(dy), cuMemFree(yd), cuMemFree(dxd), cuMemFree(dad), cuMemFree(dbd);
    free(h), free(w), free(a), free(b);
    lg_lora_free(L);
}

static struct lg_tuner_mlora_shape mlora_small(void)
{
    return (struct lg_tuner_mlora_shape){.in_features = 512, .nmod = 3, .out_features = {512, 256, 256},
                                         .nadapters = 3, .rank = 16, .alpha = 32, .dropout = 0.1f,
                                         .dtype = LG_BF16};
}

/* A short tune of a small merged q/k/v-like FusedMultiLoRA layer with three adapters on uneven segments. */
START_TEST(mlora_short_tune)
{
    struct lg_tuner_mlora_shape sh = mlora_small();
    struct lg_tuner_opts o = {.max_cands = cands, .rounds = 3, .log = print_line, .verbose = 1};
    struct lg_tuner_outcome r;
    CHECK(lg_tuner_mlora(ctx, &sh, 1000, &o, &r));
    const struct lg_tune_entry *e = &r.entry;
    printf("mlora: %d timed, %d pruned, %d failed, %d mismatched, max err %.2e; %.4f -> %.4f ms\n", e->candidates,
           r.pruned, r.failed, r.mismatched, r.max_err, e->default_ms, e->time_ms);
    ck_assert_int_eq(r.mismatched, 0);
    ck_assert(r.max_err <= 1e-2);
    ck_assert_int_gt(e->candidates, 3);
    ck_assert(e->time_ms > 0 && e->time_ms <= e->default_ms);
    ck_assert_str_eq(e->key.op, "mlora");
    ck_assert_str_eq(e->key.shape, "k512_m512x256x256_r16_a3_p1");
    ck_assert_int_eq(e->key.tokens, 1024);
}
END_TEST

/* The tiles a fresh FusedMultiLoRA layer of shape sh uses for one forward at n tokens (no tiles set). */
static struct lg_mlora_tiles mlora_used(const struct lg_tuner_mlora_shape *sh, int64_t n)
{
    struct lg_mlora_slot_params sp[9];
    for (int i = 0; i < sh->nadapters * sh->nmod; i++)
        sp[i] = (struct lg_mlora_slot_params){.rank = sh->rank, .alpha = sh->alpha, .dropout = sh->dropout};
    struct lg_mlora_params mp = {.in_features = sh->in_features, .nmod = sh->nmod, .nadapters = sh->nadapters,
                                 .slots = sp, .dtype = sh->dtype, .layer_id = 1};
    int64_t MT = 0;
    for (int m = 0; m < sh->nmod; m++)
        mp.out_features[m] = sh->out_features[m], MT += sh->out_features[m];
    lg_mlora_t *L;
    CHECK(lg_mlora_init(ctx, &mp, &L));
    lg_mlora_segments_t *sg;
    CHECK(lg_mlora_segments_init(ctx, 4, &sg));
    struct lg_mlora_seg segs[3] = {{0, 0, n / 3}, {1, n / 3, n / 3}, {2, 2 * (n / 3), n - 2 * (n / 3)}};
    CHECK(lg_mlora_segments_set(sg, n, 3, segs, 3, 0));
    const int64_t lds = (lg_mlora_compact_cols(L) + 7) / 8 * 8;
    CUdeviceptr x, s, y;
    CU_CHECK(cuMemAlloc(&x, (size_t)(n * sh->in_features) * 2));
    CU_CHECK(cuMemAlloc(&s, (size_t)(n * lds) * 2));
    CU_CHECK(cuMemAlloc(&y, (size_t)(n * MT) * 2));
    CU_CHECK(cuMemsetD8(x, 0, (size_t)(n * sh->in_features) * 2));
    struct lg_mlora_fwd f = {.n = n, .seg = sg, .x = x, .ldx = sh->in_features, .s = s, .lds = lds, .y = y, .ldy = MT,
                             .seed = 1, .strategy = LG_MLORA_EXPAND};
    CHECK(lg_mlora_forward(L, &f, 0));
    CU_CHECK(cuCtxSynchronize());
    struct lg_mlora_tiles t;
    lg_mlora_get_tiles(L, &t);
    cuMemFree(x), cuMemFree(s), cuMemFree(y);
    lg_mlora_segments_free(sg);
    lg_mlora_free(L);
    return t;
}

START_TEST(layer_uses_database)
{
    struct lg_lora_params lp = small(0.1f);
    const int64_t n = 700; /* bucket 1024, like the tune at 1000 */
    struct lg_tuner_opts o = {.max_cands = cands, .rounds = 3};
    struct lg_tuner_outcome r;
    CHECK(lg_tuner_lora(ctx, &lp, 1000, &o, &r));
    /* force a non-default winner into the database so the test tells the two apart */
    struct lg_lora_tiles win;
    lg_lora_tiles_from_entry(&r.entry, &win);
    if (r.entry.nparams == 0) {
        win.dy_st = 2, win.dy_nct = 2;
        lg_lora_tiles_to_entry(&win, &r.entry);
    }
    const char *path = db_path;
    lg_tune_db_t *db;
    CHECK(lg_tune_db_init(&db));
    struct lg_tune_info info;
    lg_tuner_info(ctx, &info);
    lg_tune_db_set_info(db, &info);
    CHECK(lg_tune_db_put(db, &r.entry));
    /* and a FusedMultiLoRA winner (forced off the defaults too) */
    struct lg_tuner_mlora_shape msh = mlora_small();
    struct lg_tuner_outcome mr;
    CHECK(lg_tuner_mlora(ctx, &msh, 1000, &o, &mr));
    struct lg_mlora_tiles mwin;
    lg_mlora_tiles_from_entry(&mr.entry, &mwin);
    if (mr.entry.nparams == 0) {
        mwin.dy_st = 2, mwin.expand_nct = 1;
        lg_mlora_tiles_to_entry(&mwin, &mr.entry);
    }
    CHECK(lg_tune_db_put(db, &mr.entry));
    CHECK(lg_tune_db_save(db, path));
    /* the process database is read on first use, i.e. now: it holds both entries (none if it was read before
     * the save) */
    ck_assert_msg(lg_tune_db_count(lg_tune_default()) == lg_tune_db_count(db),
                  "the process database holds %d entries, the saved one %d (read too early?) %s",
                  lg_tune_db_count(lg_tune_default()), lg_tune_db_count(db), lg_tune_default_problem());
    const size_t ny = (size_t)(n * lp.out_features), nx = (size_t)(n * lp.in_features), na = (size_t)(16 * 512);
    uint16_t *y1 = malloc(2 * ny), *y2 = malloc(2 * ny), *x1 = malloc(2 * nx), *x2 = malloc(2 * nx);
    float *a1 = malloc(4 * na), *a2 = malloc(4 * na);
    struct lg_lora_tiles used, used2;
    layer_outputs(&lp, n, NULL, y1, x1, a1, &used);  /* from the database */
    layer_outputs(&lp, n, &win, y2, x2, a2, &used2); /* explicitly */
    ck_assert_msg(!memcmp(&used, &win, sizeof used), "the layer did not take the database's tiles");
    /* another bucket has no entry: the arch heuristic */
    struct lg_lora_tiles arch;
    CHECK(lg_lora_arch_tiles(ctx, &lp, &arch));
    uint16_t *y3 = malloc(2 * ny * 4), *x3 = malloc(2 * nx * 4);
    float *a3 = malloc(4 * na);
    layer_outputs(&lp, 4 * n, NULL, y3, x3, a3, &used);
    ck_assert_msg(!memcmp(&used, &arch, sizeof used), "without an entry the layer did not take the arch heuristic");
    free(y3), free(x3), free(a3);
    struct lg_mlora_tiles mu = mlora_used(&msh, n);
    ck_assert_msg(!memcmp(&mu, &mwin, sizeof mu), "the FusedMultiLoRA layer did not take the database's tiles");
    ck_assert_msg(!memcmp(y1, y2, 2 * ny) && !memcmp(x1, x2, 2 * nx) && !memcmp(a1, a2, 4 * na),
                  "a layer without tiles did not compute what the database's winner computes");
    free(y1), free(y2), free(x1), free(x2), free(a1), free(a2);
    lg_tune_db_free(db);
}
END_TEST

/* A short tune of a small attention shape: every kept candidate matches the per-arch defaults' output. */
START_TEST(attention_short_tune)
{
    const int dims[2] = {64, 128};
    for (int k = 0; k < 2; k++) {
        struct lg_attn_params ap = {.hq = 4, .hkv = 2, .head_dim = dims[k], .dtype = LG_BF16,
                                    .backend = LG_ATTN_GENERATED, .flags = k ? LG_ATTN_DETERMINISTIC : 0};
        /* attention kernels are the slowest to compile: at most 3 candidates per group */
        struct lg_tuner_opts o = {.max_cands = cands < 3 ? cands : 3, .rounds = 3, .log = print_line, .verbose = 1};
        struct lg_tuner_outcome r;
        CHECK(lg_tuner_attn(ctx, &ap, 1500, 512, &o, &r));
        const struct lg_tune_entry *e = &r.entry;
        printf("attention d=%d %s: %d timed, %d pruned, %d failed, %d mismatched, max err %.2e; %.4f -> %.4f ms\n",
               dims[k], k ? "det" : "atomic", e->candidates, r.pruned, r.failed, r.mismatched, r.max_err,
               e->default_ms, e->time_ms);
        ck_assert_int_eq(r.mismatched, 0);
        ck_assert(r.max_err <= 1e-2);
        ck_assert(e->time_ms > 0 && e->time_ms <= e->default_ms);
        ck_assert_str_eq(e->key.shape, k ? "hq4_hkv2_d128_det" : "hq4_hkv2_d64_atomic");
        ck_assert_int_eq(e->key.tokens, 0);
    }
}
END_TEST

START_TEST(spec_sweep)
{
    struct lg_spec *spec;
    CHECK(lg_spec_load("specs/tiny.lua", &spec));
    const int tokens[2] = {256, 1024};
    struct lg_tuner_sweep sw = {.spec = spec, .tokens = tokens, .ntokens = 2, .families = LG_TUNER_LORA | LG_TUNER_MLORA,
                               .opts = {.max_cands = 3, .rounds = 3}};
    lg_tune_db_t *db;
    CHECK(lg_tune_db_init(&db));
    struct lg_tuner_result *res;
    int n;
    CHECK(lg_tuner_spec(ctx, &sw, db, &res, &n));
    ck_assert_int_eq(n, lg_tuner_spec_jobs(&sw));
    ck_assert_int_eq(lg_tune_db_count(db), n);
    for (int i = 0; i < n; i++) {
        ck_assert_msg(res[i].status == LG_OK, "%s: %s", res[i].label, res[i].error);
        ck_assert(res[i].outcome.entry.time_ms <= res[i].outcome.entry.default_ms);
        ck_assert_int_eq(res[i].outcome.mismatched, 0);
        printf("%s @ %lld: %.4f -> %.4f ms\n", res[i].label, (long long)res[i].tokens,
               res[i].outcome.entry.default_ms, res[i].outcome.entry.time_ms);
    }
    free(res);
    lg_tune_db_free(db);
    lg_spec_free(spec);
}
END_TEST

/* Online tuning: a FusedMultiLoRA layer whose key the database lacks is tuned on its first forward, takes the
 * winner, and the database file holds it; the next layer of the shape finds it without tuning again. */
START_TEST(online_tunes_on_first_use)
{
    struct lg_tuner_mlora_shape sh = mlora_small();
    sh.dropout = 0; /* p0: a key no earlier test put in the database */
    struct lg_tuner_opts o = {.max_cands = 2, .rounds = 3};
    lg_tuner_online_enable(&o);
    const int before = lg_tune_online_count();
    struct lg_mlora_tiles t1 = mlora_used(&sh, 700);
    ck_assert_int_eq(lg_tune_online_count(), before + 1);
    struct lg_mlora_tiles t2 = mlora_used(&sh, 700);
    ck_assert_int_eq(lg_tune_online_count(), before + 1);
    ck_assert_msg(!memcmp(&t1, &t2, sizeof t1), "the second layer did not take the online winner");
    lg_tune_db_t *disk;
    CHECK(lg_tune_db_load(db_path, &disk));
    int found = 0;
    for (int i = 0; i < lg_tune_db_count(disk); i++) {
        const struct lg_tune_entry *e = lg_tune_db_entry(disk, i);
        if (!strcmp(e->key.op, "mlora") && !strcmp(e->key.shape, "k512_m512x256x256_r16_a3_p0") && e->key.tokens == 1024) {
            struct lg_mlora_tiles w;
            lg_mlora_tiles_from_entry(e, &w);
            ck_assert_msg(!memcmp(&w, &t1, sizeof w), "the layer's tiles are not the saved winner's");
            found = 1;
        }
    }
    ck_assert_msg(found, "the online winner is not in %s", db_path);
    lg_tune_db_free(disk);
    lg_tuner_online_disable();
}
END_TEST

int main(void)
{
    lg_test_require_gpu();
    const char *c = getenv("LORAGEN_TUNE_TEST_CANDS");
    if (c && atoi(c) > 0)
        cands = atoi(c);
    db_dir = lg_test_tmpdir("lg-tune-gpu"), db_path = lg_test_path(db_dir, "db.json");
    /* outside a test case Check cannot report an assertion: failures here print and exit */
    struct lg_ctx_params cp = {.device = 0};
    if (lg_tune_set_path(db_path) != LG_OK || lg_ctx_init(&cp, &ctx) != LG_OK) {
        fprintf(stderr, "test_tune_gpu: setup failed: %s\n", lg_last_error());
        return 1;
    }
    printf("device: %s (sm_%d, %d SMs)\n", lg_ctx_device_name(ctx), lg_ctx_arch(ctx), lg_ctx_sm_count(ctx));
    Suite *s = suite_create("tune_gpu");
    TCase *tc = tcase_create("gpu");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, harness_outcomes);
    tcase_add_test(tc, short_tune_matches_default);
    tcase_add_test(tc, mlora_short_tune);
    tcase_add_test(tc, layer_uses_database);
    tcase_add_test(tc, attention_short_tune); /* after layer_uses_database: it reads the process database */
    tcase_add_test(tc, spec_sweep);
    tcase_add_test(tc, online_tunes_on_first_use); /* last: it adds to the process database */
    suite_add_tcase(s, tc);
    int failed = lg_test_run(s, 1);
    lg_ctx_free(ctx);
    lg_test_rm_rf(db_dir);
    free(db_dir), free(db_path);
    return failed ? 1 : 0;
}
