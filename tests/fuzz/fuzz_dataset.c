/* fuzz_dataset.c: the scheduler's dataset reader (lg_dataset_load) on arbitrary bytes, read both as JSONL
 * (input_ids, labels, loss_mask) and as a length trace (one length a line, comments, blank lines). The JSONL
 * reading is checked against the trainer's token reader without a vocabulary (lg_tokens_load): a file one
 * accepts the other must accept, with the same samples, lengths and loss-token counts, so that `loragen plan`
 * plans exactly what `loragen train` trains. */
#include "fuzz_util.h"
#include "lg_io.h"
#include "lg_tokens.h"

#include <stdlib.h>

static void same_as_tokens(const char *path, const lg_dataset_t *ds)
{
    lg_tokens_t *tk;
    int ok = lg_tokens_load(path, 0, &tk) == LG_OK;
    if (ok != (ds != NULL))
        abort(); /* one reader accepts what the other refuses */
    if (!ok)
        return;
    if (lg_tokens_count(tk) != lg_dataset_size(ds))
        abort();
    for (size_t i = 0; i < lg_dataset_size(ds); i++) {
        int64_t n;
        if (lg_tokens_sample(tk, i, NULL, NULL, &n) != LG_OK || n != (int64_t)lg_dataset_length(ds, i) ||
            lg_tokens_loss_count(tk, i) != (int64_t)lg_dataset_loss_tokens(ds, i))
            abort();
    }
    lg_tokens_free(tk);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = lg_fuzz_write("data.jsonl", data, size);
    lg_dataset_t *ds;
    if (lg_dataset_load(path, LG_DATASET_JSONL, &ds) != LG_OK)
        ds = NULL;
    same_as_tokens(path, ds);
    lg_dataset_free(ds);
    path = lg_fuzz_write("data.trace", data, size);
    if (lg_dataset_load(path, LG_DATASET_TRACE, &ds) == LG_OK)
        lg_dataset_free(ds);
    return 0;
}
