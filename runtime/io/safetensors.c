/* safetensors.c: reading .safetensors files and model directories (lg_hf.h). A weight file is untrusted input
 * that we memory-map and then index by the offsets it declares, so every number in the header is checked
 * before a pointer is formed from it: the header length against the file, each shape product in checked
 * 64-bit arithmetic, and the offsets must tile the data exactly (no overlap, no gap, nothing past the end), as
 * the Rust library requires. Sharded directories are merged into one name-sorted table. */
#include "lg_hf.h"
#include "lg_base.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct st_file {
    char *path;
    const uint8_t *map;
    size_t size;
    uint64_t data_off; /* 8 + header length */
    char **meta;       /* key, value, key, value ... */
    size_t nmeta;
};

struct st_entry {
    char *name;
    size_t file;
    enum lg_st_dtype dtype;
    int ndim;
    int64_t shape[LG_ST_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end;
};

struct lg_st {
    char *path;
    struct st_file *files;
    size_t nfiles;
    struct st_entry *t;
    size_t n, cap;
};

static int dtype_parse(const char *s)
{
    for (int i = 0; i < LG_ST_DTYPE_COUNT; i++)
        if (strcmp(s, lg_st_dtype_name((enum lg_st_dtype)i)) == 0)
            return i;
    return -1;
}

/* ---- the handle ---- */

void lg_st_close(lg_st_t *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->nfiles; i++) {
        struct st_file *f = &st->files[i];
        if (f->map)
            munmap((void *)f->map, f->size);
        for (size_t k = 0; k < f->nmeta; k++)
            free(f->meta[k]);
        free(f->meta);
        free(f->path);
    }
    for (size_t i = 0; i < st->n; i++)
        free(st->t[i].name);
    free(st->files);
    free(st->t);
    free(st->path);
    free(st);
}

static enum lg_status st_new(const char *path, lg_st_t **out)
{
    lg_st_t *st = calloc(1, sizeof *st);
    if (st)
        st->path = strdup(path);
    if (!st || !st->path) {
        lg_st_close(st);
        return lg_fail(LG_ERR_OOM, "%s: out of memory", path);
    }
    *out = st;
    return LG_OK;
}

static struct st_entry *entry_push(lg_st_t *st)
{
    if (st->n == st->cap) {
        size_t nc = st->cap ? st->cap * 2 : 64;
        struct st_entry *t = realloc(st->t, nc * sizeof *t);
        if (!t)
            return NULL;
        st->t = t;
        st->cap = nc;
    }
    memset(&st->t[st->n], 0, sizeof st->t[0]);
    return &st->t[st->n++];
}

/* ---- one file ---- */

static enum lg_status map_file(const char *path, struct st_file *f)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return lg_fail(LG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    enum lg_status s = LG_OK;
    if (fstat(fd, &sb) != 0)
        s = lg_fail(LG_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        s = lg_fail(LG_ERR_IO, "%s: not a regular file", path);
    else if (sb.st_size < 8)
        s = lg_fail(LG_ERR_IO, "%s: %lld bytes is too short for a safetensors file (8-byte header length)", path,
                    (long long)sb.st_size);
    if (s == LG_OK) {
        void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED)
            s = lg_fail(LG_ERR_IO, "%s: cannot mmap %lld bytes: %s", path, (long long)sb.st_size, strerror(errno));
        else {
            f->map = m;
            f->size = (size_t)sb.st_size;
        }
    }
    close(fd);
    return s;
}

/* Reads a JSON array of non-negative integers into v (at most max). */
static int int_array(json_t *a, int64_t *v, int max, int *n)
{
    if (!json_is_array(a) || json_array_size(a) > (size_t)max)
        return 0;
    *n = (int)json_array_size(a);
    for (int i = 0; i < *n; i++) {
        json_t *e = json_array_get(a, (size_t)i);
        if (!json_is_integer(e) || json_integer_value(e) < 0)
            return 0;
        v[i] = json_integer_value(e);
    }
    return 1;
}

static void fmt_shape(const int64_t *s, int n, char *buf, size_t cap)
{
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (k < cap)
        snprintf(buf + k, cap - k, "]");
}

