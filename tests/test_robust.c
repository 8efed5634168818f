/* test_robust.c: hostile inputs, one fixture per class (tests/data/robust/), each refused with its file, line
 * and a clear message: specs and job files that make the sandbox's C library functions work without end
 * (backtracking patterns, huge repetitions, table.move over 10^15), that allocate in a loop, run past the CPU
 * deadline, nest past the parser, call error() without a message; numbers that are not finite or do not fit
 * the C field they are read into; names and paths with NUL bytes or invalid UTF-8; token datasets with ids
 * outside the vocabulary, duplicate keys and loss_mask values other than 0/1, also through `loragen train` and
 * the scheduler's reader; job values past their C field (jobfile.c); init adapters with NaN or Inf weights;
 * config.json, adapter_config.json and shard indexes with a NUL byte; checkpoint names that are not numbers;
 * `loragen gen --arch ,`. Also: the limited string functions give Lua's results. */
#include "lg_ckpt.h"
#include "lg_gen.h"
#include "lg_hf.h"
#include "lg_io.h"
#include "lg_lua.h"
#include "lg_lua_test.h"
#include "lg_test.h"
#include "lg_tokens.h"
#include "lg_trainjob.h"

#include <check.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DATA "tests/data/robust/"

static char *tmp; /* a scratch directory the parent creates and removes */

static void expect_msg(enum lg_status st, enum lg_status want, const char *where, const char *phrase)
{
    const char *msg = lg_last_error();
    ck_assert_msg(st == want, "%s: status %s, want %s (%s)", where, lg_status_str(st), lg_status_str(want), msg);
    ck_assert_msg(strstr(msg, where) != NULL, "want '%s' in:\n%s", where, msg);
    ck_assert_msg(strstr(msg, phrase) != NULL, "want '%s' in:\n%s", phrase, msg);
}

/* ---- specs: one concern each, its line and phrase ---- */

static const struct bad {
    const char *file;
    int line; /* 0: the message names the file without a line */
    const char *phrase;
} bad_specs[] = {
    {"pattern_backtrack", 3, "string.find: the file's string and table functions did more than"},
    {"pattern_method", 3, "string.match: the file's string and table functions"},
    {"gsub_backtrack", 3, "string.gsub: the file's string and table functions"},
    {"gmatch_backtrack", 2, "string.gmatch: the file's string and table functions"},
    {"plain_find", 3, "string.find: the file's string and table functions"},
    {"rep_huge", 2, "string.rep: a 1000000000-byte string is more than the 16 MiB"},
    {"table_move", 3, "table.move: the file's string and table functions"},
    {"table_sort", 4, "table.sort: the file's string and table functions"},
    {"concat_loop", 3, "allocated more than 4 GiB in all"},
    {"error_nil", 3, "error() called without a message"},
    {"error_table", 2, "error() called with a table instead of a message"},
    {"error_nul", 2, "first\\0second\\10third"},
    {"stack_overflow", 2, "stack overflow (a function that calls itself without end?)"},
    {"deep_nesting", 0, "nests tables, parentheses or calls too deeply for Lua's parser"},
    {"alpha_inf", 5, "lora.alpha: must be a finite number (got inf)"},
    {"dropout_nan", 5, "lora.dropout: must be a finite number (got nan)"},
    {"name_nul", 5, "linears[1].name: 'a\\0b' holds a NUL byte"},
    {"name_utf8", 5, "linears[1].name: 'caf\\233' is not valid UTF-8 (byte 4)"},
    {"tokens_float", 4, "tokens: expected an integer, got 1e+300"},
    {"tokens_big", 4, "tokens: must be <= 16777216 (got 1099511627776)"},
    {"heads_product", 5, "= 1048576 is more than the 131072 features the kernels take"},
    {"layers_big", 5, "model.num_hidden_layers: must be <= 1024"},
    {"linear_name_long", 5, "linears[1].name: 36 bytes is longer than the 31"},
    {"archs_twice", 6, "archs[2]: 'sm_80' is listed twice"},
    {"many_keys", 2, "lora: has more than 1000 keys"},
};
#define NBAD ((int)(sizeof bad_specs / sizeof bad_specs[0]))

