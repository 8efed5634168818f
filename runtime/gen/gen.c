/* gen.c: the C face of the Lua kernel generator (generator/kernels.lua, generator/ops/<family>.lua,
 * generator/plan.lua). Configurations cross the boundary as Lua tables; the generator owns naming, defaults,
 * validation, source emission and which kernels a layer launches. The C side keeps no copy of the ops'
 * parameters: it moves every field through one {name, offset} table (LG_KERNEL_CFG_FIELDS), and at init asks
 * the generator which fields each op takes, failing when an op, a parameter or a layer slot has no C
 * counterpart. */
#include "lg_gen.h"
#include "lg_base.h"
#include "lg_lua.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

struct lg_gen {
    lua_State *L;
    unsigned takes[LG_OP_COUNT];    /* bit i: the op takes field i */
    unsigned required[LG_OP_COUNT]; /* bit i: field i has no default, so it goes across even when 0 */
};

static const char *op_names[LG_OP_COUNT] = {"down",         "dy",               "da",        "reduce",
                                            "peft_dropout", "peft_dropout_bwd", "peft_axpy", "peft_scale",
                                            "mlora_down",   "mlora_dy",         "mlora_da",  "mlora_expand",
                                            "mlora_reduce", "attn_sched",       "attn_fwd",  "attn_bwd_pre",
                                            "attn_bwd_dkv", "attn_bwd_dq",      "attn_dq_cvt",
                                            "norm_fwd",     "norm_bwd",         "norm_lora_fwd", "norm_lora_bwd",
                                            "rope",         "swiglu_fwd",       "swiglu_bwd", "swiglu_lora_fwd",
                                            "embed",        "xent",             "adamw_sq",  "adamw_fin",
                                            "adamw_upd"};
static const char *slot_names[LG_SLOT_COUNT] = {"down",       "dy",    "reduce_da", "reduce_ds_db",
                                                "da_dx_tail", "da_dx", "da_no_dx"};

#define LG_KERNEL_FIELD(name) {#name, offsetof(struct lg_kernel_cfg, name)},
static const struct lg_kernel_field fields[] = {LG_KERNEL_CFG_FIELDS(LG_KERNEL_FIELD)};
#undef LG_KERNEL_FIELD
#define NFIELDS ((int)(sizeof fields / sizeof fields[0]))
_Static_assert(sizeof fields / sizeof fields[0] <= 32, "field masks are 32 bits");

const struct lg_kernel_field *lg_kernel_fields(int *count)
{
    *count = NFIELDS;
    return fields;
}

int lg_kernel_cfg_get(const struct lg_kernel_cfg *c, const struct lg_kernel_field *f)
{
    return *(const int *)((const char *)c + f->offset);
}

static int *field_ptr(struct lg_kernel_cfg *c, int i) { return (int *)((char *)c + fields[i].offset); }

static int field_index(const char *name)
{
    for (int i = 0; name && i < NFIELDS; i++)
        if (!strcmp(fields[i].name, name))
            return i;
    return -1;
}

const char *lg_gen_template_source(const char *path) { return lg_embedded_find(path, NULL); }

const char *lg_kernel_op_name(enum lg_kernel_op op) { return op < LG_OP_COUNT ? op_names[op] : "?"; }

const char *lg_layer_slot_name(enum lg_layer_slot s) { return s < LG_SLOT_COUNT ? slot_names[s] : "?"; }

/* ---- init: the generator's ops against the C enum and fields ---- */

/* The parameters of op i (generator.kernels.op_params) as field masks. */
static enum lg_status read_op_params(lg_gen_t *g, int op)
{
    lua_State *L = g->L;
    int top = lua_gettop(L);
    lua_pushstring(L, op_names[op]);
    enum lg_status st = lg_lua_pcall_module(L, "generator.kernels", "op_params", 1, 1, LG_ERR_INTERNAL);
    if (st != LG_OK)
        return st;
    int n = (int)luaL_len(L, -1);
    for (int j = 1; j <= n && st == LG_OK; j++) {
        lua_geti(L, -1, j);
        lua_getfield(L, -1, "name");
        const char *name = lua_tostring(L, -1);
        int f = field_index(name);
        if (f < 0)
            st = lg_fail(LG_ERR_INTERNAL,
                         "generator: op '%s' takes parameter '%s', which struct lg_kernel_cfg lacks "
                         "(add it to LG_KERNEL_CFG_FIELDS in lg_gen.h)", op_names[op], name ? name : "?");
        lua_getfield(L, -2, "required");
        if (f >= 0) {
            g->takes[op] |= 1u << f;
            if (lua_toboolean(L, -1))
                g->required[op] |= 1u << f;
        }
        lua_pop(L, 3);
    }
    lua_settop(L, top);
    return st;
}

