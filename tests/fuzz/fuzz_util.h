/* fuzz_util.h: what the libFuzzer targets share. The parsers under test read files by path, so each input is
 * written to a file in a private scratch directory (under /dev/shm when it exists, else $TMPDIR or /tmp) that
 * is removed at exit; fixtures a target needs beside its input (datasets, shards, a model directory) go there
 * too, once. */
#ifndef LG_FUZZ_UTIL_H
#define LG_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* The scratch directory, created on first use. */
const char *lg_fuzz_dir(void);
/* Writes data to <scratch>/name and returns its path (static storage, valid until the next call). */
const char *lg_fuzz_write(const char *name, const void *data, size_t n);
/* Creates <scratch>/name as a directory and returns its path (static storage). */
const char *lg_fuzz_mkdir(const char *name);
/* Writes a fixture from a C string. */
void lg_fuzz_fixture(const char *name, const char *text);

#endif
