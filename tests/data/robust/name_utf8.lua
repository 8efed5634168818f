-- One concern: a name that is not UTF-8 (JSON writers refuse it).
return {
  name = "x",
  lora = { rank = 8, alpha = 16 },
  linears = { { name = "caf\xe9", in_features = 64, out_features = 64 } },
}
