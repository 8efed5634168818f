/* db_json.c: the tuning database's file. One JSON object:
 *   {"format": "loragen-tune", "version": 1,
 *    "measured_on": {"gpu", "sm_count", "arch", "driver", "nvrtc", "cublaslt", "date"},
 *    "entries": [{"op", "shape", "tokens", "dtype", "arch", "gpu", "sm_count",
 *                 "params": {name: int, ...}, "time_ms", "default_ms", "candidates", "failed"}, ...]}
 * Reading validates every field and refuses the whole file on the first problem, naming the file and what is
 * wrong ("entries[3].params.down_wm: not an integer"): a half-trusted database could pick a configuration
 * nothing measured. Writing is lg_file_write_atomic (temp file, fsync, rename), entries in key order. */
#include "lg_file.h"
#include "lg_tune.h"
#include "lg_base.h"
#include "tune_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FORMAT "loragen-tune"

/* ---- reading ---- */

struct rd {
    const char *path;
    char where[96]; /* the entry being read: "entries[3]" */
};

static enum lg_status bad(const struct rd *r, const char *field, const char *what)
{
    return lg_fail(LG_ERR_INVALID, "%s: %s%s%s: %s", r->path, r->where, r->where[0] ? "." : "", field, what);
}

static enum lg_status get_int(const struct rd *r, json_t *o, const char *k, int lo, int hi, int *out)
{
    json_t *v = json_object_get(o, k);
    if (!v)
        return bad(r, k, "missing");
    if (!json_is_integer(v))
        return bad(r, k, "not an integer");
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) {
        char msg[96];
        snprintf(msg, sizeof msg, "%lld is outside %d..%d", (long long)x, lo, hi);
        return bad(r, k, msg);
    }
    *out = (int)x;
    return LG_OK;
}

static enum lg_status get_str(const struct rd *r, json_t *o, const char *k, char *out, size_t cap)
{
    json_t *v = json_object_get(o, k);
    if (!v)
        return bad(r, k, "missing");
    if (!json_is_string(v))
        return bad(r, k, "not a string");
    const char *s = json_string_value(v);
    if (strlen(s) >= cap || (cap > 1 && !*s)) {
        char msg[64];
        snprintf(msg, sizeof msg, "must be 1..%zu characters", cap - 1);
        return bad(r, k, msg);
    }
    snprintf(out, cap, "%s", s);
    return LG_OK;
}

static enum lg_status get_ms(const struct rd *r, json_t *o, const char *k, double *out)
{
    json_t *v = json_object_get(o, k);
    if (!v)
        return bad(r, k, "missing");
    if (!json_is_number(v))
        return bad(r, k, "not a number");
    double x = json_number_value(v);
    if (!(x > 0 && x < 1e9))
        return bad(r, k, "must be a positive time in milliseconds");
    *out = x;
    return LG_OK;
}

static enum lg_status get_dtype(const struct rd *r, json_t *o, enum lg_dtype *out)
{
    char s[16];
    enum lg_status st = get_str(r, o, "dtype", s, sizeof s);
    if (st != LG_OK)
        return st;
    if ((lg_dtype_parse(s, out) != LG_OK || *out == LG_FP32) && (lg_clear_error(), 1))
        return bad(r, "dtype", "must be \"bf16\" or \"fp16\"");
    return LG_OK;
}

static enum lg_status read_params(const struct rd *r, json_t *o, struct lg_tune_entry *e)
{
    json_t *p = json_object_get(o, "params");
    if (!p)
        return bad(r, "params", "missing");
    if (!json_is_object(p))
        return bad(r, "params", "not an object");
    if (json_object_size(p) > LG_TUNE_MAX_PARAMS)
        return bad(r, "params", "more than 16 parameters");
    const char *k;
    json_t *v;
    e->nparams = 0;
    json_object_foreach(p, k, v)
    {
        char field[64];
        snprintf(field, sizeof field, "params.%s", k);
        if (!*k || strlen(k) >= sizeof e->params[0].name)
            return bad(r, field, "parameter name must be 1..23 characters");
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1 << 20)
            return bad(r, field, "not an integer in 0..1048576");
        snprintf(e->params[e->nparams].name, sizeof e->params[0].name, "%s", k);
        e->params[e->nparams++].value = (int)json_integer_value(v);
    }
    return LG_OK;
}

