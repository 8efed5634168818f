-- One concern: intermediate_size 300 is not a multiple of 64 (gate, up and down inherit it).
return {
  name = "bad-model-dims",
  model = {
    hidden_size = 128,
    intermediate_size = 300,
    num_attention_heads = 4,
    num_key_value_heads = 2,
    num_hidden_layers = 2,
  },
  lora = { rank = 8, alpha = 16 },
}
