/* tokens.c: JSONL token datasets for the trainer (lg_tokens.h). The same lines, in the same order, as the
 * scheduler's dataset reader counts; this one keeps the ids and the labels. Each sample's arrays live in two
 * flat int32 buffers indexed by per-sample offsets, so a million-sample dataset is three allocations. */
#include "lg_tokens.h"
#include "lg_base.h"

#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

struct lg_tokens {
    char *path;
    size_t n, cap;
    int64_t *off;  /* [n + 1] */
    size_t *line;  /* [n] */
    int32_t *ids, *labels;
    size_t ntok, captok;
};

/* Grows two parallel arrays of one capacity to hold `need` elements. */
static int grow2(void **a, size_t ea, void **b, size_t eb, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 1;
    size_t nc = *cap ? *cap : 1024;
    while (nc < need)
        nc *= 2;
    void *x = realloc(*a, nc * ea);
    if (!x)
        return 0;
    *a = x;
    void *y = realloc(*b, nc * eb);
    if (!y)
        return 0;
    *b = y;
    *cap = nc;
    return 1;
}

static enum lg_status reserve(lg_tokens_t *tk, size_t samples, size_t tokens)
{
    int ok = grow2((void **)&tk->off, sizeof *tk->off, (void **)&tk->line, sizeof *tk->line, &tk->cap, samples + 1);
    ok = ok && grow2((void **)&tk->ids, sizeof *tk->ids, (void **)&tk->labels, sizeof *tk->labels, &tk->captok,
                     tokens);
    if (!ok)
        return lg_fail(LG_ERR_OOM, "%s: out of memory reading tokens", tk->path);
    return LG_OK;
}

static enum lg_status id_value(json_t *v, const char *path, size_t line, const char *field, size_t i,
                               int64_t vocab, int allow_ignore, int32_t *out)
{
    if (!json_is_integer(v))
        return lg_fail(LG_ERR_IO, "%s:%zu: %s[%zu] is not an integer", path, line, field, i);
    json_int_t x = json_integer_value(v);
    if (allow_ignore && x == -100) {
        *out = -100;
        return LG_OK;
    }
    if (x < 0 || x > INT32_MAX || (vocab > 0 && x >= vocab))
        return lg_fail(LG_ERR_IO, "%s:%zu: %s[%zu] = %lld is not a token id%s", path, line, field, i,
                       (long long)x, vocab > 0 ? " of this model's vocabulary" : "");
    *out = (int32_t)x;
    return LG_OK;
}

static enum lg_status parse_line(lg_tokens_t *tk, const char *p, const char *end, size_t line, int64_t vocab)
{
    json_error_t err;
    json_t *obj = json_loadb(p, (size_t)(end - p), JSON_REJECT_DUPLICATES, &err);
    if (!obj)
        return lg_fail(LG_ERR_IO, "%s:%zu:%d: %s", tk->path, line, err.column, err.text);
    enum lg_status s = LG_OK;
    json_t *ids = json_object_get(obj, "input_ids"), *labels = json_object_get(obj, "labels"),
           *mask = json_object_get(obj, "loss_mask");
    size_t n = json_is_array(ids) ? json_array_size(ids) : 0;
    if (!json_is_object(obj) || !json_is_array(ids) || n == 0)
        s = lg_fail(LG_ERR_IO, "%s:%zu: expected an object with a non-empty 'input_ids' array", tk->path, line);
    else if (labels && (!json_is_array(labels) || json_array_size(labels) != n))
        s = lg_fail(LG_ERR_IO, "%s:%zu: 'labels' must be an array as long as input_ids (%zu)", tk->path, line, n);
    else if (mask && (!json_is_array(mask) || json_array_size(mask) != n))
        s = lg_fail(LG_ERR_IO, "%s:%zu: 'loss_mask' must be an array as long as input_ids (%zu)", tk->path, line,
                    n);
    if (s == LG_OK)
        s = reserve(tk, tk->n + 1, tk->ntok + n);
    int32_t *id = s == LG_OK ? tk->ids + tk->ntok : NULL, *lb = s == LG_OK ? tk->labels + tk->ntok : NULL;
    for (size_t i = 0; s == LG_OK && i < n; i++) {
        s = id_value(json_array_get(ids, i), tk->path, line, "input_ids", i, vocab, 0, &id[i]);
        if (s == LG_OK && labels)
            s = id_value(json_array_get(labels, i), tk->path, line, "labels", i, vocab, 1, &lb[i]);
        else if (s == LG_OK)
            lb[i] = id[i];
        if (s == LG_OK && mask) {
            json_t *v = json_array_get(mask, i);
            int on = 0;
            if (json_is_boolean(v))
                on = json_is_true(v);
            else if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1))
                on = (int)json_integer_value(v);
            else
                s = lg_fail(LG_ERR_IO, "%s:%zu: loss_mask[%zu] must be 0, 1 or a boolean", tk->path, line, i);
            if (s == LG_OK && !on)
                lb[i] = -100;
        }
    }
    json_decref(obj);
    if (s != LG_OK)
        return s;
    tk->line[tk->n] = line;
    tk->off[tk->n] = (int64_t)tk->ntok;
    tk->n++;
    tk->ntok += n;
    tk->off[tk->n] = (int64_t)tk->ntok;
    return LG_OK;
}

