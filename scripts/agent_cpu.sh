#!/bin/bash
# Agent CPU per telemetry event, as quoted in docs/agent-backend.md ("Agent CPU").
# usage: scripts/agent_cpu.sh BINARY EVENTS [BATCH]   (run from anywhere in the repo)
#   e.g. scripts/agent_cpu.sh target/release/sextant 200000
# Makes a throwaway fleet (CA, device and server certificates, release key, model 1 published
# and assigned), starts `sextant backend serve` on loopback, then runs one simulated device with
# `--rate 0 --exit-when-idle` under /usr/bin/time. Prints the time line and the agent's summary
# (`cpu_ms`: process user + system time; `agent_cpu_ms`: the same without the simulated
# frame thread).
set -e
[ $# -ge 2 ] || { sed -n 3,4p "$0"; exit 2; }
B=$(realpath "$1"); N=$2; BATCH=${3:-1000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
R=$(mktemp -d /tmp/sx-cpu.XXXX)
trap 'kill $BP 2>/dev/null; wait $BP 2>/dev/null || true; rm -rf "$R"' EXIT
export SEXTANT_LOG=warn
$B backend ca init --dir $R/ca >/dev/null
$B backend issue-server --ca $R/ca --name 127.0.0.1 --out $R/server >/dev/null
$B backend issue-device --ca $R/ca --device-id phone-1 --out $R/dev >/dev/null
$B backend keygen --out $R/release >/dev/null
$B model publish --model $ROOT/models/descriptor-v1/model.onnx \
  --manifest $ROOT/models/descriptor-v1/manifest.json --version 1 \
  --release-key $R/release/release.key.pk8 --data $R/data --assign-all >/dev/null
$B backend serve --ca $R/ca --cert $R/server/server.crt.pem --key $R/server/server.key.pem \
  --listen 127.0.0.1:0 --data $R/data >$R/backend.out &
BP=$!
for _ in $(seq 50); do grep -q listening $R/backend.out 2>/dev/null && break; sleep 0.1; done
ADDR=$(head -1 $R/backend.out | sed 's/listening on //')
/usr/bin/time -f "wall %e s, user %U s, sys %S s" $B agent run --dir $R/agent --server $ADDR \
  --ca $R/ca/ca.crt.pem --cert $R/dev/device.crt.pem --key $R/dev/device.key.pem \
  --release-pub $R/release/release.pub --device-id phone-1 \
  --events $N --rate 0 --exit-when-idle --batch $BATCH | tail -1
