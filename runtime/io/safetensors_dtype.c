/* safetensors_dtype.c: the safetensors element types: names and sizes, one table for the reader, the writer
 * and the conversions (safetensors_read.c). */
#include "lg_hf.h"
#include "lg_base.h"

static const struct {
    const char *name;
    size_t size;
} dtypes[LG_ST_DTYPE_COUNT] = {
    [LG_ST_BOOL] = {"BOOL", 1},       [LG_ST_U8] = {"U8", 1},     [LG_ST_I8] = {"I8", 1},
    [LG_ST_F8_E5M2] = {"F8_E5M2", 1}, [LG_ST_F8_E4M3] = {"F8_E4M3", 1},
    [LG_ST_F8_E8M0] = {"F8_E8M0", 1}, [LG_ST_I16] = {"I16", 2},   [LG_ST_U16] = {"U16", 2},
    [LG_ST_F16] = {"F16", 2},         [LG_ST_BF16] = {"BF16", 2}, [LG_ST_I32] = {"I32", 4},
    [LG_ST_U32] = {"U32", 4},         [LG_ST_F32] = {"F32", 4},   [LG_ST_F64] = {"F64", 8},
    [LG_ST_I64] = {"I64", 8},         [LG_ST_U64] = {"U64", 8},
};

const char *lg_st_dtype_name(enum lg_st_dtype t) { return (unsigned)t < LG_ST_DTYPE_COUNT ? dtypes[t].name : "?"; }
size_t lg_st_dtype_size(enum lg_st_dtype t) { return (unsigned)t < LG_ST_DTYPE_COUNT ? dtypes[t].size : 0; }

enum lg_st_dtype lg_st_dtype_of(enum lg_dtype t)
{
    return t == LG_BF16 ? LG_ST_BF16 : t == LG_FP16 ? LG_ST_F16 : LG_ST_F32;
}
