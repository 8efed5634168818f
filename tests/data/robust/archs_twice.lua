-- One concern: an arch listed twice.
return {
  name = "x",
  lora = { rank = 8, alpha = 16 },
  linears = { { name = "a", in_features = 64, out_features = 64 } },
  archs = { "sm_80", "sm_80" },
}