START_TEST(bad_spec_is_refused_on_its_line)
{
    const struct bad *b = &bad_specs[_i];
    char path[256], where[300];
    snprintf(path, sizeof path, DATA "%s.lua", b->file);
    if (b->line)
        snprintf(where, sizeof where, "%s:%d: error:", path, b->line);
    else
        snprintf(where, sizeof where, "%s: error:", path);
    struct lg_spec *s = NULL;
    expect_msg(lg_spec_load(path, &s), LG_ERR_SPEC, where, b->phrase);
    ck_assert_ptr_null(s);
    ck_assert_msg(lg_test_count_substr(lg_last_error(), "error:") == 1, "one error expected:\n%s", lg_last_error());
}
END_TEST

START_TEST(cpu_deadline_ends_a_slow_file)
{
    setenv("LORAGEN_SANDBOX_SECONDS", "0.05", 1); /* Check forks each case: no other case sees it */
    struct lg_spec *s = NULL;
    expect_msg(lg_spec_load(DATA "cpu_deadline.lua", &s), LG_ERR_SPEC, DATA "cpu_deadline.lua:3: error:",
               "evaluating the file took more than 0.05 s of CPU time");
}
END_TEST

START_TEST(errors_are_capped_with_a_count)
{
    struct lg_spec *s = NULL;
    expect_msg(lg_spec_load(DATA "many_errors_capped.lua", &s), LG_ERR_SPEC, DATA "many_errors_capped.lua:2: error:",
               DATA "many_errors_capped.lua: ... and 50 more errors");
    ck_assert_int_eq(lg_test_count_substr(lg_last_error(), "error:"), 100);
}
END_TEST

/* ---- job files, through both readers ---- */

static const struct bad bad_jobs[] = {
    {"job_alpha_inf", 5, "adapters[1].alpha: must be a finite number (got inf)"},
    {"job_lr_nan", 5, "adapters[1].lr: must be a finite number (got nan)"},
    {"job_name_utf8", 4, "adapters[1].name: 'r\\233sum\\233' is not valid UTF-8 (byte 2)"},
    {"job_path_nul", 5, "adapters[1].dataset: '../sched/small\\0.trace' holds a NUL byte"},
    {"job_batch_big", 5, "adapters[1].global_batch: must be <= 16777216"},
    {"job_seed_big", 4, "batching.seed: must be <= 9007199254740991"},
    {"job_dims_big", 3, "model.hidden: must be <= 131072"},
    {"job_pattern", 3, "string.gsub: the file's string and table functions"},
    {"job_steps_big", 5, "adapters[1].steps: must be <= 2147483647"},
    {"job_train_lr_inf", 5, "adapters[1].lr: must be a finite number (got inf)"},
};
#define NBADJOB ((int)(sizeof bad_jobs / sizeof bad_jobs[0]))

START_TEST(bad_job_is_refused_on_its_line)
{
    const struct bad *b = &bad_jobs[_i];
    char path[256], where[300];
    snprintf(path, sizeof path, DATA "%s.lua", b->file);
    snprintf(where, sizeof where, "%s:%d: error:", path, b->line);
    lg_job_t *job = NULL;
    expect_msg(lg_job_load(path, &job), LG_ERR_SPEC, where, b->phrase);
    ck_assert_ptr_null(job);
    struct lg_train_config tc;
    expect_msg(lg_train_config_load(path, &tc), LG_ERR_SPEC, where, b->phrase);
}
END_TEST

/* ---- the limited library is Lua's, but for the budget ---- */


