/* dataset_read.c: the dataset readers: JSONL (input_ids with optional labels, -100 masking a token, or loss_mask)
 * and length traces (one length a line), each sample handed to sched's dataset (lg_sched_build.h) with its
 * loss-token count (after the causal shift: at most n-1 of n tokens) and line. A JSONL line is held to the
 * trainer's token reader's rules but the vocabulary, which the scheduler does not know (lg_tokens.h): no
 * duplicate keys, ids and labels 0 .. 2^31-1 (or -100), loss_mask 0, 1 or a boolean; so `loragen plan`
 * accepts only what `loragen train` would. Every error names the file and line, so a bad line in a 100k-line
 * file is found at once. */
#include "lg_io.h"
#include "lg_sched_build.h"
#include "lg_base.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static int is_blank(const char *p, const char *end)
{
    for (; p < end; p++)
        if (!isspace((unsigned char)*p))
            return 0;
    return 1;
}

/* Counts the loss tokens of one JSONL sample, checking the optional labels / loss_mask arrays. The trainer
 * follows the causal-LM shift (position t predicts label t+1, as in Hugging Face), so the first label of a
 * sample is never a target: a loss token is a position t >= 1 whose label is not -100 and whose loss_mask
 * is on, the same count as lg_tokens_loss_count (lg_tokens.h). */
static enum lg_status jsonl_sample(json_t *obj, const char *path, size_t line, uint32_t *len, uint32_t *loss)
{
    if (!json_is_object(obj))
        return lg_fail(LG_ERR_IO, "%s:%zu: expected a JSON object per line", path, line);
    json_t *ids = json_object_get(obj, "input_ids");
    if (!ids)
        return lg_fail(LG_ERR_IO, "%s:%zu: missing field 'input_ids'", path, line);
    if (!json_is_array(ids))
        return lg_fail(LG_ERR_IO, "%s:%zu: 'input_ids' must be an array of token ids", path, line);
    size_t n = json_array_size(ids);
    if (n == 0)
        return lg_fail(LG_ERR_IO, "%s:%zu: 'input_ids' is empty (a sample needs at least one token)", path,
                       line);
    if (n > 0x7fffffff)
        return lg_fail(LG_ERR_IO, "%s:%zu: 'input_ids' too long", path, line);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(ids, i);
        if (!json_is_integer(v))
            return lg_fail(LG_ERR_IO, "%s:%zu: input_ids[%zu] is not an integer token id", path, line, i);
        if (json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
            return lg_fail(LG_ERR_IO, "%s:%zu: input_ids[%zu] = %lld is not a token id", path, line, i,
                           (long long)json_integer_value(v));
    }
    json_t *labels = json_object_get(obj, "labels");
    json_t *mask = json_object_get(obj, "loss_mask");
    if (labels && (!json_is_array(labels) || json_array_size(labels) != n))
        return lg_fail(LG_ERR_IO, "%s:%zu: 'labels' must be an array as long as input_ids (%zu)", path, line, n);
    if (mask && (!json_is_array(mask) || json_array_size(mask) != n))
        return lg_fail(LG_ERR_IO, "%s:%zu: 'loss_mask' must be an array as long as input_ids (%zu)", path, line,
                       n);
    size_t counted = 0;
    for (size_t i = 0; i < n; i++) {
        int on = 1;
        if (labels) {
            json_t *v = json_array_get(labels, i);
            if (!json_is_integer(v))
                return lg_fail(LG_ERR_IO, "%s:%zu: labels[%zu] is not an integer", path, line, i);
            json_int_t x = json_integer_value(v);
            if (x != -100 && (x < 0 || x > INT32_MAX))
                return lg_fail(LG_ERR_IO, "%s:%zu: labels[%zu] = %lld is not a token id (or -100 for no loss)", path,
                               line, i, (long long)x);
            on = x != -100;
        }
        if (mask) {
            json_t *v = json_array_get(mask, i);
            if (!json_is_boolean(v) &&
                !(json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1)))
                return lg_fail(LG_ERR_IO, "%s:%zu: loss_mask[%zu] must be 0, 1 or a boolean", path, line, i);
            on &= json_is_boolean(v) ? json_is_true(v) : json_integer_value(v) != 0;
        }
        counted += i > 0 && on; /* the causal shift: position 0 is never a target */
    }
    *len = (uint32_t)n;
    *loss = (uint32_t)counted;
    return LG_OK;
}

