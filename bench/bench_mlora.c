/* bench_mlora.c: FusedMultiLoRA forward+backward of one layer, side by side in one run (Llama-3.1-8B shapes,
 * 8192 tokens, r = 16, alpha = 32, p = 0.1, bf16):
 *   floor   the frozen GEMMs alone: Y = X·Wᵀ, dX = dY·W (cuBLASLt)
 *   loop    unfused LoRA, one adapter at a time as mLoRA runs it: one dropout pass over X, then per segment
 *           the skinny GEMMs (T = Xd·Aᵀ, Y += s·T·Bᵀ; dT = s·dY·B, dB = s·dYᵀ·T, dA = dTᵀ·Xd, dXd = dT·A),
 *           one masked dropout backward and one add into dX
 *   single  single-adapter FusedLoRA (lg_lora.h) over the same tokens: what one adapter costs
 *   (a)     lg_mlora with strategy (a), extended K;  (b) strategy (b), expand;  auto: the heuristic's pick
 * for the adapter mixes 4 equal segments, 4 uneven (3000/1500/2500/1192), 16 and 64 equal; then merged q/k/v
 * and gate/up (one lg_mlora with nmod = 3 / 2) against three (two) separate layers on the same input, with one
 * adapter (separate = single FusedLoRA layers) and with the 4 uneven adapters (separate = one-module lg_mlora
 * layers). Every mix is validated first ((a) and (b) against the loop: Y, dX, adapter 0's dA and dB), then
 * timed as the median of interleaved rounds; --breakdown adds forward / backward / GEMMs / LoRA kernels of
 * (a) and (b).
 *
 * The layer, the variants, setup and validation: tests/util/lg_mlora_bench.c.
 *
 * usage: bench_mlora [--tokens N] [--reps N] [--only LAYER] [--mix NAME] [--breakdown] [--no-merged] */
#include "lg_gen.h"
#include "lg_gpu_util.h"
#include "lg_half.h"
#include "lg_lora.h"
#include "lg_mlora.h"
#include "lg_mlora_bench.h"
#include "lg_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct shape {
    const char *name;
    int64_t K, M;
};

static const struct shape shapes[] = {{"q_proj", 4096, 4096},     {"k_proj", 4096, 1024},  {"v_proj", 4096, 1024},
                                      {"o_proj", 4096, 4096},     {"gate_proj", 4096, 14336},
                                      {"up_proj", 4096, 14336},   {"down_proj", 14336, 4096}};

/* ---- merged projections against separate layers ---- */

struct sep {
    int nmod;
    lg_lora_t *l[3];    /* one adapter: single-adapter FusedLoRA per module */
    lg_mlora_t *ml[3];  /* four adapters: one-module lg_mlora per module */
    CUdeviceptr x, dy[3], y[3], dx[3], da, db;
    int64_t ldx, lddy[3];
    struct bench *B;
};

static void run_sep(void *arg)
{
    struct sep *S = arg;
    struct bench *B = S->B;
    for (int m = 0; m < S->nmod; m++) {
        if (S->l[m]) {
            struct lg_lora_fwd f = {.n = B->n, .x = S->x, .ldx = S->ldx, .y = S->y[m], .ldy = B->M[m], .seed = 1};
            CHECK(lg_lora_forward(S->l[m], &f, 0));
            struct lg_lora_bwd b = {.n = B->n, .x = S->x, .ldx = S->ldx, .dy = S->dy[m], .lddy = S->lddy[m],
                                    .dx = S->dx[m], .lddx = B->K, .da = S->da, .db = S->db, .seed = 1};
            CHECK(lg_lora_backward(S->l[m], &b, 0));
        } else {
            struct lg_mlora_fwd f = {.n = B->n, .seg = B->sg, .x = S->x, .ldx = S->ldx, .y = S->y[m], .ldy = B->M[m],
                                     .seed = 1};
            CHECK(lg_mlora_forward(S->ml[m], &f, 0));
            struct lg_mlora_bwd b = {.n = B->n, .seg = B->sg, .x = S->x, .ldx = S->ldx, .dy = S->dy[m],
                                     .lddy = S->lddy[m], .dx = S->dx[m], .lddx = B->K, .seed = 1};
            CHECK(lg_mlora_backward(S->ml[m], &b, 0));
        }
    }
}

