-- One concern: cost-model dimensions whose product overflowed an int.
return {
  model = { hidden = 2 ^ 31, ffn = 4096,
    heads = 2 ^ 20 },
  adapters = { { name = "a", dataset = "../sched/small.trace", global_batch = 1 } },
}
