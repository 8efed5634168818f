-- One concern: the same through a string method, which reaches the string metatable's library.
local subject = ("a"):rep(40)
local m = subject:match(string.rep("a?", 40) .. string.rep("a", 40) .. "b")
return { name = "x", lora = { rank = 8, alpha = 16 }, linears = { { name = "a", in_features = 64, out_features = 64 } } }
