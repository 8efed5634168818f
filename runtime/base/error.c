/* error.c: the per-thread last-error detail behind lg_last_error(), and the dtype helpers every module uses.
 * Errors carry whole NVRTC logs and every spec error found, so the buffer grows as needed. */
#include "lg_base.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char *err_buf;
static _Thread_local size_t err_cap;

/* Formats fmt into a new buffer, followed by `suffix` (the old detail when wrapping). */
static void set_detail(const char *suffix, const char *fmt, va_list ap)
{
    va_list cp;
    va_copy(cp, ap);
    int n = vsnprintf(NULL, 0, fmt, cp);
    va_end(cp);
    if (n < 0)
        n = 0;
    size_t plen = suffix ? strlen(suffix) : 0;
    size_t need = plen + (size_t)n + 1;
    char *nb = malloc(need);
    if (!nb)
        return; /* keep the old detail rather than lose both */
    vsnprintf(nb, (size_t)n + 1, fmt, ap);
    if (suffix)
        memcpy(nb + n, suffix, plen + 1);
    free(err_buf);
    err_buf = nb;
    err_cap = need;
}

const char *lg_last_error(void) { return err_buf ? err_buf : ""; }

void lg_clear_error(void)
{
    if (err_buf)
        err_buf[0] = '\0';
}

enum lg_status lg_fail(enum lg_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_detail(NULL, fmt, ap);
    va_end(ap);
    return s;
}

enum lg_status lg_fail_wrap(enum lg_status s, const char *fmt, ...)
{
    char *old = err_buf ? strdup(err_buf) : NULL;
    va_list ap;
    va_start(ap, fmt);
    set_detail(old ? old : "", fmt, ap);
    va_end(ap);
    free(old);
    return s;
}

const char *lg_status_str(enum lg_status s)
{
    switch (s) {
    case LG_OK: return "ok";
    case LG_ERR_INVALID: return "invalid argument";
    case LG_ERR_SPEC: return "bad spec";
    case LG_ERR_IO: return "i/o error";
    case LG_ERR_NVRTC: return "NVRTC compilation failed";
    case LG_ERR_CUDA: return "CUDA error";
    case LG_ERR_CUBLAS: return "cuBLASLt error";
    case LG_ERR_OOM: return "out of memory";
    case LG_ERR_UNSUPPORTED: return "unsupported";
    case LG_ERR_NO_GPU: return "no GPU";
    case LG_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *lg_dtype_name(enum lg_dtype t)
{
    switch (t) {
    case LG_BF16: return "bf16";
    case LG_FP16: return "fp16";
    case LG_FP32: return "fp32";
    }
    return "?";
}

size_t lg_dtype_size(enum lg_dtype t) { return t == LG_FP32 ? 4 : 2; }

enum lg_status lg_dtype_parse(const char *name, enum lg_dtype *out)
{
    static const char *names[] = {"bf16", "fp16", "fp32"};
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, names[i]) == 0) {
            *out = (enum lg_dtype)i;
            return LG_OK;
        }
    return lg_fail(LG_ERR_INVALID, "unknown dtype '%s' (expected bf16, fp16 or fp32)", name ? name : "(null)");
}