/* the frozen GEMMs of the separate layers: one Y and one dX GEMM per module */
static void run_floor_sep(void *arg)
{
    struct sep *S = arg;
    struct bench *B = S->B;
    int64_t mo = 0;
    for (int m = 0; m < S->nmod; m++) {
        CUdeviceptr w = B->w + (CUdeviceptr)(mo * B->K * 2);
        mb_gemm(B, B->n, B->M[m], B->K, 0, 1, B->xc, B->K, w, B->K, S->y[m], B->M[m], 1.f, 0.f);
        mb_gemm(B, B->n, B->K, B->M[m], 0, 0, B->dyc + (CUdeviceptr)(mo * 2), B->MT, w, B->K, S->dx[m], B->K, 1.f, 0.f);
        mo += B->M[m];
    }
}

static void sep_setup(struct sep *S, struct bench *B)
{
    memset(S, 0, sizeof *S);
    S->B = B, S->nmod = B->nmod;
    const int one = B->mx->nad == 1;
    struct lg_mlora_slot_params sp[MAXAD];
    for (int i = 0; i < B->mx->nad; i++)
        sp[i] = (struct lg_mlora_slot_params){.rank = R, .alpha = ALPHA, .dropout = P};
    S->ldx = one ? lg_lora_ext_ld(B->K, R) : 0;
    for (int m = 0; m < S->nmod; m++) {
        if (one) {
            struct lg_lora_params lp = {.in_features = B->K, .out_features = B->M[m], .rank = R, .alpha = ALPHA,
                                        .dropout = P, .dtype = LG_BF16, .layer_id = (uint32_t)m};
            CHECK(lg_lora_init(B->ctx, &lp, &S->l[m]));
            S->lddy[m] = lg_lora_ext_ld(B->M[m], R);
        } else {
            struct lg_mlora_params mp = {.in_features = B->K, .nmod = 1, .out_features = {B->M[m]},
                                         .nadapters = B->mx->nad, .slots = sp, .dtype = LG_BF16, .layer_id = (uint32_t)m};
            CHECK(lg_mlora_init(B->ctx, &mp, &S->ml[m]));
            S->ldx = lg_mlora_ext_ld(S->ml[m]);
            S->lddy[m] = lg_lora_ext_ld(B->M[m], lg_mlora_compact_cols(S->ml[m]));
        }
        S->dy[m] = lg_dev_alloc((size_t)(B->n * S->lddy[m]) * 2);
        S->y[m] = lg_dev_alloc((size_t)(B->n * B->M[m]) * 2), S->dx[m] = lg_dev_alloc((size_t)(B->n * B->K) * 2);
        CU_CHECK(cuMemsetD8(S->dy[m], 0, (size_t)(B->n * S->lddy[m]) * 2));
    }
    S->x = lg_dev_alloc((size_t)(B->n * S->ldx) * 2);
    mb_copy2d(S->x, S->ldx, B->xc, B->K, B->n, B->K);
    int64_t mo = 0;
    for (int m = 0; m < S->nmod; m++)
        mb_copy2d(S->dy[m], S->lddy[m], B->dyc + (CUdeviceptr)(mo * 2), B->MT, B->n, B->M[m]), mo += B->M[m];
    S->da = lg_dev_alloc((size_t)(R * B->K) * 4), S->db = lg_dev_alloc((size_t)(14336 * R) * 4);
}

static void sep_free(struct sep *S)
{
    for (int m = 0; m < S->nmod; m++) {
        lg_lora_free(S->l[m]), lg_mlora_free(S->ml[m]);
        cuMemFree(S->dy[m]), cuMemFree(S->y[m]), cuMemFree(S->dx[m]);
    }
    cuMemFree(S->x), cuMemFree(S->da), cuMemFree(S->db);
}

/* ---- main ---- */

struct opts {
    int tokens, reps, breakdown, no_merged;
    const char *only, *mix;
};

static void parse(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.tokens = 8192, .reps = 20};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
            o->tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            o->reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            o->only = argv[++i];
        else if (!strcmp(argv[i], "--mix") && i + 1 < argc)
            o->mix = argv[++i];
        else if (!strcmp(argv[i], "--breakdown"))
            o->breakdown = 1;
        else if (!strcmp(argv[i], "--no-merged"))
            o->no_merged = 1;
        else {
            fprintf(stderr, "usage: bench_mlora [--tokens N] [--reps N] [--only LAYER] [--mix 4eq|4uneven|16|64] "
                            "[--breakdown] [--no-merged]\n");
            exit(2);
        }
    }
}

