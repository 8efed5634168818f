-- The README's first training job: LoRA on every projection of the tiny random Llama of specs/tiny.lua
-- (write it with `loragen init-model specs/tiny.lua out/models/tiny`), on the toy successor task of
-- tools/toy_dataset.py. It runs on the CPU backend in well under a minute and writes, under out/tiny-train/:
-- toy/adapter_model.safetensors and adapter_config.json (PEFT's format), toy/metrics.jsonl, toy/loss.svg and
-- the checkpoints. `loragen train --help` lists every field and its default.
return {
  name = "tiny-train",
  model = { path = "../../out/models/tiny" },
  batching = { capacity = 1024 },
  training = { backend = "auto", eval_every = 10, checkpoint_every = 20, output = "../../out/tiny-train" },
  adapters = {
    {
      name = "toy",
      dataset = "data/toy-train.jsonl",
      validation = "data/toy-val.jsonl",
      global_batch = 8,
      rank = 8,
      alpha = 16,
      lr = 3e-3,
      epochs = 1,
      seed = 1,
    },
  },
}
