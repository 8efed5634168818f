-- One concern: an integer field given a number beyond every integer (was a float-to-int cast).
return {
  name = "x",
  tokens = 1e300,
  lora = { rank = 8, alpha = 16 },
  linears = { { name = "a", in_features = 64, out_features = 64 } },
}
