-- Strings and numbers from the network. Protobuf: a NUL inside a string field keeps the whole
-- string (protobuf-c hands out C strings; "advgood\0zzz" used to arrive as "advgood"); numbers
-- going out are range-checked before any cast (NaN/inf/out of range refused). JSON: invalid
-- UTF-8 refused on decode, never written raw on encode; json.quote for reasons.
local T = require "riklet.testlib"
local pb = require "riklet.pb"
local json = require "riklet.json"

-- protobuf wire bytes by hand: field n, length-delimited
local function ld(n, s) return string.char(n * 8 + 2, #s) .. s end
local function varint_field(n, v) return string.char(n * 8, v) end

local m = assert(pb.decode("worker.InstanceScheduling", ld(1, "advgood\0zzz") .. ld(2, "{}\0{\"x\":1}") .. varint_field(3, 1)))
T.is(m.instance_id, "advgood\0zzz", "a NUL in instance_id keeps the whole id (11 bytes)")
T.is(#m.instance_id, 11, "... its length is 11")
T.is(m.definition, "{}\0{\"x\":1}", "a NUL in definition keeps the whole definition")
T.is(m.action, "DESTROY", "the action next to them is decoded")

m = assert(pb.decode("worker.InstanceScheduling", ld(1, "plain") .. ld(2, "")))
T.is(m.instance_id, "plain", "a string without NUL is unchanged")
T.is(m.definition, "", "an empty string stays empty")

-- the same field twice: protobuf takes the last one, with its own length
m = assert(pb.decode("worker.InstanceScheduling", ld(1, "first\0one") .. ld(1, "b\0")))
T.is(m.instance_id, "b\0", "a repeated occurrence: the last one, whole")
m = assert(pb.decode("worker.InstanceScheduling", ld(1, "x\0y") .. ld(1, "clean")))
T.is(m.instance_id, "clean", "a NUL-holding occurrence replaced by a clean one is not resurrected")

-- a nested message's string (WorkerStatus.instance.instance_id)
local inner = ld(3, "i\0d") .. ld(2, "m\0\0")
m = assert(pb.decode("common.WorkerStatus", ld(1, inner) .. ld(3, "host\0name")))
T.is(m.instance and m.instance.instance_id, "i\0d", "nested message string keeps its NUL")
T.is(m.instance and m.instance.metrics, "m\0\0", "trailing NULs kept")
T.is(m.identifier, "host\0name", "outer string keeps its NUL")

-- unknown fields of the peer stay unknown (not taken for a kept string)
m = assert(pb.decode("worker.InstanceScheduling", ld(9, "junk\0") .. ld(1, "ok")))
T.is(m.instance_id, "ok", "an unknown length-delimited field does not leak into a string field")

-- a big string with NULs
local big = ("a\0"):rep(100000)
local function ld_big(n, s)
  local len, bytes = #s, {}
  repeat
    local b = len % 128
    len = math.floor(len / 128)
    bytes[#bytes + 1] = string.char(len > 0 and b + 128 or b)
  until len == 0
  return string.char(n * 8 + 2) .. table.concat(bytes) .. s
end
m = assert(pb.decode("worker.InstanceScheduling", ld_big(2, big)))
T.is(#m.definition, #big, "a 200 kB definition with 100,000 NULs keeps its length")

-- encoding: NUL refused in a string field, numbers range-checked before the cast
local ok, err = pcall(pb.encode, "common.InstanceMetric", { instance_id = "a\0b" })
T.ok(not ok and tostring(err):find("NUL"), "encoding a NUL in a string field is refused: " .. tostring(err))
for _, v in ipairs({ 2 ^ 31, -2 ^ 31 - 1, 1e300, -1e300, 0 / 0, 1 / 0, -1 / 0, 0.5 }) do
  ok, err = pcall(pb.encode, "common.InstanceMetric", { instance_id = "x", status = v })
  T.ok(not ok and tostring(err):find("not an integer"), ("enum %s refused before any cast: %s"):format(tostring(v), tostring(err)))
end
ok, err = pcall(pb.encode, "common.InstanceMetric", { instance_id = "x", status = "nan" })
T.ok(not ok, "an enum given as the string 'nan' is refused: " .. tostring(err))
T.ok(pcall(pb.encode, "common.InstanceMetric", { instance_id = "x", status = 2 }), "a valid enum number is accepted")
T.ok(pcall(pb.encode, "common.InstanceMetric", { instance_id = "x", status = -2 ^ 31 }), "-2^31 is an int32")

-- JSON and UTF-8
local bad_utf8 = { "\255", "\192\175", "\224\128\175", "\237\160\128", "\244\144\128\128", "\195", "a\226\130" }
for _, b in ipairs(bad_utf8) do
  local v, derr = json.decode('"' .. b .. '"')
  T.ok(v == nil and tostring(derr):find("not valid UTF%-8 at byte [12] "), ("decode refuses %s: %s"):format(json.quote(b), tostring(derr)))
  T.is(json.utf8(b), nil, "json.utf8 refuses " .. json.quote(b))
end
for _, g in ipairs({ "é", "\u{10FFFF}", "日本", "\240\159\152\128", "" }) do
  g = g:gsub("\\u{10FFFF}", "\244\143\191\191")
  T.is(json.utf8(g), true, "valid UTF-8 " .. json.quote(g))
  T.is(json.decode('"' .. g .. '"'), g, "decode keeps " .. json.quote(g))
end
local enc = assert(json.encode({ ["k\255"] = "v\254é", list = { "\192" } }))
T.ok(json.utf8(enc), "encode never writes invalid UTF-8 (U+FFFD per bad byte): " .. enc)
T.ok(json.decode(enc), "... and what it wrote decodes again")
T.ok(not json.encode({ "a\0b" }), "encode refuses a NUL")
T.is(json.quote("a\0b\n\"\255"), [["a\u0000b\n\"\xff"]], "quote shows NUL, newline, quote and a bad byte")
T.is(json.quote(("x"):rep(100), 10), '"xxxxxxxxxx"... (100 bytes)', "quote cuts long strings and says how long")
T.is(json.quote("\27[31m"), [["\u001b[31m"]], "quote escapes terminal control sequences")

-- a key twice in one object: parsers disagree on which one wins (a front-end could check one and
-- riklet use the other), so it is refused; so is a number a double cannot hold (it became inf,
-- then "port is a number" with the value lost)
local v, derr = json.decode('{"name":"c","image":"busybox","image":"evil"}')
T.ok(v == nil and tostring(derr):find('the key "image" appears twice', 1, true), "decode refuses a duplicate key: " .. tostring(derr))
v, derr = json.decode('{"a":{"b":1,"c":{"b":2}},"x":[{"b":1},{"b":2}]}')
T.ok(v and v.a.c.b == 2 and v.x[2].b == 2, "the same key in different objects is fine: " .. tostring(derr))
v, derr = json.decode('{"a":null,"a":1}')
T.ok(v == nil and tostring(derr):find('"a" appears twice', 1, true), "... also after a null: " .. tostring(derr))
for _, n in ipairs({ "1e400", "-1e400", "[1e309]" }) do
  v, derr = json.decode(n)
  T.ok(v == nil and tostring(derr):find("beyond the range of a double", 1, true), ("decode refuses %s: %s"):format(n, tostring(derr)))
end
v = json.decode("[1e308, -0, 5e-324, 1e-400]")
T.ok(v and v[1] == 1e308 and 1 / v[2] == -math.huge and v[3] > 0 and v[4] == 0, "1e308, -0 and tiny numbers decode as doubles")

T.done()
