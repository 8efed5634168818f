-- A dataset line with input_ids twice: the scheduler's reader kept the last; it is refused like the trainer's.
return { adapters = {
  { name = "dup", dataset = "tokens_dup_key.jsonl",
    global_batch = 1 } } }