/* generator.kernels.op_names() must list exactly enum lg_kernel_op, in its order. */
static enum lg_status read_ops(lg_gen_t *g)
{
    lua_State *L = g->L;
    int top = lua_gettop(L);
    enum lg_status st = lg_lua_pcall_module(L, "generator.kernels", "op_names", 0, 1, LG_ERR_INTERNAL);
    if (st != LG_OK)
        return st;
    int n = (int)luaL_len(L, -1);
    if (n != LG_OP_COUNT)
        st = lg_fail(LG_ERR_INTERNAL, "generator: generator/ops/*.lua define %d ops, enum lg_kernel_op %d", n,
                     LG_OP_COUNT);
    for (int i = 0; i < n && st == LG_OK; i++) {
        lua_geti(L, -1, i + 1);
        const char *name = lua_tostring(L, -1);
        if (!name || strcmp(name, op_names[i]))
            st = lg_fail(LG_ERR_INTERNAL, "generator: op %d is '%s' in generator/ops/*.lua but '%s' in lg_gen.h", i,
                         name ? name : "?", op_names[i]);
        lua_pop(L, 1);
    }
    lua_settop(L, top);
    for (int i = 0; i < LG_OP_COUNT && st == LG_OK; i++)
        st = read_op_params(g, i);
    return st;
}

enum lg_status lg_gen_init(lg_gen_t **out)
{
    lg_gen_t *g = calloc(1, sizeof *g);
    if (!g)
        return lg_fail(LG_ERR_OOM, "generator: out of memory");
    enum lg_status st = lg_lua_open(&g->L);
    if (st != LG_OK) {
        free(g);
        return st;
    }
    if ((st = read_ops(g)) != LG_OK) {
        lg_gen_free(g);
        return st;
    }
    *out = g;
    return LG_OK;
}

void lg_gen_free(lg_gen_t *g)
{
    if (!g)
        return;
    lua_close(g->L);
    free(g);
}

void lg_kernel_src_free(struct lg_kernel_src *src)
{
    if (src) {
        free(src->source);
        src->source = NULL;
    }
}

/* ---- configurations across the boundary ---- */

/* Pushes the Lua table for cfg: only the fields the op takes; zero fields with a default are left to it. */
static void push_cfg(const lg_gen_t *g, const struct lg_kernel_cfg *c)
{
    lua_State *L = g->L;
    lua_newtable(L);
    lua_pushstring(L, lg_kernel_op_name(c->op));
    lua_setfield(L, -2, "op");
    lua_pushstring(L, lg_dtype_name(c->dtype));
    lua_setfield(L, -2, "dtype");
    if (c->op >= LG_OP_COUNT)
        return; /* the generator names the unknown op */
    for (int i = 0; i < NFIELDS; i++) {
        int v = lg_kernel_cfg_get(c, &fields[i]);
        if ((g->takes[c->op] >> i & 1) && (v || (g->required[c->op] >> i & 1))) {
            lua_pushinteger(L, v);
            lua_setfield(L, -2, fields[i].name);
        }
    }
}

