-- fuzz target "store": an instance record read back from the state dir (store.lua load: size cap,
-- JSON decoding, store.check, the separate definition file). The input up to its first NUL byte is
-- records/f.json; what follows is records/f.definition. load returns a record or nil and a reason,
-- never raises.
local store = require "riklet.store"
-- a fixed directory (tmpfs: rewriting a file on ext4 waits for the disk) that the seed records name
local dir = os.getenv("FUZZ_STORE_DIR") or "/dev/shm/riklet-fuzz-store"
local records = dir .. "/records"
assert(os.execute("mkdir -p '" .. records .. "'") == 0)
store.open(records)
local function write(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
end
return function(data)
  local nul = data:find("\0", 1, true)
  write(records .. "/f.json", nul and data:sub(1, nul - 1) or data)
  if nul then write(records .. "/f.definition", data:sub(nul + 1)) else os.remove(records .. "/f.definition") end
  local rec, err = store.load("f", { definition = true })
  if rec == nil then
    assert(type(err) == "string" and #err > 0, "refused without a reason")
  else
    assert(type(rec) == "table" and rec.id == "f", "a loaded record is not the instance's")
  end
end
