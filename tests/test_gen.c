/* test_gen.c: the kernel generator, all on the CPU (NVRTC needs no GPU).
 *
 * - the generator is deterministic, stamped, and points into templates/ with #line, so a template error
 *   lands on its template line;
 * - every kernel of every shipped spec compiles for sm_80, sm_89 and sm_90 (a CI requirement), every op of
 *   every family (lora, peft) compiles its defaults for all three, and every value of every compile-time
 *   switch compiles (one-at-a-time coverage around the defaults, topped up where a single change would be
 *   invalid).
 * Specs (loading, shapes, bad specs) are tested in test_gen_spec.c, the `loragen gen` command in
 * test_gen_cli.c; that C and the generator agree on ops, fields, limits and layer slots in test_gen_truth.c.
 * Check forks each case; nothing here initialises CUDA. No case has a time limit: NVRTC speed varies. */
#include "lg_gen.h"
#include "lg_gen_test.h"
#include "lg_jit.h"
#include "lg_test.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ---- */

/* Compiles for sm_<arch>; on failure prints the whole NVRTC log and fails the case. */
static void compile_ok(const struct lg_kernel_src *k, int arch)
{
    void *cubin = NULL;
    size_t n = 0;
    enum lg_status st = lg_nvrtc_compile(k->source, k->name, arch, &cubin, &n, NULL);
    if (st != LG_OK)
        fprintf(stderr, "%s for sm_%d:\n%s\n", k->name, arch, lg_last_error());
    ck_assert_msg(st == LG_OK, "%s does not compile for sm_%d: %s", k->name, arch, lg_status_str(st));
    ck_assert_uint_gt(n, 0);
    free(cubin);
}

/* ---- generator ---- */

/* The op's family: the templates/<family>/ folder and its <family>.inst. */
static const char *family(enum lg_kernel_op op)
{
    if (op >= LG_OP_NORM_FWD && op <= LG_OP_ADAMW_UPD)
        return "decoder";
    if (!strncmp(lg_kernel_op_name(op), "mlora_", 6))
        return "mlora";
    if (!strncmp(lg_kernel_op_name(op), "attn_", 5))
        return "attn";
    return strncmp(lg_kernel_op_name(op), "peft_", 5) ? "lora" : "peft";
}

static struct lg_kernel_src emit(lg_gen_t *g, struct lg_kernel_cfg cfg)
{
    struct lg_kernel_src k;
    enum lg_status st = lg_gen_kernel(g, &cfg, "tests/test_gen.c", &k);
    ck_assert_msg(st == LG_OK, "%s: %s", lg_kernel_op_name(cfg.op), lg_last_error());
    return k;
}

START_TEST(generator_is_deterministic)
{
    lg_gen_t *g1, *g2;
    CHECK(lg_gen_init(&g1));
    CHECK(lg_gen_init(&g2));
    for (int op = 0; op < LG_OP_COUNT; op++) {
        struct lg_kernel_cfg c = {.op = (enum lg_kernel_op)op, .dtype = LG_BF16, .rank = 16, .drop = 1};
        if (op == LG_OP_REDUCE)
            c.drop = 0;
        struct lg_kernel_src a = emit(g1, c), b = emit(g1, c), d = emit(g2, c);
        ck_assert_str_eq(a.name, b.name);
        ck_assert_str_eq(a.source, b.source);
        ck_assert_str_eq(a.source, d.source);
        ck_assert_int_eq(a.threads, d.threads);
        const char *nl = strchr(a.source, '\n');
        ck_assert_ptr_nonnull(nl);
        char first[256];
        snprintf(first, sizeof first, "%.*s", (int)(nl - a.source), a.source);
        ck_assert_msg(strstr(first, "do not edit") && strstr(first, "tests/test_gen.c"), "stamp: %s", first);
        char inst[96], tmpl[96];
        snprintf(inst, sizeof inst, "\"templates/%s/%s.inst\"", family(c.op), family(c.op));
        snprintf(tmpl, sizeof tmpl, "#line 1 \"templates/%s/", family(c.op));
        ck_assert_ptr_nonnull(strstr(a.source, "#line 1 \"templates/common/lg_philox.h\""));
        ck_assert_msg(strstr(a.source, tmpl) != NULL, "%s: no #line into %s", a.name, tmpl);
        ck_assert_msg(strstr(a.source, inst) != NULL, "%s: no #line into %s", a.name, inst);
        ck_assert_ptr_null(strstr(a.source, "${"));
        ck_assert_msg(strstr(a.source, a.name) != NULL, "the kernel %s is not in its source", a.name);
        lg_kernel_src_free(&a);
        lg_kernel_src_free(&b);
        lg_kernel_src_free(&d);
    }
    lg_gen_free(g1);
    lg_gen_free(g2);
}
END_TEST

