/* fuzz_config.c: lg_model_config_read on an arbitrary config.json (both transformers layouts, rope scaling,
 * ids, dtypes, unknown fields); whatever it accepts must pass lg_model_config_validate and write back. */
#include "fuzz_util.h"
#include "lg_hf.h"

#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = lg_fuzz_write("config.json", data, size);
    struct lg_model_config c;
    if (lg_model_config_read(path, &c) != LG_OK)
        return 0;
    if (lg_model_config_validate(&c) != LG_OK)
        abort(); /* the reader accepted what the validator refuses */
    lg_fuzz_mkdir("out");
    char path2[1024];
    snprintf(path2, sizeof path2, "%s/out/config.json", lg_fuzz_dir());
    struct lg_model_config d;
    if (lg_model_config_write(path2, &c) != LG_OK || lg_model_config_read(path2, &d) != LG_OK) {
        fprintf(stderr, "%s\n", lg_last_error());
        abort(); /* what was read must write back and read again */
    }
    if (d.hidden_size != c.hidden_size || d.num_hidden_layers != c.num_hidden_layers || d.vocab_size != c.vocab_size ||
        d.head_dim != c.head_dim || d.rope_llama3 != c.rope_llama3)
        abort();
    return 0;
}
