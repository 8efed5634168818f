-- limits.lua: the rules the kernels put on a layer, and the names the data files share, in one place.
--
-- spec.lua and ops/lora.lua check against these, job.lua takes its target names from here, and the C side
-- reads the numbers through the generator (lg_gen_limits in runtime/gen/gen.c reads M.published()), so
-- lg_lora_init refuses exactly what a spec refuses. tests/test_gen_truth.c checks the two sides agree.
local M = {}

-- Ranks: 8-wide rank vectors in every kernel, and register and shared-memory budgets sized for 128.
M.RANK_MIN = 8
M.RANK_MAX = 128
M.RANK_MULTIPLE = 8
-- FusedMultiLoRA (generator/ops/mlora.lua, lg_mlora.h): each (adapter, module) slot's rank is any multiple of 4
-- in 4..128, padded to 8 columns in the kernels (zero A rows and B columns), whose own `rank` parameter is the
-- layer's largest padded rank and follows the rule above.
M.MLORA_RANK_MIN = 4
M.MLORA_RANK_MAX = 128
M.MLORA_RANK_MULTIPLE = 4
-- In and out features: 64-wide tiles over both.
M.FEATURE_MULTIPLE = 64
-- The largest in or out features of a layer: the kernels take the token count and features as 32-bit ints
-- and index rows in 64 bits; 2^17 is 2.5x the widest projection of any Llama-family model (405B's 53248).
M.FEATURES_MAX = 1 << 17

-- Bounds on every other integer a spec or job file gives, so that each fits the C int it is read into and
-- every product the C side forms from them (heads x head_dim, tokens x features, vocab x hidden, steps x
-- global batch) stays inside 64 bits. Sizes derived from them (q_proj's heads x head_dim) must also stay
-- within FEATURES_MAX; generator/spec.lua checks that.
M.BOUNDS = {
  layers = 1024,            -- decoder layers (the dropout stream keys a layer by 32 bits)
  heads = 1024,             -- attention heads, query or key/value
  head_dim = 1024,
  vocab = 1 << 24,          -- token ids are int32
  tokens = 1 << 24,         -- tokens per microbatch or benchmark call (the kernels' 32-bit n)
  positions = 1 << 24,      -- RoPE positions
  batch = 1 << 24,          -- samples per global batch
  steps = (1 << 31) - 1,    -- optimizer steps, checkpoint and evaluation intervals (C int)
  int = (1 << 31) - 1,      -- any other count read into a C int
  seed = (1 << 53) - 1,     -- seeds: exact in a double and in every JSON reader
}

-- Strings a data file gives are names and paths read into C strings: at most this many bytes, valid UTF-8 and
-- without NUL bytes (which C would take for the end of the string).
M.STRING_MAX = 4096
-- The name of an explicit linear layer is kept in a 32-byte C array (struct lg_linear).
M.LINEAR_NAME_MAX = 31

-- The 16-bit types the kernels are written for.
M.DTYPES = { "bf16", "fp16" }
-- The archs a spec may target (and targets when it names none).
M.ARCHS = { "sm_80", "sm_89", "sm_90" }

-- Job files only price an adapter (the scheduler's cost model runs no kernel), so they take any rank in
-- 1..JOB_RANK_MAX; the kernel rule above applies when a layer is built.
M.JOB_RANK_MAX = 4096

-- Target modules: PEFT's names, canonical in every output, in decoder order.
M.TARGETS = { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" }
-- The short names job files used first, accepted there as aliases of PEFT's names.
M.TARGET_ALIASES = { q = "q_proj", k = "k_proj", v = "v_proj", o = "o_proj", gate = "gate_proj", up = "up_proj",
                     down = "down_proj" }

function M.rank_ok(r)
  return math.type(r) == "integer" and r >= M.RANK_MIN and r <= M.RANK_MAX and r % M.RANK_MULTIPLE == 0
end

-- "a multiple of 8 in 8..128": the rule as messages state it.
function M.rank_rule()
  return ("a multiple of %d in %d..%d"):format(M.RANK_MULTIPLE, M.RANK_MIN, M.RANK_MAX)
end

-- The PEFT name of a target given by its PEFT name or a short alias; nil for anything else.
function M.target(name)
  if M.TARGET_ALIASES[name] then return M.TARGET_ALIASES[name] end
  for _, t in ipairs(M.TARGETS) do
    if t == name then return t end
  end
  return nil
end

-- Every name a target may be given as: PEFT's names, then the aliases (sorted), for enums and messages.
function M.target_names()
  local out, short = {}, {}
  for _, t in ipairs(M.TARGETS) do out[#out + 1] = t end
  for k in pairs(M.TARGET_ALIASES) do short[#short + 1] = k end
  table.sort(short)
  for _, k in ipairs(short) do out[#out + 1] = k end
  return out
end

-- What C reads (struct lg_gen_limits): every key must be one of its fields, and every field must be here.
function M.published()
  return {
    rank_min = M.RANK_MIN, rank_max = M.RANK_MAX, rank_multiple = M.RANK_MULTIPLE,
    feature_multiple = M.FEATURE_MULTIPLE, dtypes = M.DTYPES,
    mlora_rank_min = M.MLORA_RANK_MIN, mlora_rank_max = M.MLORA_RANK_MAX,
    mlora_rank_multiple = M.MLORA_RANK_MULTIPLE,
  }
end

return M
