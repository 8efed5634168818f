/* cmd_gen.c: `loragen gen SPEC`: writes the fused kernels a spec needs as DIR/<kernel>.cu plus a manifest,
 * and checks that each compiles with NVRTC for every target arch. Needs no GPU, so CI runs it.
 *
 * Output is deterministic (same spec and options, same bytes): the manifest holds no timings or dates, and
 * every file is written to a temp file and renamed into place, so a reader never sees half a kernel. */
#include "cli.h"
#include "lg_file.h"
#include "lg_gen.h"
#include "lg_jit.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GEN_VERSION "loragen 0.1.0"
#define MANIFEST_FORMAT 1

static const int supported_archs[] = {80, 86, 89, 90};
#define NSUPPORTED ((int)(sizeof supported_archs / sizeof supported_archs[0]))

struct gen_opts {
    const char *spec_path;
    const char *out_dir; /* NULL: out/<spec name> */
    int archs[LG_MAX_ARCHS];
    int narchs; /* 0: the spec's archs */
    int compile;
    int quiet;
};

struct gen_tally {
    int written, ok, failed;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loragen gen SPEC [-o DIR] [--arch sm_XX]... [--no-compile] [--quiet]\n"
            "\n"
            "Writes the fused LoRA kernels SPEC needs as DIR/<kernel>.cu and DIR/manifest.json, and checks\n"
            "that each compiles with NVRTC (no GPU needed).\n"
            "\n"
            "  -o, --output DIR  output directory (default: out/<spec name>)\n"
            "  --arch sm_XX      compile for this arch instead of the spec's archs; repeatable\n"
            "                    (sm_80, sm_86, sm_89, sm_90)\n"
            "  --no-compile      write the sources and manifest only\n"
            "  -q, --quiet       no per-kernel progress lines\n"
            "  -h, --help        this text\n"
            "\n"
            "Exit status: 0 all kernels written and compiled, 1 a spec error or a failed kernel, 2 bad usage.\n");
}

/* ---- arguments ---- */

/* "sm_80" -> 80; 0 when not an arch we target. */
static int parse_arch(const char *s)
{
    if (strncmp(s, "sm_", 3) != 0)
        return 0;
    char *end;
    long v = strtol(s + 3, &end, 10);
    if (*end)
        return 0;
    for (int i = 0; i < NSUPPORTED; i++)
        if (v == supported_archs[i])
            return (int)v;
    return 0;
}

static int add_arch(struct gen_opts *o, int arch)
{
    for (int i = 0; i < o->narchs; i++)
        if (o->archs[i] == arch)
            return 0;
    if (o->narchs == LG_MAX_ARCHS)
        return -1;
    o->archs[o->narchs++] = arch;
    return 0;
}

/* Takes "sm_80" or "sm_80,sm_90". Every item must be an arch: an empty one ("--arch ,", "sm_80,") is an error,
 * not a silent fall back to the spec's archs. Returns 0, or prints why and returns -1. */
static int parse_arch_list(struct gen_opts *o, const char *list)
{
    for (const char *p = list;; p++) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char tok[32];
        if (n == 0) {
            lg_cli_error("gen", "empty arch in --arch '%s' (expected sm_80, sm_86, sm_89 or sm_90, comma-separated)",
                         list);
            return -1;
        }
        if (n >= sizeof tok) {
            lg_cli_error("gen", "unsupported arch '%.16s...' (expected sm_80, sm_86, sm_89 or sm_90)", p);
            return -1;
        }
        memcpy(tok, p, n);
        tok[n] = '\0';
        int arch = parse_arch(tok);
        if (!arch || add_arch(o, arch) < 0) {
            lg_cli_error("gen", "unsupported arch '%s' (expected sm_80, sm_86, sm_89 or sm_90)", tok);
            return -1;
        }
        if (!end)
            return 0;
        p = end;
    }
}

/* An option's value: "--opt=VALUE" or the next argument. NULL (after a message) when it is missing. */
static const char *opt_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    if (!strncmp(argv[*i], name, n) && argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (*i + 1 < argc)
        return argv[++*i];
    lg_cli_error("gen", "%s needs a value", name);
    return NULL;
}