static enum lg_status parse_jsonl_line(lg_dataset_t *ds, const char *p, const char *end,
                                       const char *path, size_t line)
{
    json_error_t jerr;
    json_t *obj = json_loadb(p, (size_t)(end - p), JSON_REJECT_DUPLICATES, &jerr); /* tokens.c refuses them too */
    if (!obj)
        return lg_fail(LG_ERR_IO, "%s:%zu:%d: malformed JSON: %s", path, line, jerr.column, jerr.text);
    uint32_t len = 0, loss = 0;
    enum lg_status s = jsonl_sample(obj, path, line, &len, &loss);
    json_decref(obj);
    return s != LG_OK ? s : lg_sched_dataset_push(ds, len, loss, (uint32_t)line);
}

static enum lg_status parse_trace_line(lg_dataset_t *ds, const char *p, const char *end,
                                       const char *path, size_t line)
{
    while (p < end && isspace((unsigned char)*p))
        p++;
    if (*p == '#')
        return LG_OK;
    char buf[64];
    size_t n = (size_t)(end - p);
    while (n > 0 && isspace((unsigned char)p[n - 1]))
        n--;
    if (n >= sizeof buf)
        return lg_fail(LG_ERR_IO, "%s:%zu: not a sample length: '%.20s...'", path, line, p);
    memcpy(buf, p, n);
    buf[n] = '\0';
    char *e;
    errno = 0;
    unsigned long v = strtoul(buf, &e, 10);
    if (*e != '\0' || errno || buf[0] == '-' || buf[0] == '+')
        return lg_fail(LG_ERR_IO, "%s:%zu: not a sample length: '%s' (expected one positive integer a line)",
                       path, line, buf);
    if (v == 0 || v > 0x7fffffff)
        return lg_fail(LG_ERR_IO, "%s:%zu: sample length %s out of range (1 .. 2^31-1)", path, line, buf);
    return lg_sched_dataset_push(ds, (uint32_t)v, (uint32_t)v - 1, (uint32_t)line); /* all but position 0 */
}

static enum lg_dataset_format format_of(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (dot && (!strcmp(dot, ".jsonl") || !strcmp(dot, ".json") || !strcmp(dot, ".ndjson")))
        return LG_DATASET_JSONL;
    return LG_DATASET_TRACE;
}

enum lg_status lg_dataset_load(const char *path, enum lg_dataset_format fmt, lg_dataset_t **out)
{
    if (!path || !out)
        return lg_fail(LG_ERR_INVALID, "lg_dataset_load: null argument");
    if (fmt == LG_DATASET_AUTO)
        fmt = format_of(path);
    char *text;
    size_t size;
    enum lg_status s = lg_file_read(path, LG_FILE_LIMIT_DATA, &text, &size);
    if (s != LG_OK)
        return s;
    lg_dataset_t *ds;
    if ((s = lg_sched_dataset_init(path, &ds)) != LG_OK) {
        free(text);
        return s;
    }
    const char *p = text, *end = text + size;
    size_t line = 0;
    while (p < end && s == LG_OK) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        line++;
        if (memchr(p, '\0', (size_t)(le - p)))
            s = lg_fail(LG_ERR_IO, "%s:%zu: binary data (NUL byte)", path, line);
        else if (!is_blank(p, le))
            s = fmt == LG_DATASET_JSONL ? parse_jsonl_line(ds, p, le, path, line)
                                        : parse_trace_line(ds, p, le, path, line);
        p = nl ? nl + 1 : end;
    }
    free(text);
    if (s == LG_OK && lg_dataset_size(ds) == 0)
        s = lg_fail(LG_ERR_IO, "%s: no samples (empty dataset)", path);
    if (s != LG_OK) {
        lg_dataset_free(ds);
        return s;
    }
    *out = ds;
    return LG_OK;
}
