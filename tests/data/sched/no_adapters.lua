return {
  pipeline = { stages = 4 },
  batching = { capacity = 4096 },
  adapters = {},
}
