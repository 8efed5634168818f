/* test_gen_truth.c: the C side and the generator (Lua) state each rule and table once; this suite fails when
 * they disagree. The generator is the source of truth for all of them:
 * - ops: generator/ops/<family>.lua against enum lg_kernel_op (names, order);
 * - configuration fields: every parameter an op declares is a field of struct lg_kernel_cfg (lg_kernel_fields)
 *   and every field is some op's parameter; every value round-trips C -> Lua -> C;
 * - limits: generator/limits.lua against struct lg_gen_limits, and the rule as the three places apply it (a
 *   spec, the kernel generator, lg_lora_init) accepting exactly the same ranks, feature sizes and dtypes;
 * - layer slots: generator/ops/lora.lua's layer_slots against enum lg_layer_slot, the contract lora.c relies
 *   on (which slot fuses, which masks), and `loragen gen`'s kernel list being those slots' kernels;
 * - target names: PEFT's names everywhere; job files' short names are aliases of exactly those.
 * CPU only: no GPU, no NVRTC. */
#include "lg_gen.h"
#include "lg_lora.h"
#include "lg_lua.h"
#include "lg_test.h"

#include <check.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

/* ---- helpers ---- */

static lua_State *lua_ok(void)
{
    lua_State *L;
    CHECK(lg_lua_open(&L));
    return L;
}

/* Pushes require(module)[key]. */
static void push_module_field(lua_State *L, const char *module, const char *key)
{
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    ck_assert_msg(lua_pcall(L, 1, 1, 0) == LUA_OK, "require %s: %s", module, lua_tostring(L, -1));
    lua_getfield(L, -1, key);
    lua_remove(L, -2);
}

static int field_index(const char *name)
{
    int n;
    const struct lg_kernel_field *f = lg_kernel_fields(&n);
    for (int i = 0; i < n; i++)
        if (!strcmp(f[i].name, name))
            return i;
    return -1;
}

static struct lg_kernel_src emit(lg_gen_t *g, struct lg_kernel_cfg c)
{
    struct lg_kernel_src k;
    enum lg_status st = lg_gen_kernel(g, &c, "tests/test_gen_truth.c", &k);
    ck_assert_msg(st == LG_OK, "%s: %s", lg_kernel_op_name(c.op), lg_last_error());
    return k;
}

/* ---- ops and fields ---- */

START_TEST(ops_are_the_generators)
{
    lua_State *L = lua_ok();
    push_module_field(L, "generator.kernels", "ORDER");
    ck_assert_int_eq((int)luaL_len(L, -1), LG_OP_COUNT);
    for (int i = 0; i < LG_OP_COUNT; i++) {
        lua_geti(L, -1, i + 1);
        ck_assert_str_eq(lua_tostring(L, -1), lg_kernel_op_name((enum lg_kernel_op)i));
        lua_pop(L, 1);
    }
    lua_close(L);
    lg_gen_t *g;
    CHECK(lg_gen_init(&g)); /* lg_gen_init checks the same, and every op's parameters against the fields */
    lg_gen_free(g);
}
END_TEST

/* Every parameter of every op (generator.kernels.op_params) is a C field, and every C field is taken by some
 * op: the two lists are the same set. */
START_TEST(fields_map_both_ways)
{
    int nf;
    const struct lg_kernel_field *f = lg_kernel_fields(&nf);
    ck_assert_int_gt(nf, 0);
    unsigned used = 0;
    lua_State *L = lua_ok();
    for (int op = 0; op < LG_OP_COUNT; op++) {
        lua_pushstring(L, lg_kernel_op_name((enum lg_kernel_op)op));
        CHECK(lg_lua_pcall_module(L, "generator.kernels", "op_params", 1, 1, LG_ERR_INTERNAL));
        for (int j = 1; j <= (int)luaL_len(L, -1); j++) {
            lua_geti(L, -1, j);
            lua_getfield(L, -1, "name");
            const char *name = lua_tostring(L, -1);
            int i = field_index(name);
            ck_assert_msg(i >= 0, "op %s: parameter '%s' is no field of struct lg_kernel_cfg",
                          lg_kernel_op_name((enum lg_kernel_op)op), name);
            used |= 1u << i;
            lua_pop(L, 2);
        }
        lua_pop(L, 1);
    }
    lua_close(L);
    for (int i = 0; i < nf; i++) {
        ck_assert_msg(used >> i & 1, "struct lg_kernel_cfg field '%s' is no op's parameter", f[i].name);
        ck_assert_uint_eq(f[i].offset % sizeof(int), 0);
        ck_assert_uint_lt(f[i].offset, sizeof(struct lg_kernel_cfg));
        for (int j = 0; j < i; j++)
            ck_assert_str_ne(f[i].name, f[j].name);
    }
}
END_TEST