/* Reads a Lua cfg table at idx back into C: every field present (absent ones stay 0). */
static void read_cfg(lua_State *L, int idx, struct lg_kernel_cfg *c)
{
    memset(c, 0, sizeof *c);
    lua_getfield(L, idx, "op");
    const char *op = lua_tostring(L, -1);
    c->op = LG_OP_COUNT;
    for (int i = 0; i < LG_OP_COUNT; i++)
        if (op && !strcmp(op, op_names[i]))
            c->op = (enum lg_kernel_op)i;
    lua_pop(L, 1);
    lua_getfield(L, idx, "dtype");
    lg_dtype_parse(lua_tostring(L, -1), &c->dtype);
    lua_pop(L, 1);
    for (int i = 0; i < NFIELDS; i++) {
        lua_getfield(L, idx, fields[i].name);
        *field_ptr(c, i) = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
}

/* Fills out from name, source, threads and the normalised cfg at the four stack slots from `base`. */
static enum lg_status read_src(const lg_gen_t *g, int base, struct lg_kernel_src *out)
{
    lua_State *L = g->L;
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", lua_tostring(L, base));
    size_t n;
    const char *src = lua_tolstring(L, base + 1, &n);
    if (!src || !(out->source = malloc(n + 1)))
        return lg_fail(LG_ERR_OOM, "generator: out of memory");
    memcpy(out->source, src, n + 1);
    lg_hash128_hex(out->source, n, out->hash);
    out->threads = (int)lua_tointeger(L, base + 2);
    read_cfg(L, base + 3, &out->cfg);
    out->fields = out->cfg.op < LG_OP_COUNT ? g->takes[out->cfg.op] : 0;
    return LG_OK;
}

/* ---- the API ---- */

enum lg_status lg_gen_kernel(lg_gen_t *g, const struct lg_kernel_cfg *cfg, const char *origin,
                             struct lg_kernel_src *out)
{
    lua_State *L = g->L;
    int top = lua_gettop(L);
    push_cfg(g, cfg);
    lua_pushstring(L, origin ? origin : "runtime");
    enum lg_status st = lg_lua_pcall_module(L, "generator.kernels", "emit", 2, 4, LG_ERR_INVALID);
    if (st != LG_OK)
        return lg_fail_wrap(st, "generating %s kernel: ", lg_kernel_op_name(cfg->op));
    st = read_src(g, top + 1, out);
    lua_settop(L, top);
    return st;
}

enum lg_status lg_gen_layer_kernels(lg_gen_t *g, enum lg_dtype dtype, int rank, double dropout,
                                    struct lg_kernel_cfg out[LG_SLOT_COUNT])
{
    lua_State *L = g->L;
    int top = lua_gettop(L);
    lua_pushstring(L, lg_dtype_name(dtype));
    lua_pushinteger(L, rank);
    lua_pushnumber(L, dropout);
    enum lg_status st = lg_lua_pcall_module(L, "generator.plan", "layer_slots", 3, 1, LG_ERR_INVALID);
    if (st != LG_OK)
        return st;
    unsigned seen = 0;
    int n = (int)luaL_len(L, -1);
    for (int i = 1; i <= n && st == LG_OK; i++) {
        lua_geti(L, top + 1, i);
        lua_getfield(L, -1, "slot");
        const char *name = lua_tostring(L, -1);
        int s = 0;
        while (s < LG_SLOT_COUNT && !(name && !strcmp(name, slot_names[s])))
            s++;
        if (s == LG_SLOT_COUNT) {
            st = lg_fail(LG_ERR_INTERNAL, "generator: layer slot '%s' has no enum lg_layer_slot entry",
                         name ? name : "?");
        } else {
            lua_getfield(L, -2, "cfg");
            read_cfg(L, lua_gettop(L), &out[s]);
            seen |= 1u << s;
        }
        lua_settop(L, top + 1);
    }
    lua_settop(L, top);
    for (int s = 0; s < LG_SLOT_COUNT && st == LG_OK; s++)
        if (!(seen >> s & 1))
            st = lg_fail(LG_ERR_INTERNAL, "generator: generator/ops/lora.lua gives no kernel for layer slot '%s'",
                         slot_names[s]);
    return st;
}

static void push_spec(lua_State *L, const struct lg_spec *s)
{
    lua_newtable(L);
    lua_pushstring(L, s->path ? s->path : s->name);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, lg_dtype_name(s->dtype));
    lua_setfield(L, -2, "dtype");
    lua_pushinteger(L, s->rank);
    lua_setfield(L, -2, "rank");
    lua_pushnumber(L, s->dropout);
    lua_setfield(L, -2, "dropout");
}

