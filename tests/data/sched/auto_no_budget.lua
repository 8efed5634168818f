return {
  pipeline = { stages = 2 },
  batching = { capacity = "auto" },
  adapters = { { name = "a", dataset = "small.trace", global_batch = 1 } },
}
