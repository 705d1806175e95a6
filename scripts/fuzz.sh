#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/fuzz_targets) for SECONDS (default 30) on the nightly
# toolchain, which cargo-fuzz needs; installs nightly and cargo-fuzz where they are missing.
# A crash fails the script and leaves its input in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
secs=${1:-30}
cd "$(dirname "$0")/.."
log() { echo "[fuzz] $*" >&2; }
if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
for target in request frames; do
  log "$target for ${secs}s"
  cargo +nightly fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048
done
