/* fuzz_util.c: the scratch directory and file helpers of fuzz_util.h. */
#include "fuzz_util.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[512];

static void remove_tree(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz: could not remove %s\n", path);
}

static void cleanup(void)
{
    if (dir[0])
        remove_tree(dir);
}

/* A crash (the point of fuzzing) skips atexit: scratch directories of processes that are gone are removed by
 * the next one. They are named lg-fuzz-<pid>. */
static void remove_stale(const char *base)
{
    DIR *d = opendir(base);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        int pid;
        char path[600];
        if (sscanf(e->d_name, "lg-fuzz-%d", &pid) == 1 && pid > 0 && kill(pid, 0) != 0 && errno == ESRCH) {
            snprintf(path, sizeof path, "%s/%s", base, e->d_name);
            remove_tree(path);
        }
    }
    if (d)
        closedir(d);
}

const char *lg_fuzz_dir(void)
{
    if (dir[0])
        return dir;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    base = base && *base ? base : "/tmp";
    remove_stale(base);
    snprintf(dir, sizeof dir, "%s/lg-fuzz-%ld", base, (long)getpid());
    remove_tree(dir);
    if (mkdir(dir, 0700) != 0) {
        fprintf(stderr, "fuzz: mkdir %s: %s\n", dir, strerror(errno));
        abort();
    }
    atexit(cleanup);
    return dir;
}

const char *lg_fuzz_write(const char *name, const void *data, size_t n)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", lg_fuzz_dir(), name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "fuzz: %s: %s\n", path, strerror(errno));
        abort();
    }
    const char *p = data;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) {
            fprintf(stderr, "fuzz: write %s: %s\n", path, strerror(errno));
            abort();
        }
        p += w;
        n -= (size_t)w;
    }
    close(fd);
    return path;
}

const char *lg_fuzz_mkdir(const char *name)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", lg_fuzz_dir(), name);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "fuzz: mkdir %s: %s\n", path, strerror(errno));
        abort();
    }
    return path;
}

void lg_fuzz_fixture(const char *name, const char *text) { lg_fuzz_write(name, text, strlen(text)); }
