#!/usr/bin/env bash
# Bounded fuzzing of message and signature parsing (outside the normal test suite).
#
#   scripts/fuzz.sh [SECONDS]      default 60
#
# cargo-fuzz needs libFuzzer's sanitizer flags, which stable Rust accepts with RUSTC_BOOTSTRAP=1
# (no nightly toolchain is needed). Crashes land in fuzz/artifacts/envelope/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds="${1:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked
fi
mkdir -p fuzz/corpus/envelope
cp -n fuzz/seeds/*.json fuzz/corpus/envelope/ 2>/dev/null || true
RUSTC_BOOTSTRAP=1 cargo fuzz run envelope fuzz/corpus/envelope -- -max_total_time="$seconds" -rss_limit_mb=2048