/* 4 equal, 4 uneven (3000/1500/2500/1192 at 8192 tokens, scaled otherwise), 16 and 64 equal. */
static void make_mixes(int64_t n, struct mix mx[4])
{
    static const int64_t uneven[4] = {3000, 1500, 2500, 1192};
    const int counts[4] = {4, 4, 16, 64};
    static const char *names[4] = {"4eq", "4uneven", "16", "64"};
    for (int k = 0; k < 4; k++) {
        memset(&mx[k], 0, sizeof mx[k]);
        mx[k].name = names[k], mx[k].nad = counts[k];
        int64_t left = n;
        for (int i = 0; i < counts[k]; i++) {
            int64_t len = k == 1 ? uneven[i] * n / 8192 : n / counts[k];
            if (i == counts[k] - 1)
                len = left;
            mx[k].len[i] = len, left -= len;
        }
    }
}

static void print_breakdown(struct bench *B, const char *layer, int reps)
{
    static const char *sname[2] = {"(a)", "(b)"};
    for (int v = 0; v < 2; v++) {
        B->force = v ? LG_MLORA_EXPAND : LG_MLORA_EXT_K;
        void (*const fns[])(void *) = {mb_run_fwd_forced, mb_run_bwd_forced, mb_run_gemms_forced, mb_run_floor};
        double t[4];
        lg_time_interleaved(fns, B, 4, 0, 2, reps, t);
        printf("  breakdown %-10s %-8s %s fwd %.3f bwd %.3f | its GEMMs %.3f, LoRA kernels %.3f ms (floor %.3f)\n",
               layer, B->mx->name, sname[v], t[0], t[1], t[2], t[0] + t[1] - t[2], t[3]);
    }
}

static int bench_mixes(struct bench *B, const struct opts *o, char *table, size_t cap, size_t *tl)
{
    struct mix mx[4];
    make_mixes(B->n, mx);
    int bad = 0;
    for (int k = 0; k < 4; k++) {
        if (o->mix && strcmp(o->mix, mx[k].name))
            continue;
        double r_single[8], r_auto[8], r_a[8], r_b[8], r_loop[8], r_as[8];
        int cnt = 0;
        *tl += (size_t)snprintf(table + *tl, cap - *tl,
                                "\nmix %-7s (%d adapters) floor   loop single   (a)    (b)   auto pick | loop/fl single/fl "
                                "auto/fl auto/single (a)/single (b)/single\n", mx[k].name, mx[k].nad);
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            if (o->only && strcmp(o->only, shapes[si].name))
                continue;
            mb_setup(B, shapes[si].K, 1, &shapes[si].M, &mx[k], 1);
            bad |= !mb_validate(B, shapes[si].name);
            void (*const fns[])(void *) = {mb_run_floor, mb_run_loop, mb_run_single, mb_run_a, mb_run_b, mb_run_auto};
            double t[6];
            lg_time_interleaved(fns, B, 6, 0, 3, o->reps, t);
            const int pick = lg_mlora_pick(B->ml, B->sg, B->ldxm) == LG_MLORA_EXT_K;
            *tl += (size_t)snprintf(table + *tl, cap - *tl,
                                    "%-10s %17.3f %6.3f %6.3f %6.3f %6.3f %6.3f  %s  | %7.3f %9.3f %7.3f %11.3f %10.3f %10.3f\n",
                                    shapes[si].name, t[0], t[1], t[2], t[3], t[4], t[5], pick ? "(a)" : "(b)",
                                    t[1] / t[0], t[2] / t[0], t[5] / t[0], t[5] / t[2], t[3] / t[2], t[4] / t[2]);
            r_loop[cnt] = t[1] / t[0], r_single[cnt] = t[2] / t[0], r_auto[cnt] = t[5] / t[0];
            r_as[cnt] = t[5] / t[2], r_a[cnt] = t[3] / t[2], r_b[cnt] = t[4] / t[2];
            cnt++;
            if (o->breakdown)
                print_breakdown(B, shapes[si].name, o->reps);
            mb_teardown(B);
        }
        *tl += (size_t)snprintf(table + *tl, cap - *tl,
                                "%-10s %52s | %7.3f %9.3f %7.3f %11.3f %10.3f %10.3f\n", "geomean", "",
                                mb_geomean(r_loop, cnt), mb_geomean(r_single, cnt), mb_geomean(r_auto, cnt), mb_geomean(r_as, cnt),
                                mb_geomean(r_a, cnt), mb_geomean(r_b, cnt));
    }
    return bad;
}

