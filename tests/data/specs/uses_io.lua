-- One concern: reading a file; io is not available to specs.
local text = io.open("/etc/passwd"):read("a")
return { name = text }
