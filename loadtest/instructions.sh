#!/usr/bin/env bash
# Instructions a warm manifest request costs wharf, counted by valgrind's callgrind: the same
# figure for the same binary on every run, whatever else the machine is doing, so a change of
# a few percent on the request path shows where wrk's req/s cannot (BENCHMARKS.md).
#
# Starts Debian's docker-registry on loopback with one small image, wharf (the given binary)
# under callgrind against it, warms the tag, then counts user-space instructions (every
# thread) over N requests by tag on one keep-alive connection. Stops everything it started.
#
# Usage: loadtest/instructions.sh [--access-log] [--requests N] WHARF_BIN...
# Needs: valgrind, docker-registry, curl, python3.
set -euo pipefail
requests=2000
access=off
bins=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --access-log) access=info; shift ;;
    --requests) requests=$2; shift 2 ;;
    -*) echo "usage: $0 [--access-log] [--requests N] WHARF_BIN..." >&2; exit 2 ;;
    *) bins+=("$1"); shift ;;
  esac
done
[ "${#bins[@]}" -gt 0 ] || { echo "usage: $0 [--access-log] [--requests N] WHARF_BIN..." >&2; exit 2; }
for tool in valgrind callgrind_control docker-registry curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool not found (apt-get install valgrind docker-registry curl)" >&2; exit 2; }
done

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url: up within 60 s (wharf starts slowly under valgrind)
  for _ in $(seq 1 240); do curl -s -o /dev/null "$1" && return 0; sleep 0.25; done
  echo "no answer from $1" >&2; return 1
}

# The upstream: one image, bench/sec:v1 (an OCI manifest, its config and one 4 KiB layer).
uport=$(free_port)
upstream=http://127.0.0.1:$uport
cat >"$work/registry.yml" <<EOF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$uport}
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
wait_http "$upstream/v2/"
push_blob() { # file -> "digest size"
  local digest location sep
  digest=sha256:$(sha256sum "$1" | cut -d' ' -f1)
  location=$(curl -sfi -X POST "$upstream/v2/bench/sec/blobs/uploads/" | tr -d '\r' |
    awk -F': ' 'tolower($1)=="location" {print $2}')
  case "$location" in http*) ;; *) location=$upstream$location ;; esac
  sep='?'; case "$location" in *\?*) sep='&' ;; esac
  curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$1" \
    "$location${sep}digest=$digest" >/dev/null
  echo "$digest $(stat -c %s "$1")"
}
echo '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$work/config.json"
head -c 4096 /dev/urandom >"$work/layer"
read -r config_digest config_size < <(push_blob "$work/config.json")
read -r layer_digest layer_size < <(push_blob "$work/layer")
cat >"$work/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$config_digest","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"$layer_digest","size":$layer_size}]}
EOF
curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
  --data-binary @"$work/manifest.json" "$upstream/v2/bench/sec/manifests/v1" -o /dev/null

# N requests by tag on one keep-alive connection, each checked.
cat >"$work/client.py" <<'EOF'
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
accept = ("application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json, "
          "application/vnd.docker.distribution.manifest.list.v2+json")
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(n):
    c.request("GET", "/v2/bench/sec/manifests/v1", headers={"Accept": accept})
    r = c.getresponse()
    body = r.read()
    assert r.status == 200, (r.status, body[:200])
EOF
printf '[[upstream]]\nname = "bench.registry"\nurl = "%s"\ndefault = true\n' "$upstream" >"$work/wharf.toml"

for bin in "${bins[@]}"; do
  port=$(free_port)
  out=$work/callgrind.$port
  WHARF_LOG="warn,wharf::access=$access" valgrind --tool=callgrind --callgrind-out-file="$out.%p" \
    "$bin" serve --listen "127.0.0.1:$port" --config "$work/wharf.toml" --data-dir "$work/data-$port" \
    >"$work/wharf-$port.log" 2>&1 &
  wharf=$!
  pids+=("$wharf")
  wait_http "http://127.0.0.1:$port/v2/"
  python3 "$work/client.py" "$port" 50 # the tag and its manifest cached
  sleep 1
  callgrind_control -z "$wharf" >/dev/null 2>&1
  python3 "$work/client.py" "$port" "$requests"
  callgrind_control -d "$wharf" >/dev/null 2>&1
  kill "$wharf"
  wait "$wharf" 2>/dev/null || true
  # The dump after zeroing is part 1.
  total=$(grep -h '^summary:\|^totals:' "$out".*.1 | head -n1 | awk '{print $2}')
  echo "$bin (access lines $access): $((total / requests)) instructions a warm manifest request by tag ($total over $requests)"
done
