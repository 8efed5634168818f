-- An adapter whose alpha JSON cannot hold (1/0 is inf): `loragen plan --json` must fail naming the field and
-- write no plan, whether the job schema or the plan writer refuses it (test_sched_output).
return {
  pipeline = { stages = 2 },
  batching = { capacity = 4096 },
  adapters = {
    { name = "inf", dataset = "small.trace", global_batch = 2, alpha = 1/0 },
  },
}
