/* bench_gemm.c: loragen's frozen GEMMs (lg_blas, cuBLASLt) against torch's matmul on the same shapes and
 * layouts, in one run (issue 12's "every frozen GEMM at least as fast as torch's"). For every Llama-3.1-8B
 * projection and the merged q/k/v and gate/up, at n tokens, bf16, row-major with W [M, K] as Hugging Face
 * stores it:
 *   fwd  Y[n, M] = X[n, K] · Wᵀ       (the layer's forward)
 *   dx   dX[n, K] = dY[n, M] · W       (the backward's input gradient; no dW: the base is frozen)
 * each with cuBLASLt's first heuristic pick ("heuristic", what an untuned layer runs) and the fastest of its
 * candidates ("best", what `loragen tune` can pick), each the median of --reps runs after a warm-up. With
 * --torch-csv (bench/gemm_torch.py's output from the same GPU, same call), the table adds torch's time and
 * best/torch; the merged layers also show their two or three modules' GEMMs run separately (tiles.split).
 *
 * usage: bench_gemm [--tokens N] [--reps N] [--torch-csv FILE] [--csv FILE] */
#include "lg_blas.h"
#include "lg_ctx.h"
#include "lg_gpu_util.h"
#include "lg_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct shape {
    const char *name;
    int64_t K, M;
    int64_t parts[3]; /* merged layers: the modules' widths */
};

static const struct shape shapes[] = {
    {"q_proj", 4096, 4096, {0}},       {"k_proj", 4096, 1024, {0}},       {"v_proj", 4096, 1024, {0}},
    {"o_proj", 4096, 4096, {0}},       {"gate_proj", 4096, 14336, {0}},   {"up_proj", 4096, 14336, {0}},
    {"down_proj", 14336, 4096, {0}},   {"qkv_merged", 4096, 6144, {4096, 1024, 1024}},
    {"gate_up_merged", 4096, 28672, {14336, 14336}},
};
#define NSHAPES ((int)(sizeof shapes / sizeof shapes[0]))

struct run {
    lg_blas_t *blas;
    struct lg_gemm g;      /* the whole GEMM */
    const struct shape *s;
    int fwd, algo;
};

static void run_one(void *arg)
{
    struct run *r = arg;
    struct lg_gemm g = r->g;
    g.algo_index = r->algo;
    CHECK(lg_blas_gemm(r->blas, &g, 0));
}

/* The merged layer's modules one GEMM each (heuristic pick), as FusedMultiLoRA's tiles.split runs them. */
static void run_split(void *arg)
{
    struct run *r = arg;
    int64_t off = 0;
    for (int m = 0; m < 3 && r->s->parts[m]; m++) {
        struct lg_gemm g = r->g;
        const int64_t M = r->s->parts[m];
        g.b = (const char *)r->g.b + (size_t)(off * r->s->K) * 2;
        if (r->fwd)
            g.n = M, g.c = (char *)r->g.c + (size_t)off * 2;
        else
            g.k = M, g.a = (const char *)r->g.a + (size_t)off * 2, g.beta = m ? 1.f : 0.f;
        CHECK(lg_blas_gemm(r->blas, &g, 0));
        off += M;
    }
}

static double torch_ms(const char *csv, const char *name, const char *dir, int64_t n)
{
    if (!csv)
        return -1;
    FILE *f = fopen(csv, "r");
    if (!f) {
        fprintf(stderr, "bench_gemm: %s: cannot open\n", csv);
        exit(1);
    }
    char line[256], nm[64], d[8];
    long long nn, K, M;
    double ms, got = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "%63[^,],%7[^,],%lld,%lld,%lld,%lf", nm, d, &nn, &K, &M, &ms) == 6 && !strcmp(nm, name) &&
            !strcmp(d, dir) && nn == n)
            got = ms;
    fclose(f);
    return got;
}

