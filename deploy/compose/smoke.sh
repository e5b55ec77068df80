#!/usr/bin/env bash
# The compose stack, end to end: an upstream registry container seeded with an image (random
# layers, built here), the stack in front of it, a real `docker pull` through haproxy, the blobs in the
# bucket, one upstream GET per blob; then one node stopped, then the Raft leader too, while
# pulls go on, and cold pulls on the node left running stall < 0.5 s across each stop and the
# restart (stall_probe.py); both back, rejoined; everything torn down. Exit 0 only if all of
# it holds.
# Needs: docker, docker-compose 1.29+, skopeo, python3; images from build-images.sh --with-upstream.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
project=wharfsmoke
port=${WHARF_PORT:-5180}
uport=${WHARF_SMOKE_UPSTREAM_PORT:-5199}
export WHARF_PORT=$port WHARF_SMOKE_UPSTREAM_PORT=$uport WHARF_UPSTREAM=http://upstream:5000
# The nodes' shared cluster key, made for this run.
WHARF_CLUSTER_SECRET=$(openssl rand -hex 32)
export WHARF_CLUSTER_SECRET
compose() { docker-compose -p "$project" -f docker-compose.yml -f smoke-upstream.yml "$@"; }
say() { echo "smoke: $*"; }
fail() {
  say "FAILED: $*"
  compose ps || true
  for s in wharf1 wharf2 wharf3; do echo "$s: $(status "$s" || echo 'no status')"; done
  # The nodes' own lines, not the health checks' access lines.
  compose logs --no-color --tail=400 2>&1 | grep -v 'wharf::access' | tail -n 80 || true
  exit 1
}
work=$(mktemp -d)
cleanup() { compose down -v --remove-orphans >/dev/null 2>&1 || true; docker rmi "127.0.0.1:$port/team/app:v1" >/dev/null 2>&1 || true; }
trap 'cleanup; rm -rf "$work"' EXIT
cleanup

