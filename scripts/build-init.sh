#!/usr/bin/env bash
# Build kiln-init as a static executable (it runs inside images with no C library) and print its
# path. The explicit --target keeps +crt-static away from build scripts and proc macros.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${KILN_INIT_TARGET:-$(rustc -vV | sed -n 's/^host: //p')}
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release -p kiln-init --target "$TARGET"
echo "$PWD/target/$TARGET/release/kiln-init"
