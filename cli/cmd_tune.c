/* cmd_tune.c: `loragen tune SPEC`: tunes the kernels SPEC needs on the local GPU at the given token counts
 * (lg_tuner.h) and writes the winners into a tuning database (lg_tune.h), which the runtime reads at start.
 * Prints progress (what, how many remain, the time left) to stderr and a table (key, default, winner,
 * speed-up) to stdout. Entries already in --out for other keys are kept; a file there that is not a valid
 * database is refused, not overwritten. */
#include "cli.h"
#include "lg_attention.h"
#include "lg_ctx.h"
#include "lg_mlora.h"
#include "lg_gen.h"
#include "lg_tune.h"
#include "lg_tuner.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_TOKENS 16
#define TOKENS_MAX (1 << 24)

struct tune_opts {
    const char *spec;
    const char *out;
    const char *only;
    int tokens[MAX_TOKENS];
    int ntokens;
    int max_cands, rounds, device;
    int quiet, verbose;
    unsigned families;
    int adapters;
    int dry_run, arch;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loragen tune SPEC [--tokens N[,N...]] [--out FILE] [--families LIST] [--adapters N]\n"
            "                    [--only LAYER] [--max-candidates N] [--rounds N] [--device N] [-q] [-v]\n"
            "       loragen tune SPEC --dry-run [--arch sm_XX] [same options]\n"
            "\n"
            "Tunes the kernel tiles and GEMM algorithms SPEC's layers need (FusedLoRA, FusedMultiLoRA, attention)\n"
            "on the local GPU and writes the winners into a tuning database that loragen reads at start\n"
            "(docs/tuning.md).\n"
            "\n"
            "  --tokens LIST         token counts to tune at, comma-separated (default: the spec's own);\n"
            "                        e.g. 2048,4096,8192,16384\n"
            "  --out FILE            the database to write (default: $LORAGEN_TUNE_DB, else\n"
            "                        $XDG_CACHE_HOME/loragen/tune.json or ~/.cache/loragen/tune.json);\n"
            "                        its entries for other keys are kept\n"
            "  --only LAYER          tune one linear layer of the spec as FusedLoRA (e.g. q_proj), nothing else\n"
            "  --max-candidates N    candidates timed per tile group (default 16): the sweep's size\n"
            "  --rounds N            interleaved timing rounds per candidate, the median kept (default 9)\n"
            "  --families LIST       what to tune, comma-separated (default lora,mlora,attention):\n"
            "                        lora: FusedLoRA layers (lg_lora_t: the benchmarks, the PyTorch binding);\n"
            "                        mlora: FusedMultiLoRA layers as loragen train builds them (model specs);\n"
            "                        attention: its tiles, over the largest token count (model specs)\n"
            "  --adapters N          adapters of the FusedMultiLoRA layers (default 1), as in the job\n"
            "  --device N            CUDA device (default 0)\n"
            "  --dry-run             list each job's candidates per tile group, pruned for --arch; no GPU\n"
            "  --arch sm_XX          the arch --dry-run prunes for: sm_80, sm_86, sm_89, sm_90 (default)\n"
            "  -q, --quiet           no progress lines\n"
            "  -v, --verbose         also each tile group's variants, pruning and timed count\n"
            "  -h, --help            this text\n"
            "\n"
            "Exit status: 0 tuned and written, 1 no GPU or a failure, 2 bad usage.\n");
}

/* An integer flag value in lo..hi, or -1 with the error printed. */
static long int_arg(const char *flag, const char *v, long lo, long hi)
{
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || !*v || *end || errno || x < lo || x > hi) {
        lg_cli_error("tune", "%s expects an integer in %ld..%ld, got '%s'", flag, lo, hi, v ? v : "(nothing)");
        return -1;
    }
    return x;
}

