#!/usr/bin/env bash
# Make sure a Docker engine answers on /var/run/docker.sock: install Debian's docker.io where
# there is none, and start dockerd in the background where none runs. Idempotent.
set -euo pipefail

log() { echo "[ensure-docker] $*" >&2; }

if docker info >/dev/null 2>&1; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing Debian's docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/kiln-dockerd.log)"
  # setsid: dockerd must outlive the shell that started it.
  setsid dockerd >/var/log/kiln-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
fi

docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /var/log/kiln-dockerd.log"; exit 1; }
log "docker engine is up"