/* One header entry: dtype, shape and data_offsets, each checked against the others and the data size. */
static enum lg_status parse_entry(const char *path, const char *name, json_t *v, uint64_t dsize,
                                  struct st_entry *e)
{
    if (!json_is_object(v))
        return lg_fail(LG_ERR_IO, "%s: tensor '%s': header entry is not an object", path, name);
    json_t *dt = json_object_get(v, "dtype");
    if (!json_is_string(dt))
        return lg_fail(LG_ERR_IO, "%s: tensor '%s': missing or non-string 'dtype'", path, name);
    int d = dtype_parse(json_string_value(dt));
    if (d < 0)
        return lg_fail(LG_ERR_IO, "%s: tensor '%s': unknown dtype '%s'", path, name, json_string_value(dt));
    e->dtype = (enum lg_st_dtype)d;
    if (!int_array(json_object_get(v, "shape"), e->shape, LG_ST_MAX_DIMS, &e->ndim))
        return lg_fail(LG_ERR_IO, "%s: tensor '%s': 'shape' must be an array of at most %d non-negative integers",
                       path, name, LG_ST_MAX_DIMS);
    uint64_t numel = 1, need;
    for (int i = 0; i < e->ndim; i++)
        if (__builtin_mul_overflow(numel, (uint64_t)e->shape[i], &numel) || numel > (uint64_t)INT64_MAX)
            return lg_fail(LG_ERR_IO, "%s: tensor '%s': shape product overflows 64 bits", path, name);
    if (__builtin_mul_overflow(numel, (uint64_t)lg_st_dtype_size((enum lg_st_dtype)d), &need))
        return lg_fail(LG_ERR_IO, "%s: tensor '%s': byte size overflows 64 bits", path, name);
    e->numel = (int64_t)numel;
    int64_t off[2];
    int no;
    if (!int_array(json_object_get(v, "data_offsets"), off, 2, &no) || no != 2)
        return lg_fail(LG_ERR_IO, "%s: tensor '%s': 'data_offsets' must be [begin, end] (non-negative integers)",
                       path, name);
    e->begin = (uint64_t)off[0];
    e->end = (uint64_t)off[1];
    if (e->begin > e->end)
        return lg_fail(LG_ERR_IO, "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", path, name,
                       (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end - e->begin != need) {
        char sh[256];
        fmt_shape(e->shape, e->ndim, sh, sizeof sh);
        return lg_fail(LG_ERR_IO, "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes, but shape %s of %s "
                       "needs %llu", path, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                       (unsigned long long)(e->end - e->begin), sh, lg_st_dtype_name((enum lg_st_dtype)d),
                       (unsigned long long)need);
    }
    if (e->end > dsize)
        return lg_fail(LG_ERR_IO, "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the data (%llu "
                       "bytes): the file is truncated", path, name, (unsigned long long)e->begin,
                       (unsigned long long)e->end, (unsigned long long)dsize);
    return LG_OK;
}

static enum lg_status parse_metadata(const char *path, json_t *m, struct st_file *f)
{
    if (!json_is_object(m))
        return lg_fail(LG_ERR_IO, "%s: '__metadata__' must be an object of strings", path);
    f->meta = calloc(json_object_size(m) * 2 + 1, sizeof *f->meta);
    if (!f->meta)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", path);
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v) {
        if (!json_is_string(v))
            return lg_fail(LG_ERR_IO, "%s: __metadata__ '%s' is not a string", path, k);
        f->meta[f->nmeta] = strdup(k);
        f->meta[f->nmeta + 1] = strdup(json_string_value(v));
        f->nmeta += 2;
        if (!f->meta[f->nmeta - 2] || !f->meta[f->nmeta - 1])
            return lg_fail(LG_ERR_OOM, "%s: out of memory", path);
    }
    return LG_OK;
}