static int parse_tokens(struct tune_opts *o, const char *v)
{
    char buf[512];
    if (!v || !*v || strlen(v) >= sizeof buf) {
        lg_cli_error("tune", "--tokens expects a comma-separated list of token counts, e.g. 2048,4096,8192");
        return -1;
    }
    snprintf(buf, sizeof buf, "%s", v);
    o->ntokens = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o->ntokens == MAX_TOKENS) {
            lg_cli_error("tune", "--tokens: at most %d token counts", MAX_TOKENS);
            return -1;
        }
        long x = int_arg("--tokens", t, 1, TOKENS_MAX);
        if (x < 0)
            return -1;
        o->tokens[o->ntokens++] = (int)x;
    }
    if (!o->ntokens || v[strlen(v) - 1] == ',' || v[0] == ',' || strstr(v, ",,")) {
        lg_cli_error("tune", "--tokens expects a comma-separated list of token counts, got '%s'", v);
        return -1;
    }
    return 0;
}

static int parse_families(struct tune_opts *o, const char *v)
{
    char buf[128];
    if (!v || !*v || strlen(v) >= sizeof buf) {
        lg_cli_error("tune", "--families expects a comma-separated list of lora, mlora, attention");
        return -1;
    }
    snprintf(buf, sizeof buf, "%s", v);
    o->families = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "lora"))
            o->families |= LG_TUNER_LORA;
        else if (!strcmp(t, "mlora"))
            o->families |= LG_TUNER_MLORA;
        else if (!strcmp(t, "attention"))
            o->families |= LG_TUNER_ATTN;
        else {
            lg_cli_error("tune", "--families: '%s' is not one of lora, mlora, attention", t);
            return -1;
        }
    }
    return 0;
}

static int parse(int argc, char **argv, struct tune_opts *o)
{
    *o = (struct tune_opts){.max_cands = 16, .rounds = 9, .families = LG_TUNER_ALL, .adapters = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--tokens")) {
            if (parse_tokens(o, v))
                return -1;
            i++;
        } else if (!strcmp(a, "--out") || !strcmp(a, "--only")) {
            if (!v || !*v) {
                lg_cli_error("tune", "%s expects %s", a, !strcmp(a, "--out") ? "a file name" : "a linear layer's name");
                return -1;
            }
            *(!strcmp(a, "--out") ? &o->out : &o->only) = v, i++;
        } else if (!strcmp(a, "--max-candidates")) {
            if ((x = int_arg(a, v, 1, 4096)) < 0)
                return -1;
            o->max_cands = (int)x, i++;
        } else if (!strcmp(a, "--rounds")) {
            if ((x = int_arg(a, v, 1, 1000)) < 0)
                return -1;
            o->rounds = (int)x, i++;
        } else if (!strcmp(a, "--device")) {
            if ((x = int_arg(a, v, 0, 1023)) < 0)
                return -1;
            o->device = (int)x, i++;
        } else if (!strcmp(a, "--dry-run")) {
            o->dry_run = 1;
        } else if (!strcmp(a, "--arch")) {
            if (!v || strncmp(v, "sm_", 3) || (x = strtol(v + 3, NULL, 10)) <= 0 ||
                lg_arch_limits_get((int)x, &(struct lg_arch_limits){0}) != LG_OK) {
                lg_cli_error("tune", "--arch expects sm_80, sm_86, sm_89 or sm_90, got '%s'", v ? v : "(nothing)");
                return -1;
            }
            o->arch = (int)x, i++;
        } else if (!strcmp(a, "--families")) {
            if (parse_families(o, v))
                return -1;
            i++;
        } else if (!strcmp(a, "--adapters")) {
            if ((x = int_arg(a, v, 1, 4096)) < 0)
                return -1;
            o->adapters = (int)x, i++;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            o->quiet = 1;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            o->verbose = 1;
        } else if (a[0] == '-') {
            lg_cli_error("tune", "unknown option '%s' (see loragen tune --help)", a);
            return -1;
        } else if (o->spec) {
            lg_cli_error("tune", "one SPEC expected, got '%s' and '%s'", o->spec, a);
            return -1;
        } else {
            o->spec = a;
        }
    }
    if (!o->spec) {
        lg_cli_error("tune", "missing SPEC (a file under specs/, e.g. specs/llama-3.1-8b.lua)");
        return -1;
    }
    return 0;
}