START_TEST(limited_string_functions_are_luas)
{
    lua_State *L = lg_test_lua_state();
    /* Every (subject, pattern) pair through find, match, gmatch and gsub (string and function replacements),
     * the standard library's against the limited one's, outside and inside a limited run; also string.rep and
     * the table functions the sandbox wraps. */
    lg_test_lua_run(L, "local S = lg_sandbox_lib('string')\n"
               "local T = lg_sandbox_lib('table')\n"
               "local subjects = { '', 'a', 'hello world', 'aaab', '(a(b)c)', 'k1 = v1, k2 = v2', 'x\\0y', 'THE end.',"
               "  ' \\t pad ', 'caf\\195\\169', ('ab'):rep(40) }\n"
               "local patterns = { '', 'a', '^a', 'a$', '.-', 'a*', 'a+b', 'a?', '(%w+) = (%w+)', '%b()', '%f[%w]%w+',"
               "  '[%a_][%w_]*', '[^%s]+', '()', '(a)(b)?', '%s*$', '(h)(.)%2?', '%d', 'x%zy', '[%]]', '.', '^', 'ab' }\n"
               "local function eq(x, y, what)\n"
               "  assert(x.n == y.n, what .. ': ' .. x.n .. ' vs ' .. y.n .. ' results')\n"
               "  for i = 1, x.n do assert(x[i] == y[i], what .. ': result ' .. i .. ': ' .. tostring(x[i]) .. ' vs ' .. tostring(y[i])) end\n"
               "end\n"
               "local function collect(it) local out = {} for a, b in it do out[#out + 1] = tostring(a) .. '|' .. tostring(b) end return table.concat(out, ';') end\n"
               "local function check()\n"
               "  for _, s in ipairs(subjects) do for _, p in ipairs(patterns) do\n"
               "    local w = ('%q %q'):format(s, p)\n"
               "    for _, init in ipairs({ 1, 2, -3, 100 }) do\n"
               "      eq(table.pack(string.find(s, p, init)), table.pack(S.find(s, p, init)), 'find ' .. w)\n"
               "      eq(table.pack(string.find(s, p, init, true)), table.pack(S.find(s, p, init, true)), 'plain ' .. w)\n"
               "      eq(table.pack(string.match(s, p, init)), table.pack(S.match(s, p, init)), 'match ' .. w)\n"
               "    end\n"
               "    assert(collect(string.gmatch(s, p)) == collect(S.gmatch(s, p)), 'gmatch ' .. w)\n"
               "    eq(table.pack(string.gsub(s, p, '<%0>')), table.pack(S.gsub(s, p, '<%0>')), 'gsub ' .. w)\n"
               "    eq(table.pack(string.gsub(s, p, '#', 2)), table.pack(S.gsub(s, p, '#', 2)), 'gsub n ' .. w)\n"
               "    local f = function(x) return type(x) == 'string' and #x > 1 and x:upper() or nil end\n"
               "    eq(table.pack(string.gsub(s, p, f)), table.pack(S.gsub(s, p, f)), 'gsub fn ' .. w)\n"
               "  end end\n"
               "  assert(S.rep('ab', 3, ',') == 'ab,ab,ab' and S.rep('x', 0) == '' and S.rep('x', -1) == '')\n"
               "  local t = { 5, 3, 9, 1 }\n"
               "  T.sort(t) assert(T.concat(t, ' ') == '1 3 5 9')\n"
               "  T.insert(t, 1, 0) T.remove(t) assert(T.concat(t, ',') == '0,1,3,5')\n"
               "  assert(select('#', T.unpack(t)) == 4 and T.move(t, 1, 2, 3)[4] == 1)\n"
               "  for _, bad in ipairs({ '%', '[a', '(()', '%b', '%f', '(%1)' }) do\n"
               "    local ok1, e1 = pcall(string.find, 'abc', bad)\n"
               "    local ok2, e2 = pcall(S.find, 'abc', bad)\n"
               "    assert(not ok1 and not ok2 and e1 == e2, 'malformed ' .. bad .. ': ' .. tostring(e2))\n"
               "  end\n"
               "end\n"
               "check()\n"
               "local ok, err = lg_run_limited(function() check() return 1 end)\n"
               "assert(ok, err)\n");
    lua_close(L);
}
END_TEST