START_TEST(names_follow_configs)
{
    lg_gen_t *g;
    CHECK(lg_gen_init(&g));
    struct lg_kernel_cfg base = {.op = LG_OP_DOWN, .dtype = LG_BF16, .rank = 16};
    struct lg_kernel_cfg alts[] = {
        {.op = LG_OP_DOWN, .dtype = LG_FP16, .rank = 16},
        {.op = LG_OP_DOWN, .dtype = LG_BF16, .rank = 32},
        {.op = LG_OP_DOWN, .dtype = LG_BF16, .rank = 16, .drop = 1},
        {.op = LG_OP_DOWN, .dtype = LG_BF16, .rank = 16, .wm = 2},
        {.op = LG_OP_DY, .dtype = LG_BF16, .rank = 16},
    };
    struct lg_kernel_src k0 = emit(g, base);
    ck_assert_ptr_nonnull(strstr(k0.name, "down"));
    ck_assert_ptr_nonnull(strstr(k0.name, "bf16"));
    ck_assert_ptr_nonnull(strstr(k0.name, "_r16"));
    for (size_t i = 0; i < sizeof alts / sizeof alts[0]; i++) {
        struct lg_kernel_src k = emit(g, alts[i]);
        ck_assert_msg(strcmp(k.name, k0.name) != 0, "config %zu has the default's name %s", i, k.name);
        ck_assert_str_ne(k.source, k0.source);
        lg_kernel_src_free(&k);
    }
    lg_kernel_src_free(&k0);
    struct lg_kernel_cfg bad = {.op = LG_OP_DOWN, .dtype = LG_BF16, .rank = 12};
    struct lg_kernel_src k;
    ck_assert_int_ne(lg_gen_kernel(g, &bad, NULL, &k), LG_OK);
    lg_gen_free(g);
}
END_TEST

START_TEST(spec_kernels_are_deterministic)
{
    struct lg_spec *s = gen_load_ok("specs/llama-3.1-8b.lua");
    lg_gen_t *g;
    CHECK(lg_gen_init(&g));
    struct lg_kernel_src *a, *b;
    int na, nb;
    CHECK(lg_gen_spec_kernels(g, s, &a, &na));
    CHECK(lg_gen_spec_kernels(g, s, &b, &nb));
    ck_assert_int_eq(na, nb);
    ck_assert_int_ge(na, 4);
    for (int i = 0; i < na; i++) {
        ck_assert_str_eq(a[i].name, b[i].name);
        ck_assert_str_eq(a[i].source, b[i].source);
        for (int j = 0; j < i; j++)
            ck_assert_str_ne(a[i].name, a[j].name);
        ck_assert_ptr_nonnull(strstr(a[i].source, "specs/llama-3.1-8b.lua: do not edit"));
        lg_kernel_src_free(&a[i]);
        lg_kernel_src_free(&b[i]);
    }
    free(a);
    free(b);
    lg_gen_free(g);
    lg_spec_free(s);
}
END_TEST

/* ---- compilation ---- */