static void on_progress(void *u, const struct lg_tuner_progress *p)
{
    if (p->eta_s < 0)
        fprintf(stderr, "[%d/%d] %s (%d left)\n", p->done + 1, p->total, p->what, p->total - p->done);
    else
        fprintf(stderr, "[%d/%d] %s (%d left, %.0f s so far, about %.0f s to go)\n", p->done + 1, p->total, p->what,
                p->total - p->done, p->elapsed_s, p->eta_s);
}

static void on_log(void *u, const char *line) { fprintf(stderr, "%s\n", line); }

/* The winner's parameters as "down_wm=2 fwd_algo=1", or "(defaults)". */
static void params_text(const struct lg_tune_entry *e, char *buf, size_t n)
{
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < e->nparams && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "%s%s=%d", i ? " " : "", e->params[i].name, e->params[i].value);
    if (!e->nparams)
        snprintf(buf, n, "(defaults)");
}

static void print_table(const struct lg_tuner_result *r, int n)
{
    printf("%-28s %-30s %7s %10s %10s %8s %6s %5s  %s\n", "layers", "shape", "tokens", "default_ms", "winner_ms",
           "speedup", "timed", "+inf", "winner");
    for (int i = 0; i < n; i++) {
        const struct lg_tune_entry *e = &r[i].outcome.entry;
        if (r[i].status != LG_OK) {
            printf("%-28s %-30s %7lld FAILED: %s\n", r[i].label, e->key.shape, (long long)r[i].tokens, r[i].error);
            continue;
        }
        char p[256];
        params_text(e, p, sizeof p);
        printf("%-28s %-30s %7lld %10.4f %10.4f %7.3fx %6d %5d  %s\n", r[i].label, e->key.shape,
               (long long)r[i].tokens, e->default_ms, e->time_ms, e->default_ms / e->time_ms, e->candidates,
               r[i].outcome.failed + r[i].outcome.mismatched, p);
    }
}

/* The database to add to: the file at path when there is one (refused if it is not a valid database). */
static int open_db(const char *path, lg_tune_db_t **db)
{
    if (access(path, F_OK) == 0) {
        if (lg_tune_db_load(path, db) != LG_OK) {
            lg_cli_error("tune", "%s exists but is not a tuning database loragen can read (%s); remove it or give "
                         "another --out", path, lg_last_error());
            return -1;
        }
        return 0;
    }
    if (lg_tune_db_init(db) != LG_OK) {
        lg_cli_error("tune", "%s", lg_last_error());
        return -1;
    }
    return 0;
}

