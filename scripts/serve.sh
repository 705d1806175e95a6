#!/usr/bin/env bash
# Set up and run Kiln on a fresh machine: the Docker engine (Debian's docker.io) if none runs,
# the sandbox images, the static kiln-init and the gateway, then `kiln serve` on :8080.
# Extra arguments go to `kiln serve` (see `kiln serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-docker.sh
scripts/images.sh busybox python runtimes
KILN_INIT_PATH=$(scripts/build-init.sh)
export KILN_INIT_PATH
echo "[serve] building the gateway (release; a few minutes the first time)" >&2
cargo build --quiet --release -p kiln
exec target/release/kiln serve "$@"
