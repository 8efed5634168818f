/* fuzz_spec.c: lg_spec_load on arbitrary Lua source: the sandbox (the instruction, time and string-library
 * budgets, the memory cap), the schema and the C conversion of what it accepts. An accepted spec's numbers
 * must be what the kernels take. */
#include "fuzz_util.h"
#include "lg_gen.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = lg_fuzz_write("spec.lua", data, size);
    struct lg_spec *s;
    if (lg_spec_load(path, &s) != LG_OK)
        return 0;
    /* what the schema promises the C side: bounded integers (generator/limits.lua), finite numbers */
    if (s->rank <= 0 || s->tokens <= 0 || s->tokens > (1 << 24) || s->layers <= 0 || s->layers > 1024 ||
        s->nlinears <= 0 || s->nlinears > 1024 || !(s->alpha > 0) || !isfinite(s->alpha) || !(s->dropout >= 0) ||
        !(s->dropout < 1))
        abort();
    for (int i = 0; i < s->nlinears; i++)
        if (s->linears[i].in_features <= 0 || s->linears[i].out_features <= 0 ||
            s->linears[i].in_features > (1 << 17) || s->linears[i].out_features > (1 << 17))
            abort();
    const struct lg_spec_model *m = &s->model;
    if (m->present && ((int64_t)m->num_attention_heads * m->head_dim > (1 << 17) || m->vocab_size > (1 << 24) ||
                       !isfinite(m->rope_theta) || !isfinite(m->rms_norm_eps)))
        abort();
    lg_spec_free(s);
    return 0;
}
