return {
  pipeline = { stages = 1 },
  batching = { capacity = 512, pad_multiple = 8 },
  adapters = {
    { name = "chat", dataset = "bad.jsonl", global_batch = 1 },
  },
}
