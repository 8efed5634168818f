-- spec.lua: the model/LoRA spec: schema, validation, and the linear layers it implies.
--
-- A spec is a Lua file returning a table (see specs/llama-3.1-8b.lua). Either `model` (a Llama-family
-- decoder's dimensions, from which the seven projections follow) or `linears` (explicit shapes) must be given.
-- Every error is collected and reported as "specs/x.lua:LINE: error: field: message".
local sandbox = require("generator.sandbox")
-- What the kernels need of the dimensions (64-wide feature tiles, 8-wide rank vectors), the dtypes, archs and
-- target names: one table shared with ops/lora.lua, job.lua and the C side.
local limits = require("generator.limits")

local M = {}

-- An integer in 1..max (every integer the C side reads has a bound it can hold: limits.BOUNDS).
local function positive_int(max, extra)
  local n = { type = "integer", min = 1, max = max }
  for k, v in pairs(extra or {}) do n[k] = v end
  return n
end
local B, F = limits.BOUNDS, limits.FEATURES_MAX

local schema = {
  type = "table",
  fields = {
    name = { type = "string", required = true, check = function(v, path, errs)
      -- it names the output directory (out/<name>), so it must be one plain path component
      if not v:match("^[%w_][%w._%-]*$") then
        errs:add(path, ("'%s' must be letters, digits, '.', '_' or '-', not starting with '.' or '-'")
          :format(sandbox.quote(v)))
      end
    end },
    description = { type = "string" },
    model = {
      type = "table",
      fields = {
        hidden_size = positive_int(F, { required = true }),
        intermediate_size = positive_int(F, { required = true }),
        num_attention_heads = positive_int(B.heads, { required = true }),
        num_key_value_heads = positive_int(B.heads, { required = true }),
        head_dim = positive_int(B.head_dim),
        num_hidden_layers = positive_int(B.layers, { required = true }),
        vocab_size = positive_int(B.vocab),
        attention_bias = { type = "boolean" },
        -- what `loragen init-model` writes into config.json beside the dimensions (kernels ignore them)
        family = { type = "string", enum = { "llama", "qwen2" } },
        rope_theta = { type = "number", min_excl = 1, max = 1e12 },
        rms_norm_eps = { type = "number", min_excl = 0, max = 1 },
        tie_word_embeddings = { type = "boolean" },
        rope_scaling = {
          type = "table",
          fields = {
            rope_type = { type = "string", required = true, enum = { "llama3" } },
            factor = { type = "number", required = true, min_excl = 0, max = 1e6 },
            low_freq_factor = { type = "number", required = true, min_excl = 0, max = 1e6 },
            high_freq_factor = { type = "number", required = true, min_excl = 0, max = 1e6 },
            original_max_position_embeddings = positive_int(B.positions, { required = true }),
          },
        },
      },
    },
    linears = {
      type = "array", min_len = 1, max_len = 1024,
      items = {
        type = "table",
        fields = {
          name = { type = "string", required = true, min_len = 1, max_len = limits.LINEAR_NAME_MAX },
          in_features = positive_int(F, { required = true }),
          out_features = positive_int(F, { required = true }),
          bias = { type = "boolean" },
        },
      },
    },
    lora = {
      type = "table", required = true,
      fields = {
        rank = positive_int(B.int, { required = true }), -- the kernels' rule is checked below, with its own message
        alpha = { type = "number", required = true, min_excl = 0, max = 1e6 },
        dropout = { type = "number", min = 0, max_excl = 1 },
        target_modules = { type = "array", min_len = 1, max_len = 1024, items = { type = "string" } },
      },
    },
    dtype = { type = "string", enum = limits.DTYPES },
    archs = { type = "array", min_len = 1, max_len = #limits.ARCHS, items = { type = "string", enum = limits.ARCHS } },
    tokens = positive_int(B.tokens),
  },
}

-- Linear layers of a Llama-family decoder layer (PyTorch names, in = K, out = M), in limits.TARGETS order.
local function model_linears(m)
  local hd = m.head_dim or (m.hidden_size // m.num_attention_heads)
  local q, kv = m.num_attention_heads * hd, m.num_key_value_heads * hd
  local bias = m.attention_bias or false
  -- src: the model keys the in/out features come from, so a bad size is reported on its own line
  local H, I = "hidden_size", "intermediate_size"
  local Q = m.head_dim and "head_dim" or "num_attention_heads"
  local KV = m.head_dim and "head_dim" or "num_key_value_heads"
  local shapes = {
    q_proj = { m.hidden_size, q, bias, { H, Q } },
    k_proj = { m.hidden_size, kv, bias, { H, KV } },
    v_proj = { m.hidden_size, kv, bias, { H, KV } },
    o_proj = { q, m.hidden_size, false, { Q, H } },
    gate_proj = { m.hidden_size, m.intermediate_size, false, { H, I } },
    up_proj = { m.hidden_size, m.intermediate_size, false, { H, I } },
    down_proj = { m.intermediate_size, m.hidden_size, false, { I, H } },
  }
  local out = {}
  for _, name in ipairs(limits.TARGETS) do
    local sh = assert(shapes[name], "generator/spec.lua: no decoder shape for target " .. name)
    out[#out + 1] = { name = name, in_features = sh[1], out_features = sh[2], bias = sh[3], src = sh[4] }
  end
  return out
end

local function check_semantics(s, errs)
  if s.model == nil and s.linears == nil then
    errs:add({}, "give either 'model' (decoder dimensions) or 'linears' (explicit shapes)")
  elseif s.model ~= nil and s.linears ~= nil then
    errs:add({ "linears" }, "give either 'model' or 'linears', not both")
  end
  local m = s.model
  if type(m) == "table" and math.type(m.hidden_size) == "integer" and math.type(m.num_attention_heads) == "integer"
      and m.num_attention_heads > 0 then
    if m.head_dim == nil and m.hidden_size % m.num_attention_heads ~= 0 then
      errs:add({ "model", "num_attention_heads" },
        ("hidden_size %d is not divisible by num_attention_heads %d (give head_dim)"):format(m.hidden_size,
          m.num_attention_heads))
    end
    if math.type(m.num_key_value_heads) == "integer" and m.num_key_value_heads > 0
        and m.num_attention_heads % m.num_key_value_heads ~= 0 then
      errs:add({ "model", "num_key_value_heads" },
        ("num_attention_heads %d is not a multiple of num_key_value_heads %d"):format(m.num_attention_heads,
          m.num_key_value_heads))
    end
  end
  local lora = s.lora
  if type(lora) == "table" and math.type(lora.rank) == "integer" and lora.rank > 0 then
    if not limits.rank_ok(lora.rank) then
      errs:add({ "lora", "rank" }, ("rank %d is not supported: the kernels need a multiple of %d up to %d")
        :format(lora.rank, limits.RANK_MULTIPLE, limits.RANK_MAX))
    end
  end
  if type(lora) == "table" and type(lora.target_modules) == "table" then
    local seen = {}
    for i, t in ipairs(lora.target_modules) do
      if type(t) == "string" then
        if seen[t] then errs:add({ "lora", "target_modules", i }, "'" .. sandbox.quote(t) .. "' is listed twice") end
        seen[t] = true
      end
    end
  end
  if type(s.archs) == "table" then
    local seen = {}
    for i, a in ipairs(s.archs) do
      if type(a) == "string" and seen[a] then errs:add({ "archs", i }, "'" .. sandbox.quote(a) .. "' is listed twice") end
      if type(a) == "string" then seen[a] = true end
    end
  end
end

local FEATURES = { "in_features", "out_features" }

-- Model-derived sizes: one error per offending model key and value, listing the projections that inherit it.
local function check_model_shapes(linears, errs)
  local bad, order = {}, {}
  for _, l in ipairs(linears) do
    for j, f in ipairs(FEATURES) do
      local v = l[f]
      if math.type(v) == "integer" and v > limits.FEATURES_MAX then
        local id = l.src[j] .. ">" .. v
        if not bad[id] then
          bad[id] = { key = l.src[j], value = v, uses = {}, big = true }
          order[#order + 1] = id
        end
        table.insert(bad[id].uses, l.name .. "." .. f)
      elseif math.type(v) == "integer" and v % limits.FEATURE_MULTIPLE ~= 0 then
        local id = l.src[j] .. "=" .. v
        if not bad[id] then
          bad[id] = { key = l.src[j], value = v, uses = {} }
          order[#order + 1] = id
        end
        table.insert(bad[id].uses, l.name .. "." .. f)
      end
    end
  end
  for _, id in ipairs(order) do
    local b = bad[id]
    if b.big then
      errs:add({ "model", b.key }, ("%s = %d is more than the %d features the kernels take")
        :format(table.concat(b.uses, ", "), b.value, limits.FEATURES_MAX))
    else
      errs:add({ "model", b.key }, ("%s = %d is not a multiple of %d, which the fused kernels need")
        :format(table.concat(b.uses, ", "), b.value, limits.FEATURE_MULTIPLE))
    end
  end
end

local function check_shapes(linears, from_model, s, errs)
  local names = {}
  for i, l in ipairs(linears) do
    if names[l.name] then errs:add({ "linears", i, "name" }, "duplicate linear name '" .. sandbox.quote(l.name) .. "'") end
    names[l.name] = true
    for _, f in ipairs(from_model and {} or FEATURES) do
      local v = l[f]
      if math.type(v) == "integer" and v % limits.FEATURE_MULTIPLE ~= 0 then
        errs:add({ "linears", i, f }, ("%s.%s = %d is not a multiple of %d, which the fused kernels need")
          :format(l.name, f, v, limits.FEATURE_MULTIPLE))
      end
    end
  end
  if from_model then check_model_shapes(linears, errs) end
  if type(s.lora) == "table" and type(s.lora.target_modules) == "table" then
    for i, t in ipairs(s.lora.target_modules) do
      if type(t) == "string" and not names[t] then
        local known = {}
        for _, l in ipairs(linears) do known[#known + 1] = l.name end
        errs:add({ "lora", "target_modules", i }, ("'%s' is not a linear layer of this spec (have: %s)")
          :format(sandbox.quote(t), sandbox.quote(table.concat(known, ", "))))
      end
    end
  end
end

-- The decoder a `model` table describes, every default filled in as transformers assumes it for the family.
function M.model_config(m)
  local family = m.family or "llama"
  local rs = m.rope_scaling
  return {
    family = family,
    hidden_size = m.hidden_size, intermediate_size = m.intermediate_size,
    num_attention_heads = m.num_attention_heads, num_key_value_heads = m.num_key_value_heads,
    head_dim = m.head_dim or (m.hidden_size // m.num_attention_heads),
    num_hidden_layers = m.num_hidden_layers, vocab_size = m.vocab_size or 32000,
    attention_bias = m.attention_bias or false,
    rope_theta = m.rope_theta or 10000.0,
    rms_norm_eps = m.rms_norm_eps or (family == "qwen2" and 1e-6 or 1e-5),
    tie_word_embeddings = m.tie_word_embeddings or false,
    rope_llama3 = rs ~= nil,
    rope_factor = rs and rs.factor or 0, rope_low_freq_factor = rs and rs.low_freq_factor or 0,
    rope_high_freq_factor = rs and rs.high_freq_factor or 0,
    rope_original_max_position = rs and rs.original_max_position_embeddings or 0,
  }
end

local function load(text, path)
  local s, err = sandbox.eval(text, path)
  if not s then return nil, err end
  local errs = sandbox.errors(path, text)
  sandbox.validate(s, schema, errs)
  check_semantics(s, errs)
  local linears
  if errs:count() == 0 then
    linears = s.model and model_linears(s.model) or s.linears
    check_shapes(linears, s.model ~= nil, s, errs)
  end
  if errs:count() > 0 then return nil, errs:report() end

  local is_target = {}
  for _, l in ipairs(linears) do is_target[l.name] = s.lora.target_modules == nil end
  for _, t in ipairs(s.lora.target_modules or {}) do is_target[t] = true end
  local out = {
    name = s.name, path = path, description = s.description,
    dtype = s.dtype or "bf16",
    archs = s.archs or limits.ARCHS,
    rank = s.lora.rank, alpha = s.lora.alpha, dropout = s.lora.dropout or 0,
    tokens = s.tokens or 8192,
    layers = s.model and s.model.num_hidden_layers or 1,
    model = s.model and M.model_config(s.model) or nil,
    linears = {},
  }
  for _, l in ipairs(linears) do
    if is_target[l.name] then
      out.linears[#out.linears + 1] = { name = l.name, in_features = l.in_features,
        out_features = l.out_features, bias = l.bias or false }
    end
  end
  return out
end

-- Loads and validates spec text. Returns the normalised spec, or nil and the full error report.
function M.load(text, path)
  local ok, s, err = pcall(sandbox.protect, path, load, text, path)
  if not ok then return nil, s end
  return s, err
end

return M