static int by_offset(const void *a, const void *b)
{
    const struct st_entry *x = *(const struct st_entry *const *)a, *y = *(const struct st_entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* The entries t[0..n) of one file must cover [0, dsize) exactly, in offset order. */
static enum lg_status check_tiling(const char *path, struct st_entry *t, size_t n, uint64_t dsize)
{
    struct st_entry **o = malloc((n ? n : 1) * sizeof *o);
    if (!o)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++)
        o[i] = &t[i];
    qsort(o, n, sizeof *o, by_offset);
    enum lg_status s = LG_OK;
    uint64_t at = 0;
    for (size_t i = 0; i < n && s == LG_OK; i++) {
        if (o[i]->begin < at)
            s = lg_fail(LG_ERR_IO, "%s: tensor '%s' (data_offsets [%llu, %llu]) overlaps tensor '%s' (data_offsets "
                        "[%llu, %llu])", path, o[i]->name, (unsigned long long)o[i]->begin,
                        (unsigned long long)o[i]->end, o[i - 1]->name, (unsigned long long)o[i - 1]->begin,
                        (unsigned long long)o[i - 1]->end);
        else if (o[i]->begin > at)
            s = lg_fail(LG_ERR_IO, "%s: %llu unused bytes before tensor '%s' (data_offsets [%llu, %llu]): offsets "
                        "must be contiguous", path, (unsigned long long)(o[i]->begin - at), o[i]->name,
                        (unsigned long long)o[i]->begin, (unsigned long long)o[i]->end);
        at = o[i]->end;
    }
    if (s == LG_OK && at != dsize)
        s = lg_fail(LG_ERR_IO, "%s: %llu bytes after the last tensor's data (the data section is %llu bytes, the "
                    "tensors cover %llu)", path, (unsigned long long)(dsize - at), (unsigned long long)dsize,
                    (unsigned long long)at);
    free(o);
    return s;
}

/* Maps the file at path as st->files[st->nfiles] and appends its tensors to st->t. */
static enum lg_status load_file(lg_st_t *st, const char *path)
{
    struct st_file *fs = realloc(st->files, (st->nfiles + 1) * sizeof *fs);
    if (!fs)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", path);
    st->files = fs;
    struct st_file *f = &fs[st->nfiles];
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    size_t fi = st->nfiles++;
    if (!f->path)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", path);
    enum lg_status s = map_file(path, f);
    if (s != LG_OK)
        return s;
    uint64_t hn = 0;
    for (int i = 7; i >= 0; i--)
        hn = hn << 8 | f->map[i];
    if (hn > LG_ST_HEADER_MAX)
        return lg_fail(LG_ERR_IO, "%s: header length %llu is over the %llu-byte limit (not a safetensors file?)",
                       path, (unsigned long long)hn, (unsigned long long)LG_ST_HEADER_MAX);
    if (hn > f->size - 8)
        return lg_fail(LG_ERR_IO, "%s: header length %llu runs past the end of the file (%zu bytes)", path,
                       (unsigned long long)hn, f->size);
    f->data_off = 8 + hn;
    json_error_t je;
    json_t *h = json_loadb((const char *)f->map + 8, (size_t)hn, JSON_REJECT_DUPLICATES, &je);
    if (!h)
        return lg_fail(LG_ERR_IO, "%s: header is not valid JSON: %s (header byte %d)", path, je.text, je.position);
    if (!json_is_object(h)) {
        json_decref(h);
        return lg_fail(LG_ERR_IO, "%s: header is not a JSON object", path);
    }
    uint64_t dsize = f->size - f->data_off;
    size_t first = st->n;
    const char *k;
    json_t *v;
    json_object_foreach(h, k, v) {
        if (strcmp(k, "__metadata__") == 0) {
            s = parse_metadata(path, v, f);
        } else {
            struct st_entry *e = entry_push(st);
            if (!e || !(e->name = strdup(k)))
                s = lg_fail(LG_ERR_OOM, "%s: out of memory", path);
            else {
                e->file = fi;
                s = parse_entry(path, k, v, dsize, e);
            }
        }
        if (s != LG_OK)
            break;
    }
    json_decref(h);
    if (s == LG_OK) /* no tensors: st->t may be NULL, and NULL + 0 is undefined */
        s = check_tiling(path, st->n > first ? st->t + first : NULL, st->n - first, dsize);
    return s;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct st_entry *)a)->name, ((const struct st_entry *)b)->name);
}

