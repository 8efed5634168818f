/* dataset.c: the dataset object as the scheduler sees it: per sample, its length, its loss-token count and
 * the source line it came from (for the job's error messages). Built here from lengths in memory, or sample
 * by sample by the readers in io (lg_sched_build.h), which parse the files; the layout stays private to
 * sched, so the readers and the planners cannot drift apart on it. */
#include "sched_internal.h"
#include "lg_sched_build.h"
#include "lg_base.h"

#include <stdlib.h>
#include <string.h>

#define FIRST_CAP 1024 /* samples a reader's dataset starts with room for; it doubles from there */

static enum lg_status ds_alloc(const char *path, size_t cap, lg_dataset_t **out)
{
    lg_dataset_t *ds = calloc(1, sizeof *ds);
    if (!ds)
        return lg_fail(LG_ERR_OOM, "dataset: out of memory");
    ds->cap = cap ? cap : 1;
    ds->len = malloc(ds->cap * sizeof *ds->len);
    ds->loss = malloc(ds->cap * sizeof *ds->loss);
    ds->line = malloc(ds->cap * sizeof *ds->line);
    ds->path = strdup(path ? path : "");
    if (!ds->len || !ds->loss || !ds->line || !ds->path) {
        lg_dataset_free(ds);
        return lg_fail(LG_ERR_OOM, "dataset: out of memory");
    }
    *out = ds;
    return LG_OK;
}

void lg_dataset_free(lg_dataset_t *ds)
{
    if (!ds)
        return;
    free(ds->len);
    free(ds->loss);
    free(ds->line);
    free(ds->path);
    free(ds);
}

size_t lg_dataset_size(const lg_dataset_t *ds) { return ds ? ds->n : 0; }
uint32_t lg_dataset_length(const lg_dataset_t *ds, size_t i) { return ds && i < ds->n ? ds->len[i] : 0; }
uint32_t lg_dataset_loss_tokens(const lg_dataset_t *ds, size_t i) { return ds && i < ds->n ? ds->loss[i] : 0; }

enum lg_status lg_dataset_from_lengths(const uint32_t *len, size_t n, lg_dataset_t **out)
{
    if (!len || !out)
        return lg_fail(LG_ERR_INVALID, "lg_dataset_from_lengths: null argument");
    if (n == 0)
        return lg_fail(LG_ERR_INVALID, "dataset: no samples (empty dataset)");
    for (size_t i = 0; i < n; i++)
        if (len[i] == 0)
            return lg_fail(LG_ERR_INVALID, "dataset: sample %zu has no tokens", i);
    enum lg_status s = ds_alloc(NULL, n, out);
    if (s != LG_OK)
        return s;
    memcpy((*out)->len, len, n * sizeof *len);
    for (size_t i = 0; i < n; i++) {
        (*out)->loss[i] = len[i] - 1; /* every position but the first: the causal shift */
        (*out)->line[i] = (uint32_t)(i + 1);
    }
    (*out)->n = n;
    return LG_OK;
}

enum lg_status lg_sched_dataset_init(const char *path, lg_dataset_t **out)
{
    if (!out)
        return lg_fail(LG_ERR_INVALID, "lg_sched_dataset_init: null argument");
    return ds_alloc(path, FIRST_CAP, out);
}

/* Grows the three arrays together; on failure the dataset keeps what it had and can still be freed. */
static enum lg_status grow(lg_dataset_t *ds)
{
    size_t nc = ds->cap * 2;
    uint32_t *a = realloc(ds->len, nc * sizeof *a);
    if (!a)
        return lg_fail(LG_ERR_OOM, "dataset: out of memory");
    ds->len = a;
    uint32_t *b = realloc(ds->loss, nc * sizeof *b);
    if (!b)
        return lg_fail(LG_ERR_OOM, "dataset: out of memory");
    ds->loss = b;
    uint32_t *c = realloc(ds->line, nc * sizeof *c);
    if (!c)
        return lg_fail(LG_ERR_OOM, "dataset: out of memory");
    ds->line = c;
    ds->cap = nc;
    return LG_OK;
}

enum lg_status lg_sched_dataset_push(lg_dataset_t *ds, uint32_t len, uint32_t loss, uint32_t line)
{
    if (ds->n == ds->cap) {
        enum lg_status s = grow(ds);
        if (s != LG_OK)
            return s;
    }
    ds->line[ds->n] = line;
    ds->len[ds->n] = len;
    ds->loss[ds->n] = loss;
    ds->n++;
    return LG_OK;
}