static int is_opt(const char *arg, const char *name)
{
    size_t n = strlen(name);
    return !strncmp(arg, name, n) && (arg[n] == '\0' || arg[n] == '=');
}

static int usage_error(void)
{
    fputc('\n', stderr);
    usage(stderr);
    return 2;
}

/* Returns -1 to go on, else the exit status (0 after --help, 2 on bad usage). */
static int parse_args(int argc, char **argv, struct gen_opts *o)
{
    memset(o, 0, sizeof *o);
    o->compile = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-o") || is_opt(a, "--output")) {
            if (!(v = opt_value(argc, argv, &i, "--output")))
                return usage_error();
            o->out_dir = v;
        } else if (is_opt(a, "--arch")) {
            if (!(v = opt_value(argc, argv, &i, "--arch")) || parse_arch_list(o, v) < 0)
                return usage_error();
        } else if (!strcmp(a, "--no-compile")) {
            o->compile = 0;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            o->quiet = 1;
        } else if (a[0] == '-' && a[1]) {
            lg_cli_error("gen", "unknown option '%s'", a);
            return usage_error();
        } else if (o->spec_path) {
            lg_cli_error("gen", "one SPEC only (got '%s' and '%s')", o->spec_path, a);
            return usage_error();
        } else {
            o->spec_path = a;
        }
    }
    if (!o->spec_path) {
        lg_cli_error("gen", "missing SPEC");
        return usage_error();
    }
    return -1;
}

/* ---- manifest ---- */

/* The configuration fields the op takes (struct lg_kernel_cfg, defaults filled in), as the generator lists
 * them for the kernel (lg_kernel_src.fields). */
static json_t *cfg_json(const struct lg_kernel_src *k)
{
    json_t *j = json_object();
    json_object_set_new(j, "dtype", json_string(lg_dtype_name(k->cfg.dtype)));
    int n;
    const struct lg_kernel_field *f = lg_kernel_fields(&n);
    for (int i = 0; i < n; i++)
        if (k->fields >> i & 1)
            json_object_set_new(j, f[i].name, json_integer(lg_kernel_cfg_get(&k->cfg, &f[i])));
    return j;
}

static json_t *arch_names(const int *archs, int n)
{
    json_t *a = json_array();
    char buf[16];
    for (int i = 0; i < n; i++) {
        snprintf(buf, sizeof buf, "sm_%d", archs[i]);
        json_array_append_new(a, json_string(buf));
    }
    return a;
}

static json_t *linears_json(const struct lg_spec *s)
{
    json_t *a = json_array();
    for (int i = 0; i < s->nlinears; i++) {
        const struct lg_linear *l = &s->linears[i];
        json_array_append_new(a, json_pack("{s:s, s:I, s:I, s:b}", "name", l->name, "in_features",
                                           (json_int_t)l->in_features, "out_features",
                                           (json_int_t)l->out_features, "bias", l->bias));
    }
    return a;
}

/* A file name as a JSON string. The spec's own strings are UTF-8 (the schema checks), but a path on the
 * command line may be any bytes, and json_string refuses invalid UTF-8 by returning NULL, which would drop the
 * field silently: invalid bytes become U+FFFD. */
static json_t *path_json(const char *path)
{
    json_t *j = json_string(path);
    if (j)
        return j;
    size_t n = strlen(path);
    char *buf = malloc(3 * n + 1), *o = buf;
    if (!buf)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)path; *p;) {
        int len = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 : (*p & 0xf8) == 0xf0 ? 4 : 0;
        int ok = len > 0;
        for (int k = 1; ok && k < len; k++)
            ok = (p[k] & 0xc0) == 0x80;
        json_t *one = ok ? json_stringn((const char *)p, (size_t)len) : NULL; /* overlong forms, surrogates */
        if (one) {
            memcpy(o, p, (size_t)len);
            o += len;
            p += len;
            json_decref(one);
        } else {
            memcpy(o, "\xef\xbf\xbd", 3);
            o += 3;
            p++;
        }
    }
    *o = '\0';
    j = json_string(buf);
    free(buf);
    return j;
}

