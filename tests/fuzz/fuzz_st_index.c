/* fuzz_st_index.c: lg_st_open_model on a directory whose model.safetensors.index.json is the input, beside two
 * real shards (written once with the library's writer): the weight_map's shard names (paths, ".", "..",
 * duplicates), tensors mapped to the wrong shard or to none, and the merged name table. */
#include "fuzz_util.h"
#include "lg_hf.h"

#include <stdlib.h>
#include <string.h>

static const char *model;

static void write_shard(const char *name, const char *t1, const char *t2)
{
    static float a[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    struct lg_st_write_tensor t[2] = {
        {.name = t1, .dtype = LG_ST_F32, .ndim = 2, .shape = {2, 4}, .data = a},
        {.name = t2, .dtype = LG_ST_F32, .ndim = 1, .shape = {8}, .data = a},
    };
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", model, name);
    if (lg_st_write(path, t, 2, NULL) != LG_OK)
        abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    model = strdup(lg_fuzz_mkdir("model"));
    write_shard("model-00001-of-00002.safetensors", "model.embed_tokens.weight", "model.norm.weight");
    write_shard("model-00002-of-00002.safetensors", "lm_head.weight", "model.layers.0.input_layernorm.weight");
    lg_fuzz_fixture("model/notes.txt", "not a shard\n");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lg_fuzz_write("model/model.safetensors.index.json", data, size);
    lg_st_t *st;
    if (lg_st_open_model(model, &st) != LG_OK)
        return 0;
    for (size_t i = 0; i < lg_st_count(st); i++) {
        struct lg_st_tensor t;
        if (lg_st_tensor(st, i, &t) != LG_OK || !lg_st_contains(st, t.name))
            abort();
    }
    lg_st_metadata(st, "format");
    lg_st_close(st);
    return 0;
}
