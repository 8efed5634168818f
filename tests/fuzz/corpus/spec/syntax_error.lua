-- One concern: a missing comma.
return {
  name = "bad-syntax",
  lora = {
    rank = 8
    alpha = 16,
  },
}