static int blank(const char *p, const char *end)
{
    for (; p < end; p++)
        if (!isspace((unsigned char)*p))
            return 0;
    return 1;
}

enum lg_status lg_tokens_load(const char *path, int64_t vocab, lg_tokens_t **out)
{
    if (!path || !out)
        return lg_fail(LG_ERR_INVALID, "lg_tokens_load: null argument");
    char *text;
    size_t size;
    enum lg_status s = lg_file_read(path, LG_FILE_LIMIT_DATA, &text, &size);
    if (s != LG_OK)
        return s;
    lg_tokens_t *tk = calloc(1, sizeof *tk);
    if (!tk || !(tk->path = strdup(path))) {
        free(tk);
        free(text);
        return lg_fail(LG_ERR_OOM, "%s: out of memory", path);
    }
    s = reserve(tk, 0, 1);
    if (s == LG_OK)
        tk->off[0] = 0;
    const char *p = text, *end = text + size;
    for (size_t line = 1; s == LG_OK && p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *le = nl ? nl : end;
        if (memchr(p, '\0', (size_t)(le - p)))
            s = lg_fail(LG_ERR_IO, "%s:%zu: binary data (NUL byte)", path, line);
        else if (!blank(p, le))
            s = parse_line(tk, p, le, line, vocab);
        p = nl ? nl + 1 : end;
    }
    free(text);
    if (s == LG_OK && tk->n == 0)
        s = lg_fail(LG_ERR_IO, "%s: no samples (empty dataset)", path);
    if (s != LG_OK) {
        lg_tokens_free(tk);
        return s;
    }
    *out = tk;
    return LG_OK;
}

void lg_tokens_free(lg_tokens_t *tk)
{
    if (!tk)
        return;
    free(tk->path);
    free(tk->off);
    free(tk->line);
    free(tk->ids);
    free(tk->labels);
    free(tk);
}

size_t lg_tokens_count(const lg_tokens_t *tk) { return tk ? tk->n : 0; }

enum lg_status lg_tokens_sample(const lg_tokens_t *tk, size_t i, const int32_t **ids, const int32_t **labels,
                                int64_t *n)
{
    if (!tk || i >= tk->n)
        return lg_fail(LG_ERR_INVALID, "lg_tokens_sample: sample %zu of %zu", i, tk ? tk->n : 0);
    if (ids)
        *ids = tk->ids + tk->off[i];
    if (labels)
        *labels = tk->labels + tk->off[i];
    if (n)
        *n = tk->off[i + 1] - tk->off[i];
    return LG_OK;
}

int64_t lg_tokens_loss_count(const lg_tokens_t *tk, size_t i)
{
    if (!tk || i >= tk->n)
        return 0;
    int64_t c = 0;
    for (int64_t t = tk->off[i] + 1; t < tk->off[i + 1]; t++)
        c += tk->labels[t] != -100;
    return c;
}

size_t lg_tokens_line(const lg_tokens_t *tk, size_t i) { return tk && i < tk->n ? tk->line[i] : 0; }

const char *lg_tokens_path(const lg_tokens_t *tk) { return tk ? tk->path : ""; }