START_TEST(spec_kernels_compile)
{
    static const int archs[] = {80, 89, 90};
    ck_assert_ptr_nonnull(gen_specs[_i]);
    struct lg_spec *s = gen_load_ok(gen_specs[_i]);
    lg_gen_t *g;
    CHECK(lg_gen_init(&g));
    struct lg_kernel_src *ks;
    int n;
    CHECK(lg_gen_spec_kernels(g, s, &ks, &n));
    for (int i = 0; i < n; i++) {
        for (int a = 0; a < 3; a++)
            compile_ok(&ks[i], archs[a]);
        lg_kernel_src_free(&ks[i]);
    }
    free(ks);
    lg_gen_free(g);
    lg_spec_free(s);
}
END_TEST

/* The switch and tile fields of a configuration (every field of lg_kernel_fields but rank), in one order, for
 * one-at-a-time comparisons. */
#define NSW_MAX 32
static int nsw(void)
{
    int n;
    lg_kernel_fields(&n);
    return n - 1;
}

static void switches(const struct lg_kernel_cfg *c, int v[NSW_MAX])
{
    int n, k = 0;
    const struct lg_kernel_field *f = lg_kernel_fields(&n);
    for (int i = 0; i < n; i++)
        if (strcmp(f[i].name, "rank"))
            v[k++] = lg_kernel_cfg_get(c, &f[i]);
    ck_assert_int_eq(k, nsw());
}

static int n_differ(const struct lg_kernel_cfg *a, const struct lg_kernel_cfg *b)
{
    int va[NSW_MAX], vb[NSW_MAX], n = 0;
    switches(a, va);
    switches(b, vb);
    for (int i = 0; i < nsw(); i++)
        n += va[i] != vb[i];
    return n;
}

/* Whether op takes a rank: the generator lists rank among its fields. */
static int ranked(lg_gen_t *g, enum lg_kernel_op op)
{
    struct lg_kernel_src k = emit(g, (struct lg_kernel_cfg){.op = op, .dtype = LG_BF16, .rank = 16});
    int n;
    const struct lg_kernel_field *f = lg_kernel_fields(&n);
    int r = 0;
    for (int i = 0; i < n; i++)
        if (!strcmp(f[i].name, "rank"))
            r = k.fields >> i & 1;
    lg_kernel_src_free(&k);
    return r;
}

