#!/usr/bin/env bash
# The core's tests (every unsafe block of socketpair-core: sendmsg/recvmsg with control
# messages, descriptor ownership, the frame decoder and write queue) under
# AddressSanitizer with leak detection, on the nightly toolchain (-Zsanitizer is
# nightly-only). Skipped, with the reason printed, where nightly is not installed.
# (Miri cannot run these: they make real system calls on real sockets.)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "sanitize: skipped — no nightly toolchain (rustup toolchain install nightly)"
  exit 0
fi
host=$(rustc -vV | sed -n 's/^host: //p')
case "$host" in
  x86_64-unknown-linux-gnu | aarch64-unknown-linux-gnu | x86_64-apple-darwin | aarch64-apple-darwin) ;;
  *)
    echo "sanitize: skipped — AddressSanitizer is not supported on $host"
    exit 0
    ;;
esac
export RUSTFLAGS="-Zsanitizer=address"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
# A target dir of its own: sanitized artefacts must not mix with the normal build.
exec cargo +nightly test -p socketpair-core --target "$host" --lib --tests \
  --target-dir target/asan "$@"
