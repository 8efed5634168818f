-- One concern: an adapter name that is not UTF-8 (the plan's JSON writer said "out of memory").
return {
  adapters = {
    { name = "r\xe9sum\xe9",
      dataset = "../sched/small.trace", global_batch = 1 },
  },
}
