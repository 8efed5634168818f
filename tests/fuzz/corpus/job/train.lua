return {
  name = "fz",
  model = { path = "model", hidden = 1024, ffn = 4096, layers = 8, heads = 8, kv_heads = 2 },
  batching = { capacity = 512, pad_multiple = 8, seed = 3, oversize = "truncate" },
  training = { backend = "cpu", checkpoint_every = 2, eval_every = 5, log_every = 1, output = "out" },
  adapters = {
    { name = "a", dataset = "train.jsonl", validation = "train.jsonl", global_batch = 2, rank = 8, alpha = 16,
      lr = 1e-3, steps = 4, schedule = "linear", warmup = 0.1, betas = { 0.9, 0.95 }, eps = 1e-6,
      weight_decay = 0.01, grad_clip = 1.0, seed = 7, targets = { "q", "v_proj", "down" } },
  },
}
