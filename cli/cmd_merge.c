/* cmd_merge.c: `loragen merge MODEL ADAPTER OUT`: writes a Hugging Face model directory with a PEFT adapter
 * merged into the weights (W + alpha/r · B·A), sharded like the input. */
#include "cli.h"
#include "lg_train.h"

#include <stdio.h>
#include <string.h>

int lg_cmd_merge(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        printf("usage: loragen merge MODEL_DIR ADAPTER_DIR OUT_DIR\n\n"
               "Writes OUT_DIR: the model with the adapter merged in (W + alpha/r * B*A for every adapted\n"
               "projection, in the weights' dtype), sharded like MODEL_DIR, with its config and tokenizer files.\n");
        return 0;
    }
    if (argc != 4) {
        lg_cli_error("merge", "expected MODEL_DIR ADAPTER_DIR OUT_DIR (see loragen merge --help)");
        return 2;
    }
    if (lg_merge_run(argv[1], argv[2], argv[3]) != LG_OK) {
        lg_cli_error("merge", "%s", lg_last_error());
        return 1;
    }
    printf("merged %s into %s: %s\n", argv[2], argv[1], argv[3]);
    return 0;
}
