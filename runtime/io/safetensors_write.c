/* safetensors_write.c: writing .safetensors files and sharded model directories (lg_hf.h) byte for byte as the
 * Python library and transformers' save_pretrained lay them out, so diffs against a reference checkpoint are
 * meaningful. A merged model is many GB: tensors stream from the caller's buffers or read callbacks into a
 * temp file beside the target (fsync, rename, fsync of the directory), and are never gathered in memory. */
#include "lg_hf.h"
#include "lg_base.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (16u << 20) /* read-callback chunk and write staging size */

static uint64_t tensor_bytes(const struct lg_st_write_tensor *t)
{
    uint64_t n = lg_st_dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] < 0 || __builtin_mul_overflow(n, (uint64_t)t->shape[i], &n))
            return UINT64_MAX;
    return n;
}

static enum lg_status check_tensors(const char *path, const struct lg_st_write_tensor *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *nm = t[i].name;
        if (!nm || !nm[0] || strcmp(nm, "__metadata__") == 0)
            return lg_fail(LG_ERR_INVALID, "%s: tensor %zu: missing or reserved name", path, i);
        if ((unsigned)t[i].dtype >= LG_ST_DTYPE_COUNT)
            return lg_fail(LG_ERR_INVALID, "%s: tensor '%s': bad dtype %d", path, nm, (int)t[i].dtype);
        if (t[i].ndim < 0 || t[i].ndim > LG_ST_MAX_DIMS)
            return lg_fail(LG_ERR_INVALID, "%s: tensor '%s': ndim %d out of range", path, nm, t[i].ndim);
        uint64_t b = tensor_bytes(&t[i]);
        if (b == UINT64_MAX)
            return lg_fail(LG_ERR_INVALID, "%s: tensor '%s': negative or overflowing shape", path, nm);
        if (b && !t[i].data && !t[i].read)
            return lg_fail(LG_ERR_INVALID, "%s: tensor '%s': neither data nor read given", path, nm);
    }
    return LG_OK;
}

