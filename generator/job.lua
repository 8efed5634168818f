-- job.lua: the schema of scheduler job files (specs/jobs/*.lua), and their loader.
--
-- A job file is data: it returns one table naming the adapters that share a base model (each with its
-- dataset, global batch and LoRA settings), the pipeline shape, the capacity policy and, optionally, the model
-- dimensions or measured layer times the cost model is built from. load() validates it with the sandbox
-- schema (every error at once, as "file:line: error: field: message") and returns a normalised copy with every
-- default filled in, plus the source line of each adapter so that later errors (a missing dataset, a global
-- batch larger than its dataset) can point back at the file.
local sandbox = require "generator.sandbox"
-- Target names (PEFT's, plus the short aliases job files used first) and the job rank bound.
local limits = require "generator.limits"

local M = {}

local function capacity_node(v)
  if type(v) == "string" then
    return { type = "string", required = true, enum = { "auto" } }
  end
  return { type = "integer", required = true, min = 1, max = 1 << 24 }
end

local function schema_for(job)
  local batching = type(job.batching) == "table" and job.batching or {}
  return {
    type = "table",
    fields = {
      name = { type = "string" },
      pipeline = {
        type = "table", required = true,
        fields = {
          stages = { type = "integer", required = true, min = 1, max = 64 },
          data_parallel = { type = "integer", min = 1, max = 4096 },
          p2p_us = { type = "number", min = 0 },
          optimizer_us = { type = "number", min = 0 },
        },
      },
      batching = {
        type = "table", required = true,
        fields = {
          capacity = capacity_node(batching.capacity),
          memory_budget_gb = { type = "number", min_excl = 0 },
          pad_multiple = { type = "integer", min = 1, max = 4096 },
          oversize = { type = "string", enum = { "error", "truncate", "skip" } },
          seed = { type = "integer", min = 0 },
          target = { type = "integer", min = 1 },
        },
      },
      model = {
        type = "table",
        fields = {
          hidden = { type = "integer", min = 1 },
          ffn = { type = "integer", min = 1 },
          layers = { type = "integer", min = 1 },
          heads = { type = "integer", min = 1 },
          kv_heads = { type = "integer", min = 1 },
          tflops = { type = "number", min_excl = 0 },
          attention_tflops = { type = "number", min_excl = 0 },
          layer_us = { type = "number", min = 0 },
        },
      },
      cost = {
        type = "table",
        fields = {
          layer_us = { type = "number", min = 0 },
          token_us = { type = "number", min = 0 },
          token_rank_us = { type = "number", min = 0 },
          attention_us = { type = "number", min = 0 },
          backward_linear = { type = "number", min_excl = 0 },
          backward_attention = { type = "number", min_excl = 0 },
          act_bytes_per_token = { type = "number", min_excl = 0 },
          calibration = {
            type = "array", min_len = 4,
            items = {
              type = "table",
              fields = {
                tokens = { type = "number", required = true, min = 0 },
                sum_len2 = { type = "number", required = true, min = 0 },
                rank_tokens = { type = "number", min = 0 },
                us = { type = "number", required = true, min_excl = 0 },
              },
            },
          },
        },
      },
      adapters = {
        type = "array", required = true,
        items = {
          type = "table",
          fields = {
            name = { type = "string", required = true },
            dataset = { type = "string", required = true },
            format = { type = "string", enum = { "jsonl", "trace" } },
            global_batch = { type = "integer", required = true, min = 1 },
            rank = { type = "integer", min = 1, max = limits.JOB_RANK_MAX },
            alpha = { type = "number", min_excl = 0 },
            dropout = { type = "number", min = 0, max_excl = 1 },
            lr = { type = "number", min_excl = 0 },
            targets = { type = "array", min_len = 1, items = { type = "string", enum = limits.target_names() } },
            drop_last = { type = "boolean" },
          },
        },
      },
    },
  }
end

-- Rules that span fields: checked after the schema, so each message can name both.
local function cross_checks(job, errs)
  local b = job.batching
  if type(b) == "table" then
    if b.capacity == "auto" and b.memory_budget_gb == nil then
      errs:add({ "batching", "capacity" }, 'capacity = "auto" needs batching.memory_budget_gb')
    end
    local pad = b.pad_multiple or 16
    if math.type(b.capacity) == "integer" and math.type(pad) == "integer" and pad > 0 and b.capacity % pad ~= 0 then
      errs:add({ "batching", "capacity" },
        ("%d is not a multiple of pad_multiple (%d)"):format(b.capacity, pad))
    end
  end
  if type(job.adapters) == "table" then
    if #job.adapters == 0 and next(job.adapters) == nil then
      errs:add({ "adapters" }, "no adapters: list at least one")
    end
    local seen = {}
    for i, a in ipairs(job.adapters) do
      if type(a) == "table" and type(a.name) == "string" then
        if a.name == "" then errs:add({ "adapters", i, "name" }, "must not be empty") end
        if seen[a.name] then
          errs:add({ "adapters", i, "name" }, ("'%s' is already the name of adapters[%d]"):format(a.name, seen[a.name]))
        end
        seen[a.name] = seen[a.name] or i
      end
      if type(a) == "table" and type(a.targets) == "table" then
        local named = {}
        for j, t in ipairs(a.targets) do
          local peft = type(t) == "string" and limits.target(t)
          if peft and named[peft] then
            errs:add({ "adapters", i, "targets", j }, ("'%s' names %s, already listed as '%s'")
              :format(t, peft, named[peft]))
          end
          if peft then named[peft] = named[peft] or t end
        end
      end
    end
  end
  local m = job.model
  if type(m) == "table" and math.type(m.hidden) == "integer" and math.type(m.heads) == "integer" and m.heads > 0 then
    if m.hidden % m.heads ~= 0 then errs:add({ "model", "heads" }, "must divide model.hidden") end
    local kv = m.kv_heads or m.heads
    if math.type(kv) == "integer" and kv > 0 and m.heads % kv ~= 0 then
      errs:add({ "model", "kv_heads" }, "must divide model.heads")
    end
  end
  local layers = type(m) == "table" and m.layers or 32
  if type(job.pipeline) == "table" and math.type(job.pipeline.stages) == "integer" and math.type(layers) == "integer"
      and job.pipeline.stages > layers then
    errs:add({ "pipeline", "stages" }, ("%d stages but the model has %d layers"):format(job.pipeline.stages, layers))
  end
end

-- An adapter's targets as PEFT names, in the order given; every target when the file names none.
local function peft_targets(list)
  local out = {}
  for i, t in ipairs(list or limits.TARGETS) do out[i] = limits.target(t) end
  return out
end

local function normalise(job, loc)
  local b, p = job.batching, job.pipeline
  local out = {
    name = job.name or "job",
    stages = p.stages,
    data_parallel = p.data_parallel or 1,
    p2p_us = p.p2p_us or 0,
    optimizer_us = p.optimizer_us or 0,
    capacity = b.capacity,
    memory_budget_gb = b.memory_budget_gb or 0,
    pad_multiple = b.pad_multiple or 16,
    oversize = b.oversize or "error",
    seed = b.seed or 0,
    target = b.target or 0,
    model = job.model,
    cost = job.cost,
    adapters = {},
  }
  for i, a in ipairs(job.adapters) do
    local ext = a.dataset:match("%.([%w]+)$")
    out.adapters[i] = {
      name = a.name,
      dataset = a.dataset,
      format = a.format or ((ext == "jsonl" or ext == "json") and "jsonl" or "trace"),
      global_batch = a.global_batch,
      rank = a.rank or 16,
      alpha = a.alpha or 2 * (a.rank or 16),
      dropout = a.dropout or 0,
      lr = a.lr or 1e-4,
      targets = peft_targets(a.targets),
      drop_last = a.drop_last or false,
      line = loc:line_of({ "adapters", i }),
      dataset_line = loc:line_of({ "adapters", i, "dataset" }),
      batch_line = loc:line_of({ "adapters", i, "global_batch" }),
    }
  end
  return out
end

-- Evaluates and validates a job file. Returns the normalised table; raises "file:line: error: ..." lines.
function M.load(text, path)
  local job, err = sandbox.eval(text, path)
  if not job then error(err, 0) end
  local errs = sandbox.errors(path, text)
  sandbox.validate(job, schema_for(job), errs)
  cross_checks(job, errs)
  if errs:count() > 0 then error(errs:report(), 0) end
  return normalise(job, sandbox.locator(text))
end

return M
