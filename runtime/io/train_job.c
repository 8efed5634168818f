/* train_job.c: the training settings of a job file (lg_trainjob.h). generator/job.lua validates the whole
 * file and fills every default (its TRAIN_DEFAULTS table is the one place they live); this side reads the
 * normalised table, resolves paths against the job file's directory, and names the job file and line in every
 * error it adds (a module name only the model can refuse, a missing model directory). */
#include "lg_trainjob.h"
#include "lg_base.h"
#include "lg_hf.h"
#include "lg_lua.h"
#include "lua_fields.h"

#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Drops "." components and folds "dir/.." pairs, lexically (specs/jobs/../../out -> out), in place. */
static void tidy_path(char *p)
{
    char *seg[512];
    int n = 0, abs = p[0] == '/';
    char *save, *copy = strdup(p);
    if (!copy)
        return;
    for (char *t = strtok_r(copy, "/", &save); t && n < 512; t = strtok_r(NULL, "/", &save)) {
        if (!strcmp(t, "."))
            continue;
        if (!strcmp(t, "..") && n > 0 && strcmp(seg[n - 1], ".."))
            n--;
        else if (!(abs && !strcmp(t, "..") && n == 0))
            seg[n++] = t;
    }
    char *o = p;
    if (abs)
        *o++ = '/';
    for (int i = 0; i < n; i++)
        o += sprintf(o, "%s%s", i ? "/" : "", seg[i]);
    if (o == p)
        strcpy(p, ".");
    else
        *o = '\0';
    free(copy);
}

/* A field as a malloc'd string (NULL when absent); resolved against the job's directory when `rel`. */
static char *str(lua_State *L, int t, const char *k, const char *job_path, int rel)
{
    lua_getfield(L, t, k);
    const char *s = lua_tostring(L, -1);
    char *out = NULL;
    if (s && rel && s[0] != '/') {
        const char *slash = strrchr(job_path, '/');
        size_t dir = slash ? (size_t)(slash - job_path) + 1 : 0;
        out = malloc(dir + strlen(s) + 1);
        if (out) {
            memcpy(out, job_path, dir);
            strcpy(out + dir, s);
            tidy_path(out);
        }
    } else if (s) {
        out = strdup(s);
    }
    lua_pop(L, 1);
    return out;
}

/* Every path of an adapter, resolved against the job's directory, must leave room for the names the trainer
 * appends (checkpoints/ckpt-NNNNNN/adapter-N.safetensors, adapter_model.safetensors), which go into fixed
 * buffers: a longer one would be cut short, not refused. */
#define LG_TRAIN_PATH_MAX 900

static enum lg_status path_lengths(const char *p, int line, const struct lg_train_adapter *a)
{
    const struct {
        const char *key, *v;
    } paths[] = {{"dataset", a->dataset}, {"validation", a->validation}, {"init_adapter", a->init_adapter},
                 {"output", a->output_dir}};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (paths[i].v && strlen(paths[i].v) > LG_TRAIN_PATH_MAX)
            return lg_fail(LG_ERR_SPEC, "%s:%d: error: adapters.%s: the path is %zu bytes, longer than the %d the "
                           "trainer takes", p, line, paths[i].key, strlen(paths[i].v), LG_TRAIN_PATH_MAX);
    return LG_OK;
}