START_TEST(string_methods_reach_the_limited_library_only_in_a_run)
{
    lua_State *L = lg_test_lua_state();
    lg_test_lua_run(L, "local ok, err = lg_run_limited(function() return ('x'):rep(1e9) end)\n"
               "assert(not ok and err:find('string.rep: a 1000000000%-byte string'), err)\n"
               "assert(#('x'):rep(2^25) == 2^25) -- trusted code: Lua's own rep, no cap\n"
               "assert(getmetatable('').__index == string)\n");
    lua_close(L);
}
END_TEST

START_TEST(trusted_failures_name_the_file)
{
    lua_State *L = lg_test_lua_state();
    lg_test_lua_run(L, "local sandbox = require('generator.sandbox')\n"
               "local ok, err = pcall(sandbox.protect, 'specs/x.lua', function() error('not enough memory', 0) end)\n"
               "assert(not ok and err:find('^specs/x.lua: error: not enough memory checking the file'), err)\n"
               "ok, err = pcall(sandbox.protect, 'specs/x.lua', function() error('specs/x.lua:3: error: a: b', 0) end)\n"
               "assert(not ok and err == 'specs/x.lua:3: error: a: b', err)\n"
               "assert(select(2, sandbox.protect('p', function(a, b) return a, b end, 1, 2)) == 2)\n");
    lua_close(L);
}
END_TEST

START_TEST(every_integer_field_has_a_max)
{
    lua_State *L = lg_test_lua_state();
    /* The loaders check this on every load; here a schema without a max is shown to be refused by name. */
    lg_test_lua_run(L, "local sandbox = require('generator.sandbox')\n"
               "local ok, err = pcall(sandbox.check_schema, { type = 'table', fields = { n = { type = 'integer', min = 1 } } }, 'job')\n"
               "assert(not ok and err:find('job.n is an integer without a max'), err)\n");
    lua_close(L);
}
END_TEST

/* ---- token datasets ---- */

static const struct bad bad_tokens[] = {
    {"tokens_dup_key", 2, "duplicate object key"},
    {"tokens_negative", 2, "input_ids[1] = -5 is not a token id"},
    {"tokens_oov", 2, "input_ids[1] = 600 is not a token id of this model's vocabulary"},
    {"tokens_label_oov", 2, "labels[1] = 512 is not a token id of this model's vocabulary"},
    {"tokens_label_negative", 2, "labels[1] = -7 is not a token id"},
    {"tokens_mask_two", 2, "loss_mask[1] must be 0, 1 or a boolean"},
    {"tokens_mask_float", 2, "loss_mask[1] must be 0, 1 or a boolean"},
};
#define NBADTOK ((int)(sizeof bad_tokens / sizeof bad_tokens[0]))

START_TEST(bad_tokens_are_refused_on_their_line)
{
    const struct bad *b = &bad_tokens[_i];
    char path[256], where[300];
    snprintf(path, sizeof path, DATA "%s.jsonl", b->file);
    snprintf(where, sizeof where, "%s:%d:", path, b->line);
    lg_tokens_t *tk = NULL;
    expect_msg(lg_tokens_load(path, 512, &tk), LG_ERR_IO, where, b->phrase);
    ck_assert_ptr_null(tk);
}
END_TEST

/* The scheduler's JSONL reader (lg_dataset_load, what `loragen plan` reads) holds a line to the token reader's
 * rules but the vocabulary: the same fixtures are refused on the same line. It used to keep the last of two
 * input_ids and take any integer as an id or a loss_mask value. */
