/* merge.c: `loragen merge MODEL ADAPTER OUT`: a Hugging Face model directory with the adapter folded in,
 * W' = W + (alpha / r)·B·A for every adapted projection, in the tensor's own dtype (computed in double,
 * rounded once). Every other tensor is copied byte for byte, the output is sharded like the input (the
 * largest input shard's size is the limit), and the other files of the model directory (config.json,
 * tokenizer files, generation_config.json) are copied. The merged tensors are computed while they are
 * written, a chunk at a time, so a model of many GB never sits in memory. */
#include "lg_half.h"
#include "train_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct merged {
    const struct lg_st_tensor *w;
    const float *a, *b; /* A [r, in], B [out, r] */
    int r;
    double scale;
};

static double elem_f64(enum lg_st_dtype t, const void *data, int64_t i)
{
    const unsigned char *p = (const unsigned char *)data;
    if (t == LG_ST_F32) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return t == LG_ST_BF16 ? lg_bf16_to_f32(h) : lg_f16_to_f32(h);
}

/* Bytes [offset, offset + n) of W' (element aligned: the writer asks for whole elements). */
static enum lg_status merged_read(void *user, uint64_t offset, void *buf, size_t n)
{
    const struct merged *m = user;
    size_t es = lg_st_dtype_size(m->w->dtype);
    int64_t in = m->w->shape[1], first = (int64_t)(offset / es), count = (int64_t)(n / es);
    unsigned char *out = buf;
    for (int64_t e = first; e < first + count; e++) {
        int64_t o = e / in, k = e % in;
        double acc = 0;
        for (int j = 0; j < m->r; j++)
            acc += (double)m->b[o * m->r + j] * m->a[(int64_t)j * in + k];
        double v = elem_f64(m->w->dtype, m->w->data, e) + m->scale * acc;
        if (m->w->dtype == LG_ST_F32) {
            float f = (float)v;
            memcpy(out + (e - first) * 4, &f, 4);
        } else {
            uint16_t h = m->w->dtype == LG_ST_BF16 ? lg_f32_to_bf16((float)v) : lg_f32_to_f16((float)v);
            memcpy(out + (e - first) * 2, &h, 2);
        }
    }
    return LG_OK;
}

/* "model.layers.7.self_attn.q_proj.weight" -> layer 7, module q_proj; 0 when not a projection weight. */
static int parse_proj(const char *name, int *layer, int *mod)
{
    int l, len = 0;
    char sub[16], m[16];
    if (sscanf(name, "model.layers.%d.%15[a-z_].%15[a-z_].weight%n", &l, sub, m, &len) != 3 || name[len])
        return 0;
    int k = lg_peft_module_parse(m);
    if (k < 0)
        return 0;
    *layer = l;
    *mod = k;
    return 1;
}

static enum lg_status copy_file(const char *from, const char *to)
{
    char *data;
    size_t n;
    enum lg_status s = lg_file_read(from, LG_FILE_LIMIT_DATA, &data, &n);
    if (s == LG_OK)
        s = lg_file_write_atomic(to, data, n);
    free(data);
    return s;
}

/* Copies the model directory's files other than weights (config, tokenizer, generation config). */
static enum lg_status copy_side_files(const char *model, const char *out)
{
    DIR *d = opendir(model);
    if (!d)
        return lg_fail(LG_ERR_IO, "%s: cannot list: %s", model, strerror(errno));
    enum lg_status s = LG_OK;
    struct dirent *e;
    while (s == LG_OK && (e = readdir(d))) {
        const char *n = e->d_name;
        size_t len = strlen(n);
        if (n[0] == '.' || (len > 12 && !strcmp(n + len - 12, ".safetensors")) ||
            !strcmp(n, "model.safetensors.index.json"))
            continue;
        char from[2048], to[2048];
        struct stat st;
        snprintf(from, sizeof from, "%s/%s", model, n);
        snprintf(to, sizeof to, "%s/%s", out, n);
        if (stat(from, &st) == 0 && S_ISREG(st.st_mode))
            s = copy_file(from, to);
    }
    closedir(d);
    return s;
}

/* The largest input file's tensor bytes: the output's shard limit, so it is sharded like the input. */
static uint64_t largest_shard(const lg_st_t *st)
{
    size_t n = lg_st_count(st), nf = 0;
    const char **file = calloc(n + 1, sizeof *file);
    uint64_t *sum = calloc(n + 1, sizeof *sum), best = 0;
    for (size_t i = 0; file && sum && i < n; i++) {
        struct lg_st_tensor t;
        lg_st_tensor(st, i, &t);
        size_t f = 0;
        while (f < nf && strcmp(file[f], t.file))
            f++;
        if (f == nf)
            file[nf++] = t.file;
        sum[f] += t.nbytes;
        if (sum[f] > best)
            best = sum[f];
    }
    free(file);
    free(sum);
    return best;
}