static enum lg_status read_adapter(lua_State *L, int t, const struct lg_train_config *tc,
                                   struct lg_train_adapter *a)
{
    const char *p = tc->path, *bad = NULL;
    a->line = (int)lg_io_lua_int(L, t, "line", 1, INT32_MAX, &bad);
    a->name = str(L, t, "name", p, 0);
    a->dataset = str(L, t, "dataset", p, 1);
    a->validation = str(L, t, "validation", p, 1);
    a->init_adapter = str(L, t, "init_adapter", p, 1);
    a->output_dir = str(L, t, "output", p, 1);
    if (!a->output_dir && a->name) {
        size_t n = strlen(tc->output_dir) + strlen(a->name) + 2;
        if ((a->output_dir = malloc(n)))
            snprintf(a->output_dir, n, "%s/%s", tc->output_dir, a->name);
    }
    a->rank = (int)lg_io_lua_int(L, t, "rank", 16, INT32_MAX, &bad);
    a->alpha = lg_io_lua_num(L, t, "alpha", 32, &bad);
    a->dropout = lg_io_lua_num(L, t, "dropout", 0, &bad);
    a->lr = lg_io_lua_num(L, t, "lr", 2e-4, &bad);
    a->warmup = lg_io_lua_num(L, t, "warmup", 0, &bad);
    a->beta1 = lg_io_lua_num(L, t, "beta1", 0.9, &bad);
    a->beta2 = lg_io_lua_num(L, t, "beta2", 0.999, &bad);
    a->eps = lg_io_lua_num(L, t, "eps", 1e-8, &bad);
    a->weight_decay = lg_io_lua_num(L, t, "weight_decay", 0, &bad);
    a->grad_clip = lg_io_lua_num(L, t, "grad_clip", 0, &bad);
    a->global_batch = (int)lg_io_lua_int(L, t, "global_batch", 1, INT32_MAX, &bad);
    a->epochs = (int)lg_io_lua_int(L, t, "epochs", 1, INT32_MAX, &bad);
    a->steps = lg_io_lua_int(L, t, "steps", 0, INT32_MAX, &bad);
    a->seed = (uint64_t)lg_io_lua_int(L, t, "seed", 0, INT64_MAX, &bad);
    char *sched = str(L, t, "schedule", p, 0);
    a->schedule = !sched || !strcmp(sched, "cosine") ? LG_LR_COSINE
                  : !strcmp(sched, "linear")         ? LG_LR_LINEAR
                                                     : LG_LR_CONSTANT;
    free(sched);
    a->targets = 0;
    if (lua_getfield(L, t, "targets") == LUA_TTABLE) {
        int tt = lua_gettop(L);
        for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, tt); i++) {
            lua_rawgeti(L, tt, i);
            int m = lg_peft_module_parse(lua_tostring(L, -1));
            lua_pop(L, 1);
            if (m < 0) {
                lua_pop(L, 1);
                return lg_fail(LG_ERR_SPEC, "%s:%d: error: adapters.targets: unknown module", p, a->line);
            }
            a->targets |= 1u << m;
        }
    }
    lua_pop(L, 1);
    if (!a->name || !a->dataset || !a->output_dir)
        return lg_fail(LG_ERR_OOM, "job: out of memory");
    if (bad)
        return lg_fail(LG_ERR_INTERNAL, "%s:%d: adapters.%s: generator/job.lua passed a value out of the range of "
                       "its C field (a bound missing from the schema)", p, a->line, bad);
    return path_lengths(p, a->line, a);
}

