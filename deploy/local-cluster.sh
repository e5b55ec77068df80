#!/usr/bin/env bash
# A 3-node wharf cluster on loopback, by hand: v2 API on 127.0.0.1:5001-5003, cluster gRPC on
# 127.0.0.1:6001-6003. Ctrl-C stops the nodes gracefully (each drains and leaves).
#
#   UPSTREAM=https://registry-1.docker.io   registry to mirror (default Docker Hub)
#   DATA=./wharf-cluster                      node data directories (DATA/node1 ...)
#   STORAGE=s3://bucket[/prefix]              shared S3 store (default: each node's local disk;
#                                             the AWS_* environment and S3_PATH_STYLE=1 apply)
#
# Then: curl http://127.0.0.1:5002/v2/library/alpine/manifests/latest
#       target/release/wharf cluster status --node 127.0.0.1:6001
set -euo pipefail
cd "$(dirname "$0")/.."

UPSTREAM=${UPSTREAM:-https://registry-1.docker.io}
DATA=${DATA:-./wharf-cluster}
cargo build --release --quiet
WHARF=target/release/wharf

storage=()
if [ -n "${STORAGE:-}" ]; then
  storage=(--storage "$STORAGE")
  [ "${S3_PATH_STYLE:-0}" = 1 ] && storage+=(--s3-path-style)
fi

pids=()
stop() {
  echo "stopping the cluster"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait
}
trap stop EXIT INT TERM

for n in 1 2 3; do
  join=()
  [ "$n" -gt 1 ] && join=(--join 127.0.0.1:6001)
  mkdir -p "$DATA"
  "$WHARF" serve --listen "127.0.0.1:500$n" --upstream "$UPSTREAM" --data-dir "$DATA/node$n" \
    "${storage[@]}" --cluster-listen "127.0.0.1:600$n" "${join[@]}" >"$DATA/node$n.log" 2>&1 &
  pids+=($!)
  # The first node bootstraps the cluster before the others ask to join it.
  for _ in $(seq 50); do
    curl -fs "http://127.0.0.1:500$n/health" >/dev/null && break
    sleep 0.2
  done
done
sleep 2
"$WHARF" cluster status --node 127.0.0.1:6001
echo "logs: $DATA/node{1,2,3}.log; Ctrl-C to stop"
wait
