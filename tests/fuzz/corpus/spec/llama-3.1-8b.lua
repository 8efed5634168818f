-- Llama-3.1-8B (meta-llama/Llama-3.1-8B config.json), LoRA r=16 on every linear layer: the default spec.
return {
  name = "llama-3.1-8b",
  model = {
    hidden_size = 4096,
    intermediate_size = 14336,
    num_attention_heads = 32,
    num_key_value_heads = 8,
    head_dim = 128,
    num_hidden_layers = 32,
    vocab_size = 128256,
  },
  lora = {
    rank = 16,
    alpha = 32,
    dropout = 0.1,
    target_modules = { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" },
  },
  dtype = "bf16",
  archs = { "sm_80", "sm_89", "sm_90" },
  tokens = 8192,
}
