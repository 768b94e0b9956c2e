#!/usr/bin/env bash
# Usage: scripts/check-glibc.sh FILE [MAX]   (MAX defaults to 2.17)
#
# Fails when the ELF file FILE needs a glibc symbol version newer than MAX: the README
# promises that the linux-*-gnu binaries load on glibc 2.17 and later. Reads the versions
# the file *needs* (the GLIBC_x.y names the dynamic loader checks at load time, not the
# ones a library defines) with readelf, which reads any ELF whatever the host's
# architecture, so the aarch64 binary is checked on an x86_64 runner; falls back to
# objdump -T. Run by build.yml after each gnu build; runs locally on any Linux with
# binutils:
#   scripts/check-glibc.sh socketpair.linux-x64-gnu.node 2.17
# Exit status: 0 within MAX, 1 above it (or no GLIBC_ version at all), 2 unreadable.
set -euo pipefail

file=${1:?usage: check-glibc.sh FILE [MAX_GLIBC_VERSION]}
max=${2:-2.17}
[ -f "$file" ] || { echo "check-glibc: no such file: $file" >&2; exit 2; }

if command -v readelf >/dev/null 2>&1; then
  # -V prints .gnu.version_r ("Version needs section") as "Name: GLIBC_2.17  Flags: ...";
  # --dyn-syms names each undefined symbol with its version ("dladdr@GLIBC_2.34 (6)").
  info=$(LC_ALL=C readelf -W -V "$file") || { echo "check-glibc: readelf cannot read $file" >&2; exit 2; }
  needs=$(printf '%s\n' "$info" | awk '/^Version needs section/ { n = 1; next } /^Version / { n = 0 } n')
  symbols=$(LC_ALL=C readelf -W --dyn-syms "$file" | grep -E ' UND ' || true)
elif command -v objdump >/dev/null 2>&1; then
  # -T: the dynamic symbol table; the undefined ones carry the version they need,
  # "*UND* ... (GLIBC_2.34) dladdr".
  info=$(LC_ALL=C objdump -T "$file") || { echo "check-glibc: objdump cannot read $file" >&2; exit 2; }
  needs=$(printf '%s\n' "$info" | grep -F '*UND*' || true)
  symbols=$needs
else
  echo "check-glibc: neither readelf nor objdump found (install binutils)" >&2
  exit 2
fi

needed=$(printf '%s\n' "$needs" | grep -oE 'GLIBC_[0-9]+(\.[0-9]+)+' | sed 's/^GLIBC_//' | sort -u -V || true)
if [ -z "$needed" ]; then
  # The gnu builds always need some GLIBC_ version: refuse rather than pass (wrong file,
  # a static or musl binary).
  echo "check-glibc: FAIL: $file needs no GLIBC_ symbol version; is it a dynamically linked glibc ELF file?" >&2
  exit 1
fi
highest=$(printf '%s\n' "$needed" | tail -n1)
echo "check-glibc: $file needs glibc $(printf '%s\n' "$needed" | tr '\n' ' ')(highest $highest, max $max)"

if printf '%s\n' "$needs" | grep -q 'GLIBC_PRIVATE'; then
  echo "check-glibc: FAIL: $file needs GLIBC_PRIVATE (no stable ABI)" >&2
  exit 1
fi
# sort -V puts the larger version last: highest is within max when max still sorts last.
if [ "$(printf '%s\n%s\n' "$highest" "$max" | sort -V | tail -n1)" != "$max" ]; then
  echo "check-glibc: FAIL: $file needs GLIBC_$highest, newer than $max; the symbols that need it:" >&2
  h=${highest//./\\.}
  printf '%s\n' "$symbols" | grep -E "@GLIBC_${h}( |$)|\\(GLIBC_${h}\\)" | head -n 20 >&2 || true
  exit 1
fi
echo "check-glibc: ok (GLIBC_$highest <= $max)"