/* The name must spell out every switch and tile value of the configuration. */
static void check_name(const struct lg_kernel_src *k)
{
    const struct lg_kernel_cfg *c = &k->cfg;
    char tag[64] = "";
    switch (c->op) {
    case LG_OP_DOWN:
        snprintf(tag, sizeof tag, "_w%dx%dm%du%db%d%s", c->wm, c->wk, c->mt, c->u, c->minb,
                 c->drop ? "_drop" : "");
        break;
    case LG_OP_DY: snprintf(tag, sizeof tag, "_c%ds%db%d", c->nct, c->st, c->minb); break;
    case LG_OP_DA:
        snprintf(tag, sizeof tag, "_%s_b%d%s", c->fuse ? "fuse" : "nofuse", c->minb, c->drop ? "_drop" : "");
        break;
    case LG_OP_REDUCE: snprintf(tag, sizeof tag, "_%s", c->out_half ? "half" : "f32"); break;
    case LG_OP_MLORA_DOWN:
        snprintf(tag, sizeof tag, "_n%dw%dx%dm%du%db%d%s", c->nmod, c->wm, c->wk, c->mt, c->u, c->minb,
                 c->drop ? "_drop" : "");
        break;
    case LG_OP_MLORA_DY: snprintf(tag, sizeof tag, "_c%ds%db%d", c->nct, c->st, c->minb); break;
    case LG_OP_MLORA_DA:
        snprintf(tag, sizeof tag, "_n%d_%s_b%d%s", c->nmod, c->fuse ? "fuse" : "nofuse", c->minb,
                 c->drop ? "_drop" : "");
        break;
    case LG_OP_MLORA_EXPAND: snprintf(tag, sizeof tag, "_c%d", c->nct); break;
    case LG_OP_MLORA_REDUCE: snprintf(tag, sizeof tag, "_%s", c->out_half ? "half" : "f32"); break;
    case LG_OP_NORM_FWD:
    case LG_OP_NORM_BWD: snprintf(tag, sizeof tag, "_v%d", c->vpt); break;
    case LG_OP_NORM_LORA_FWD:
        snprintf(tag, sizeof tag, "_r%d_n%dw%d%s", c->rank, c->nlora, c->rank <= 64 ? 8 : 4, c->drop ? "_drop" : "");
        break;
    case LG_OP_NORM_LORA_BWD: snprintf(tag, sizeof tag, "_r%d_n%d%s", c->rank, c->nlora, c->drop ? "_drop" : ""); break;
    case LG_OP_SWIGLU_LORA_FWD:
        snprintf(tag, sizeof tag, "_r%d_w%d%s", c->rank, c->rank <= 64 ? 8 : 4, c->drop ? "_drop" : "");
        break;
    case LG_OP_ATTN_FWD:
    case LG_OP_ATTN_BWD_DQ:
        snprintf(tag, sizeof tag, "_d%d_m%dn%dw%ds%d", c->hd, c->bm, c->bn, c->nw, c->st);
        break;
    case LG_OP_ATTN_BWD_DKV:
        snprintf(tag, sizeof tag, "_d%d_m%dn%dw%ds%d_%s", c->hd, c->bm, 16 * c->nw, c->nw, c->st,
                 c->atomic ? "atomic" : "det");
        break;
    case LG_OP_ATTN_BWD_PRE:
    case LG_OP_ATTN_DQ_CVT: snprintf(tag, sizeof tag, "_d%d", c->hd); break;
    default: { /* peft_*: no variants, the name is op and dtype */
        char want[LG_NAME_MAX];
        snprintf(want, sizeof want, "lg_%s_%s", lg_kernel_op_name(c->op), lg_dtype_name(c->dtype));
        ck_assert_str_eq(k->name, want);
        break;
    }
    }
    ck_assert_msg(strstr(k->name, tag) != NULL, "%s does not name its tiles (%s)", k->name, tag);
    ck_assert_ptr_nonnull(strstr(k->name, lg_dtype_name(c->dtype)));
    if (c->op == LG_OP_DOWN || c->op == LG_OP_DY || c->op == LG_OP_DA || c->op == LG_OP_MLORA_DOWN ||
        c->op == LG_OP_MLORA_DY || c->op == LG_OP_MLORA_DA || c->op == LG_OP_MLORA_EXPAND) {
        char r[16];
        snprintf(r, sizeof r, "_r%d_", c->rank);
        ck_assert_msg(strstr(k->name, r) != NULL, "%s does not name rank %d", k->name, c->rank);
    }
}

static int value_of(const struct lg_kernel_cfg *c, int s)
{
    int v[NSW_MAX];
    switches(c, v);
    return v[s];
}

/* The index of a configuration among cs[0..n) with value v for switch s, preferring the one closest to def;
 * -1 when none has it. */
static int closest_with(const struct lg_kernel_cfg *cs, int n, int s, int v, const struct lg_kernel_cfg *def)
{
    int best = -1;
    for (int j = 0; j < n; j++)
        if (value_of(&cs[j], s) == v && (best < 0 || n_differ(&cs[j], def) < n_differ(&cs[best], def)))
            best = j;
    return best;
}

/* The covering subset of (op, dtype, rank): the default, every configuration that differs from it in exactly
 * one switch, and, for a value that no single change reaches because the change alone would be invalid
 * (wm=8 beside a default wk that makes too many warps), the valid configuration closest to the default that
 * has it. Every value any valid configuration uses is compiled, at a fraction of the full product. */