START_TEST(datasets_are_held_to_the_token_readers_rules)
{
    static const struct bad sets[] = {
        {"tokens_dup_key", 2, "duplicate object key"},
        {"tokens_negative", 2, "input_ids[1] = -5 is not a token id"},
        {"tokens_label_negative", 2, "labels[1] = -7 is not a token id"},
        {"tokens_mask_two", 2, "loss_mask[1] must be 0, 1 or a boolean"},
        {"tokens_mask_float", 2, "loss_mask[1] must be 0, 1 or a boolean"},
    };
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        char path[256], where[300];
        snprintf(path, sizeof path, DATA "%s.jsonl", sets[i].file);
        snprintf(where, sizeof where, "%s:%d:", path, sets[i].line);
        lg_dataset_t *ds = NULL;
        expect_msg(lg_dataset_load(path, LG_DATASET_AUTO, &ds), LG_ERR_IO, where, sets[i].phrase);
        ck_assert_ptr_null(ds);
    }
    lg_job_t *job = NULL;
    expect_msg(lg_job_load(DATA "job_dataset_dup.lua", &job), LG_ERR_IO,
               DATA "job_dataset_dup.lua:3: error: adapters[1].dataset: " DATA "tokens_dup_key.jsonl:2:",
               "duplicate object key");
}
END_TEST

/* A bound missing from generator/job.lua must not reach a float-to-int cast in jobfile.c: with job.lua
 * wrapped (LORAGEN_SOURCE_DIR) so that its normalised table carries a value past its C field, lg_job_load
 * names the field. */
START_TEST(job_values_past_their_c_field_are_refused_by_name)
{
    static const char *const cases[][2] = {
        {"out.model.hidden = 2^40", "'model.hidden' is not finite or outside the range of its C field"},
        {"out.model.heads = 1e300", "'model.heads' is not finite"},
        {"out.model.tflops = 1/0", "'model.tflops' is not finite"},
        {"out.cost.token_us = 0/0", "'cost.token_us' is not finite"},
        {"out.seed = -1", "'seed' is not finite or outside"},
        {"out.capacity = 2^33", "'capacity' is not finite or outside"},
        {"out.stages = 2.5", "'stages' is not finite or outside"},
        {"out.adapters[1].global_batch = 2^31", "'adapters[1].global_batch' is not finite or outside"},
        {"out.adapters[1].lr = 0/0", "'adapters[1].lr' is not finite"},
    };
    char *src = lg_test_path(tmp, "src"), *gen = lg_test_path(src, "generator"), cwd[1024], text[4096];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    ck_assert_int_eq(mkdir(src, 0755), 0);
    ck_assert_int_eq(mkdir(gen, 0755), 0);
    char *real = lg_test_slurp("generator/job.lua", NULL), *real_path = lg_test_path(gen, "job_real.lua");
    lg_test_write_text(real_path, real);
    char *job = lg_test_path(tmp, "job.lua"), *wrapper = lg_test_path(gen, "job.lua");
    snprintf(text, sizeof text,
             "return { model = { hidden = 4096, ffn = 14336, layers = 32, heads = 32 }, cost = { layer_us = 5 },\n"
             "  adapters = { { name = 'a', dataset = '%s/tests/data/sched/small.trace', global_batch = 2 } } }\n",
             cwd);
    lg_test_write_text(job, text);
    lg_job_t *jb = NULL;
    CHECK(lg_job_load(job, &jb)); /* the file itself is fine */
    lg_job_free(jb);
    setenv("LORAGEN_SOURCE_DIR", src, 1); /* Check forks each case: no other case sees it */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(text, sizeof text,
                 "local M = require('generator.job_real')\n"
                 "local load = M.load\n"
                 "function M.load(text, path) local out = load(text, path) %s return out end\n"
                 "return M\n",
                 cases[i][0]);
        lg_test_write_text(wrapper, text);
        jb = NULL;
        expect_msg(lg_job_load(job, &jb), LG_ERR_SPEC, job, cases[i][1]);
        ck_assert_msg(strstr(lg_last_error(), "a bound missing from the schema"), "%s", lg_last_error());
        ck_assert_ptr_null(jb);
    }
    free(real);
    free(real_path);
    free(wrapper);
    free(job);
    free(gen);
    free(src);
}
END_TEST

/* ---- checkpoints ---- */

/* A checkpoint is trusted only as far as its manifest goes: a file added to it afterwards, or a manifest
 * emptied of its entries, is refused naming the file. */