static void bench_merged(struct bench *B, const struct opts *o, char *table, size_t cap, size_t *tl)
{
    struct mix mx[4];
    make_mixes(B->n, mx);
    struct mix one = {.name = "1", .nad = 1, .len = {B->n}};
    const struct {
        const char *name;
        int nmod;
        int64_t M[3];
    } groups[] = {{"q/k/v", 3, {4096, 1024, 1024}}, {"gate/up", 2, {14336, 14336}}};
    *tl += (size_t)snprintf(table + *tl, cap - *tl,
                            "\nmerged      adapters  floor(merged) floor(sep) merged   sep | merged/floor sep/floor "
                            "merged/sep\n");
    for (int gi = 0; gi < 2; gi++)
        for (int k = 0; k < 2; k++) {
            const struct mix *m = k ? &mx[1] : &one;
            mb_setup(B, 4096, groups[gi].nmod, groups[gi].M, m, 0);
            struct sep S;
            sep_setup(&S, B);
            void (*const fns[])(void *) = {mb_run_floor, run_floor_sep, mb_run_auto, run_sep};
            void *args[] = {B, &S, B, &S};
            (void)args;
            /* the four variants take different argument blocks: time them in two interleaved pairs */
            void (*const f1[])(void *) = {fns[0], fns[2]};
            void (*const f2[])(void *) = {fns[1], fns[3]};
            double t1[2], t2[2];
            lg_time_interleaved(f1, B, 2, 0, 3, o->reps, t1);
            lg_time_interleaved(f2, &S, 2, 0, 3, o->reps, t2);
            *tl += (size_t)snprintf(table + *tl, cap - *tl, "%-10s %-9s %13.3f %10.3f %6.3f %5.3f | %12.3f %9.3f %10.3f\n",
                                    groups[gi].name, m->name, t1[0], t2[0], t1[1], t2[1], t1[1] / t1[0], t2[1] / t1[0],
                                    t1[1] / t2[1]);
            if (o->breakdown)
                print_breakdown(B, groups[gi].name, o->reps);
            sep_free(&S);
            mb_teardown(B);
        }
}

int main(int argc, char **argv)
{
    struct opts o;
    parse(argc, argv, &o);
    lg_test_require_gpu();
    struct bench B;
    memset(&B, 0, sizeof B);
    struct lg_ctx_params cp = {.device = 0};
    CHECK(lg_ctx_init(&cp, &B.ctx));
    B.blas = lg_ctx_blas(B.ctx);
    B.n = o.tokens;
    struct {
        enum lg_kernel_op op;
        const struct lg_kernel **k;
    } want[] = {{LG_OP_PEFT_DROPOUT, &B.pf.dropout}, {LG_OP_PEFT_DROPOUT_BWD, &B.pf.dropout_bwd},
                {LG_OP_PEFT_AXPY, &B.pf.axpy}};
    for (int i = 0; i < 3; i++) {
        struct lg_kernel_cfg c = {.op = want[i].op, .dtype = LG_BF16};
        CHECK(lg_ctx_kernel(B.ctx, &c, want[i].k));
    }
    printf("bench_mlora: Llama-3.1-8B shapes on %s (%d SMs), %lld tokens, r=%d, alpha=%g, p=%g, bf16\n",
           lg_ctx_device_name(B.ctx), lg_ctx_sm_count(B.ctx), (long long)B.n, R, ALPHA, P);
    static char table[16384];
    size_t tl = 0;
    int bad = bench_mixes(&B, &o, table, sizeof table, &tl);
    if (!o.no_merged && !o.only)
        bench_merged(&B, &o, table, sizeof table, &tl);
    printf("%s", table);
    printf("(ms, median of %d interleaved rounds; floor = frozen GEMMs; single = one-adapter FusedLoRA on the same "
           "tokens; targets: 4 adapters auto/single <= 1.05, 16 <= 1.10; merged q/k/v (1 adapter) merged/floor <= "
           "1.10, gate/up <= 1.05)\n", o.reps);
    lg_ctx_free(B.ctx);
    return bad ? 1 : 0;
}