/* Descending dtype, then name: safetensors' prepare() order, which keeps every tensor aligned for its type. */
static int by_layout(const void *a, const void *b)
{
    const struct lg_st_write_tensor *x = *(const struct lg_st_write_tensor *const *)a;
    const struct lg_st_write_tensor *y = *(const struct lg_st_write_tensor *const *)b;
    if (x->dtype != y->dtype)
        return x->dtype > y->dtype ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* {"format": "pt"} plus the caller's pairs, keys sorted (the Rust map has no order; ours is deterministic). */
static enum lg_status build_metadata(const char *path, const char *const *kv, json_t *meta)
{
    size_t n = 0;
    while (kv && kv[n])
        n++;
    if (n % 2)
        return lg_fail(LG_ERR_INVALID, "%s: metadata key '%s' has no value", path, kv[n - 1]);
    const char **keys = malloc((n / 2 + 2) * sizeof *keys);
    if (!keys)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", path);
    size_t nk = 0;
    for (size_t i = 0; i < n; i += 2)
        keys[nk++] = kv[i];
    qsort(keys, nk, sizeof *keys, cmp_str);
    enum lg_status s = LG_OK;
    for (size_t i = 1; i < nk && s == LG_OK; i++)
        if (strcmp(keys[i], keys[i - 1]) == 0)
            s = lg_fail(LG_ERR_INVALID, "%s: metadata key '%s' given twice", path, keys[i]);
    int has_format = 0;
    for (size_t i = 0; i < nk; i++)
        has_format |= strcmp(keys[i], "format") == 0;
    if (s == LG_OK && !has_format)
        json_object_set_new(meta, "format", json_string("pt"));
    for (size_t i = 0; i < nk && s == LG_OK; i++)
        for (size_t j = 0; j < n; j += 2)
            if (kv[j] == keys[i] || strcmp(kv[j], keys[i]) == 0) {
                if (json_object_set_new(meta, kv[j], json_string(kv[j + 1])) != 0)
                    s = lg_fail(LG_ERR_INVALID, "%s: metadata '%s' is not valid UTF-8", path, kv[j]);
                break;
            }
    free(keys);
    return s;
}

/* The header bytes (padded to a multiple of 8 with spaces) for tensors in `order`. */
static enum lg_status build_header(const char *path, const struct lg_st_write_tensor *const *order, size_t n,
                                   const char *const *kv, char **out, size_t *len)
{
    json_t *h = json_object(), *meta = json_object();
    enum lg_status s = h && meta ? build_metadata(path, kv, meta) : lg_fail(LG_ERR_OOM, "%s: out of memory", path);
    if (s == LG_OK)
        json_object_set(h, "__metadata__", meta);
    uint64_t off = 0;
    for (size_t k = 0; k < n && s == LG_OK; k++) {
        const struct lg_st_write_tensor *w = order[k];
        json_t *shape = json_array(), *e = json_object();
        for (int i = 0; i < w->ndim; i++)
            json_array_append_new(shape, json_integer(w->shape[i]));
        uint64_t b = tensor_bytes(w);
        json_object_set_new(e, "dtype", json_string(lg_st_dtype_name(w->dtype)));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets", json_pack("[II]", (json_int_t)off, (json_int_t)(off + b)));
        off += b;
        if (json_object_get(h, w->name)) {
            json_decref(e);
            s = lg_fail(LG_ERR_INVALID, "%s: tensor '%s' given twice", path, w->name);
        } else if (json_object_set_new(h, w->name, e) != 0)
            s = lg_fail(LG_ERR_INVALID, "%s: tensor name '%s' is not valid UTF-8", path, w->name);
    }
    char *text = s == LG_OK ? json_dumps(h, JSON_COMPACT) : NULL;
    json_decref(meta);
    json_decref(h);
    if (s != LG_OK)
        return s;
    if (!text)
        return lg_fail(LG_ERR_OOM, "%s: out of memory building the header", path);
    size_t tl = strlen(text), pl = (tl + 7) / 8 * 8;
    char *buf = realloc(text, pl + 1);
    if (!buf) {
        free(text);
        return lg_fail(LG_ERR_OOM, "%s: out of memory", path);
    }
    memset(buf + tl, ' ', pl - tl);
    *out = buf;
    *len = pl;
    return LG_OK;
}

/* ---- streaming output ---- */

struct out {
    int fd;
    int err; /* errno of the first failure */
};

static void put(struct out *o, const void *p, size_t n)
{
    const char *c = p;
    while (n && !o->err) {
        ssize_t w = write(o->fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            o->err = w < 0 ? errno : EIO;
            break;
        }
        c += w;
        n -= (size_t)w;
    }
}

static enum lg_status put_tensor(const char *path, struct out *o, const struct lg_st_write_tensor *w, char *chunk)
{
    uint64_t b = tensor_bytes(w);
    if (w->data) {
        put(o, w->data, (size_t)b);
        return LG_OK;
    }
    for (uint64_t at = 0; at < b && !o->err; at += CHUNK) {
        size_t m = b - at < CHUNK ? (size_t)(b - at) : CHUNK;
        enum lg_status s = w->read(w->user, at, chunk, m);
        if (s != LG_OK)
            return lg_fail_wrap(s, "%s: tensor '%s': ", path, w->name);
        put(o, chunk, m);
    }
    return LG_OK;
}

static void sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
    int fd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (fd >= 0) {
        fsync(fd); /* best effort: the rename is already atomic */
        close(fd);
    }
    free(dir);
}

