/* fuzz_spec.c: lg_spec_load on arbitrary Lua source: the sandbox (the instruction, time and string-library
 * budgets, the memory cap), the schema and the C conversion of what it accepts. An accepted spec's numbers
 * must be what the kernels take. */
#include "fuzz_util.h"
#include "lg_gen.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = lg_fuzz_write("spec.lua", data, size);
    struct lg_spec *s;
    if (lg_spec_load(path, &s) != LG_OK)
        return 0;
    if (s->rank <= 0 || s->tokens <= 0 || s->layers <= 0 || s->nlinears <= 0 || !(s->alpha > 0))
        abort();
    for (int i = 0; i < s->nlinears; i++)
        if (s->linears[i].in_features <= 0 || s->linears[i].out_features <= 0)
            abort();
    lg_spec_free(s);
    return 0;
}
