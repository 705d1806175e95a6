#!/usr/bin/env bash
# Contract fuzzing of the v1 API: starts a gateway on 127.0.0.1, then runs schemathesis (from
# PyPI, installed under .tools/ where missing) against /api/v1/openapi.json with every check —
# no 5xx, status codes and bodies as documented, content types, schema-violating requests
# refused — but one: a request the schema allows may still be refused (422) for rules across
# fields that a JSON schema does not carry (`image` or `language`, `command` or `argv`). Needs
# Docker and the images (scripts/test.sh sets them up).
#
#   scripts/contract.sh [MAX_EXAMPLES]
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${1:-25}
log() { echo "[contract] $*" >&2; }

if [ ! -d .tools/st/schemathesis ]; then
  log "installing schemathesis"
  pip3 install --quiet --disable-pip-version-check --target .tools/st schemathesis 2>/dev/null \
    || pip3 install --quiet --disable-pip-version-check --break-system-packages --target .tools/st schemathesis
fi
KILN_INIT_PATH=$(scripts/build-init.sh)
export KILN_INIT_PATH
cargo build --quiet -p kiln
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
target/debug/kiln serve --listen "127.0.0.1:$port" \
  --set docker.gateway_id=kiln-contract --set pool.enabled=false \
  --set 'cache.l2_path=""' --set 'judge0.store_path=""' --set memory.ksm_host=leave \
  >/tmp/kiln-contract.log 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.1
done
log "schemathesis against http://127.0.0.1:$port/api/v1/openapi.json ($examples examples per operation)"
PYTHONPATH=.tools/st python3 -m schemathesis.cli run "http://127.0.0.1:$port/api/v1/openapi.json" \
  --checks all --exclude-checks positive_data_acceptance \
  --max-examples "$examples" --request-timeout 60 --no-color
