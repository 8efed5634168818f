/* fuzz_safetensors.c: lg_st_open on arbitrary bytes (the 8-byte header length, the JSON header, dtypes,
 * shapes, offsets), then every query a loader makes: each tensor's view, lookup by name, metadata, and the fp32
 * conversion of the small float tensors (which reads the mapped data the offsets point at). */
#include "fuzz_util.h"
#include "lg_hf.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = lg_fuzz_write("x.safetensors", data, size);
    lg_st_t *st;
    if (lg_st_open(path, &st) != LG_OK)
        return 0;
    size_t n = lg_st_count(st);
    for (size_t i = 0; i < n; i++) {
        struct lg_st_tensor t;
        if (lg_st_tensor(st, i, &t) != LG_OK)
            abort(); /* every index below the count is valid */
        struct lg_st_tensor u;
        if (lg_st_find(st, t.name, &u) != LG_OK || u.data != t.data)
            abort();
        if ((t.dtype == LG_ST_F32 || t.dtype == LG_ST_BF16 || t.dtype == LG_ST_F16) && t.numel <= (1 << 16)) {
            float *buf = malloc((size_t)(t.numel ? t.numel : 1) * sizeof *buf);
            if (buf && lg_st_read_f32(st, t.name, t.ndim, t.shape, buf) != LG_OK)
                abort();
            free(buf);
        }
    }
    lg_st_metadata(st, "format");
    lg_st_contains(st, "model.embed_tokens.weight");
    lg_st_close(st);
    return 0;
}