static enum lg_status stream(const char *path, const struct lg_st_write_tensor *const *order, size_t n,
                             const char *hdr, size_t hlen)
{
    static unsigned counter;
    size_t tn = strlen(path) + 64;
    char *tmp = malloc(tn), *chunk = NULL;
    if (!tmp)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", path);
    snprintf(tmp, tn, "%s.tmp-%ld-%u", path, (long)getpid(), __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
    struct out o = {.fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)};
    if (o.fd < 0)
        o.err = errno;
    enum lg_status s = LG_OK;
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    put(&o, le, 8);
    put(&o, hdr, hlen);
    for (size_t k = 0; k < n && s == LG_OK && !o.err; k++) {
        const struct lg_st_write_tensor *w = order[k];
        if (!w->data && !chunk && !(chunk = malloc(CHUNK)))
            s = lg_fail(LG_ERR_OOM, "%s: out of memory", path);
        if (s == LG_OK)
            s = put_tensor(path, &o, w, chunk);
    }
    if (s == LG_OK && !o.err && fsync(o.fd) != 0 && errno != EINVAL)
        o.err = errno;
    if (o.fd >= 0 && close(o.fd) != 0 && !o.err)
        o.err = errno;
    if (s == LG_OK && !o.err && rename(tmp, path) != 0)
        o.err = errno;
    if (s == LG_OK && o.err)
        s = lg_fail(LG_ERR_IO, "%s: cannot write: %s", path, strerror(o.err));
    if (s != LG_OK && o.fd >= 0)
        unlink(tmp);
    if (s == LG_OK)
        sync_dir(path);
    free(chunk);
    free(tmp);
    return s;
}

enum lg_status lg_st_write(const char *path, const struct lg_st_write_tensor *t, size_t n,
                           const char *const *metadata_kv)
{
    if (!path || (!t && n))
        return lg_fail(LG_ERR_INVALID, "lg_st_write: null argument");
    enum lg_status s = check_tensors(path, t, n);
    if (s != LG_OK)
        return s;
    const struct lg_st_write_tensor **order = malloc((n ? n : 1) * sizeof *order);
    if (!order)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++)
        order[i] = &t[i];
    qsort(order, n, sizeof *order, by_layout);
    char *hdr = NULL;
    size_t hlen = 0;
    s = build_header(path, order, n, metadata_kv, &hdr, &hlen);
    if (s == LG_OK)
        s = stream(path, order, n, hdr, hlen);
    free(hdr);
    free(order);
    return s;
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

static enum lg_status remove_file(const char *dir, const char *name)
{
    char *p = join(dir, name);
    if (!p)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", dir);
    int bad = unlink(p) != 0 && errno != ENOENT;
    enum lg_status s = bad ? lg_fail(LG_ERR_IO, "%s: cannot remove stale %s: %s", dir, p, strerror(errno)) : LG_OK;
    free(p);
    return s;
}

/* Removes model-XXXXX-of-YYYYY.safetensors files of an earlier save (keep_of: the current count, 0 for none),
 * as save_pretrained cleans its folder, so no old shard lingers beside the new ones. */
static enum lg_status remove_stale_shards(const char *dir, int keep_of)
{
    DIR *d = opendir(dir);
    if (!d)
        return lg_fail(LG_ERR_IO, "%s: cannot list: %s", dir, strerror(errno));
    enum lg_status s = LG_OK;
    struct dirent *e;
    while (s == LG_OK && (e = readdir(d))) {
        int i, of, end = 0;
        if (sscanf(e->d_name, "model-%5d-of-%5d.safetensors%n", &i, &of, &end) == 2 && end &&
            e->d_name[end] == '\0' && strlen(e->d_name) == 32 && of != keep_of)
            s = remove_file(dir, e->d_name);
    }
    closedir(d);
    return s;
}

static enum lg_status write_index(const char *dir, const struct lg_st_write_tensor *t, size_t n,
                                  const int *shard_of, int nshards)
{
    json_t *root = json_object(), *meta = json_object(), *wm = json_object();
    uint64_t total = 0, params = 0;
    char name[64];
    for (size_t i = 0; i < n; i++) {
        total += tensor_bytes(&t[i]);
        params += tensor_bytes(&t[i]) / lg_st_dtype_size(t[i].dtype);
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", shard_of[i] + 1, nshards);
        json_object_set_new(wm, t[i].name, json_string(name));
    }
    json_object_set_new(meta, "total_parameters", json_integer((json_int_t)params)); /* as transformers 4.5x */
    json_object_set_new(meta, "total_size", json_integer((json_int_t)total));
    json_object_set_new(root, "metadata", meta);
    json_object_set_new(root, "weight_map", wm);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(root);
    char *path = join(dir, "model.safetensors.index.json");
    enum lg_status s = text && path ? LG_OK : lg_fail(LG_ERR_OOM, "%s: out of memory", dir);
    if (s == LG_OK) {
        size_t len = strlen(text);
        char *nl = realloc(text, len + 2);
        if (nl) {
            text = nl;
            memcpy(text + len, "\n", 2);
            s = lg_file_write_atomic(path, text, len + 1);
        } else
            s = lg_fail(LG_ERR_OOM, "%s: out of memory", dir);
    }
    free(text);
    free(path);
    return s;
}

