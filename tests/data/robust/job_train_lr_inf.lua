-- One concern: an infinite learning rate in a training job.
return {
  model = { path = "." },
  adapters = { { name = "a", dataset = "../sched/good.jsonl", global_batch = 1,
    lr = math.huge } },
}