static int covering_subset(lg_gen_t *g, enum lg_kernel_op op, enum lg_dtype dt, int rank,
                           struct lg_kernel_cfg *def, struct lg_kernel_cfg **out)
{
    struct lg_kernel_src d = emit(g, (struct lg_kernel_cfg){.op = op, .dtype = dt, .rank = rank});
    *def = d.cfg;
    lg_kernel_src_free(&d);
    struct lg_kernel_cfg *all, *sub;
    int n, m = 0;
    CHECK(lg_gen_variants(g, op, dt, rank, &all, &n));
    ck_assert_int_gt(n, 0);
    sub = calloc((size_t)n, sizeof *sub);
    for (int i = 0; i < n; i++)
        if (n_differ(&all[i], def) <= 1)
            sub[m++] = all[i];
    for (int s = 0; s < nsw(); s++)
        for (int i = 0; i < n; i++)
            if (closest_with(sub, m, s, value_of(&all[i], s), def) < 0)
                sub[m++] = all[closest_with(all, n, s, value_of(&all[i], s), def)];
    free(all);
    *out = sub;
    return m;
}

enum { NRANKS = 3, NDTYPES = 2 };
static const int ranks[NRANKS] = {8, 16, 64};
static const enum lg_dtype dtypes[NDTYPES] = {LG_BF16, LG_FP16};

START_TEST(every_switch_compiles)
{
    enum lg_kernel_op op = (enum lg_kernel_op)(_i / (NDTYPES * NRANKS));
    enum lg_dtype dt = dtypes[_i / NRANKS % NDTYPES];
    int rank = ranks[_i % NRANKS];
    lg_gen_t *g;
    CHECK(lg_gen_init(&g));
    if (!ranked(g, op) && rank != ranks[0]) {
        lg_gen_free(g);
        return; /* rankless: the first rank covers it */
    }
    struct lg_kernel_cfg def, *cfgs;
    int n = covering_subset(g, op, dt, rank, &def, &cfgs), saw_default = 0;
    for (int i = 0; i < n; i++) {
        struct lg_kernel_src k = emit(g, cfgs[i]);
        ck_assert_int_eq(n_differ(&k.cfg, &cfgs[i]), 0);
        check_name(&k);
        compile_ok(&k, 90);
        if (n_differ(&cfgs[i], &def) == 0) {
            compile_ok(&k, 80);
            saw_default = 1;
        }
        lg_kernel_src_free(&k);
    }
    ck_assert_msg(saw_default, "the default %s config is not among its variants", lg_kernel_op_name(op));
    free(cfgs);
    lg_gen_free(g);
}
END_TEST

/* Every op's default configuration, both dtypes, for sm_89: with every_switch_compiles (every variant for
 * sm_90, the default for sm_80) each op of each family compiles for all three target archs, including the
 * ops no spec plans (the peft family). */
START_TEST(every_op_compiles_for_sm89)
{
    enum lg_kernel_op op = (enum lg_kernel_op)(_i / NDTYPES);
    lg_gen_t *g;
    CHECK(lg_gen_init(&g));
    struct lg_kernel_src k = emit(g, (struct lg_kernel_cfg){.op = op, .dtype = dtypes[_i % NDTYPES], .rank = 16});
    check_name(&k);
    compile_ok(&k, 89);
    lg_kernel_src_free(&k);
    lg_gen_free(g);
}
END_TEST

/* For every op, dtype and rank, the covering subset reaches every value of every switch that some valid
 * configuration uses, and it is much smaller than the full product. */
