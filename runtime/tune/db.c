/* db.c: the tuning database in memory (entries keyed by op, shape, token bucket, dtype, arch, GPU and SM count)
 * and the process's own database: the file named by $LORAGEN_TUNE_DB or the default path, read once. A file
 * that fails to load is reported once on stderr and ignored, so the runtime falls back to the generator's
 * defaults (the arch heuristics) rather than trusting a damaged file. The JSON side is db_json.c. */
#include "lg_tune.h"
#include "lg_base.h"
#include "tune_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

struct lg_tune_db {
    struct lg_tune_info info;
    struct lg_tune_entry *e;
    int n, cap;
};

enum lg_status lg_tune_db_init(lg_tune_db_t **out)
{
    lg_tune_db_t *db = calloc(1, sizeof *db);
    if (!db)
        return lg_fail(LG_ERR_OOM, "tuning database: out of memory");
    *out = db;
    return LG_OK;
}

void lg_tune_db_free(lg_tune_db_t *db)
{
    if (!db)
        return;
    free(db->e);
    free(db);
}

void lg_tune_db_set_info(lg_tune_db_t *db, const struct lg_tune_info *info) { db->info = *info; }
const struct lg_tune_info *lg_tune_db_info(const lg_tune_db_t *db) { return &db->info; }
int lg_tune_db_count(const lg_tune_db_t *db) { return db ? db->n : 0; }
const struct lg_tune_entry *lg_tune_db_entry(const lg_tune_db_t *db, int i)
{
    return db && i >= 0 && i < db->n ? &db->e[i] : NULL;
}

int lg_tune_key_eq(const struct lg_tune_key *a, const struct lg_tune_key *b)
{
    return !strcmp(a->op, b->op) && !strcmp(a->shape, b->shape) && a->tokens == b->tokens &&
           a->dtype == b->dtype && a->arch == b->arch && !strcmp(a->gpu, b->gpu) && a->sm_count == b->sm_count;
}

int lg_tune_key_cmp(const struct lg_tune_key *a, const struct lg_tune_key *b)
{
    int c;
    if ((c = strcmp(a->gpu, b->gpu)) || (c = a->sm_count - b->sm_count) || (c = a->arch - b->arch) ||
        (c = strcmp(a->op, b->op)) || (c = strcmp(a->shape, b->shape)) || (c = (int)a->dtype - (int)b->dtype) ||
        (c = a->tokens - b->tokens))
        return c;
    return 0;
}

const struct lg_tune_entry *lg_tune_db_find(const lg_tune_db_t *db, const struct lg_tune_key *k)
{
    for (int i = 0; db && k && i < db->n; i++)
        if (lg_tune_key_eq(&db->e[i].key, k))
            return &db->e[i];
    return NULL;
}

enum lg_status lg_tune_db_put(lg_tune_db_t *db, const struct lg_tune_entry *e)
{
    if (e->nparams < 0 || e->nparams > LG_TUNE_MAX_PARAMS)
        return lg_fail(LG_ERR_INVALID, "tuning database: %d parameters (at most %d)", e->nparams,
                       LG_TUNE_MAX_PARAMS);
    for (int i = 0; i < db->n; i++)
        if (lg_tune_key_eq(&db->e[i].key, &e->key)) {
            db->e[i] = *e;
            return LG_OK;
        }
    if (db->n == db->cap) {
        int cap = db->cap ? 2 * db->cap : 16;
        struct lg_tune_entry *ne = realloc(db->e, (size_t)cap * sizeof *ne);
        if (!ne)
            return lg_fail(LG_ERR_OOM, "tuning database: out of memory");
        db->e = ne, db->cap = cap;
    }
    db->e[db->n++] = *e;
    return LG_OK;
}

int lg_tune_bucket(int64_t n)
{
    int64_t b = 256;
    while (b < n && b < ((int64_t)1 << 30))
        b *= 2;
    return (int)b;
}

int lg_tune_entry_param(const struct lg_tune_entry *e, const char *name, int dflt)
{
    for (int i = 0; e && i < e->nparams; i++)
        if (!strcmp(e->params[i].name, name))
            return e->params[i].value;
    return dflt;
}

/* ---- the process's database ---- */

static pthread_mutex_t path_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static char path_set[4096];
static int path_overridden;
static lg_tune_db_t *proc_db;
static char problem[1024];

const char *lg_tune_default_path(void)
{
    static char buf[4096];
    const char *env = getenv("LORAGEN_TUNE_DB");
    if (env)
        return strcmp(env, "off") ? env : "";
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && *xdg)
        snprintf(buf, sizeof buf, "%s/loragen/tune.json", xdg);
    else if (home && *home)
        snprintf(buf, sizeof buf, "%s/.cache/loragen/tune.json", home);
    else
        buf[0] = 0;
    return buf;
}

enum lg_status lg_tune_set_path(const char *path)
{
    if (path && strlen(path) >= sizeof path_set)
        return lg_fail(LG_ERR_INVALID, "lg_tune_set_path: path longer than %zu bytes", sizeof path_set - 1);
    pthread_mutex_lock(&path_mu);
    path_overridden = path != NULL;
    snprintf(path_set, sizeof path_set, "%s", path ? path : "");
    pthread_mutex_unlock(&path_mu);
    return LG_OK;
}

static void load_default(void)
{
    char path[4096];
    pthread_mutex_lock(&path_mu);
    snprintf(path, sizeof path, "%s", path_overridden ? path_set : lg_tune_default_path());
    pthread_mutex_unlock(&path_mu);
    lg_tune_db_t *db = NULL;
    /* no file at the default place is the normal case of an untuned GPU: not a problem */
    if (path[0] && (path_overridden || getenv("LORAGEN_TUNE_DB") || access(path, F_OK) == 0)) {
        if (lg_tune_db_load(path, &db) != LG_OK) {
            snprintf(problem, sizeof problem, "%s", lg_last_error());
            fprintf(stderr, "loragen: warning: tuning database ignored (kernels keep their defaults): %s\n",
                    problem);
            lg_clear_error();
        }
    }
    if (!db && lg_tune_db_init(&db) != LG_OK)
        db = NULL;
    proc_db = db;
}

