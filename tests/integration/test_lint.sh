#!/usr/bin/env bash
# test_lint.sh — the style gates: luacheck over every Lua file (.luacheckrc) and clang-format
# (.clang-format) over core/ and bindings/. Reformat with: clang-format -i core/*.[ch] bindings/*.[ch]
source "$(dirname "$0")/../lib/common.sh"
src=${RIKLET_SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$src" || bail_out "cannot enter $src"
need_cmd luacheck clang-format

out=$(luacheck --no-color lua policies examples/policies tests/lua tests/integration/*.lua tests/bench/*.lua 2>&1)
rc=$?
[[ $rc == 0 ]] || diag "$out"
is "$rc" 0 "luacheck: no warnings in lua/, policies/, examples/policies/ and the Lua tests"

# No constant power (`2 ^ 53`, `1024 ^ 3`) in riklet's own Lua: LuaJIT folds it while parsing, with
# libm's pow(), and the pages that maps (pow's code and tables, ~130 KiB) stay resident for the
# agent's life (issue 12, idle memory); write 0x1p53 or 1073741824. Comments are left out.
pows=$(grep -n -E '[0-9][[:space:]]*\^[[:space:]]*[0-9]' lua/riklet/*.lua lua/riklet/*/*.lua | sed -E 's/--.*//' |
	grep -E '[0-9][[:space:]]*\^[[:space:]]*[0-9]')
[[ -z $pows ]] || diag "$pows"
is "$pows" "" "no constant power in lua/riklet (folded with libm's pow at parse time)"

bad=()
for f in core/*.[ch] bindings/*.[ch] tests/c/*.[ch] shim/*.c; do
	clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
((${#bad[@]} == 0)) || diag "not formatted: ${bad[*]} (run clang-format -i on them)"
is "${#bad[@]}" 0 "clang-format: every C file is formatted"
done_testing
