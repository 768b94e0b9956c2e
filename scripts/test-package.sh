#!/usr/bin/env bash
# npm run test:package — proof that the published package needs no compiler.
#
# Packs the main package (optionalDependencies added as `napi pre-publish` adds them at
# release) and this machine's platform package, checks the main one with publint, installs
# both into a fresh project with PATH holding only node and npm (no cargo, rustc, cc,
# node-gyp, python) and the registry unreachable, then runs a real round trip through the
# installed copy — a child process on its own channel, a message, a passed descriptor —
# from CommonJS and from ESM, and type-checks a TypeScript consumer against the shipped
# .d.ts. Set SOCKETPAIR_SKIP_BUILD=1 to pack the binary already built (CI builds first).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

if [ -z "${SOCKETPAIR_SKIP_BUILD:-}" ]; then npm run --silent build; fi

BINARY=$(ls socketpair.*.node 2>/dev/null | head -n1 || true)
[ -n "$BINARY" ] || { echo "no socketpair.*.node here: run npm run build" >&2; exit 1; }
PLATFORM=${BINARY#socketpair.}
PLATFORM=${PLATFORM%.node}
VERSION=$(node -p "require('./package.json').version")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/socketpair-package-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
step() { echo "--- $*"; }

step "platform package socketpair-$PLATFORM"
cp -r "npm/$PLATFORM" "$WORK/platform"
cp "$BINARY" "$WORK/platform/"
(cd "$WORK/platform" && npm pack --silent --pack-destination "$WORK" >/dev/null)

step "main package socketpair@$VERSION"
mkdir "$WORK/main"
cp package.json README.md LICENSE "$WORK/main/"
node -e '
  const fs = require("fs"), path = require("path")
  const main = process.argv[1]
  const pkg = JSON.parse(fs.readFileSync(path.join(main, "package.json"), "utf8"))
  for (const f of pkg.files) fs.copyFileSync(f, path.join(main, f))
  // What `napi pre-publish` does at release: one optional dependency per platform package.
  pkg.optionalDependencies = {}
  for (const dir of fs.readdirSync("npm").sort()) pkg.optionalDependencies[`socketpair-${dir}`] = pkg.version
  delete pkg.devDependencies
  fs.writeFileSync(path.join(main, "package.json"), JSON.stringify(pkg, null, 2) + "\n")
' "$WORK/main"
npx --no-install publint run --strict "$WORK/main"
(cd "$WORK/main" && npm pack --silent --pack-destination "$WORK" >/dev/null)
for tgz in "$WORK"/*.tgz; do
  step "contents of $(basename "$tgz")"
  tar -tzf "$tgz" | sort
done
if tar -tzf "$WORK/socketpair-$VERSION.tgz" | grep -q '\.node$'; then
  echo "the main package must not carry a binary" >&2
  exit 1
fi

step "install into a fresh project: no compiler on PATH, registry unreachable"
mkdir -p "$WORK/bin" "$WORK/app"
ln -s "$(command -v node)" "$WORK/bin/node"
NPM_CLI=$(node -p 'require.resolve("npm/bin/npm-cli.js", { paths: [require("path").dirname(process.execPath) + "/../lib/node_modules"] })' 2>/dev/null || true)
[ -n "$NPM_CLI" ] || NPM_CLI=$(readlink -f "$(command -v npm)")
ln -s "$NPM_CLI" "$WORK/bin/npm"
for tool in sh env grep find rm cp mkdir cat tar gzip; do
  ln -s "$(command -v "$tool")" "$WORK/bin/$tool"
done
trap 'PATH="$SAVED_PATH" rm -rf "$WORK"' EXIT
SAVED_PATH=$PATH
export PATH="$WORK/bin"
for tool in cargo rustc cc gcc clang node-gyp python3 make; do
  if command -v "$tool" >/dev/null 2>&1; then echo "$tool is still on PATH" >&2; exit 1; fi
done
export npm_config_registry=http://127.0.0.1:9/
export npm_config_cache="$WORK/npm-cache"
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
cd "$WORK/app"
echo '{ "name": "consumer", "version": "1.0.0", "private": true }' > package.json
npm install --offline "$WORK/socketpair-$VERSION.tgz" "$WORK/socketpair-$PLATFORM-$VERSION.tgz" 2>&1 |
  grep -v 'Unknown user config' || true
[ -f "node_modules/socketpair-$PLATFORM/socketpair.$PLATFORM.node" ] || { echo "platform package not installed" >&2; exit 1; }
if find node_modules -name '*.node' | grep -v "node_modules/socketpair-$PLATFORM/"; then
  echo "a binary was installed from somewhere else" >&2
  exit 1
fi

cp "$ROOT/scripts/package-fixtures/"* .
step "CommonJS round trip"
node roundtrip.cjs
step "ESM round trip"
node roundtrip.mjs
step "TypeScript consumer against the shipped .d.ts"
mkdir -p node_modules/@types
cp -r "$ROOT/node_modules/@types/node" node_modules/@types/node
cp -r "$ROOT/node_modules/undici-types" node_modules/undici-types
node "$ROOT/node_modules/typescript/bin/tsc" -p tsconfig.json
echo "test:package ok: installed with no compiler and no registry; CommonJS, ESM and TypeScript consumers work"