const lg_tune_db_t *lg_tune_default(void)
{
    pthread_once(&once, load_default);
    return proc_db;
}

const char *lg_tune_default_problem(void)
{
    pthread_once(&once, load_default);
    return problem;
}

const struct lg_tune_entry *lg_tune_lookup(const struct lg_tune_key *k) { return lg_tune_lookup_at(k, 0, NULL); }

/* ---- online tuning ---- */

static pthread_mutex_t online_mu = PTHREAD_MUTEX_INITIALIZER;
static lg_tune_online_fn online_fn;
static void *online_u;
static int online_tuned;
static struct lg_tune_key *online_failed; /* keys whose tuning failed: asked once, then the heuristic */
static int nfailed, capfailed;
static _Thread_local int in_online;        /* the hook's own layers look up without tuning */

void lg_tune_set_online(lg_tune_online_fn fn, void *u)
{
    pthread_mutex_lock(&online_mu);
    online_fn = fn, online_u = u;
    pthread_mutex_unlock(&online_mu);
}

int lg_tune_online_count(void)
{
    pthread_mutex_lock(&online_mu);
    int n = online_tuned;
    pthread_mutex_unlock(&online_mu);
    return n;
}

static int failed_before(const struct lg_tune_key *k)
{
    for (int i = 0; i < nfailed; i++)
        if (lg_tune_key_eq(&online_failed[i], k))
            return 1;
    return 0;
}

static void remember_failed(const struct lg_tune_key *k)
{
    if (nfailed == capfailed) {
        int cap = capfailed ? 2 * capfailed : 8;
        struct lg_tune_key *nk = realloc(online_failed, (size_t)cap * sizeof *nk);
        if (!nk)
            return;
        online_failed = nk, capfailed = cap;
    }
    online_failed[nfailed++] = *k;
}

/* The new entry into the file the process reads: merged with what the file holds now (another process of the
 * run may have added entries since this one read it), under an advisory lock, written atomically. */
static enum lg_status persist(const struct lg_tune_entry *e, const struct lg_tune_info *info, char *where, size_t n)
{
    char path[4096];
    pthread_mutex_lock(&path_mu);
    snprintf(path, sizeof path, "%s", path_overridden ? path_set : lg_tune_default_path());
    pthread_mutex_unlock(&path_mu);
    snprintf(where, n, "%s", path);
    if (!path[0])
        return LG_OK; /* no file (LORAGEN_TUNE_DB=off): kept for this process only */
    char lock[4200];
    snprintf(lock, sizeof lock, "%s.lock", path);
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return lg_fail(LG_ERR_IO, "%s: cannot create the lock file: %s", lock, strerror(errno));
    flock(fd, LOCK_EX);
    lg_tune_db_t *db = NULL;
    enum lg_status st = LG_OK;
    if (access(path, F_OK) == 0 && lg_tune_db_load(path, &db) != LG_OK) {
        /* a file the process refused is not merged into, nor overwritten: the user may want it */
        st = lg_fail(LG_ERR_INVALID, "not saved: %s", lg_last_error());
        db = NULL;
    } else if (!db)
        st = lg_tune_db_init(&db);
    if (st == LG_OK) {
        if (!lg_tune_db_info(db)->gpu[0])
            lg_tune_db_set_info(db, info);
        if ((st = lg_tune_db_put(db, e)) == LG_OK)
            st = lg_tune_db_save(db, path);
    }
    lg_tune_db_free(db);
    flock(fd, LOCK_UN);
    close(fd);
    return st;
}

const struct lg_tune_entry *lg_tune_lookup_at(const struct lg_tune_key *k, int64_t tokens, void *ctx)
{
    const lg_tune_db_t *pd = lg_tune_default();
    const struct lg_tune_entry *e = lg_tune_db_find(pd, k);
    if (e || in_online || !k)
        return e;
    pthread_mutex_lock(&online_mu);
    lg_tune_online_fn fn = online_fn;
    void *u = online_u;
    if (!fn || failed_before(k) || (e = lg_tune_db_find(pd, k))) {
        pthread_mutex_unlock(&online_mu);
        return e;
    }
    /* one key at a time: another thread asking for the same key waits and then finds it */
    struct lg_tune_entry got;
    struct lg_tune_info info;
    memset(&got, 0, sizeof got), memset(&info, 0, sizeof info);
    in_online = 1;
    enum lg_status st = fn(u, ctx, k, tokens, &got, &info);
    in_online = 0;
    char where[4096] = "";
    if (st == LG_OK) {
        got.key = *k; /* filed under the key that was asked for, so the next lookup finds it */
        st = lg_tune_db_put(proc_db, &got);
        if (st == LG_OK) {
            online_tuned++;
            e = lg_tune_db_find(pd, k);
            if (persist(&got, &info, where, sizeof where) != LG_OK) {
                fprintf(stderr, "loragen: online tuning: %s %s: the winner is used by this process but %s\n",
                        k->op, k->shape, lg_last_error());
                lg_clear_error();
            }
        }
    }
    if (st != LG_OK) {
        fprintf(stderr, "loragen: online tuning: %s %s @ %d tokens failed, the defaults stay: %s\n", k->op,
                k->shape, k->tokens, lg_last_error());
        lg_clear_error();
        remember_failed(k);
    }
    pthread_mutex_unlock(&online_mu);
    return e;
}