static json_t *manifest_new(const struct lg_spec *s, const struct gen_opts *o)
{
    json_t *m = json_object();
    json_object_set_new(m, "generator", json_string(GEN_VERSION));
    json_object_set_new(m, "format", json_integer(MANIFEST_FORMAT));
    json_object_set_new(m, "spec", json_pack("{s:o, s:s}", "path", path_json(o->spec_path), "name", s->name));
    json_object_set_new(m, "dtype", json_string(lg_dtype_name(s->dtype)));
    json_object_set_new(m, "rank", json_integer(s->rank));
    json_object_set_new(m, "alpha", json_real(s->alpha));
    json_object_set_new(m, "dropout", json_real(s->dropout));
    json_object_set_new(m, "archs", arch_names(o->archs, o->narchs));
    json_object_set_new(m, "compiled", json_boolean(o->compile));
    json_object_set_new(m, "linears", linears_json(s));
    json_object_set_new(m, "kernels", json_array());
    return m;
}

static json_t *kernel_json(const struct lg_kernel_src *k)
{
    char file[LG_NAME_MAX + 4], hash[48];
    snprintf(file, sizeof file, "%s.cu", k->name);
    snprintf(hash, sizeof hash, "murmur3-128:%s", k->hash);
    json_t *j = json_object();
    json_object_set_new(j, "name", json_string(k->name));
    json_object_set_new(j, "op", json_string(lg_kernel_op_name(k->cfg.op)));
    json_object_set_new(j, "file", json_string(file));
    json_object_set_new(j, "threads", json_integer(k->threads));
    json_object_set_new(j, "config", cfg_json(k));
    json_object_set_new(j, "source_hash", json_string(hash));
    json_object_set_new(j, "source_bytes", json_integer((json_int_t)strlen(k->source)));
    json_object_set_new(j, "compile", json_object()); /* per arch, filled by compile_all */
    return j;
}

/* Writes dir/name through lg_file_write_atomic. Returns 0 or -1 after printing why. */
static int write_file(const char *dir, const char *name, const char *data, size_t n)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) {
        lg_cli_error("gen", "%s/%s: path too long", dir, name);
        return -1;
    }
    if (lg_file_write_atomic(path, data, n) != LG_OK) {
        lg_cli_error("gen", "%s", lg_last_error());
        return -1;
    }
    return 0;
}

