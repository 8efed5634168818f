-- job.lua: the schema of scheduler job files (specs/jobs/*.lua), and their loader.
--
-- A job file is data: it returns one table naming the adapters that share a base model (each with its
-- dataset, global batch and LoRA settings), the pipeline shape, the capacity policy and, optionally, the model
-- dimensions or measured layer times the cost model is built from. A training job (`loragen train`) also
-- names the model directory (model.path), a `training` table, and training fields per adapter; their
-- defaults are TRAIN_DEFAULTS below, the one place they live (`loragen train --help` prints them). load() validates it with the sandbox
-- schema (every error at once, as "file:line: error: field: message") and returns a normalised copy with every
-- default filled in, plus the source line of each adapter so that later errors (a missing dataset, a global
-- batch larger than its dataset) can point back at the file.
local sandbox = require "generator.sandbox"
-- Target names (PEFT's, plus the short aliases job files used first) and the job rank bound.
local limits = require "generator.limits"

local M = {}
local B, F = limits.BOUNDS, limits.FEATURES_MAX

-- The training fields with their defaults, in the order `loragen train --help` lists them. `where` is
-- "training" (job-wide) or "adapter" (per adapter); nil defaults are optional fields with no value.
M.TRAIN_DEFAULTS = {
  { where = "training", key = "backend", default = "auto", help = "auto, cpu or cuda" },
  { where = "training", key = "deterministic", default = true, help = "bitwise-reproducible GPU runs (attention's backward without atomics); false is faster" },
  { where = "training", key = "output", default = nil, help = "output directory (default out/<job name>)" },
  { where = "training", key = "checkpoint_every", default = 0, help = "optimizer steps between checkpoints (0: at the end only)" },
  { where = "training", key = "checkpoint_layers", default = 0, help = "activation checkpointing every N layers (0: off)" },
  { where = "training", key = "eval_every", default = 0, help = "steps between validation losses (0: at the end only)" },
  { where = "training", key = "log_every", default = 10, help = "steps between progress lines when not on a terminal" },
  { where = "training", key = "memory_gb", default = nil, help = "device memory the run may use per GPU, GiB (default: what is free); sizes capacity = \"auto\"" },
  { where = "adapter", key = "rank", default = 16, help = "LoRA rank r" },
  { where = "adapter", key = "alpha", default = 32, help = "LoRA alpha (scale alpha/r; default 2r)" },
  { where = "adapter", key = "dropout", default = 0.05, help = "LoRA dropout probability" },
  { where = "adapter", key = "targets", default = "all seven", help = "q_proj k_proj v_proj o_proj gate_proj up_proj down_proj" },
  { where = "adapter", key = "lr", default = 2e-4, help = "peak learning rate" },
  { where = "adapter", key = "schedule", default = "cosine", help = "constant, cosine or linear decay" },
  { where = "adapter", key = "warmup", default = 0.03, help = "linear warm-up: a fraction of the steps (< 1) or a step count" },
  { where = "adapter", key = "betas", default = "{0.9, 0.999}", help = "AdamW betas" },
  { where = "adapter", key = "eps", default = 1e-8, help = "AdamW epsilon" },
  { where = "adapter", key = "weight_decay", default = 0.0, help = "decoupled weight decay" },
  { where = "adapter", key = "grad_clip", default = 1.0, help = "global gradient-norm clip (0: off)" },
  { where = "adapter", key = "epochs", default = 1, help = "passes over the dataset (when steps is not given)" },
  { where = "adapter", key = "steps", default = nil, help = "optimizer steps (overrides epochs)" },
  { where = "adapter", key = "seed", default = 0, help = "LoRA init, dropout and data-order seed" },
  { where = "adapter", key = "validation", default = nil, help = "JSONL validation dataset" },
  { where = "adapter", key = "output", default = nil, help = "output directory (default <training.output>/<name>)" },
  { where = "adapter", key = "init_adapter", default = nil, help = "a PEFT adapter directory to continue from" },
}

local function train_default(key)
  for _, d in ipairs(M.TRAIN_DEFAULTS) do
    if d.key == key and type(d.default) ~= "string" then return d.default end
  end
  return nil
end

-- The defaults as text: one "  where.key = value   help" line each.
function M.defaults_text()
  local lines = { "  model.path (required for training)   the Hugging Face model directory",
    ("  %-28s = %-14s %s"):format("batching.capacity", "4096",
      'tokens per microbatch; "auto": the most the device\'s free memory holds') }
  for _, d in ipairs(M.TRAIN_DEFAULTS) do
    local v = d.default == nil and "(none)" or type(d.default) == "string" and d.default or tostring(d.default)
    local k = (d.where == "training" and "training." or "adapters[i].") .. d.key
    lines[#lines + 1] = ("  %-28s = %-14s %s"):format(k, v, d.help)
  end
  return table.concat(lines, "\n") .. "\n"
end

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
        type = "table",
        fields = {
          stages = { type = "integer", required = true, min = 1, max = 64 },
          data_parallel = { type = "integer", min = 1, max = 4096 },
          p2p_us = { type = "number", min = 0, max = 1e9 },
          optimizer_us = { type = "number", min = 0, max = 1e9 },
        },
      },
      batching = {
        type = "table",
        fields = {
          capacity = capacity_node(batching.capacity),
          memory_budget_gb = { type = "number", min_excl = 0, max = 1e6 },
          pad_multiple = { type = "integer", min = 1, max = 4096 },
          oversize = { type = "string", enum = { "error", "truncate", "skip" } },
          seed = { type = "integer", min = 0, max = B.seed },
          target = { type = "integer", min = 1, max = B.tokens },
        },
      },
      model = {
        type = "table",
        fields = {
          path = { type = "string" },
          hidden = { type = "integer", min = 1, max = F },
          ffn = { type = "integer", min = 1, max = F },
          layers = { type = "integer", min = 1, max = B.layers },
          heads = { type = "integer", min = 1, max = B.heads },
          kv_heads = { type = "integer", min = 1, max = B.heads },
          tflops = { type = "number", min_excl = 0, max = 1e6 },
          attention_tflops = { type = "number", min_excl = 0, max = 1e6 },
          layer_us = { type = "number", min = 0, max = 1e9 },
        },
      },
      cost = {
        type = "table",
        fields = {
          layer_us = { type = "number", min = 0, max = 1e9 },
          token_us = { type = "number", min = 0, max = 1e6 },
          token_rank_us = { type = "number", min = 0, max = 1e6 },
          attention_us = { type = "number", min = 0, max = 1e6 },
          backward_linear = { type = "number", min_excl = 0, max = 1e3 },
          backward_attention = { type = "number", min_excl = 0, max = 1e3 },
          act_bytes_per_token = { type = "number", min_excl = 0, max = 1e12 },
          calibration = {
            type = "array", min_len = 4, max_len = 4096,
            items = {
              type = "table",
              fields = {
                tokens = { type = "number", required = true, min = 0, max = 1e12 },
                sum_len2 = { type = "number", required = true, min = 0, max = 1e24 },
                rank_tokens = { type = "number", min = 0, max = 1e15 },
                us = { type = "number", required = true, min_excl = 0, max = 1e12 },
              },
            },
          },
        },
      },
      training = {
        type = "table",
        fields = {
          backend = { type = "string", enum = { "auto", "cpu", "cuda" } },
          deterministic = { type = "boolean" },
          output = { type = "string" },
          checkpoint_every = { type = "integer", min = 0, max = B.steps },
          checkpoint_layers = { type = "integer", min = 0, max = B.layers },
          eval_every = { type = "integer", min = 0, max = B.steps },
          log_every = { type = "integer", min = 1, max = B.steps },
          memory_gb = { type = "number", min_excl = 0, max = 1e6 },
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
            global_batch = { type = "integer", required = true, min = 1, max = B.batch },
            rank = { type = "integer", min = 1, max = limits.JOB_RANK_MAX },
            alpha = { type = "number", min_excl = 0, max = 1e6 },
            dropout = { type = "number", min = 0, max_excl = 1 },
            lr = { type = "number", min_excl = 0, max = 1e3 },
            targets = { type = "array", min_len = 1, max_len = #limits.target_names(),
                        items = { type = "string", enum = limits.target_names() } },
            drop_last = { type = "boolean" },
            validation = { type = "string" },
            output = { type = "string" },
            init_adapter = { type = "string" },
            schedule = { type = "string", enum = { "constant", "cosine", "linear" } },
            warmup = { type = "number", min = 0, max = B.steps },
            betas = { type = "array", min_len = 2, max_len = 2, items = { type = "number", min = 0, max_excl = 1 } },
            eps = { type = "number", min_excl = 0, max = 1 },
            weight_decay = { type = "number", min = 0, max = 1e3 },
            grad_clip = { type = "number", min = 0, max = 1e12 },
            epochs = { type = "integer", min = 1, max = 1000000 },
            steps = { type = "integer", min = 1, max = B.steps },
            seed = { type = "integer", min = 0, max = B.seed },
          },
        },
      },
    },
  }
end

-- Rules that span fields: checked after the schema, so each message can name both.
local function cross_checks(job, errs, opts)
  local b = job.batching
  if type(b) == "table" then
    -- a trainer (opts.device) sizes an "auto" capacity from the device's memory; the planner needs a budget
    if b.capacity == "auto" and b.memory_budget_gb == nil and not opts.device then
      errs:add({ "batching", "capacity" }, 'capacity = "auto" needs batching.memory_budget_gb to be planned '
        .. '(loragen train sizes it from the GPU\'s free memory instead; loragen plan --capacity N plans one size)')
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
          errs:add({ "adapters", i, "name" }, ("'%s' is already the name of adapters[%d]")
            :format(sandbox.quote(a.name), seen[a.name]))
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

-- The largest capacity the schema takes, a multiple of pad.
local function capacity_max(pad)
  return (1 << 24) // pad * pad
end

local function normalise(job, loc, opts)
  local b, p, t = job.batching or { capacity = 4096 }, job.pipeline or { stages = 1 }, job.training or {}
  local pad = b.pad_multiple or 16
  -- capacity = "auto" without a budget, read by a trainer: the trainer measures the device and loads the job
  -- again with opts.capacity; until then the job is planned at the schema's largest capacity
  local from_device = b.capacity == "auto" and b.memory_budget_gb == nil
  local capacity = b.capacity
  if opts.capacity then
    capacity = opts.capacity
  elseif from_device then
    capacity = capacity_max(pad)
  end
  local out = {
    name = job.name or "job",
    stages = p.stages,
    data_parallel = p.data_parallel or 1,
    p2p_us = p.p2p_us or 0,
    optimizer_us = p.optimizer_us or 0,
    capacity = capacity,
    capacity_from_device = from_device,
    memory_budget_gb = (opts.capacity or from_device) and 0 or b.memory_budget_gb or 0,
    pad_multiple = pad,
    oversize = b.oversize or "error",
    seed = b.seed or 0,
    target = b.target or 0,
    model = job.model,
    cost = job.cost,
    training = {
      backend = t.backend or "auto",
      deterministic = t.deterministic ~= false,
      output = t.output,
      checkpoint_every = t.checkpoint_every or train_default("checkpoint_every"),
      checkpoint_layers = t.checkpoint_layers or train_default("checkpoint_layers"),
      eval_every = t.eval_every or train_default("eval_every"),
      log_every = t.log_every or train_default("log_every"),
      memory_gb = t.memory_gb or 0,
    },
    adapters = {},
  }
  for i, a in ipairs(job.adapters) do
    local ext = a.dataset:match("%.([%w]+)$")
    out.adapters[i] = {
      name = a.name,
      dataset = a.dataset,
      format = a.format or ((ext == "jsonl" or ext == "json") and "jsonl" or "trace"),
      global_batch = a.global_batch,
      rank = a.rank or train_default("rank"),
      alpha = a.alpha or 2 * (a.rank or train_default("rank")),
      dropout = a.dropout or train_default("dropout"),
      lr = a.lr or train_default("lr"),
      targets = peft_targets(a.targets),
      drop_last = a.drop_last or false,
      validation = a.validation,
      output = a.output,
      init_adapter = a.init_adapter,
      schedule = a.schedule or "cosine",
      warmup = a.warmup or train_default("warmup"),
      beta1 = a.betas and a.betas[1] or 0.9,
      beta2 = a.betas and a.betas[2] or 0.999,
      eps = a.eps or train_default("eps"),
      weight_decay = a.weight_decay or train_default("weight_decay"),
      grad_clip = a.grad_clip or train_default("grad_clip"),
      epochs = a.epochs or train_default("epochs"),
      steps = a.steps or 0,
      seed = a.seed or train_default("seed"),
      line = loc:line_of({ "adapters", i }),
      dataset_line = loc:line_of({ "adapters", i, "dataset" }),
      batch_line = loc:line_of({ "adapters", i, "global_batch" }),
    }
  end
  return out
end

local function load(text, path, opts)
  local job, err = sandbox.eval(text, path)
  if not job then error(err, 0) end
  local errs = sandbox.errors(path, text)
  sandbox.validate(job, schema_for(job), errs)
  cross_checks(job, errs, opts)
  if errs:count() > 0 then error(errs:report(), 0) end
  return normalise(job, sandbox.locator(text), opts)
end

-- Evaluates and validates a job file. Returns the normalised table; raises "file:line: error: ..." lines.
-- opts (optional): device = true when a trainer reads it (capacity = "auto" may then come without a memory
-- budget: the trainer sizes it from the device; capacity_from_device says so); capacity = N plans the job at a
-- fixed capacity of N tokens whatever its capacity policy (the trainer's second load, once it has measured).
function M.load(text, path, opts)
  opts = type(opts) == "table" and opts or {}
  return sandbox.protect(path, load, text, path, opts)
end

return M