START_TEST(checkpoint_files_outside_the_manifest_are_refused)
{
    char *root = lg_test_path(tmp, "ckpts"), dir[1200], path[1300];
    lg_ckpt_writer_t *w;
    CHECK(lg_ckpt_begin(root, &w));
    snprintf(path, sizeof path, "%s/state.safetensors", lg_ckpt_dir(w));
    lg_test_write_text(path, "state\n");
    CHECK(lg_ckpt_commit(w, 2));
    CHECK(lg_ckpt_latest(root, dir, sizeof dir));
    snprintf(path, sizeof path, "%s/adapter-0.safetensors", dir);
    lg_test_write_text(path, "planted\n");
    expect_msg(lg_ckpt_verify(dir), LG_ERR_IO, "adapter-0.safetensors is not in its manifest", "altered");
    unlink(path);
    CHECK(lg_ckpt_verify(dir));
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    lg_test_write_text(path, "{\"format\": 1, \"files\": {}}\n");
    expect_msg(lg_ckpt_latest(root, dir, sizeof dir), LG_ERR_IO, "state.safetensors is not in its manifest", dir);
    free(root);
}
END_TEST

/* ---- fuzz findings worth a named case ---- */

/* config.json without head_dim, hidden_size / heads above the reader's head_dim bound: it was accepted and
 * written back as a config the reader refused (fuzz_config). */
START_TEST(derived_head_dim_is_bounded_like_a_given_one)
{
    struct lg_model_config c;
    const char *path = "tests/fuzz/corpus/config/regress-derived-head-dim";
    expect_msg(lg_model_config_read(path, &c), LG_ERR_IO, path, "head_dim = 153028 is out of range [1, 65536]");
}
END_TEST

/* llama3 rope's original_max_position_embeddings inside rope_scaling had no upper bound and went into an int:
 * 2^32 + 8192 was read as 8192. */
START_TEST(nested_rope_position_is_bounded_like_the_top_level_one)
{
    struct lg_model_config c;
    const char *path = "tests/fuzz/corpus/config/regress-rope-orig-big";
    expect_msg(lg_model_config_read(path, &c), LG_ERR_IO, path,
               "rope_scaling.original_max_position_embeddings must be an integer in [1, 2^30]");
}
END_TEST

/* json_loads stopped at a NUL byte and took the text before it for the whole file: config.json,
 * adapter_config.json and a shard index with a valid object, a NUL and anything after it were accepted. */
START_TEST(json_files_with_a_nul_byte_are_refused)
{
    struct lg_model_config c;
    const char *cfg = "tests/fuzz/corpus/config/regress-nul-tail";
    expect_msg(lg_model_config_read(cfg, &c), LG_ERR_IO, cfg, "a NUL byte at offset 608: not a JSON text");
    struct lg_peft_config pc;
    const char *peft = "tests/fuzz/corpus/peft/regress-nul-tail";
    expect_msg(lg_peft_config_read(peft, &pc), LG_ERR_IO, peft, "a NUL byte at offset");
    char *dir = lg_test_path(tmp, "model"), *index = lg_test_path(dir, "model.safetensors.index.json");
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    size_t n;
    char *text = lg_test_slurp("tests/fuzz/corpus/st_index/regress-nul-tail", &n);
    lg_test_write_file(index, text, n);
    lg_st_t *st = NULL;
    expect_msg(lg_st_open_model(dir, &st), LG_ERR_IO, index, "a NUL byte at offset");
    ck_assert_ptr_null(st);
    free(text);
    free(index);
    free(dir);
}
END_TEST

/* Checkpoint numbers come from directory names and the `latest` file: sscanf's %d took " +5" and numbers past
 * an int (undefined behaviour; glibc wrapped 2^32 to 0), and a ckpt-2147483647 made the next number overflow. Now
 * a checkpoint is ckpt- and at most 8 digits; anything else is not one. */