/* Every variant of every op goes to the generator and comes back with the same value in every field the op
 * takes, and src.fields is exactly the op's parameters. */
START_TEST(every_field_round_trips)
{
    lg_gen_t *g;
    CHECK(lg_gen_init(&g));
    int nf;
    const struct lg_kernel_field *f = lg_kernel_fields(&nf);
    for (int op = 0; op < LG_OP_COUNT; op++) {
        struct lg_kernel_cfg *vs;
        int n;
        CHECK(lg_gen_variants(g, (enum lg_kernel_op)op, LG_FP16, 32, &vs, &n));
        ck_assert_int_gt(n, 0);
        for (int v = 0; v < n; v++) {
            struct lg_kernel_src k = emit(g, vs[v]);
            ck_assert_int_eq(k.cfg.op, op);
            ck_assert_int_eq(k.cfg.dtype, LG_FP16);
            for (int i = 0; i < nf; i++)
                if (k.fields >> i & 1)
                    ck_assert_msg(lg_kernel_cfg_get(&k.cfg, &f[i]) == lg_kernel_cfg_get(&vs[v], &f[i]),
                                  "%s: field %s went in as %d and came back as %d", k.name, f[i].name,
                                  lg_kernel_cfg_get(&vs[v], &f[i]), lg_kernel_cfg_get(&k.cfg, &f[i]));
                else
                    ck_assert_int_eq(lg_kernel_cfg_get(&k.cfg, &f[i]), 0);
            ck_assert_int_eq((int)strlen(k.hash), 32);
            lg_kernel_src_free(&k);
        }
        free(vs);
    }
    lg_gen_free(g);
}
END_TEST

/* ---- limits ---- */

/* A spec of one linear layer (K, M) with rank r and dtype dt, loaded by generator/spec.lua. */
static int spec_loads(lua_State *L, int64_t K, int64_t M, int r, const char *dt)
{
    char text[512];
    snprintf(text, sizeof text,
             "return { name = \"t\", linears = { { name = \"l\", in_features = %lld, out_features = %lld } },\n"
             "  lora = { rank = %d, alpha = 16 }, dtype = \"%s\" }\n",
             (long long)K, (long long)M, r, dt);
    lua_pushstring(L, text);
    lua_pushstring(L, "truth.lua");
    CHECK(lg_lua_pcall_module(L, "generator.spec", "load", 2, 2, LG_ERR_SPEC));
    int ok = !lua_isnil(L, -2);
    lua_pop(L, 2);
    return ok;
}

/* lg_lora_init's verdict on the parameters alone: with no context, parameters it accepts fail on "ctx". */
static int lora_accepts(int64_t K, int64_t M, int r, enum lg_dtype dt)
{
    struct lg_lora_params p = {.in_features = K, .out_features = M, .rank = r, .alpha = 16, .dtype = dt};
    lg_lora_t *l = NULL;
    enum lg_status st = lg_lora_init(NULL, &p, &l);
    ck_assert_int_ne(st, LG_OK);
    return strstr(lg_last_error(), "ctx is NULL") != NULL;
}

START_TEST(limits_are_the_generators)
{
    struct lg_gen_limits lim;
    CHECK(lg_gen_limits_get(&lim));
    lua_State *L = lua_ok();
    const struct {
        const char *lua;
        int *c;
    } same[] = {{"RANK_MIN", &lim.rank_min}, {"RANK_MAX", &lim.rank_max}, {"RANK_MULTIPLE", &lim.rank_multiple},
                {"FEATURE_MULTIPLE", &lim.feature_multiple}};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        push_module_field(L, "generator.limits", same[i].lua);
        ck_assert_msg(lua_tointeger(L, -1) == *same[i].c, "%s: Lua %lld, C %d", same[i].lua,
                      (long long)lua_tointeger(L, -1), *same[i].c);
        lua_pop(L, 1);
    }
    ck_assert_int_gt(lim.rank_multiple, 0);
    ck_assert_int_le(lim.rank_min, lim.rank_max);
    lua_close(L);
}
END_TEST