static enum lg_status read_config(lua_State *L, int top, struct lg_train_config *tc)
{
    const char *p = tc->path;
    tc->name = str(L, top, "name", p, 0);
    if (lua_getfield(L, top, "model") == LUA_TTABLE)
        tc->model_dir = str(L, lua_gettop(L), "path", p, 1);
    lua_pop(L, 1);
    if (!tc->model_dir)
        return lg_fail(LG_ERR_SPEC, "%s: error: model.path: a training job names its Hugging Face model directory "
                       "(model = { path = \"...\" })", p);
    struct stat st;
    if (stat(tc->model_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return lg_fail(LG_ERR_SPEC, "%s: error: model.path: %s is not a directory (write a tiny one with "
                       "`loragen init-model specs/tiny.lua DIR`)", p, tc->model_dir);
    lua_getfield(L, top, "capacity_from_device");
    tc->capacity_auto = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, top, "training");
    int tt = lua_gettop(L);
    const char *bad = NULL;
    tc->backend = str(L, tt, "backend", p, 0);
    lua_getfield(L, tt, "deterministic");
    tc->deterministic = lua_toboolean(L, -1);
    lua_pop(L, 1);
    tc->checkpoint_every = (int)lg_io_lua_int(L, tt, "checkpoint_every", 0, INT32_MAX, &bad);
    tc->checkpoint_layers = (int)lg_io_lua_int(L, tt, "checkpoint_layers", 0, INT32_MAX, &bad);
    tc->eval_every = (int)lg_io_lua_int(L, tt, "eval_every", 0, INT32_MAX, &bad);
    tc->log_every = (int)lg_io_lua_int(L, tt, "log_every", 10, INT32_MAX, &bad);
    tc->memory_gb = lg_io_lua_num(L, tt, "memory_gb", 0, &bad);
    tc->output_dir = str(L, tt, "output", p, 1);
    lua_pop(L, 1);
    if (!tc->output_dir && tc->name) {
        size_t n = strlen(tc->name) + 8;
        if ((tc->output_dir = malloc(n)))
            snprintf(tc->output_dir, n, "out/%s", tc->name);
    }
    if (!tc->name || !tc->output_dir || !tc->backend)
        return lg_fail(LG_ERR_OOM, "job: out of memory");
    if (bad)
        return lg_fail(LG_ERR_INTERNAL, "%s: training.%s: generator/job.lua passed a value out of the range of its "
                       "C field (a bound missing from the schema)", p, bad);
    if (strlen(tc->output_dir) > LG_TRAIN_PATH_MAX)
        return lg_fail(LG_ERR_SPEC, "%s: error: training.output: the directory's path is %zu bytes, longer than "
                       "the %d the trainer's checkpoint paths take", p, strlen(tc->output_dir), LG_TRAIN_PATH_MAX);
    lua_getfield(L, top, "adapters");
    int ads = lua_gettop(L);
    tc->nadapters = (int)lua_rawlen(L, ads);
    tc->adapters = calloc((size_t)tc->nadapters + 1, sizeof *tc->adapters);
    enum lg_status s = tc->adapters ? LG_OK : lg_fail(LG_ERR_OOM, "job: out of memory");
    for (int i = 0; s == LG_OK && i < tc->nadapters; i++) {
        lua_rawgeti(L, ads, i + 1);
        s = read_adapter(L, lua_gettop(L), tc, &tc->adapters[i]);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return s;
}

enum lg_status lg_train_config_load(const char *path, struct lg_train_config *out)
{
    if (!path || !out)
        return lg_fail(LG_ERR_INVALID, "lg_train_config_load: null argument");
    memset(out, 0, sizeof *out);
    char *text;
    size_t size;
    enum lg_status s = lg_file_read(path, LG_FILE_LIMIT_TEXT, &text, &size);
    if (s != LG_OK)
        return s;
    lua_State *L;
    if ((s = lg_lua_open(&L)) != LG_OK) {
        free(text);
        return s;
    }
    lua_pushlstring(L, text, size);
    lua_pushstring(L, path);
    free(text);
    lua_createtable(L, 0, 1);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "device"); /* a trainer: capacity = "auto" may be sized from the device */
    s = lg_lua_pcall_module(L, "generator.job", "load", 3, 1, LG_ERR_SPEC);
    if (s == LG_OK && !(out->path = strdup(path)))
        s = lg_fail(LG_ERR_OOM, "job: out of memory");
    if (s == LG_OK)
        s = read_config(L, lua_gettop(L), out);
    lua_close(L);
    if (s != LG_OK)
        lg_train_config_free(out);
    return s;
}

void lg_train_config_free(struct lg_train_config *tc)
{
    if (!tc)
        return;
    for (int i = 0; tc->adapters && i < tc->nadapters; i++) {
        struct lg_train_adapter *a = &tc->adapters[i];
        free(a->name);
        free(a->dataset);
        free(a->validation);
        free(a->output_dir);
        free(a->init_adapter);
    }
    free(tc->adapters);
    free(tc->path);
    free(tc->name);
    free(tc->model_dir);
    free(tc->output_dir);
    free(tc->backend);
    memset(tc, 0, sizeof *tc);
}

const char *lg_train_config_defaults(void)
{
    static char text[4096];
    if (text[0])
        return text;
    lua_State *L;
    if (lg_lua_open(&L) != LG_OK)
        return "(the defaults could not be read: the job schema failed to load)\n";
    if (lg_lua_pcall_module(L, "generator.job", "defaults_text", 0, 1, LG_ERR_SPEC) == LG_OK)
        snprintf(text, sizeof text, "%s", lua_tostring(L, -1));
    else
        snprintf(text, sizeof text, "(the defaults could not be read: %s)\n", lg_last_error());
    lua_close(L);
    return text;
}
