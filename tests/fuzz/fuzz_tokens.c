/* fuzz_tokens.c: lg_tokens_load on an arbitrary JSONL file, with and without a vocabulary (the first byte
 * picks it): every sample it accepts has ids inside the vocabulary and labels that are -100 or inside it. */
#include "fuzz_util.h"
#include "lg_tokens.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    int64_t vocab = data[0] & 1 ? 512 : 0;
    const char *path = lg_fuzz_write("train.jsonl", data + 1, size - 1);
    lg_tokens_t *tk;
    if (lg_tokens_load(path, vocab, &tk) != LG_OK)
        return 0;
    for (size_t i = 0; i < lg_tokens_count(tk); i++) {
        const int32_t *ids, *labels;
        int64_t n;
        if (lg_tokens_sample(tk, i, &ids, &labels, &n) != LG_OK || n <= 0)
            abort();
        int64_t loss = 0;
        for (int64_t t = 0; t < n; t++) {
            if (ids[t] < 0 || (vocab && ids[t] >= vocab))
                abort();
            if (labels[t] != -100 && (labels[t] < 0 || (vocab && labels[t] >= vocab)))
                abort();
            loss += t >= 1 && labels[t] != -100;
        }
        if (loss != lg_tokens_loss_count(tk, i))
            abort();
        lg_tokens_line(tk, i);
    }
    lg_tokens_free(tk);
    return 0;
}