/* The rank rule as a spec, the kernel generator and lg_lora_init apply it: the same ranks pass everywhere. */
START_TEST(rank_rule_is_one_rule)
{
    struct lg_gen_limits lim;
    CHECK(lg_gen_limits_get(&lim));
    lg_gen_t *g;
    CHECK(lg_gen_init(&g));
    lua_State *L = lua_ok();
    const int64_t F = lim.feature_multiple;
    int passed = 0;
    for (int r = -1; r <= 2 * lim.rank_max + 1; r++) {
        int want = lg_gen_limits_rank_ok(&lim, r);
        struct lg_kernel_cfg c = {.op = LG_OP_DA, .dtype = LG_BF16, .rank = r};
        struct lg_kernel_src k;
        enum lg_status st = lg_gen_kernel(g, &c, NULL, &k);
        if (st == LG_OK)
            lg_kernel_src_free(&k);
        ck_assert_msg((st == LG_OK) == want, "rank %d: generator says %s, limits say %d", r, lg_status_str(st), want);
        if (r >= 1) /* below 1 the spec schema refuses it before the rank rule */
            ck_assert_msg(spec_loads(L, F, F, r, "bf16") == want, "rank %d: spec disagrees with limits", r);
        ck_assert_msg(lora_accepts(F, F, r, LG_BF16) == want, "rank %d: lg_lora_init disagrees (%s)", r,
                      lg_last_error());
        passed += want;
    }
    ck_assert_int_eq(passed, (lim.rank_max - lim.rank_min) / lim.rank_multiple + 1);
    lua_close(L);
    lg_gen_free(g);
}
END_TEST

START_TEST(feature_rule_is_one_rule)
{
    struct lg_gen_limits lim;
    CHECK(lg_gen_limits_get(&lim));
    lua_State *L = lua_ok();
    const int64_t F = lim.feature_multiple;
    const int64_t sizes[] = {F, 3 * F, 64 * F, F + F / 2, F - 8, 2 * F + 8};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int want = sizes[i] % F == 0;
        ck_assert_msg(spec_loads(L, sizes[i], F, lim.rank_min, "bf16") == want, "in_features %lld: spec",
                      (long long)sizes[i]);
        ck_assert_msg(spec_loads(L, F, sizes[i], lim.rank_min, "bf16") == want, "out_features %lld: spec",
                      (long long)sizes[i]);
        ck_assert_msg(lora_accepts(sizes[i], F, lim.rank_min, LG_BF16) == want, "in_features %lld: lora",
                      (long long)sizes[i]);
        ck_assert_msg(lora_accepts(F, sizes[i], lim.rank_min, LG_BF16) == want, "out_features %lld: lora",
                      (long long)sizes[i]);
    }
    lua_close(L);
}
END_TEST

START_TEST(dtype_rule_is_one_rule)
{
    struct lg_gen_limits lim;
    CHECK(lg_gen_limits_get(&lim));
    lg_gen_t *g;
    CHECK(lg_gen_init(&g));
    lua_State *L = lua_ok();
    for (int t = LG_BF16; t <= LG_FP32; t++) {
        int want = lim.dtypes >> t & 1;
        struct lg_kernel_cfg c = {.op = LG_OP_DOWN, .dtype = (enum lg_dtype)t, .rank = lim.rank_min};
        struct lg_kernel_src k;
        enum lg_status st = lg_gen_kernel(g, &c, NULL, &k);
        if (st == LG_OK)
            lg_kernel_src_free(&k);
        ck_assert_msg((st == LG_OK) == want, "%s: generator", lg_dtype_name((enum lg_dtype)t));
        ck_assert_msg(spec_loads(L, lim.feature_multiple, lim.feature_multiple, lim.rank_min,
                                 lg_dtype_name((enum lg_dtype)t)) == want, "%s: spec", lg_dtype_name((enum lg_dtype)t));
        ck_assert_msg(lora_accepts(lim.feature_multiple, lim.feature_multiple, lim.rank_min, (enum lg_dtype)t) == want,
                      "%s: lora", lg_dtype_name((enum lg_dtype)t));
    }
    ck_assert_uint_ne(lim.dtypes, 0u);
    lua_close(L);
    lg_gen_free(g);
}
END_TEST

/* ---- layer slots ---- */

START_TEST(slots_are_the_generators)
{
    lua_State *L = lua_ok();
    lua_pushstring(L, "bf16");
    lua_pushinteger(L, 16);
    lua_pushnumber(L, 0.1);
    CHECK(lg_lua_pcall_module(L, "generator.plan", "layer_slots", 3, 1, LG_ERR_INTERNAL));
    ck_assert_int_eq((int)luaL_len(L, -1), LG_SLOT_COUNT);
    for (int s = 0; s < LG_SLOT_COUNT; s++) {
        lua_geti(L, -1, s + 1);
        lua_getfield(L, -1, "slot");
        ck_assert_str_eq(lua_tostring(L, -1), lg_layer_slot_name((enum lg_layer_slot)s));
        lua_pop(L, 2);
    }
    lua_close(L);
}
END_TEST