static int write_manifest(const char *dir, json_t *m)
{
    char *text = json_dumps(m, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
    if (!text) {
        lg_cli_error("gen", "cannot serialise the manifest");
        return -1;
    }
    size_t n = strlen(text);
    char *withnl = realloc(text, n + 2);
    if (withnl) {
        withnl[n] = '\n';
        withnl[n + 1] = '\0';
        text = withnl;
        n++;
    }
    int rc = write_file(dir, "manifest.json", text, n);
    free(text);
    return rc;
}

/* ---- compile ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Compiles one kernel for one arch; records the result under kj.compile["sm_XX"]. Returns 0 when it built. */
static int compile_one(const struct lg_kernel_src *k, int arch, json_t *kj, const char *progress,
                       int quiet)
{
    char file[LG_NAME_MAX + 4], archname[16], key[33];
    snprintf(file, sizeof file, "%s.cu", k->name);
    snprintf(archname, sizeof archname, "sm_%d", arch);
    lg_jit_cache_key(k->source, arch, key);
    void *cubin = NULL;
    size_t size = 0;
    double t0 = now_s();
    enum lg_status st = lg_nvrtc_compile(k->source, file, arch, &cubin, &size, NULL);
    double dt = now_s() - t0;
    free(cubin);
    json_t *r = json_object();
    json_object_set_new(r, "ok", json_boolean(st == LG_OK));
    json_object_set_new(r, "cache_key", json_string(key));
    if (st == LG_OK)
        json_object_set_new(r, "cubin_bytes", json_integer((json_int_t)size));
    else
        json_object_set_new(r, "error", json_string(lg_last_error()));
    json_object_set_new(json_object_get(kj, "compile"), archname, r);
    if (st != LG_OK) {
        fflush(stdout); /* keep the progress lines and the failure in order on a terminal */
        fprintf(stderr, "%s %s %s FAILED (%s) %.2f s\n%s\n", progress, k->name, archname, lg_status_str(st),
                dt, lg_last_error());
        return -1;
    }
    if (!quiet)
        printf("%s %s %s ok (%zu KiB) %.2f s\n", progress, k->name, archname, (size + 1023) / 1024, dt);
    fflush(stdout);
    return 0;
}

static void compile_all(const struct lg_kernel_src *ks, int n, json_t *kernels, const struct gen_opts *o,
                        struct gen_tally *t)
{
    for (int i = 0; i < n; i++) {
        char progress[32];
        snprintf(progress, sizeof progress, "[%d/%d]", i + 1, n);
        for (int a = 0; a < o->narchs; a++) {
            if (compile_one(&ks[i], o->archs[a], json_array_get(kernels, (size_t)i), progress, o->quiet) == 0)
                t->ok++;
            else
                t->failed++;
        }
    }
}

/* ---- the verb ---- */

static int write_sources(const char *dir, const struct lg_kernel_src *ks, int n, json_t *kernels,
                         struct gen_tally *t)
{
    for (int i = 0; i < n; i++) {
        char file[LG_NAME_MAX + 4];
        snprintf(file, sizeof file, "%s.cu", ks[i].name);
        if (write_file(dir, file, ks[i].source, strlen(ks[i].source)) != 0)
            return -1;
        json_array_append_new(kernels, kernel_json(&ks[i]));
        t->written++;
    }
    return 0;
}

static int generate(const struct lg_spec *spec, const struct gen_opts *o, const char *dir)
{
    lg_gen_t *gen = NULL;
    struct lg_kernel_src *ks = NULL;
    int n = 0;
    if (lg_gen_init(&gen) != LG_OK || lg_gen_spec_kernels(gen, spec, &ks, &n) != LG_OK) {
        fprintf(stderr, "%s\n", lg_last_error());
        lg_gen_free(gen);
        return 1;
    }
    lg_gen_free(gen);
    struct gen_tally t = {0};
    json_t *m = manifest_new(spec, o);
    json_t *kernels = json_object_get(m, "kernels");
    int rc = 1;
    if (lg_dir_create(dir) != LG_OK)
        lg_cli_error("gen", "%s", lg_last_error());
    else if (write_sources(dir, ks, n, kernels, &t) == 0) {
        if (o->compile)
            compile_all(ks, n, kernels, o, &t);
        if (write_manifest(dir, m) == 0)
            rc = t.failed ? 1 : 0;
    }
    if (o->compile)
        printf("loragen gen: %d kernels written, %d compiled ok, %d failed (%d arch%s) -> %s\n", t.written,
               t.ok, t.failed, o->narchs, o->narchs == 1 ? "" : "s", dir);
    else
        printf("loragen gen: %d kernels written, not compiled -> %s\n", t.written, dir);
    json_decref(m);
    for (int i = 0; i < n; i++)
        lg_kernel_src_free(&ks[i]);
    free(ks);
    return rc;
}

int lg_cmd_gen(int argc, char **argv)
{
    struct gen_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0)
        return rc;
    struct lg_spec *spec;
    if (lg_spec_load(o.spec_path, &spec) != LG_OK) {
        fprintf(stderr, "%s\n", lg_last_error());
        return 1;
    }
    if (o.narchs == 0) {
        memcpy(o.archs, spec->archs, sizeof o.archs);
        o.narchs = spec->narchs;
    }
    char dir[4096];
    if (o.out_dir)
        snprintf(dir, sizeof dir, "%s", o.out_dir);
    else
        snprintf(dir, sizeof dir, "out/%s", spec->name);
    rc = generate(spec, &o, dir);
    lg_spec_free(spec);
    return rc;
}
