-- One concern: an endless loop; the sandbox's instruction budget must stop it.
local n = 0
while true do
  n = n + 1
end
return { name = "bad-loop" }