/* What runtime/ops/lora.c relies on: each slot's op, that the mask follows the dropout, and which dA pass adds
 * dS·A to dX (lora.c skips the extended-K dX GEMM exactly when the kernel fuses). */
START_TEST(slots_keep_lora_c_contract)
{
    lg_gen_t *g;
    CHECK(lg_gen_init(&g));
    static const double ps[] = {0.0, 0.1};
    for (int i = 0; i < 2; i++) {
        const int drop = ps[i] > 0;
        struct lg_kernel_cfg k[LG_SLOT_COUNT];
        memset(k, 0xff, sizeof k);
        CHECK(lg_gen_layer_kernels(g, LG_FP16, 32, ps[i], k));
        static const enum lg_kernel_op ops[LG_SLOT_COUNT] = {LG_OP_DOWN, LG_OP_DY, LG_OP_REDUCE, LG_OP_REDUCE,
                                                             LG_OP_DA,   LG_OP_DA, LG_OP_DA};
        for (int s = 0; s < LG_SLOT_COUNT; s++) {
            ck_assert_int_eq(k[s].op, ops[s]);
            ck_assert_int_eq(k[s].dtype, LG_FP16);
            struct lg_kernel_src src = emit(g, k[s]);
            lg_kernel_src_free(&src);
        }
        ck_assert_int_eq(k[LG_SLOT_DOWN].drop, drop);
        ck_assert_int_eq(k[LG_SLOT_REDUCE_DA].out_half, 0);
        ck_assert_int_eq(k[LG_SLOT_REDUCE_DS_DB].out_half, 1);
        for (int s = LG_SLOT_DA_DX_TAIL; s <= LG_SLOT_DA_NO_DX; s++)
            ck_assert_int_eq(k[s].drop, drop);
        ck_assert_int_eq(k[LG_SLOT_DA_DX_TAIL].fuse, drop); /* unmasked: [dY|dS]·[W;A] gives all of dX */
        ck_assert_int_eq(k[LG_SLOT_DA_DX].fuse, 1);
        ck_assert_int_eq(k[LG_SLOT_DA_NO_DX].fuse, 0); /* no dX to add to */
    }
    lg_gen_free(g);
}
END_TEST

static int has_name(const struct lg_kernel_src *ks, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(ks[i].name, name))
            return 1;
    return 0;
}

/* `loragen gen` writes the kernels of a spec's layer slots: every kernel it lists serves a slot, and every
 * slot but da_no_dx (generated on first use; see generator/ops/lora.lua) has its kernel listed. */
START_TEST(spec_kernels_are_the_slots)
{
    static const char *specs[] = {"specs/llama-3.1-8b.lua", "specs/tiny.lua"};
    lg_gen_t *g;
    CHECK(lg_gen_init(&g));
    for (int i = 0; i < 2; i++) {
        struct lg_spec *sp;
        CHECK(lg_spec_load(specs[i], &sp));
        struct lg_kernel_src *ks;
        int n;
        CHECK(lg_gen_spec_kernels(g, sp, &ks, &n));
        struct lg_kernel_cfg k[LG_SLOT_COUNT];
        CHECK(lg_gen_layer_kernels(g, sp->dtype, sp->rank, sp->dropout, k));
        char names[LG_SLOT_COUNT][LG_NAME_MAX];
        for (int s = 0; s < LG_SLOT_COUNT; s++) {
            struct lg_kernel_src src = emit(g, k[s]);
            snprintf(names[s], sizeof names[s], "%s", src.name);
            lg_kernel_src_free(&src);
            if (s != LG_SLOT_DA_NO_DX)
                ck_assert_msg(has_name(ks, n, names[s]), "%s: slot %s's %s is not in the spec's kernels", specs[i],
                              lg_layer_slot_name((enum lg_layer_slot)s), names[s]);
        }
        for (int j = 0; j < n; j++) {
            int serves = 0;
            for (int s = 0; s < LG_SLOT_COUNT; s++)
                serves |= !strcmp(ks[j].name, names[s]);
            ck_assert_msg(serves, "%s: %s serves no layer slot", specs[i], ks[j].name);
            ck_assert_int_eq((int)strlen(ks[j].hash), 32);
            lg_kernel_src_free(&ks[j]);
        }
        free(ks);
        lg_spec_free(sp);
    }
    lg_gen_free(g);
}
END_TEST

/* ---- target names ---- */

/* The normalised targets of a job file whose one adapter lists `targets` (a Lua list, or "nil"), as a
 * comma-separated string; NULL when the file is refused (the message is left in *err). */
