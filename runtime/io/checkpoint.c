/* checkpoint.c: crash-safe checkpoint directories (lg_ckpt.h). The order of the writes is the whole point:
 * files → fsync each → manifest (sizes, hashes) → fsync the directory → rename into place → fsync the root →
 * replace `latest` atomically → prune old checkpoints. A crash anywhere leaves `latest` naming a complete,
 * verified checkpoint (the previous one until the new one is whole). Readers verify before trusting. */
#include "lg_ckpt.h"
#include "lg_base.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LG_CKPT_FORMAT 1
#define LG_CKPT_FILE_LIMIT (64ull << 30)
#define LG_CKPT_NUMBER_MAX 99999999 /* ckpt-NNNNNN: at most 8 digits, so the next number fits an int */
#define LG_PID_MAX 4194304          /* the kernel's largest pid_max */

struct lg_ckpt_writer {
    char root[1024];
    char tmp[1100];
};

static enum lg_status sync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lg_fail(LG_ERR_IO, "%s: cannot open to sync: %s", path, strerror(errno));
    int bad = fsync(fd) != 0 && errno != EINVAL;
    int e = errno;
    close(fd);
    return bad ? lg_fail(LG_ERR_IO, "%s: fsync: %s", path, strerror(e)) : LG_OK;
}

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[1400];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(dir);
}

static int pid_gone(long pid) { return pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH; }

/* The decimal number that follows `prefix` in a directory entry's name, up to `max`; -1 when the name is not
 * prefix + digits (no sign, no space) or the number is larger. *rest: what follows the digits. Names are data
 * here (a `latest` file, a directory anyone can create): sscanf's %d would take " +5", and a number past the
 * int's range is undefined behaviour there. */
static long name_number(const char *name, const char *prefix, long max, const char **rest)
{
    size_t k = strlen(prefix);
    if (strncmp(name, prefix, k) != 0 || name[k] < '0' || name[k] > '9')
        return -1;
    long v = 0;
    const char *p = name + k;
    for (; *p >= '0' && *p <= '9'; p++)
        if ((v = v * 10 + (*p - '0')) > max)
            return -1;
    *rest = p;
    return v;
}

/* What writers that were killed left in root: their temporary checkpoint directories (.tmp-ckpt-PID) and
 * half-written `latest` pointers (latest.tmp-PID-N, lg_file_write_atomic's names). Never a committed checkpoint,
 * and never what a live writer (another run in the same root) is writing. */
static void remove_stale(const char *root)
{
    DIR *d = opendir(root);
    struct dirent *e;
    char path[1400];
    const char *rest;
    while (d && (e = readdir(d))) {
        snprintf(path, sizeof path, "%s/%s", root, e->d_name);
        long pid = name_number(e->d_name, ".tmp-ckpt-", LG_PID_MAX, &rest);
        if (pid > 0 && !*rest && pid_gone(pid))
            remove_tree(path);
        else if ((pid = name_number(e->d_name, "latest.tmp-", LG_PID_MAX, &rest)) > 0 && *rest == '-' &&
                 pid_gone(pid))
            unlink(path);
    }
    if (d)
        closedir(d);
}

enum lg_status lg_ckpt_begin(const char *root, lg_ckpt_writer_t **out)
{
    enum lg_status s = lg_dir_create(root);
    if (s != LG_OK)
        return s;
    lg_ckpt_writer_t *w = calloc(1, sizeof *w);
    if (!w)
        return lg_fail(LG_ERR_OOM, "checkpoint: out of memory");
    snprintf(w->root, sizeof w->root, "%s", root);
    snprintf(w->tmp, sizeof w->tmp, "%s/.tmp-ckpt-%ld", root, (long)getpid());
    remove_tree(w->tmp); /* a leftover of a crashed writer with our pid */
    remove_stale(root);
    if (mkdir(w->tmp, 0777) != 0) {
        s = lg_fail(LG_ERR_IO, "%s: cannot create: %s", w->tmp, strerror(errno));
        free(w);
        return s;
    }
    *out = w;
    return LG_OK;
}

const char *lg_ckpt_dir(const lg_ckpt_writer_t *w) { return w->tmp; }