static int run(const struct tune_opts *o, const struct lg_spec *spec, const char *out)
{
    lg_tune_db_t *db; /* first: a bad --out is known before the GPU is touched */
    if (open_db(out, &db))
        return 1;
    lg_ctx_t *ctx;
    struct lg_ctx_params cp = {.device = o->device};
    enum lg_status st = lg_ctx_init(&cp, &ctx);
    if (st != LG_OK) {
        if (st == LG_ERR_NO_GPU)
            lg_cli_error("tune", "no GPU: tuning times kernels on the local GPU, and none is usable here (%s)",
                         lg_last_error());
        else
            lg_cli_error("tune", "cannot use device %d: %s", o->device, lg_last_error());
        lg_tune_db_free(db);
        return 1;
    }
    struct lg_tune_info info;
    lg_tuner_info(ctx, &info);
    lg_tune_db_set_info(db, &info);
    struct lg_tuner_sweep sw = {.spec = spec, .tokens = o->ntokens ? o->tokens : NULL, .ntokens = o->ntokens,
                                .only = o->only, .families = o->families, .mlora_adapters = o->adapters,
                                .progress = o->quiet ? NULL : on_progress,
                                .opts = {.max_cands = o->max_cands, .rounds = o->rounds,
                                         .log = on_log, .verbose = o->verbose}};
    fprintf(stderr, "loragen tune: %s on %s (sm_%d, %d SMs): %d jobs, up to %d candidates per tile group\n",
            spec->path, info.gpu, info.arch, info.sm_count, lg_tuner_spec_jobs(&sw), o->max_cands);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct lg_tuner_result *res = NULL;
    int n = 0, rc = 0;
    if (lg_tuner_spec(ctx, &sw, db, &res, &n) != LG_OK) {
        lg_cli_error("tune", "%s", lg_last_error());
        rc = 1;
    } else if (lg_tune_db_save(db, out) != LG_OK) {
        lg_cli_error("tune", "writing %s: %s", out, lg_last_error());
        rc = 1;
    } else {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        print_table(res, n);
        printf("wrote %s (%d entries); the sweep took %.1f s\n", out, lg_tune_db_count(db),
               (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
        for (int i = 0; i < n; i++)
            if (res[i].status != LG_OK) {
                lg_cli_error("tune", "%s at %lld tokens could not be tuned: %s", res[i].label,
                             (long long)res[i].tokens, res[i].error);
                rc = 1;
            }
    }
    free(res);
    lg_tune_db_free(db);
    lg_ctx_free(ctx);
    return rc;
}

/* ---- --dry-run: the candidates, without a GPU ---- */

static void dry_group(const char *name, enum lg_status st, const struct lg_tuner_space_info *in, int *total)
{
    if (st != LG_OK) {
        printf("  %s: %s\n", name, lg_last_error());
        return;
    }
    printf("  %-6s %4d variants, %4d pruned, %3d timed\n", name, in->variants, in->pruned, in->timed);
    *total += in->timed;
}

static int dry_run(const struct tune_opts *o, const struct lg_spec *spec)
{
    lg_gen_t *gen;
    if (lg_gen_init(&gen) != LG_OK) {
        lg_cli_error("tune", "%s", lg_last_error());
        return 1;
    }
    const int arch = o->arch ? o->arch : 90, max = o->max_cands, nt = o->ntokens ? o->ntokens : 1;
    struct lg_lora_tiles *lc = calloc((size_t)max + 1, sizeof *lc);
    struct lg_mlora_tiles *mc = calloc((size_t)max + 1, sizeof *mc);
    struct lg_attn_tiles *ac = calloc((size_t)max + 1, sizeof *ac);
    int total = 0, n;
    printf("loragen tune --dry-run: %s for sm_%d, up to %d candidates per group\n", spec->path, arch, max);
    for (int i = 0; (o->families & LG_TUNER_LORA) && i < spec->nlinears && lc; i++) {
        const struct lg_linear *l = &spec->linears[i];
        int seen = 0;
        for (int j = 0; j < i; j++)
            seen |= spec->linears[j].in_features == l->in_features && spec->linears[j].out_features == l->out_features;
        if (seen || (o->only && strcmp(o->only, l->name)))
            continue;
        struct lg_lora_params p = {.in_features = l->in_features, .out_features = l->out_features, .rank = spec->rank,
                                   .alpha = (float)spec->alpha, .dropout = (float)spec->dropout, .dtype = spec->dtype};
        printf("lora k%lld_m%lld (%s), x%d token counts:\n", (long long)l->in_features, (long long)l->out_features,
               l->name, nt);
        for (int g = 0; g < LG_TUNER_LORA_GROUPS; g++) {
            struct lg_tuner_space_info in;
            struct lg_lora_tiles cur = {0};
            enum lg_status st = lg_tuner_lora_group(gen, arch, &p, g, &cur, max, lc, &n, &in);
            dry_group(lg_tuner_lora_group_name(g), st, &in, &total);
        }
        printf("  + up to 7 more cuBLASLt candidates for each of the forward and dX GEMMs (counted on the GPU)\n");
    }
    const struct lg_spec_model *m = &spec->model;
    const int model = m->present && !o->only;
    if ((o->families & LG_TUNER_MLORA) && model && mc) {
        const int64_t H = m->hidden_size, q = (int64_t)m->num_attention_heads * m->head_dim,
                      kv = (int64_t)m->num_key_value_heads * m->head_dim, I = m->intermediate_size;
        const struct lg_tuner_mlora_shape shapes[4] = {
            {.in_features = H, .nmod = 3, .out_features = {q, kv, kv}},
            {.in_features = q, .nmod = 1, .out_features = {H}},
            {.in_features = H, .nmod = 2, .out_features = {I, I}},
            {.in_features = I, .nmod = 1, .out_features = {H}},
        };
        static const char *names[4] = {"q,k,v", "o", "gate,up", "down"};
        for (int i = 0; i < 4; i++) {
            struct lg_tuner_mlora_shape sh = shapes[i];
            sh.nadapters = o->adapters, sh.rank = spec->rank, sh.alpha = (float)spec->alpha;
            sh.dropout = (float)spec->dropout, sh.dtype = spec->dtype;
            printf("mlora %s x%d adapters, x%d token counts:\n", names[i], o->adapters, nt);
            for (int g = 0; g < LG_TUNER_MLORA_GROUPS; g++) {
                struct lg_tuner_space_info in;
                struct lg_mlora_tiles cur = {0};
                enum lg_status st = lg_tuner_mlora_group(gen, arch, &sh, g, &cur, max, mc, &n, &in);
                dry_group(lg_tuner_mlora_group_name(g), st, &in, &total);
            }
        }
    }
    total *= nt;
    if ((o->families & LG_TUNER_ATTN) && model && (m->head_dim == 64 || m->head_dim == 128) && ac) {
        struct lg_attn_params ap = {.hq = m->num_attention_heads, .hkv = m->num_key_value_heads,
                                    .head_dim = m->head_dim, .dtype = spec->dtype, .flags = LG_ATTN_DETERMINISTIC};
        printf("attention hq%d_hkv%d_d%d_det, once:\n", ap.hq, ap.hkv, ap.head_dim);
        for (int g = 0; g < lg_tuner_attn_groups(&ap); g++) {
            struct lg_tuner_space_info in;
            struct lg_attn_tiles cur = {0};
            enum lg_status st = lg_tuner_attn_group(gen, arch, &ap, g, &cur, max, ac, &n, &in);
            dry_group(lg_tuner_attn_group_name(g), st, &in, &total);
        }
    }
    struct lg_tuner_sweep sw = {.spec = spec, .tokens = o->ntokens ? o->tokens : NULL, .ntokens = o->ntokens,
                                .only = o->only, .families = o->families, .mlora_adapters = o->adapters};
    printf("%d jobs, %d tile candidates timed in all (%d rounds each), plus the cuBLASLt ones\n",
           lg_tuner_spec_jobs(&sw), total, o->rounds);
    free(lc), free(mc), free(ac);
    lg_gen_free(gen);
    return 0;
}

int lg_cmd_tune(int argc, char **argv)
{
    struct tune_opts o;
    if (parse(argc, argv, &o))
        return 2;
    const char *out = o.out ? o.out : lg_tune_default_path();
    if (!out || !*out) {
        lg_cli_error("tune", "no default database path ($LORAGEN_TUNE_DB is off and $HOME is unset): give --out FILE");
        return 2;
    }
    struct lg_spec *spec;
    if (lg_spec_load(o.spec, &spec) != LG_OK) {
        fprintf(stderr, "%s\n", lg_last_error());
        return 1;
    }
    int rc = o.dry_run ? dry_run(&o, spec) : run(&o, spec, out);
    lg_spec_free(spec);
    return rc;
}