compose up -d upstream >/dev/null 2>&1
for _ in $(seq 60); do curl -fsS "http://127.0.0.1:$uport/v2/" >/dev/null 2>&1 && break; sleep 0.5; done
# An image the Engine does not hold (its layers are random), so every pull fetches every blob.
ctx=$(mktemp -d)
head -c 4194304 /dev/urandom >"$ctx/big"
head -c 524288 /dev/urandom >"$ctx/small"
printf 'FROM scratch\nCOPY big /big\nCOPY small /small\nCMD ["/big"]\n' >"$ctx/Dockerfile"
docker build -q -t wharf-smoke-app:seed "$ctx" >/dev/null 2>&1
rm -rf "$ctx"
skopeo copy -q --dest-tls-verify=false docker-daemon:wharf-smoke-app:seed "docker://127.0.0.1:$uport/team/app:v1"
docker rmi wharf-smoke-app:seed >/dev/null
manifest=$(skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:$uport/team/app:v1")
mapfile -t blobs < <(python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["config"]["digest"]); [print(l["digest"]) for l in m["layers"]]' <<<"$manifest")
# Fresh blobs for the stall probes: each probe pulls some cold from a running node.
python3 stall_probe.py seed "http://127.0.0.1:$uport" team/cold 900 "$work/cold.txt"
say "upstream seeded: team/app:v1, ${#blobs[@]} blobs; 900 blobs for cold-pull probes"

compose up -d >/dev/null 2>&1
healthy() {
  curl -fsS -m 2 "http://127.0.0.1:$port/v2/" >/dev/null 2>&1
}
for _ in $(seq 120); do healthy && break; sleep 0.5; done
healthy || fail "the stack did not answer on 127.0.0.1:$port"
status() { compose exec -T "$1" wharf cluster status --node 127.0.0.1:6000 --json 2>/dev/null; }
members_of() { status "$1" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(len(s["members"]), s["leader_id"] or 0)'; }
cluster_ok() {
  local out
  out=$(members_of "$1" 2>/dev/null) || return 1
  [ "${out%% *}" = 3 ] && [ "${out##* }" != 0 ]
}
for _ in $(seq 120); do cluster_ok wharf1 && break; sleep 0.5; done
cluster_ok wharf1 || fail "no 3-member cluster with a leader"
say "stack up: 3 nodes in one cluster behind haproxy on 127.0.0.1:$port"
# The cluster port refuses a caller without the key (and one with another key).
for wrong in "" "$(openssl rand -hex 32)"; do
  if compose exec -T -e "WHARF_CLUSTER__SECRET=$wrong" wharf1 wharf cluster status --node wharf2:6000 >/dev/null 2>&1; then
    fail "the cluster port answered a caller without the key"
  fi
done
say "cluster port: callers without the key refused"

docker pull -q "127.0.0.1:$port/team/app:v1" >/dev/null || fail "docker pull through the load balancer"
docker rmi "127.0.0.1:$port/team/app:v1" >/dev/null
say "docker pull through haproxy: ok"

sleep 2 # the last blob's upload to the bucket ends just after its last byte was sent
vol=${project}_s3-data
for b in "${blobs[@]}"; do
  hex=${b#sha256:}
  docker run --rm -v "$vol:/s3:ro" wharf-debian-base:bookworm sh -c "find /s3/wharf -path '*$hex*' -type f | grep -q ." \
    || fail "blob $b not in the bucket"
  n=$(compose logs upstream 2>/dev/null | grep -c "\"GET /v2/team/app/blobs/$b HTTP" || true)
  [ "$n" = 1 ] || fail "blob $b fetched from the upstream $n times"
done
say "every blob in the bucket, each fetched from the upstream once"

# 40 requests (manifest by tag and every blob, round robin over the nodes) must all succeed.
requests() {
  local ok=0 i
  for i in $(seq 40); do
    local path
    if [ $((i % 5)) = 0 ]; then
      path=/v2/team/app/manifests/v1
    else
      path=/v2/team/app/blobs/${blobs[$((i % ${#blobs[@]}))]}
    fi
    curl -fsS -m 20 -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
      "http://127.0.0.1:$port$path" && ok=$((ok + 1))
  done
  echo "$ok"
}

leader=$(status wharf1 | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["leader_id"])')
leader_svc=""
for s in wharf1 wharf2 wharf3; do
  if [ "$(status "$s" | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_id"])')" = "$leader" ]; then
    leader_svc=$s
  fi
done
[ -n "$leader_svc" ] || fail "no service is the leader"
follower=wharf1
if [ "$leader_svc" = wharf1 ]; then follower=wharf2; fi
third=""
for s in wharf1 wharf2 wharf3; do
  if [ "$s" != "$leader_svc" ] && [ "$s" != "$follower" ]; then third=$s; fi
done

ip_of() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$(compose ps -q "$1")"; }
# Run "$@" (stopping or starting nodes) while one client pulls fresh cold blobs from $third,
# the node that keeps running; the slowest of them may take at most 0.5 s longer than the
# median pull before it.
with_stall_probe() {
  local what=$1
  shift
  rm -f "$work/stop"
  python3 stall_probe.py probe "http://$(ip_of "$third"):5000" team/cold "$work/cold.txt" \
    "$work/offset" "$work/stop" "$work/pulls" &
  local probe=$!
  sleep 2
  local event
  event=$(date +%s.%N)
  "$@"
  sleep 1
  touch "$work/stop"
  wait "$probe" || fail "a cold pull on $third failed while $what"
  local verdict
  verdict=$(python3 stall_probe.py stall "$work/pulls" "$event" 0.5) || fail "cold pulls on $third while $what: $verdict"
  say "cold pulls on $third while $what: $verdict"
}

# Stop `$1` while a docker pull runs through the load balancer; the pull and 40 requests after
# it must all succeed.
stop_during_pull() {
  docker pull -q "127.0.0.1:$port/team/app:v1" >/dev/null &
  local pull=$!
  compose stop -t 5 "$1" >/dev/null 2>&1
  wait "$pull" || fail "docker pull while $1 ($2) stopped"
  docker rmi "127.0.0.1:$port/team/app:v1" >/dev/null
  ok=$(requests)
  [ "$ok" = 40 ] || fail "$ok/40 requests with $1 ($2) stopped"
}
with_stall_probe "$follower (a follower) stopped" stop_during_pull "$follower" "a follower"
say "$follower (a follower) stopped mid-pull: docker pull and 40/40 requests OK"
with_stall_probe "$leader_svc (the leader) stopped" stop_during_pull "$leader_svc" "the Raft leader"
say "$leader_svc (the leader) stopped too, one node left: docker pull and 40/40 requests OK"

restart_both() {
  compose start "$follower" "$leader_svc" >/dev/null 2>&1
  rejoined=0
  for _ in $(seq 120); do
    if cluster_ok "$follower" && cluster_ok "$leader_svc"; then rejoined=1; break; fi
    sleep 0.5
  done
}
with_stall_probe "$follower and $leader_svc restarted" restart_both
[ "$rejoined" = 1 ] || fail "$follower and $leader_svc did not rejoin"
ok=$(requests)
[ "$ok" = 40 ] || fail "$ok/40 requests after the restart"
say "$follower and $leader_svc restarted and rejoined"
say "passed"