void lg_ckpt_abort(lg_ckpt_writer_t *w)
{
    if (!w)
        return;
    remove_tree(w->tmp);
    free(w);
}

static int ckpt_number(const char *name)
{
    const char *rest;
    long n = name_number(name, "ckpt-", LG_CKPT_NUMBER_MAX, &rest);
    return n >= 0 && !*rest ? (int)n : -1;
}

/* The numbers of the checkpoints under root, ascending. */
static int list_ckpts(const char *root, int *nums, int cap)
{
    DIR *d = opendir(root);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < cap) {
        int k = ckpt_number(e->d_name);
        if (k >= 0)
            nums[n++] = k;
    }
    closedir(d);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && nums[j - 1] > nums[j]; j--) {
            int t = nums[j];
            nums[j] = nums[j - 1];
            nums[j - 1] = t;
        }
    return n;
}

static enum lg_status hash_file(const char *path, uint64_t *size, char hex[33])
{
    char *data;
    size_t n;
    enum lg_status s = lg_file_read(path, LG_CKPT_FILE_LIMIT, &data, &n);
    if (s != LG_OK)
        return s;
    lg_hash128_hex(data, n, hex);
    *size = n;
    free(data);
    return LG_OK;
}

static enum lg_status write_manifest(const char *dir)
{
    json_t *files = json_object();
    DIR *d = opendir(dir);
    if (!d || !files) {
        json_decref(files);
        if (d)
            closedir(d);
        return lg_fail(LG_ERR_IO, "%s: cannot list: %s", dir, strerror(errno));
    }
    enum lg_status s = LG_OK;
    struct dirent *e;
    char path[1400];
    while (s == LG_OK && (e = readdir(d))) {
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (!strcmp(e->d_name, "manifest.json") || stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        uint64_t size;
        char hex[33];
        if ((s = hash_file(path, &size, hex)) != LG_OK)
            break;
        json_object_set_new(files, e->d_name, json_pack("{s:I,s:s}", "bytes", (json_int_t)size, "murmur3_128", hex));
    }
    closedir(d);
    json_t *m = json_pack("{s:i,s:o}", "format", LG_CKPT_FORMAT, "files", files);
    char *text = s == LG_OK && m ? json_dumps(m, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(m);
    if (s == LG_OK && !text)
        s = lg_fail(LG_ERR_OOM, "checkpoint: out of memory");
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    if (s == LG_OK)
        s = lg_file_write_atomic(path, text, strlen(text));
    free(text);
    return s;
}

enum lg_status lg_ckpt_commit(lg_ckpt_writer_t *w, int keep)
{
    int nums[4096];
    int n = list_ckpts(w->root, nums, 4096);
    int next = n ? nums[n - 1] + 1 : 0;
    if (next > LG_CKPT_NUMBER_MAX) {
        lg_ckpt_abort(w);
        return lg_fail(LG_ERR_IO, "%s: holds ckpt-%d, the last checkpoint number there can be; clear the directory "
                       "or use another", w->root, LG_CKPT_NUMBER_MAX);
    }
    char final[1100], latest[1100], name[32];
    snprintf(name, sizeof name, "ckpt-%06d", next);
    snprintf(final, sizeof final, "%s/%s", w->root, name);
    snprintf(latest, sizeof latest, "%s/latest", w->root);
    enum lg_status s = write_manifest(w->tmp);
    if (s == LG_OK)
        s = sync_path(w->tmp);
    if (s == LG_OK && rename(w->tmp, final) != 0)
        s = lg_fail(LG_ERR_IO, "%s: cannot rename to %s: %s", w->tmp, final, strerror(errno));
    if (s != LG_OK) {
        lg_ckpt_abort(w);
        return s;
    }
    char line[40];
    int len = snprintf(line, sizeof line, "%s\n", name);
    if ((s = sync_path(w->root)) == LG_OK)
        s = lg_file_write_atomic(latest, line, (size_t)len);
    if (s == LG_OK)
        s = sync_path(w->root);
    n = list_ckpts(w->root, nums, 4096);
    for (int i = 0; s == LG_OK && i < n - (keep < 1 ? 1 : keep); i++) {
        char old[1100];
        snprintf(old, sizeof old, "%s/ckpt-%06d", w->root, nums[i]);
        remove_tree(old);
    }
    free(w);
    return s;
}

enum lg_status lg_ckpt_verify(const char *dir)
{
    char path[1400];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    char *text;
    size_t n;
    enum lg_status s = lg_file_read(path, LG_FILE_LIMIT_TEXT, &text, &n);
    if (s != LG_OK)
        return lg_fail_wrap(LG_ERR_IO, "checkpoint %s is incomplete or damaged: ", dir);
    json_error_t err;
    json_t *m = json_loadb(text, n, JSON_REJECT_DUPLICATES, &err);
    free(text);
    json_t *files = m ? json_object_get(m, "files") : NULL;
    if (!m || json_integer_value(json_object_get(m, "format")) != LG_CKPT_FORMAT || !json_is_object(files)) {
        json_decref(m);
        return lg_fail(LG_ERR_IO, "%s: not a loragen checkpoint manifest (format %d)", path, LG_CKPT_FORMAT);
    }
    const char *name;
    json_t *f;
    json_object_foreach(files, name, f)
    {
        char fp[1400], hex[33];
        uint64_t size;
        snprintf(fp, sizeof fp, "%s/%s", dir, name);
        const char *want = json_string_value(json_object_get(f, "murmur3_128"));
        json_int_t bytes = json_integer_value(json_object_get(f, "bytes"));
        if (strchr(name, '/') || !want) {
            s = lg_fail(LG_ERR_IO, "%s: bad entry '%s'", path, name);
            break;
        }
        if ((s = hash_file(fp, &size, hex)) != LG_OK) {
            s = lg_fail_wrap(LG_ERR_IO, "checkpoint %s: ", dir);
            break;
        }
        if ((json_int_t)size != bytes || strcmp(hex, want)) {
            s = lg_fail(LG_ERR_IO, "checkpoint %s: %s does not match its checksum in the manifest (%llu bytes, "
                        "expected %lld): the checkpoint is damaged; resume from an older one or start afresh",
                        dir, name, (unsigned long long)size, (long long)bytes);
            break;
        }
    }
    /* and nothing in the directory is trusted without being in the manifest */
    DIR *d = s == LG_OK ? opendir(dir) : NULL;
    struct dirent *e;
    while (d && s == LG_OK && (e = readdir(d))) {
        struct stat st;
        char fp[1400];
        snprintf(fp, sizeof fp, "%s/%s", dir, e->d_name);
        if (strcmp(e->d_name, "manifest.json") && stat(fp, &st) == 0 && S_ISREG(st.st_mode) &&
            !json_object_get(files, e->d_name))
            s = lg_fail(LG_ERR_IO, "checkpoint %s: %s is not in its manifest: the checkpoint was altered after it "
                        "was written; resume from an older one or start afresh", dir, e->d_name);
    }
    if (d)
        closedir(d);
    json_decref(m);
    return s;
}

enum lg_status lg_ckpt_latest(const char *root, char *dir, size_t n)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/latest", root);
    char *text;
    size_t len;
    if (lg_file_read(path, 256, &text, &len) != LG_OK)
        return lg_fail(LG_ERR_IO, "%s: no checkpoint to resume from (%s)", root, lg_last_error());
    while (len && (text[len - 1] == '\n' || text[len - 1] == ' '))
        text[--len] = '\0';
    enum lg_status s = LG_OK;
    if (ckpt_number(text) < 0)
        s = lg_fail(LG_ERR_IO, "%s: names '%s', not a checkpoint", path, text);
    else
        snprintf(dir, n, "%s/%s", root, text);
    free(text);
    return s == LG_OK ? lg_ckpt_verify(dir) : s;
}

enum lg_status lg_ckpt_clear(const char *root, int *removed)
{
    int nums[4096];
    int n = list_ckpts(root, nums, 4096);
    char path[1100];
    snprintf(path, sizeof path, "%s/latest", root);
    unlink(path); /* first, so no reader follows it into a half-removed directory */
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/ckpt-%06d", root, nums[i]);
        remove_tree(path);
    }
    if (removed)
        *removed = n;
    return LG_OK;
}
