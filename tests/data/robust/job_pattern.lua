-- One concern: a job file whose name is computed by a backtracking gsub.
local name = string.rep("x", 3000)
name = name:gsub("x-x-x-x-y", "")
return { name = name, adapters = { { name = "a", dataset = "../sched/small.trace", global_batch = 1 } } }
