/* file.c: whole-file reads and atomic writes (lg_file.h). One implementation for the spec and job loaders, the
 * datasets, the JIT cache, `loragen gen` and, later, checkpoints: a FIFO or /dev/zero given as a file must be
 * refused, not block or fill memory, and a reader must never see a half-written file. */
#include "lg_base.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *kind_of(mode_t m)
{
    if (S_ISDIR(m))
        return "a directory";
    if (S_ISFIFO(m))
        return "a FIFO";
    if (S_ISCHR(m) || S_ISBLK(m))
        return "a device";
    if (S_ISSOCK(m))
        return "a socket";
    return "not a regular file";
}

static int read_all(int fd, char *buf, size_t n, size_t *got)
{
    *got = 0;
    while (*got < n) {
        ssize_t r = read(fd, buf + *got, n - *got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return errno;
        if (r == 0)
            break; /* shrank under us: return what is there */
        *got += (size_t)r;
    }
    return 0;
}

enum lg_status lg_file_read(const char *path, uint64_t limit, char **data, size_t *size)
{
    /* O_NONBLOCK: opening a FIFO with no writer must not block before fstat can refuse it. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return lg_fail(LG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return lg_fail(LG_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return lg_fail(LG_ERR_IO, "%s: cannot read: %s, not a regular file", path, kind_of(st.st_mode));
    }
    if ((uint64_t)st.st_size > limit) {
        close(fd);
        return lg_fail(LG_ERR_IO, "%s: %lld bytes is over the limit of %llu bytes for this kind of file", path,
                       (long long)st.st_size, (unsigned long long)limit);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return lg_fail(LG_ERR_OOM, "%s: out of memory reading %zu bytes", path, n);
    }
    size_t got;
    int err = read_all(fd, buf, n, &got);
    close(fd);
    if (err) {
        free(buf);
        return lg_fail(LG_ERR_IO, "%s: read error: %s", path, strerror(err));
    }
    buf[got] = '\0';
    *data = buf;
    if (size)
        *size = got;
    return LG_OK;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? errno : EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

enum lg_status lg_file_write_atomic(const char *path, const void *data, size_t n)
{
    static unsigned counter; /* distinct temp names for concurrent writers within one process */
    size_t tn = strlen(path) + 64;
    char *tmp = malloc(tn);
    if (!tmp)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", path);
    snprintf(tmp, tn, "%s.tmp-%ld-%u", path, (long)getpid(), __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    int err = fd < 0 ? errno : write_all(fd, data, n);
    if (!err && fsync(fd) != 0 && errno != EINVAL)
        err = errno;
    if (fd >= 0 && close(fd) != 0 && !err)
        err = errno;
    if (!err && rename(tmp, path) != 0)
        err = errno;
    if (err && fd >= 0)
        unlink(tmp);
    free(tmp);
    if (err)
        return lg_fail(LG_ERR_IO, "%s: cannot write: %s", path, strerror(err));
    return LG_OK;
}

enum lg_status lg_dir_create(const char *path)
{
    if (!path[0])
        return lg_fail(LG_ERR_INVALID, "cannot create a directory with an empty name");
    char *p = strdup(path);
    if (!p)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", path);
    int err = 0;
    for (char *s = p + 1; !err; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST)
            err = errno;
        *s = c;
        if (c == '\0')
            break;
    }
    free(p);
    struct stat st;
    if (!err && stat(path, &st) != 0)
        err = errno;
    else if (!err && !S_ISDIR(st.st_mode))
        err = ENOTDIR;
    if (err)
        return lg_fail(LG_ERR_IO, "%s: cannot create directory: %s", path, strerror(err));
    return LG_OK;
}