/* Sorts the merged table by name; a name in two files is an error. */
static enum lg_status finish(lg_st_t *st)
{
    if (st->n > 1)
        qsort(st->t, st->n, sizeof *st->t, by_name);
    for (size_t i = 1; i < st->n; i++)
        if (strcmp(st->t[i].name, st->t[i - 1].name) == 0)
            return lg_fail(LG_ERR_IO, "%s: tensor '%s' is in both %s and %s", st->path, st->t[i].name,
                           st->files[st->t[i - 1].file].path, st->files[st->t[i].file].path);
    return LG_OK;
}

enum lg_status lg_st_open(const char *path, lg_st_t **out)
{
    if (!path || !out)
        return lg_fail(LG_ERR_INVALID, "lg_st_open: null argument");
    *out = NULL;
    lg_st_t *st = NULL;
    enum lg_status s = st_new(path, &st);
    if (s == LG_OK)
        s = load_file(st, path);
    if (s == LG_OK)
        s = finish(st);
    if (s != LG_OK) {
        lg_st_close(st);
        return s;
    }
    *out = st;
    return LG_OK;
}

/* ---- model directories ---- */

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static const struct st_entry *lookup(const lg_st_t *st, const char *name)
{
    struct st_entry key = {.name = (char *)name};
    return st->n ? bsearch(&key, st->t, st->n, sizeof *st->t, by_name) : NULL;
}

