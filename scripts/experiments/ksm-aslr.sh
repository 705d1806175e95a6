#!/usr/bin/env bash
# What KSM could merge of the density workload without address-space randomisation (ASLR) and
# with a fixed string-hash seed: N plain `docker run` containers of kiln/python (not through
# Kiln), marked mergeable by the workload itself, host memory in use once KSM has had 40 s.
# The third and fourth cases need `--security-opt seccomp=unconfined`: Docker's default
# profile refuses personality(ADDR_NO_RANDOMIZE). Needs root; puts the host's KSM values back.
#
#   scripts/experiments/ksm-aslr.sh [N]
set -euo pipefail
N=${1:-10}
here=$(cd "$(dirname "$0")" && pwd)
ksm=/sys/kernel/mm/ksm
saved=("$(cat $ksm/run)" "$(cat $ksm/pages_to_scan)" "$(cat $ksm/sleep_millisecs)")
restore() {
    docker rm -f $(docker ps -q --filter label=kiln-experiment=ksm-aslr) >/dev/null 2>&1 || true
    echo 2 > $ksm/run
    echo "${saved[1]}" > $ksm/pages_to_scan
    echo "${saved[2]}" > $ksm/sleep_millisecs
    echo "${saved[0]}" > $ksm/run
}
trap restore EXIT
used() { awk '/MemTotal/{t=$2}/MemFree/{f=$2}/^Buffers/{b=$2}/^Cached/{c=$2}/SReclaimable/{s=$2}END{print int((t-f-b-c-s)/1024)}' /proc/meminfo; }
case_() { # label ksm-run norand hashseed extra-docker-args...
    local label=$1 run=$2 norand=$3 seed=$4; shift 4
    echo 2 > $ksm/run; sleep 1
    echo 4000 > $ksm/pages_to_scan; echo 10 > $ksm/sleep_millisecs; echo "$run" > $ksm/run
    local before; before=$(used)
    local env=(-e "NORAND=$norand"); [ -n "$seed" ] && env+=(-e "PYTHONHASHSEED=$seed")
    for _ in $(seq "$N"); do
        docker run -d --rm --label kiln-experiment=ksm-aslr --network none "$@" "${env[@]}" \
            -v "$here/ksm-aslr-workload.py:/w.py:ro" kiln/python python3 /w.py >/dev/null
    done
    sleep 40
    echo "| $label | $(( $(used) - before )) | $(cat $ksm/pages_sharing) |"
    docker rm -f $(docker ps -q --filter label=kiln-experiment=ksm-aslr) >/dev/null
}
echo "| $N containers | MiB in use | pages_sharing |"
echo "| --- | ---: | ---: |"
case_ "KSM off" 0 0 ""
case_ "KSM on, ASLR on (as Kiln runs today)" 1 0 ""
case_ "KSM on, ASLR on, PYTHONHASHSEED=0" 1 0 0
case_ "KSM on, ASLR off (seccomp unconfined)" 1 1 "" --security-opt seccomp=unconfined
case_ "KSM on, ASLR off, PYTHONHASHSEED=0 (seccomp unconfined)" 1 1 0 --security-opt seccomp=unconfined