START_TEST(checkpoint_numbers_are_parsed_strictly)
{
    char *root = lg_test_path(tmp, "ckpt-numbers"), *stray = lg_test_path(root, "ckpt-2147483647"), dir[1200], path[1300];
    lg_ckpt_writer_t *w;
    CHECK(lg_ckpt_begin(root, &w));
    CHECK(lg_ckpt_commit(w, 1));
    ck_assert_int_eq(mkdir(stray, 0755), 0);
    CHECK(lg_ckpt_begin(root, &w));
    CHECK(lg_ckpt_commit(w, 1)); /* ckpt-000001; the stray directory is not a checkpoint, so neither next nor pruned */
    CHECK(lg_ckpt_latest(root, dir, sizeof dir));
    ck_assert_msg(strstr(dir, "/ckpt-000001"), "%s", dir);
    ck_assert_int_eq(access(stray, F_OK), 0);
    snprintf(path, sizeof path, "%s/latest", root);
    const char *bad[] = {"ckpt-4294967296\n", "ckpt- 1\n", "ckpt-+1\n", "ckpt-1x\n"};
    for (int i = 0; i < 4; i++) {
        lg_test_write_text(path, bad[i]);
        expect_msg(lg_ckpt_latest(root, dir, sizeof dir), LG_ERR_IO, path, "not a checkpoint");
    }
    free(stray);
    free(root);
}
END_TEST

/* ---- the CLI ---- */

static void setup_once(void) {}

static void expect_cli(const char *const *args, int code, const char *frag)
{
    setup_once();
    char *out, *err;
    int rc = lg_test_loragen_run(tmp, args, &out, &err);
    ck_assert_msg(rc == code, "%s: exit %d, wanted %d\n%s", args[0], rc, code, err);
    ck_assert_msg(strstr(err, frag), "stderr lacks '%s':\n%s", frag, err);
    free(out);
    free(err);
}

START_TEST(gen_refuses_an_empty_arch)
{
    expect_cli((const char *[]){"gen", "specs/tiny.lua", "--arch", ",", NULL}, 2, "empty arch in --arch ','");
    expect_cli((const char *[]){"gen", "specs/tiny.lua", "--arch=sm_80,", NULL}, 2, "empty arch in --arch 'sm_80,'");
    expect_cli((const char *[]){"gen", "specs/tiny.lua", "--arch", "sm_80,,sm_90", NULL}, 2, "empty arch");
    expect_cli((const char *[]){"gen", "specs/tiny.lua", "--arch", "sm_75", NULL}, 2, "unsupported arch 'sm_75'");
    expect_cli((const char *[]){"gen", DATA "pattern_backtrack.lua", "--no-compile", NULL}, 1,
               DATA "pattern_backtrack.lua:3: error: string.find:");
}
END_TEST

/* The tiny model in tmp/model, for the `loragen train` cases. */
static void init_tiny_model(void)
{
    char *model = lg_test_path(tmp, "model"), *out, *err;
    int rc = lg_test_loragen_run(tmp, (const char *[]){"init-model", "specs/tiny.lua", model, "--dtype", "fp32", NULL},
                                 &out, &err);
    ck_assert_msg(rc == 0, "init-model: %s", err);
    free(out);
    free(err);
    free(model);
}

/* `loragen train` on a job file of this text fails (exit 1) naming `where` and saying `want`. */
static void expect_train_error(const char *text, const char *where, const char *want)
{
    char *job = lg_test_path(tmp, "job.lua");
    lg_test_write_text(job, text);
    expect_cli((const char *[]){"train", job, NULL}, 1, where);
    expect_cli((const char *[]){"train", job, NULL}, 1, want);
    free(job);
}

/* `loragen train` on a dataset with an id outside the tiny model's 512-token vocabulary: the trainer's token
 * reader is given the model's vocabulary and names the file, line and position. */