/* huggingface_hub's split_state_dict_into_shards, so shard contents match save_pretrained's: tensors fill the
 * current shard in the given order until the next would pass the limit; a tensor over the limit goes at once
 * into a shard of its own, ahead of the one being filled. Returns the shard count. */
static int plan_shards(const struct lg_st_write_tensor *t, size_t n, uint64_t max, int *shard_of)
{
    int k = 0;
    uint64_t cur = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t b = tensor_bytes(&t[i]);
        shard_of[i] = -1; /* in the shard being filled */
        if (max && b > max) {
            shard_of[i] = k++;
            continue;
        }
        if (max && cur + b > max) {
            for (size_t j = 0; j < i; j++)
                if (shard_of[j] == -1)
                    shard_of[j] = k;
            k++;
            cur = 0;
        }
        cur += b;
    }
    int open = 0;
    for (size_t j = 0; j < n; j++)
        if (shard_of[j] == -1)
            shard_of[j] = k, open = 1;
    return k + open > 0 ? k + open : 1;
}

static enum lg_status write_shards(const char *dir, const struct lg_st_write_tensor *t, size_t n,
                                   const int *shard_of, int nshards, const char *const *kv)
{
    struct lg_st_write_tensor *sub = malloc((n ? n : 1) * sizeof *sub);
    if (!sub)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", dir);
    enum lg_status s = LG_OK;
    for (int k = 0; k < nshards && s == LG_OK; k++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (shard_of[i] == k)
                sub[m++] = t[i];
        char name[64];
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k + 1, nshards);
        char *path = join(dir, name);
        s = path ? lg_st_write(path, sub, m, kv) : lg_fail(LG_ERR_OOM, "%s: out of memory", dir);
        free(path);
    }
    free(sub);
    return s;
}

enum lg_status lg_st_write_model(const char *dir, const struct lg_st_write_tensor *t, size_t n,
                                 uint64_t max_shard_bytes, const char *const *metadata_kv)
{
    if (!dir || (!t && n))
        return lg_fail(LG_ERR_INVALID, "lg_st_write_model: null argument");
    enum lg_status s = check_tensors(dir, t, n);
    if (s == LG_OK)
        s = lg_dir_create(dir);
    int *shard_of = s == LG_OK ? malloc((n ? n : 1) * sizeof *shard_of) : NULL;
    if (s == LG_OK && !shard_of)
        s = lg_fail(LG_ERR_OOM, "%s: out of memory", dir);
    if (s != LG_OK)
        return s;
    int nshards = plan_shards(t, n, max_shard_bytes, shard_of);
    if (nshards > 99999)
        s = lg_fail(LG_ERR_INVALID, "%s: %d shards: raise max_shard_bytes", dir, nshards);
    else if (nshards == 1) {
        char *path = join(dir, "model.safetensors");
        s = path ? lg_st_write(path, t, n, metadata_kv) : lg_fail(LG_ERR_OOM, "%s: out of memory", dir);
        free(path);
        if (s == LG_OK)
            s = remove_file(dir, "model.safetensors.index.json");
        if (s == LG_OK)
            s = remove_stale_shards(dir, 0);
    } else {
        /* The old index goes first: until the new one is written, the directory names no mix of shards. */
        s = remove_file(dir, "model.safetensors.index.json");
        if (s == LG_OK)
            s = remove_file(dir, "model.safetensors");
        if (s == LG_OK)
            s = write_shards(dir, t, n, shard_of, nshards, metadata_kv);
        if (s == LG_OK)
            s = write_index(dir, t, n, shard_of, nshards);
        if (s == LG_OK)
            s = remove_stale_shards(dir, nshards);
    }
    free(shard_of);
    return s;
}