START_TEST(covering_subset_reaches_every_value)
{
    lg_gen_t *g;
    CHECK(lg_gen_init(&g));
    for (int c = 0; c < LG_OP_COUNT * NDTYPES * NRANKS; c++) {
        enum lg_kernel_op op = (enum lg_kernel_op)(c / (NDTYPES * NRANKS));
        enum lg_dtype dt = dtypes[c / NRANKS % NDTYPES];
        struct lg_kernel_cfg def, *sub, *every;
        int nsub = covering_subset(g, op, dt, ranks[c % NRANKS], &def, &sub), nevery;
        CHECK(lg_gen_variants(g, op, dt, ranks[c % NRANKS], &every, &nevery));
        for (int i = 0; i < nevery; i++)
            for (int s = 0; s < nsw(); s++)
                ck_assert_msg(closest_with(sub, nsub, s, value_of(&every[i], s), &def) >= 0,
                              "%s r%d: switch %d value %d is not covered", lg_kernel_op_name(op),
                              ranks[c % NRANKS], s, value_of(&every[i], s));
        ck_assert_int_le(nsub, nevery);
        if (op == LG_OP_DOWN)
            ck_assert_int_lt(4 * nsub, nevery);
        free(sub);
        free(every);
    }
    lg_gen_free(g);
}
END_TEST

/* A syntax error planted on line 46 of a copy of templates/lora/lora_dy.cuh must be reported on that line. */
START_TEST(template_error_points_into_templates)
{
    char *root = lg_test_tmpdir("lg_gen_test"), cmd[512];
    snprintf(cmd, sizeof cmd, "cp -R generator templates '%s'/", root);
    ck_assert_int_eq(system(cmd), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/templates/lora/lora_dy.cuh", root);
    char *text = lg_test_slurp(path, NULL);
    const int bad_line = 46;
    char *p = text;
    for (int l = 1; l < bad_line && p; l++)
        p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL;
    ck_assert_ptr_nonnull(p);
    ck_assert_msg(p > text + 2 && p[-2] == '}', "line %d of lora_dy.cuh does not follow a closing brace", bad_line);
    FILE *f = fopen(path, "wb");
    fwrite(text, 1, (size_t)(p - text), f);
    fputs("int lg_planted_error = ;\n", f);
    fputs(p, f);
    fclose(f);
    free(text);

    setenv("LORAGEN_SOURCE_DIR", root, 1);
    lg_gen_t *g;
    CHECK(lg_gen_init(&g));
    struct lg_kernel_src k = emit(g, (struct lg_kernel_cfg){.op = LG_OP_DY, .dtype = LG_BF16, .rank = 16});
    ck_assert_ptr_nonnull(strstr(k.source, "lg_planted_error"));
    void *cubin = NULL;
    size_t n;
    ck_assert_int_eq(lg_nvrtc_compile(k.source, k.name, 90, &cubin, &n, NULL), LG_ERR_NVRTC);
    char where[64];
    snprintf(where, sizeof where, "templates/lora/lora_dy.cuh(%d)", bad_line);
    ck_assert_msg(strstr(lg_last_error(), where) != NULL, "want '%s' in the NVRTC log:\n%s", where, lg_last_error());
    lg_kernel_src_free(&k);
    lg_gen_free(g);
    lg_test_rm_rf(root);
    free(root);
}
END_TEST

int main(void)
{
    gen_find_specs();
    Suite *s = suite_create("gen");
    TCase *tc = gen_tcase(s, "generator");
    tcase_add_test(tc, generator_is_deterministic);
    tcase_add_test(tc, names_follow_configs);
    tcase_add_test(tc, spec_kernels_are_deterministic);
    tcase_add_test(tc, covering_subset_reaches_every_value);
    tc = gen_tcase(s, "compile");
    tcase_add_test(tc, template_error_points_into_templates);
    tcase_add_loop_test(tc, spec_kernels_compile, 0, gen_nspecs > 0 ? gen_nspecs : 1);
    tcase_add_loop_test(tc, every_switch_compiles, 0, LG_OP_COUNT * NDTYPES * NRANKS);
    tcase_add_loop_test(tc, every_op_compiles_for_sm89, 0, LG_OP_COUNT * NDTYPES);
    int failed = lg_test_run(s, 0);
    gen_free_specs();
    return failed ? 1 : 0;
}
