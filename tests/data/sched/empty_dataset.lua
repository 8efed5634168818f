return {
  pipeline = { stages = 1 },
  batching = { capacity = 4096 },
  adapters = {
    { name = "a",
      dataset = "empty.trace", global_batch = 1 },
  },
}
