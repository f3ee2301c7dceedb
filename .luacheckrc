-- luacheck configuration (Debian package lua-check): run `luacheck lua policies tests/lua`.
std = "luajit"
max_line_length = 180
unused_args = false
ignore = { "212/_.*", "213/_.*" }
files["tests/lua"] = { std = "+busted" }
files["policies"] = { std = "min" }
files["examples/policies"] = { std = "min", read_globals = { "base" } }