static char *job_targets(lua_State *L, const char *targets, char *out, size_t n, const char **err)
{
    char text[1024];
    snprintf(text, sizeof text,
             "return { pipeline = { stages = 1 }, batching = { capacity = 1024 },\n"
             "  adapters = { { name = \"a\", dataset = \"a.trace\", global_batch = 1, targets = %s } } }\n",
             targets);
    lua_pushstring(L, text);
    lua_pushstring(L, "truth_job.lua");
    if (lg_lua_pcall_module(L, "generator.job", "load", 2, 1, LG_ERR_SPEC) != LG_OK) {
        *err = lg_last_error();
        return NULL;
    }
    lua_getfield(L, -1, "adapters");
    lua_geti(L, -1, 1);
    lua_getfield(L, -1, "targets");
    out[0] = '\0';
    for (int i = 1; i <= (int)luaL_len(L, -1); i++) {
        lua_geti(L, -1, i);
        snprintf(out + strlen(out), n - strlen(out), "%s%s", i > 1 ? "," : "", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 4);
    return out;
}

START_TEST(targets_are_peft_names)
{
    lua_State *L = lua_ok();
    const char *err = NULL;
    char a[256], b[256], c[256], all[256] = "";
    push_module_field(L, "generator.limits", "TARGETS");
    for (int i = 1; i <= (int)luaL_len(L, -1); i++) {
        lua_geti(L, -1, i);
        snprintf(all + strlen(all), sizeof all - strlen(all), "%s%s", i > 1 ? "," : "", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    ck_assert_str_eq(all, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj");
    /* PEFT's names and the short aliases name the same modules, and come out as PEFT's names */
    ck_assert_ptr_nonnull(job_targets(L, "{ \"q_proj\", \"k_proj\", \"v_proj\", \"o_proj\", \"gate_proj\", "
                                         "\"up_proj\", \"down_proj\" }", a, sizeof a, &err));
    ck_assert_ptr_nonnull(job_targets(L, "{ \"q\", \"k\", \"v\", \"o\", \"gate\", \"up\", \"down\" }", b, sizeof b,
                                      &err));
    ck_assert_ptr_nonnull(job_targets(L, "{ \"q\", \"k_proj\", \"v\", \"o_proj\", \"gate\", \"up_proj\", \"down\" }",
                                      c, sizeof c, &err));
    ck_assert_str_eq(a, all);
    ck_assert_str_eq(b, all);
    ck_assert_str_eq(c, all);
    ck_assert_ptr_nonnull(job_targets(L, "nil", a, sizeof a, &err)); /* none named: every module */
    ck_assert_str_eq(a, all);
    ck_assert_ptr_nonnull(job_targets(L, "{ \"down\", \"q_proj\" }", a, sizeof a, &err));
    ck_assert_str_eq(a, "down_proj,q_proj");
    /* an alias and its PEFT name together are one module listed twice; anything else is refused */
    ck_assert_ptr_null(job_targets(L, "{ \"q\", \"q_proj\" }", a, sizeof a, &err));
    ck_assert_msg(strstr(err, "truth_job.lua:2: error: adapters[1].targets[2]: 'q_proj' names q_proj"), "%s", err);
    ck_assert_ptr_null(job_targets(L, "{ \"qkv_proj\" }", a, sizeof a, &err));
    ck_assert_msg(strstr(err, "'qkv_proj' is not one of: q_proj"), "%s", err);
    lua_close(L);
    /* a model spec's linear layers are the same names, in the same order */
    struct lg_spec *sp;
    CHECK(lg_spec_load("specs/llama-3.1-8b.lua", &sp));
    char names[256] = "";
    for (int i = 0; i < sp->nlinears; i++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? "," : "", sp->linears[i].name);
    ck_assert_str_eq(names, all);
    lg_spec_free(sp);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gen_truth");
    TCase *tc = tcase_create("truth");
    tcase_set_timeout(tc, 0);
    suite_add_tcase(s, tc);
    tcase_add_test(tc, ops_are_the_generators);
    tcase_add_test(tc, fields_map_both_ways);
    tcase_add_test(tc, every_field_round_trips);
    tcase_add_test(tc, limits_are_the_generators);
    tcase_add_test(tc, rank_rule_is_one_rule);
    tcase_add_test(tc, feature_rule_is_one_rule);
    tcase_add_test(tc, dtype_rule_is_one_rule);
    tcase_add_test(tc, slots_are_the_generators);
    tcase_add_test(tc, slots_keep_lora_c_contract);
    tcase_add_test(tc, spec_kernels_are_the_slots);
    tcase_add_test(tc, targets_are_peft_names);
    return lg_test_run(s, 0);
}