int main(int argc, char **argv)
{
    int64_t n = 8192;
    int reps = 20;
    const char *tcsv = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
            n = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--torch-csv") && i + 1 < argc)
            tcsv = argv[++i];
        else if (!strcmp(argv[i], "--csv") && i + 1 < argc)
            out = argv[++i];
        else {
            fprintf(stderr, "usage: bench_gemm [--tokens N] [--reps N] [--torch-csv FILE] [--csv FILE]\n");
            return 2;
        }
    }
    if (n < 64 || reps < 1) {
        fprintf(stderr, "bench_gemm: --tokens must be >= 64 and --reps >= 1\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* the table so far survives a crash */
    lg_test_require_gpu();
    lg_ctx_t *ctx;
    struct lg_ctx_params cp = {.device = 0};
    CHECK(lg_ctx_init(&cp, &ctx));
    lg_blas_t *blas = lg_ctx_blas(ctx);
    printf("bench_gemm: %s, %lld tokens, bf16; %s\n", lg_ctx_device_name(ctx), (long long)n,
           tcsv ? tcsv : "no torch CSV (run bench/gemm_torch.py --csv FILE first for the torch column)");
    FILE *csv = out ? fopen(out, "w") : NULL;
    if (csv)
        fprintf(csv, "name,dir,n,K,M,heuristic_ms,best_ms,best_algo,split_ms,torch_ms\n");
    printf("\n| layer | dir | K | M | heuristic ms | best ms (algo) | split ms | torch ms | best/torch |\n"
           "|---|---|---|---|---|---|---|---|---|\n");
    int slower = 0, compared = 0;
    for (int si = 0; si < NSHAPES; si++) {
        const struct shape *s = &shapes[si];
        const int64_t K = s->K, M = s->M;
        CUdeviceptr x = lg_dev_alloc((size_t)(n * K) * 2), w = lg_dev_alloc((size_t)(M * K) * 2);
        CUdeviceptr y = lg_dev_alloc((size_t)(n * M) * 2), dx = lg_dev_alloc((size_t)(n * K) * 2);
        size_t most = (size_t)(n * K); /* the largest of X, W and dY, staged in one host buffer */
        most = (size_t)(M * K) > most ? (size_t)(M * K) : most;
        most = (size_t)(n * M) > most ? (size_t)(n * M) : most;
        float *h = malloc(sizeof(float) * most);
        if (!h) {
            fprintf(stderr, "bench_gemm: out of host memory (%zu floats)\n", most);
            return 1;
        }
        lg_test_fill(h, (size_t)(n * K), 1 + (uint64_t)si, 1.0f);
        lg_dev_upload(x, K, h, n, K, LG_BF16);
        lg_test_fill(h, (size_t)(M * K), 100 + (uint64_t)si, 0.02f);
        lg_dev_upload(w, K, h, M, K, LG_BF16);
        lg_test_fill(h, (size_t)(n * M), 200 + (uint64_t)si, 1.0f);
        lg_dev_upload(y, M, h, n, M, LG_BF16); /* dY for the dx direction (Y is overwritten by fwd) */
        free(h);
        for (int fwd = 1; fwd >= 0; fwd--) {
            struct run r = {.blas = blas, .s = s, .fwd = fwd};
            if (fwd)
                r.g = (struct lg_gemm){.dtype = LG_BF16, .m = n, .n = M, .k = K, .trans_b = 1, .a = (void *)x,
                                       .lda = K, .b = (void *)w, .ldb = K, .c = (void *)y, .ldc = M, .alpha = 1.f};
            else
                r.g = (struct lg_gemm){.dtype = LG_BF16, .m = n, .n = K, .k = M, .a = (void *)y, .lda = M,
                                       .b = (void *)w, .ldb = K, .c = (void *)dx, .ldc = K, .alpha = 1.f};
            int cnt = lg_blas_algo_count(blas, &r.g);
            if (cnt < 1)
                CHECK(LG_ERR_CUBLAS);
            struct run rs[8];
            double med[8];
            for (int a = 0; a < cnt && a < 8; a++) { /* each candidate: warm-up, then the median of reps runs */
                rs[a] = r, rs[a].algo = a;
                med[a] = lg_time_median_ms(run_one, &rs[a], 0, 3, reps);
            }
            cnt = cnt < 8 ? cnt : 8;
            int best = 0;
            for (int a = 1; a < cnt; a++)
                if (med[a] < med[best])
                    best = a;
            double split = s->parts[0] ? lg_time_median_ms(run_split, &r, 0, 3, reps) : -1;
            const char *dir = fwd ? "fwd" : "dx";
            double t = torch_ms(tcsv, s->name, dir, n);
            char ts[32] = "–", rt[32] = "–", sp[32] = "–";
            if (t > 0) {
                snprintf(ts, sizeof ts, "%.3f", t);
                snprintf(rt, sizeof rt, "%.3f", med[best] / t);
                compared++;
                slower += med[best] > t;
            }
            if (split > 0)
                snprintf(sp, sizeof sp, "%.3f", split);
            printf("| %s | %s | %lld | %lld | %.3f | %.3f (%d of %d) | %s | %s | %s |\n", s->name, dir, (long long)K,
                   (long long)M, med[0], med[best], best, cnt, sp, ts, rt);
            if (csv)
                fprintf(csv, "%s,%s,%lld,%lld,%lld,%.5f,%.5f,%d,%.5f,%.5f\n", s->name, dir, (long long)n, (long long)K,
                        (long long)M, med[0], med[best], best, split, t);
        }
        cuMemFree(x), cuMemFree(w), cuMemFree(y), cuMemFree(dx);
    }
    if (compared)
        printf("\n%d of %d GEMMs slower than torch's at their best cuBLASLt candidate (target: none)\n", slower,
               compared);
    if (csv)
        fclose(csv);
    lg_ctx_free(ctx);
    return 0;
}
