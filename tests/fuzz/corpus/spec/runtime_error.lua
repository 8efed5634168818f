-- One concern: the spec fails while it runs (arithmetic on nil).
local dims = { hidden = 128 }
local inter = dims.intermediate * 2
return {
  name = "bad-runtime",
  model = {
    hidden_size = dims.hidden, intermediate_size = inter, num_attention_heads = 4,
    num_key_value_heads = 2, num_hidden_layers = 2,
  },
  lora = { rank = 8, alpha = 16 },
}