static enum lg_status read_key(const struct rd *r, json_t *o, struct lg_tune_key *k)
{
    enum lg_status st;
    if ((st = get_str(r, o, "op", k->op, sizeof k->op)) || (st = get_str(r, o, "shape", k->shape, sizeof k->shape)) ||
        (st = get_int(r, o, "tokens", 0, 1 << 30, &k->tokens)) || (st = get_dtype(r, o, &k->dtype)) ||
        (st = get_int(r, o, "arch", 10, 1000, &k->arch)) || (st = get_str(r, o, "gpu", k->gpu, sizeof k->gpu)) ||
        (st = get_int(r, o, "sm_count", 1, 1 << 16, &k->sm_count)))
        return st;
    return LG_OK;
}

static enum lg_status read_entry(const struct rd *r, json_t *o, struct lg_tune_entry *e)
{
    if (!json_is_object(o))
        return lg_fail(LG_ERR_INVALID, "%s: %s: not an object", r->path, r->where);
    memset(e, 0, sizeof *e);
    enum lg_status st;
    if ((st = read_key(r, o, &e->key)) || (st = read_params(r, o, e)) || (st = get_ms(r, o, "time_ms", &e->time_ms)) ||
        (st = get_ms(r, o, "default_ms", &e->default_ms)) ||
        (st = get_int(r, o, "candidates", 1, 1 << 20, &e->candidates)) ||
        (st = get_int(r, o, "failed", 0, 1 << 20, &e->failed)))
        return st;
    return LG_OK;
}

static enum lg_status read_info(struct rd *r, json_t *root, struct lg_tune_info *in)
{
    json_t *m = json_object_get(root, "measured_on");
    snprintf(r->where, sizeof r->where, "measured_on");
    if (!m || !json_is_object(m))
        return lg_fail(LG_ERR_INVALID, "%s: measured_on: missing or not an object", r->path);
    enum lg_status st;
    if ((st = get_str(r, m, "gpu", in->gpu, sizeof in->gpu)) || (st = get_int(r, m, "sm_count", 1, 1 << 16, &in->sm_count)) ||
        (st = get_int(r, m, "arch", 10, 1000, &in->arch)) || (st = get_int(r, m, "driver", 0, 1 << 30, &in->driver)) ||
        (st = get_int(r, m, "nvrtc", 0, 1 << 30, &in->nvrtc)) ||
        (st = get_int(r, m, "cublaslt", 0, 1 << 30, &in->cublaslt)) || (st = get_str(r, m, "date", in->date, sizeof in->date)))
        return st;
    r->where[0] = 0;
    return LG_OK;
}

static enum lg_status read_root(struct rd *r, json_t *root, lg_tune_db_t *db)
{
    if (!json_is_object(root))
        return lg_fail(LG_ERR_INVALID, "%s: not a JSON object (is it a loragen tuning database?)", r->path);
    json_t *f = json_object_get(root, "format");
    if (!json_is_string(f) || strcmp(json_string_value(f), FORMAT))
        return lg_fail(LG_ERR_INVALID, "%s: format: not \"%s\" (not a loragen tuning database)", r->path, FORMAT);
    json_t *v = json_object_get(root, "version");
    if (!json_is_integer(v))
        return lg_fail(LG_ERR_INVALID, "%s: version: missing or not an integer", r->path);
    if (json_integer_value(v) != LG_TUNE_DB_VERSION)
        return lg_fail(LG_ERR_INVALID, "%s: version %lld, this loragen reads version %d: run `loragen tune` again",
                       r->path, (long long)json_integer_value(v), LG_TUNE_DB_VERSION);
    struct lg_tune_info info;
    memset(&info, 0, sizeof info);
    enum lg_status st = read_info(r, root, &info);
    if (st != LG_OK)
        return st;
    lg_tune_db_set_info(db, &info);
    json_t *es = json_object_get(root, "entries");
    if (!json_is_array(es))
        return lg_fail(LG_ERR_INVALID, "%s: entries: missing or not an array", r->path);
    for (size_t i = 0; i < json_array_size(es); i++) {
        struct lg_tune_entry e;
        snprintf(r->where, sizeof r->where, "entries[%zu]", i);
        if ((st = read_entry(r, json_array_get(es, i), &e)) != LG_OK)
            return st;
        if (lg_tune_db_find(db, &e.key))
            return lg_fail(LG_ERR_INVALID, "%s: %s: the same key as an earlier entry", r->path, r->where);
        if ((st = lg_tune_db_put(db, &e)) != LG_OK)
            return st;
    }
    return LG_OK;
}

