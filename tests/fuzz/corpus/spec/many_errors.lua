-- Several errors at once: every one must be reported.
return {
  name = "bad-many",
  model = {
    hidden_size = 128, intermediate_size = 320, num_attention_heads = 4,
    num_key_value_heads = 2, num_hidden_layers = 2,
  },
  lora = {
    rank = 12,
    alpha = 0,
    dropout = 1.5,
  },
  dtype = "fp8",
  archs = { "sm_80", "sm_75" },
  colour = "blue",
}