/* The weight_map's shard names, each a plain file name, sorted and deduplicated into *names. */
static enum lg_status index_shards(const char *index, json_t *wm, const char ***names, size_t *n)
{
    const char **v = malloc((json_object_size(wm) + 1) * sizeof *v);
    if (!v)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", index);
    size_t k = 0;
    const char *key;
    json_t *val;
    json_object_foreach(wm, key, val) {
        const char *f = json_string_value(val);
        if (!f || !f[0] || strchr(f, '/') || strcmp(f, ".") == 0 || strcmp(f, "..") == 0) {
            free(v);
            return lg_fail(LG_ERR_IO, "%s: weight_map['%s'] must be a file name in the model directory", index,
                           key);
        }
        v[k++] = f;
    }
    qsort(v, k, sizeof *v, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (u == 0 || strcmp(v[u - 1], v[i]) != 0)
            v[u++] = v[i];
    *names = v;
    *n = u;
    return LG_OK;
}

/* Every weight_map entry must be in the shard it names. */
static enum lg_status index_check(const lg_st_t *st, const char *index, json_t *wm)
{
    const char *key;
    json_t *val;
    json_object_foreach(wm, key, val) {
        const struct st_entry *e = lookup(st, key);
        const char *want = json_string_value(val);
        const char *base = NULL;
        if (e) {
            const char *p = st->files[e->file].path;
            base = strrchr(p, '/') ? strrchr(p, '/') + 1 : p;
        }
        if (!e)
            return lg_fail(LG_ERR_IO, "%s: tensor '%s' is mapped to shard %s, which has no such tensor", index, key,
                           want);
        if (strcmp(base, want) != 0)
            return lg_fail(LG_ERR_IO, "%s: tensor '%s' is mapped to shard %s but found in %s", index, key, want,
                           base);
    }
    return LG_OK;
}

static enum lg_status open_sharded(lg_st_t *st, const char *dir, const char *index)
{
    char *text;
    size_t len;
    enum lg_status s = lg_file_read(index, LG_FILE_LIMIT_TEXT, &text, &len);
    if (s != LG_OK)
        return s;
    /* json_loads stopped at a NUL and took the text before it for the whole file */
    const char *nul = memchr(text, '\0', len);
    size_t at = nul ? (size_t)(nul - text) : 0;
    json_error_t je;
    json_t *root = nul ? NULL : json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (nul)
        return lg_fail(LG_ERR_IO, "%s: a NUL byte at offset %zu: not a JSON text", index, at);
    if (!root)
        return lg_fail(LG_ERR_IO, "%s:%d: malformed JSON: %s", index, je.line, je.text);
    json_t *wm = json_object_get(root, "weight_map");
    const char **names = NULL;
    size_t nn = 0;
    if (!json_is_object(wm) || json_object_size(wm) == 0)
        s = lg_fail(LG_ERR_IO, "%s: missing or empty 'weight_map' object", index);
    else
        s = index_shards(index, wm, &names, &nn);
    for (size_t i = 0; s == LG_OK && i < nn; i++) {
        char *p = join(dir, names[i]);
        if (!p)
            s = lg_fail(LG_ERR_OOM, "%s: out of memory", index);
        else if (!is_file(p))
            s = lg_fail(LG_ERR_IO, "%s: names shard %s, but %s is missing or not a regular file", index, names[i],
                        p);
        else if ((s = load_file(st, p)) != LG_OK)
            s = lg_fail_wrap(s, "%s: shard %s: ", index, names[i]);
        free(p);
    }
    if (s == LG_OK)
        s = finish(st);
    if (s == LG_OK)
        s = index_check(st, index, wm);
    free(names);
    json_decref(root);
    return s;
}

enum lg_status lg_st_open_model(const char *dir, lg_st_t **out)
{
    if (!dir || !out)
        return lg_fail(LG_ERR_INVALID, "lg_st_open_model: null argument");
    *out = NULL;
    if (is_file(dir))
        return lg_st_open(dir, out);
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return lg_fail(LG_ERR_IO, "%s: not a model directory: %s", dir,
                       stat(dir, &sb) != 0 ? strerror(errno) : "not a directory");
    lg_st_t *st = NULL;
    enum lg_status s = st_new(dir, &st);
    if (s != LG_OK)
        return s;
    char *single = join(dir, "model.safetensors"), *index = join(dir, "model.safetensors.index.json");
    if (!single || !index)
        s = lg_fail(LG_ERR_OOM, "%s: out of memory", dir);
    else if (is_file(single)) {
        if ((s = load_file(st, single)) == LG_OK)
            s = finish(st);
    }
    else if (is_file(index))
        s = open_sharded(st, dir, index);
    else
        s = lg_fail(LG_ERR_IO, "%s: no model.safetensors or model.safetensors.index.json in the directory", dir);
    free(single);
    free(index);
    if (s != LG_OK) {
        lg_st_close(st);
        return s;
    }
    *out = st;
    return LG_OK;
}

/* ---- queries ---- */

const char *lg_st_path(const lg_st_t *st) { return st ? st->path : ""; }
size_t lg_st_count(const lg_st_t *st) { return st ? st->n : 0; }

static void view(const lg_st_t *st, const struct st_entry *e, struct lg_st_tensor *out)
{
    const struct st_file *f = &st->files[e->file];
    out->name = e->name;
    out->file = f->path;
    out->dtype = e->dtype;
    out->ndim = e->ndim;
    memset(out->shape, 0, sizeof out->shape);
    memcpy(out->shape, e->shape, (size_t)e->ndim * sizeof *e->shape);
    out->numel = e->numel;
    out->nbytes = e->end - e->begin;
    out->data = f->map + f->data_off + e->begin;
}

enum lg_status lg_st_tensor(const lg_st_t *st, size_t i, struct lg_st_tensor *out)
{
    if (!st || !out)
        return lg_fail(LG_ERR_INVALID, "lg_st_tensor: null argument");
    if (i >= st->n)
        return lg_fail(LG_ERR_INVALID, "%s: tensor index %zu out of range (%zu tensors)", st->path, i, st->n);
    view(st, &st->t[i], out);
    return LG_OK;
}

int lg_st_contains(const lg_st_t *st, const char *name) { return st && name && lookup(st, name) != NULL; }

enum lg_status lg_st_find(const lg_st_t *st, const char *name, struct lg_st_tensor *out)
{
    if (!st || !name || !out)
        return lg_fail(LG_ERR_INVALID, "lg_st_find: null argument");
    const struct st_entry *e = lookup(st, name);
    if (!e)
        return lg_fail(LG_ERR_IO, "%s: no tensor '%s'", st->path, name);
    view(st, e, out);
    return LG_OK;
}

const char *lg_st_metadata(const lg_st_t *st, const char *key)
{
    if (!st || !key || st->nfiles == 0)
        return NULL;
    const struct st_file *f = &st->files[0];
    for (size_t k = 0; k < f->nmeta; k += 2)
        if (strcmp(f->meta[k], key) == 0)
            return f->meta[k + 1];
    return NULL;
}
