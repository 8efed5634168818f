/* fuzz_dataset.c: the scheduler's dataset reader (lg_dataset_load) on arbitrary bytes, read both as JSONL
 * (input_ids, labels, loss_mask) and as a length trace (one length a line, comments, blank lines). */
#include "fuzz_util.h"
#include "lg_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = lg_fuzz_write("data.jsonl", data, size);
    lg_dataset_t *ds;
    if (lg_dataset_load(path, LG_DATASET_JSONL, &ds) == LG_OK)
        lg_dataset_free(ds);
    path = lg_fuzz_write("data.trace", data, size);
    if (lg_dataset_load(path, LG_DATASET_TRACE, &ds) == LG_OK)
        lg_dataset_free(ds);
    return 0;
}
