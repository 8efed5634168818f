-- One concern: loading a module; require is not available to specs.

local base = require("specs.tiny")
return base
