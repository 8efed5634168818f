-- One concern: the spec returns a string, not a table.
local name = "bad-not-a-table"

return name
