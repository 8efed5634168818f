-- One concern: training steps past the C field (int64 read through a double before).
return {
  model = { path = "." },
  adapters = { { name = "a", dataset = "../sched/good.jsonl", global_batch = 1,
    steps = 2 ^ 62 } },
}