enum lg_status lg_gen_spec_kernels(lg_gen_t *g, const struct lg_spec *spec, struct lg_kernel_src **out,
                                   int *count)
{
    lua_State *L = g->L;
    int top = lua_gettop(L);
    push_spec(L, spec);
    enum lg_status st = lg_lua_pcall_module(L, "generator.plan", "spec_kernels", 1, 1, LG_ERR_SPEC);
    if (st != LG_OK)
        return st;
    int n = (int)luaL_len(L, -1);
    struct lg_kernel_src *arr = calloc(n > 0 ? (size_t)n : 1, sizeof *arr);
    if (!arr)
        st = lg_fail(LG_ERR_OOM, "generator: out of memory");
    for (int i = 0; i < n && st == LG_OK; i++) {
        lua_geti(L, top + 1, i + 1);
        int t = lua_gettop(L);
        static const char *keys[] = {"name", "source", "threads", "cfg"};
        for (int k = 0; k < 4; k++)
            lua_getfield(L, t, keys[k]);
        st = read_src(g, t + 1, &arr[i]);
        lua_settop(L, top + 1);
    }
    lua_settop(L, top);
    if (st != LG_OK) {
        for (int i = 0; arr && i < n; i++)
            lg_kernel_src_free(&arr[i]);
        free(arr);
        return st;
    }
    *out = arr;
    *count = n;
    return LG_OK;
}

enum lg_status lg_gen_variants(lg_gen_t *g, enum lg_kernel_op op, enum lg_dtype dtype, int rank,
                               struct lg_kernel_cfg **out, int *count)
{
    lua_State *L = g->L;
    int top = lua_gettop(L);
    lua_pushstring(L, lg_kernel_op_name(op));
    lua_pushstring(L, lg_dtype_name(dtype));
    lua_pushinteger(L, rank);
    enum lg_status st = lg_lua_pcall_module(L, "generator.kernels", "variants", 3, 1, LG_ERR_INVALID);
    if (st != LG_OK)
        return st;
    int n = (int)luaL_len(L, -1);
    struct lg_kernel_cfg *arr = calloc(n > 0 ? (size_t)n : 1, sizeof *arr);
    if (!arr) {
        lua_settop(L, top);
        return lg_fail(LG_ERR_OOM, "generator: out of memory");
    }
    for (int i = 0; i < n; i++) {
        lua_geti(L, -1, i + 1);
        read_cfg(L, lua_gettop(L), &arr[i]);
        lua_pop(L, 1);
    }
    lua_settop(L, top);
    *out = arr;
    *count = n;
    return LG_OK;
}

enum lg_status lg_gen_dx_correction(lg_gen_t *g, double dropout, int ds_in_tail, int norm_follows,
                                    enum lg_dx_placement *out)
{
    lua_State *L = g->L;
    int top = lua_gettop(L);
    lua_pushnumber(L, dropout);
    lua_pushboolean(L, ds_in_tail);
    lua_pushboolean(L, norm_follows);
    enum lg_status st = lg_lua_pcall_module(L, "generator.ops.decoder", "dx_correction", 3, 1, LG_ERR_INTERNAL);
    if (st != LG_OK)
        return st;
    const char *where = lua_tostring(L, -1);
    static const char *names[] = {"gemm", "norm", "da"};
    int found = -1;
    for (int i = 0; i < 3; i++)
        if (where && !strcmp(where, names[i]))
            found = i;
    if (found < 0)
        st = lg_fail(LG_ERR_INTERNAL, "generator: dx_correction returned '%s'", where ? where : "?");
    else
        *out = (enum lg_dx_placement)found;
    lua_settop(L, top);
    return st;
}

enum lg_status lg_gen_resources(lg_gen_t *g, const struct lg_kernel_cfg *cfg, struct lg_kernel_res *out)
{
    lua_State *L = g->L;
    int top = lua_gettop(L);
    push_cfg(g, cfg);
    enum lg_status st = lg_lua_pcall_module(L, "generator.resources", "estimate", 1, 1, LG_ERR_INVALID);
    if (st != LG_OK)
        return lg_fail_wrap(st, "estimating %s kernel's resources: ", lg_kernel_op_name(cfg->op));
    static const char *keys[] = {"threads", "smem", "regs", "minb"};
    int *dst[] = {&out->threads, &out->smem, &out->regs, &out->minb};
    for (int i = 0; i < 4; i++) {
        lua_getfield(L, -1, keys[i]);
        *dst[i] = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    lua_settop(L, top);
    return LG_OK;
}