static enum lg_status load_adapter(const char *dir, struct lg_peft_config *pc, lg_st_t **st)
{
    enum lg_status s = lg_peft_config_read(dir, pc);
    if (s != LG_OK)
        return s;
    char path[2048];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    return lg_st_open(path, st);
}

enum lg_status lg_merge_run(const char *model_dir, const char *adapter_dir, const char *out_dir)
{
    if (!model_dir || !adapter_dir || !out_dir)
        return lg_fail(LG_ERR_INVALID, "lg_merge_run: null argument");
    struct lg_model_config mc;
    struct lg_peft_config pc;
    lg_st_t *base = NULL, *ad = NULL;
    enum lg_status s = lg_model_config_read(model_dir, &mc);
    if (s == LG_OK)
        s = lg_st_open_model(model_dir, &base);
    if (s == LG_OK)
        s = lg_model_config_check_weights(&mc, base);
    if (s == LG_OK)
        s = load_adapter(adapter_dir, &pc, &ad);
    if (s == LG_OK)
        s = lg_dir_create(out_dir);
    size_t n = s == LG_OK ? lg_st_count(base) : 0;
    struct lg_st_write_tensor *w = calloc(n + 1, sizeof *w);
    struct lg_st_tensor *src = calloc(n + 1, sizeof *src);
    struct merged *mg = calloc(n + 1, sizeof *mg);
    float **bufs = calloc(2 * n + 2, sizeof *bufs);
    if (s == LG_OK && (!w || !src || !mg || !bufs))
        s = lg_fail(LG_ERR_OOM, "merge: out of memory");
    size_t nmerged = 0;
    for (size_t i = 0; s == LG_OK && i < n; i++) {
        lg_st_tensor(base, i, &src[i]);
        w[i] = (struct lg_st_write_tensor){.name = src[i].name, .dtype = src[i].dtype, .ndim = src[i].ndim,
                                           .data = src[i].data};
        memcpy(w[i].shape, src[i].shape, sizeof w[i].shape);
        int layer, mod;
        if (!parse_proj(src[i].name, &layer, &mod) || !(pc.target_modules & (1u << mod)))
            continue;
        int64_t out = src[i].shape[0], in = src[i].shape[1];
        char an[LG_PEFT_NAME_MAX], bn[LG_PEFT_NAME_MAX];
        int64_t sa[2] = {pc.r, in}, sb[2] = {out, pc.r};
        lg_peft_tensor_name(layer, lg_peft_module_name((enum lg_peft_module)mod), 'A', an, sizeof an);
        lg_peft_tensor_name(layer, lg_peft_module_name((enum lg_peft_module)mod), 'B', bn, sizeof bn);
        bufs[2 * i] = malloc((size_t)(pc.r * in) * sizeof(float));
        bufs[2 * i + 1] = malloc((size_t)(pc.r * out) * sizeof(float));
        if (!bufs[2 * i] || !bufs[2 * i + 1])
            s = lg_fail(LG_ERR_OOM, "merge: out of memory");
        if (s == LG_OK && (s = lg_st_read_f32(ad, an, 2, sa, bufs[2 * i])) == LG_OK)
            s = lg_st_read_f32(ad, bn, 2, sb, bufs[2 * i + 1]);
        if (s == LG_OK && src[i].dtype != LG_ST_F32 && src[i].dtype != LG_ST_BF16 && src[i].dtype != LG_ST_F16)
            s = lg_fail(LG_ERR_UNSUPPORTED, "%s: %s is %s; merge handles F32, BF16 and F16", src[i].file,
                        src[i].name, lg_st_dtype_name(src[i].dtype));
        mg[i] = (struct merged){&src[i], bufs[2 * i], bufs[2 * i + 1], pc.r, pc.lora_alpha / pc.r};
        w[i].data = NULL;
        w[i].read = merged_read;
        w[i].user = &mg[i];
        nmerged++;
    }
    if (s == LG_OK && nmerged == 0)
        s = lg_fail(LG_ERR_INVALID, "%s: the adapter adapts none of %s's projections", adapter_dir, model_dir);
    if (s == LG_OK)
        s = lg_st_write_model(out_dir, w, n, lg_st_count(base) ? largest_shard(base) : 0, NULL);
    if (s == LG_OK)
        s = copy_side_files(model_dir, out_dir);
    for (size_t i = 0; bufs && i < 2 * n; i++)
        free(bufs[i]);
    free(bufs);
    free(mg);
    free(src);
    free(w);
    lg_st_close(ad);
    lg_st_close(base);
    return s;
}