enum lg_status lg_tune_db_load(const char *path, lg_tune_db_t **out)
{
    char *text;
    size_t n;
    enum lg_status st = lg_file_read(path, LG_FILE_LIMIT_TEXT, &text, &n);
    if (st != LG_OK)
        return st;
    json_error_t err;
    json_t *root = json_loadb(text, n, JSON_REJECT_DUPLICATES, &err);
    free(text);
    if (!root)
        return lg_fail(LG_ERR_INVALID, "%s:%d: corrupt or truncated JSON: %s", path, err.line, err.text);
    lg_tune_db_t *db;
    if ((st = lg_tune_db_init(&db)) != LG_OK) {
        json_decref(root);
        return st;
    }
    struct rd r = {.path = path};
    st = read_root(&r, root, db);
    json_decref(root);
    if (st != LG_OK) {
        lg_tune_db_free(db);
        return st;
    }
    *out = db;
    return LG_OK;
}

/* ---- writing ---- */

static json_t *entry_json(const struct lg_tune_entry *e)
{
    json_t *p = json_object();
    for (int i = 0; i < e->nparams; i++)
        json_object_set_new(p, e->params[i].name, json_integer(e->params[i].value));
    return json_pack("{s:s, s:s, s:i, s:s, s:i, s:s, s:i, s:o, s:f, s:f, s:i, s:i}", "op", e->key.op, "shape",
                     e->key.shape, "tokens", e->key.tokens, "dtype", lg_dtype_name(e->key.dtype), "arch",
                     e->key.arch, "gpu", e->key.gpu, "sm_count", e->key.sm_count, "params", p, "time_ms",
                     e->time_ms, "default_ms", e->default_ms, "candidates", e->candidates, "failed", e->failed);
}

static int by_key(const void *a, const void *b)
{
    return lg_tune_key_cmp(&(*(const struct lg_tune_entry *const *)a)->key,
                           &(*(const struct lg_tune_entry *const *)b)->key);
}

enum lg_status lg_tune_db_save(const lg_tune_db_t *db, const char *path)
{
    int n = lg_tune_db_count(db);
    const struct lg_tune_entry **order = malloc(sizeof *order * (size_t)(n ? n : 1));
    if (!order)
        return lg_fail(LG_ERR_OOM, "tuning database: out of memory");
    for (int i = 0; i < n; i++)
        order[i] = lg_tune_db_entry(db, i);
    qsort(order, (size_t)n, sizeof *order, by_key);
    const struct lg_tune_info *in = lg_tune_db_info(db);
    json_t *es = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(es, entry_json(order[i]));
    free(order);
    json_t *root = json_pack("{s:s, s:i, s:{s:s, s:i, s:i, s:i, s:i, s:i, s:s}, s:o}", "format", FORMAT, "version",
                             LG_TUNE_DB_VERSION, "measured_on", "gpu", in->gpu, "sm_count", in->sm_count, "arch",
                             in->arch, "driver", in->driver, "nvrtc", in->nvrtc, "cublaslt", in->cublaslt, "date",
                             in->date, "entries", es);
    if (!root)
        return lg_fail(LG_ERR_INTERNAL, "tuning database: could not build the JSON for %s", path);
    char *text = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(root);
    if (!text)
        return lg_fail(LG_ERR_OOM, "tuning database: out of memory");
    size_t len = strlen(text);
    enum lg_status st = LG_OK;
    char *full = malloc(len + 2);
    if (!full)
        st = lg_fail(LG_ERR_OOM, "tuning database: out of memory");
    else {
        memcpy(full, text, len);
        full[len] = '\n';
        st = lg_file_write_atomic(path, full, len + 1);
        free(full);
    }
    free(text);
    return st;
}
