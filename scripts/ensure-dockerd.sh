#!/usr/bin/env bash
# Make sure a Docker engine answers: install Debian's docker.io and start dockerd if none runs.
# Without a bridge (these machines have none) containers get only the host's network: callers
# build and run with --network host and bind servers to 127.0.0.1.
set -euo pipefail
export PATH="/usr/bin:$PATH"  # Debian's docker client before any other `docker` on PATH

if docker info >/dev/null 2>&1; then
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
    echo "installing docker.io (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
LOG="${DOCKERD_LOG:-/tmp/berth-dockerd.log}"
echo "starting dockerd (log: $LOG)"
setsid dockerd --bridge=none --iptables=false >"$LOG" 2>&1 < /dev/null &
echo $! > /tmp/berth-dockerd.pid
for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && exit 0
    sleep 0.5
done
echo "dockerd did not start; last lines of $LOG:" >&2
tail -20 "$LOG" >&2
exit 1
