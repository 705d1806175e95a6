#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs and starts what the tests need (Docker
# engine, images), builds the static kiln-init, runs every test against the real engine, and
# checks that no Kiln container is left behind.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-docker.sh
# The cache's L3 tests start their own Redis server from Debian's package.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "[test] installing Debian's redis-server" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq redis-server >/dev/null
fi
scripts/images.sh busybox python runtimes
# Existing API clients, unmodified, that tests run against a live Kiln (tests/clients).
if ! command -v npm >/dev/null 2>&1 || ! command -v pip3 >/dev/null 2>&1; then
  echo "[test] installing Debian's nodejs, npm and python3-pip" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm python3-pip >/dev/null
fi
(cd tests/clients && npm install --silent --no-audit --no-fund >/dev/null)
pip3 install --quiet --upgrade --disable-pip-version-check --target tests/clients/py -r tests/clients/requirements.txt 2>/dev/null \
  || pip3 install --quiet --upgrade --disable-pip-version-check --break-system-packages --target tests/clients/py -r tests/clients/requirements.txt
KILN_INIT_PATH=$(scripts/build-init.sh)
export KILN_INIT_PATH

cargo test --workspace "$@"

gateways=$(docker ps -a --filter label=dev.kiln.managed=true --format '{{.Label "dev.kiln.gateway"}}')
stray=$(printf '%s\n' "$gateways" | grep -c '^kiln-test-' || true)
left=$(printf '%s\n' "$gateways" | grep -c . || true)
if [ "$stray" -ne 0 ]; then
  echo "test.sh: $stray Kiln test container(s) left behind:" >&2
  docker ps -a --filter label=dev.kiln.managed=true >&2
  exit 1
fi
echo "test.sh: no Kiln test container left (Kiln containers of other gateways on this engine: $left)"
