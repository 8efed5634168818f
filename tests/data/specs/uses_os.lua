-- One concern: reading the environment; os is not available to specs.
local rank = tonumber(os.getenv("RANK"))
return { name = "bad-os", lora = { rank = rank, alpha = 16 } }
