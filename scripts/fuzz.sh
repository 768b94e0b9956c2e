#!/usr/bin/env bash
# npm run fuzz — the frame decoder under libFuzzer (cargo-fuzz, nightly, AddressSanitizer),
# coverage-guided, seeded with crates/core/fuzz/corpus (which `cargo test` replays).
#
#   FUZZ_SECONDS=1800 npm run fuzz     how long (default 300 s)
#   FUZZ_JOBS=2 npm run fuzz           parallel fuzzing processes (default: 1)
#
# New interesting inputs go to target/fuzz-corpus (not committed); a crash or invariant
# violation is written to crates/core/fuzz/artifacts/decoder/ and the run fails: add the
# input to crates/core/fuzz/corpus, with an expectation in tests/fuzz_corpus.rs, once fixed.
# Skipped, with the reason printed, where nightly or cargo-fuzz is missing
# (`rustup toolchain install nightly`, `cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: skipped — no nightly toolchain"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: skipped — cargo-fuzz is not installed (cargo install cargo-fuzz)"
  exit 0
fi
seconds=${FUZZ_SECONDS:-300}
jobs=${FUZZ_JOBS:-1}
mkdir -p target/fuzz-corpus
parallel=()
if [ "$jobs" -gt 1 ]; then
  # libFuzzer's fork mode writes one fuzz-N.log per job into the current directory.
  mkdir -p target/fuzz-logs
  cd target/fuzz-logs
  parallel=(-jobs="$jobs" -workers="$jobs")
  set -- --fuzz-dir ../../crates/core/fuzz decoder ../fuzz-corpus ../../crates/core/fuzz/corpus
else
  set -- --fuzz-dir crates/core/fuzz decoder target/fuzz-corpus crates/core/fuzz/corpus
fi
exec cargo +nightly fuzz run "$@" -- \
  -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=4096 ${parallel[@]+"${parallel[@]}"}
