/* fuzz_ckpt.c: lg_ckpt_verify on a checkpoint directory whose manifest.json is the input, beside two real
 * files: entries naming paths, directories or missing files, sizes and hashes of every JSON type. The seed
 * corpus holds the manifest lg_ckpt_commit writes for these files. The same bytes are also the root's `latest`
 * pointer, read by lg_ckpt_latest (a checkpoint name: "ckpt-" and digits, nothing else). */
#include "fuzz_util.h"
#include "lg_ckpt.h"

#include <stdlib.h>
#include <string.h>

static const char *dir;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    dir = strdup(lg_fuzz_mkdir("ckpt-000001"));
    lg_fuzz_fixture("ckpt-000001/state.safetensors", "state: not really safetensors, hashed all the same\n");
    lg_fuzz_fixture("ckpt-000001/adapter-0.safetensors", "adapter 0\n");
    lg_fuzz_mkdir("ckpt-000001/sub");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lg_fuzz_write("ckpt-000001/manifest.json", data, size);
    lg_ckpt_verify(dir);
    lg_fuzz_write("latest", data, size);
    char found[1200];
    lg_ckpt_latest(lg_fuzz_dir(), found, sizeof found);
    return 0;
}