START_TEST(train_refuses_ids_outside_the_vocabulary)
{
    init_tiny_model();
    char cwd[1024];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    const char *sets[] = {"tokens_oov", "tokens_negative", "tokens_label_oov", "tokens_mask_two"};
    const char *want[] = {"input_ids[1] = 600 is not a token id of this model's vocabulary",
                          "input_ids[1] = -5 is not a token id", "labels[1] = 512 is not a token id",
                          "loss_mask[1] must be 0, 1 or a boolean"};
    for (int i = 0; i < 4; i++) {
        char text[2048], where[1200];
        snprintf(text, sizeof text,
                 "return { model = { path = 'model' }, training = { backend = 'cpu', output = 'out' },\n"
                 "  adapters = { { name = 'a', dataset = '%s/" DATA "%s.jsonl', global_batch = 1, steps = 1 } } }\n",
                 cwd, sets[i]);
        snprintf(where, sizeof where, DATA "%s.jsonl:2:", sets[i]);
        expect_train_error(text, where, want[i]);
    }
}
END_TEST

/* An init_adapter with a NaN or an infinity in a weight is refused at load, naming the file and the tensor
 * (the numerical guard would stop the run only after 8 skipped batches). */
START_TEST(train_refuses_a_non_finite_init_adapter)
{
    init_tiny_model();
    char cwd[1024];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    const char *sets[] = {"init_adapter_nan", "init_adapter_inf"};
    const char *want[] = {"tensor base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight holds 1 non-finite "
                          "value(s), the first nan at element 5",
                          "tensor base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight holds 1 non-finite "
                          "value(s), the first -inf at element 3"};
    for (int i = 0; i < 2; i++) {
        char text[4096], where[1200];
        snprintf(text, sizeof text,
                 "return { model = { path = 'model' }, training = { backend = 'cpu', output = 'out' },\n"
                 "  adapters = { { name = 'a', dataset = '%s/specs/jobs/data/toy-train.jsonl', global_batch = 1,\n"
                 "    steps = 1, rank = 1, alpha = 2, targets = { 'q_proj' },\n"
                 "    init_adapter = '%s/" DATA "%s' } } }\n",
                 cwd, cwd, sets[i]);
        snprintf(where, sizeof where, "init_adapter %s/" DATA "%s/adapter_model.safetensors: ", cwd, sets[i]);
        expect_train_error(text, where, want[i]);
    }
}
END_TEST

int main(void)
{
    static char dir[] = "/tmp/lg_robust.XXXXXX"; /* in the parent, which removes it after every forked case */
    if (!(tmp = mkdtemp(dir)))
        return 1;
    Suite *s = suite_create("robust");
    TCase *tc = tcase_create("robust");
    tcase_set_timeout(tc, 0);
    tcase_add_loop_test(tc, bad_spec_is_refused_on_its_line, 0, NBAD);
    tcase_add_test(tc, cpu_deadline_ends_a_slow_file);
    tcase_add_test(tc, errors_are_capped_with_a_count);
    tcase_add_loop_test(tc, bad_job_is_refused_on_its_line, 0, NBADJOB);
    tcase_add_test(tc, limited_string_functions_are_luas);
    tcase_add_test(tc, string_methods_reach_the_limited_library_only_in_a_run);
    tcase_add_test(tc, trusted_failures_name_the_file);
    tcase_add_test(tc, every_integer_field_has_a_max);
    tcase_add_loop_test(tc, bad_tokens_are_refused_on_their_line, 0, NBADTOK);
    tcase_add_test(tc, datasets_are_held_to_the_token_readers_rules);
    tcase_add_test(tc, job_values_past_their_c_field_are_refused_by_name);
    tcase_add_test(tc, checkpoint_files_outside_the_manifest_are_refused);
    tcase_add_test(tc, derived_head_dim_is_bounded_like_a_given_one);
    tcase_add_test(tc, nested_rope_position_is_bounded_like_the_top_level_one);
    tcase_add_test(tc, json_files_with_a_nul_byte_are_refused);
    tcase_add_test(tc, checkpoint_numbers_are_parsed_strictly);
    tcase_add_test(tc, gen_refuses_an_empty_arch);
    tcase_add_test(tc, train_refuses_ids_outside_the_vocabulary);
    tcase_add_test(tc, train_refuses_a_non_finite_init_adapter);
    suite_add_tcase(s, tc);
    int rc = lg_test_run(s, 0);
    lg_test_rm_rf(tmp);
    return rc;
}
