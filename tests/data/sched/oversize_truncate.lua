return {
  pipeline = { stages = 2 },
  batching = { capacity = 4096, oversize = "truncate" },
  adapters = {
    { name = "long", dataset = "long.trace", global_batch = 1 },
  },
}
