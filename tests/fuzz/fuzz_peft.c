/* fuzz_peft.c: lg_peft_config_read on an arbitrary adapter_config.json (every refused field, target_modules
 * as a list or a string, ranks and alphas); whatever it accepts must write back and read back equal. */
#include "fuzz_util.h"
#include "lg_hf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = lg_fuzz_write("adapter_config.json", data, size);
    struct lg_peft_config c;
    if (lg_peft_config_read(path, &c) != LG_OK)
        return 0;
    const char *out = lg_fuzz_mkdir("out");
    struct lg_peft_config d;
    if (lg_peft_config_write(out, &c) != LG_OK || lg_peft_config_read(out, &d) != LG_OK) {
        fprintf(stderr, "%s\n", lg_last_error());
        abort(); /* what was read must write back and read again */
    }
    if (c.r != d.r || c.target_modules != d.target_modules || strcmp(c.base_model_name_or_path, d.base_model_name_or_path))
        abort();
    return 0;
}
