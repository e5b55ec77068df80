#!/usr/bin/env bash
# Runs every wharf test on a fresh Debian machine: installs what the tests start for real
# (CNCF distribution as the upstream registry, skopeo, htpasswd, openssl, Prometheus,
# Chromium and nginx from Debian; moto's S3 server and the oras client from PyPI, each in a
# virtualenv), then cargo test.
# Extra arguments go to `cargo test` (e.g. ./test.sh -p wharf-edge skopeo); with none, clippy, the
# shape check (.ci/shape), a
# short chaos soak and the deployment tests (deploy/test.sh: image, compose, Helm, Terraform;
# they install docker-compose, debootstrap, helm-python-sdk, kubernetes-validate and checkov)
# run too.
set -euo pipefail
cd "$(dirname "$0")"
# Each phase's wall time, so a slow run shows where its minutes went.
phase_start=$SECONDS
phase() {
  echo "test.sh: $1 took $((SECONDS - phase_start)) s"
  phase_start=$SECONDS
}

need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v openssl >/dev/null || need+=(openssl)
# The observability tests scrape wharf with a real Prometheus and render its status page in
# headless Chromium.
[ -x /usr/bin/prometheus ] || need+=(prometheus)
[ -x /usr/bin/chromium ] || need+=(chromium)
# nginx proxy_cache stands in for a CDN in front of wharf.
[ -x /usr/sbin/nginx ] || need+=(nginx)
if [ "$#" -eq 0 ]; then
  command -v docker-compose >/dev/null || need+=(docker-compose)
  command -v debootstrap >/dev/null || need+=(debootstrap)
fi
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "test.sh: installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The deployment tests' images (a static release build of wharf, a debootstrapped Debian root,
# s3s-fs) build in the background at idle CPU priority while clippy and the Rust tests build and
# run: they take only the CPU time those leave over, which is most of a cold run's spare
# minutes (compiler serial phases, tests waiting on sockets and timers).
# In a session of its own, so that an early exit (a failure, Ctrl-C) stops all of it, its
# compilers included.
images_pid=""
images_log=$(mktemp)
log=""
cleanup() {
  if [ -n "$images_pid" ]; then kill -- -"$images_pid" 2>/dev/null || true; fi
  rm -f "$images_log"
  if [ -n "$log" ]; then rm -f "$log" "$log.wharf"; fi
}
trap cleanup EXIT
if [ "$#" -eq 0 ]; then
  background=(setsid)
  command -v chrt >/dev/null && background+=(chrt --idle 0)
  command -v ionice >/dev/null && background+=(ionice -c 3)
  "${background[@]}" deploy/compose/build-images.sh --with-upstream >"$images_log" 2>&1 &
  images_pid=$!
fi

# A real S3-compatible server process for the S3 tests: moto, in its own virtualenv.
moto_env="${XDG_CACHE_HOME:-$HOME/.cache}/wharf-test/moto"
if [ ! -x "$moto_env/bin/moto_server" ]; then
  echo "test.sh: installing moto[server] into $moto_env"
  if ! python3 -m venv "$moto_env" 2>/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$moto_env"
  fi
  "$moto_env/bin/pip" install -q 'moto[server]==5.2.5'
fi
export WHARF_TEST_MOTO_SERVER="$moto_env/bin/moto_server"
# PyPI's oras client pulls OCI artifacts (Helm charts, custom artifact types) through wharf.
oras_env="${XDG_CACHE_HOME:-$HOME/.cache}/wharf-test/oras"
if [ ! -x "$oras_env/bin/python" ] || ! "$oras_env/bin/python" -c 'import oras.client' 2>/dev/null; then
  echo "test.sh: installing oras into $oras_env"
  python3 -m venv "$oras_env"
  "$oras_env/bin/pip" install -q 'oras==0.2.43'
fi
export WHARF_TEST_ORAS_PYTHON="$oras_env/bin/python"
# The deployment tests' Python tools, each in its own virtualenv.
if [ "$#" -eq 0 ]; then
  venvs="${XDG_CACHE_HOME:-$HOME/.cache}/wharf-test"
  if [ ! -x "$venvs/helm/bin/kubernetes-validate" ]; then
    echo "test.sh: installing helm-python-sdk and kubernetes-validate into $venvs/helm"
    python3 -m venv "$venvs/helm"
    "$venvs/helm/bin/pip" install -q 'helm-python-sdk==0.2.2' 'kubernetes-validate==1.37.0' 'PyYAML==6.0.4'
  fi
  if [ ! -x "$venvs/checkov/bin/checkov" ]; then
    echo "test.sh: installing checkov into $venvs/checkov"
    python3 -m venv "$venvs/checkov"
    "$venvs/checkov/bin/pip" install -q 'checkov==3.3.30'
  fi
fi
# Tests never consult cloud instance metadata (nothing beyond loopback is a target).
export AWS_EC2_METADATA_DISABLED=true
phase "installing what the tests start"

log=$(mktemp)
# Every wharf log line of the in-process tests and of the nodes they start goes here, at debug
# level; no test password (nodes/testkit/test-secrets.txt) may appear in it.
export WHARF_TEST_LOG_FILE="$log.wharf"
: >"$WHARF_TEST_LOG_FILE"
status=0
# Lints first, as CI's gate: unwrap_used and the rest are errors outside tests.
if [ "$#" -eq 0 ]; then
  cargo clippy --workspace --all-targets --locked -- -D warnings || status=$?
  # The code's shape: the pipeline crate has no web framework, the edge stays small, no
  # source file over 700 lines.
  .ci/shape || status=$?
  phase "clippy and the shape check"
fi
# Every test binary runs even when one fails, so one run shows every failure.
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
phase "cargo test (build and run)"
if [ ! -s "$WHARF_TEST_LOG_FILE" ]; then
  echo "secret check: no wharf log was captured, so it could not be checked"
  status=1
elif grep -F -n -f nodes/testkit/test-secrets.txt "$WHARF_TEST_LOG_FILE" | head -n 5 | cut -c1-300 | grep .; then
  echo "secret check: FAILED: a test password appeared in a wharf log line (above)"
  status=1
else
  echo "secret check: $(wc -l <"$WHARF_TEST_LOG_FILE") wharf log lines, no test password"
fi
# A short chaos soak (the 10-minute one is in BENCHMARKS.md): three debug nodes on moto, with
# kills, SIGTERMs, partitions, S3 and upstream outages and link cuts from a fixed seed; it
# checks every byte and fails on corruption, lost pulls, extra fetches or leftovers.
if [ "$#" -eq 0 ]; then
  soak=0
  cargo run -q --locked -p wharf-loadtest -- --soak 1 --seed 11 --wharf-bin target/debug/wharf \
    2>"$log.soak" || soak=$?
  if [ "$soak" -ne 0 ]; then
    tail -n 60 "$log.soak"
    echo "chaos soak: FAILED"
    status=1
  else
    echo "chaos soak: passed"
  fi
  rm -f "$log.soak"
  phase "chaos soak"
fi
# The deployment paths: the image built from this tree, the compose stack end to end, the Helm
# chart, the Terraform module (deploy/README.md says what each covers).
if [ "$#" -eq 0 ]; then
  images=0
  wait "$images_pid" || images=$?
  images_pid=""
  cat "$images_log"
  phase "the rest of the image builds"
  if [ "$images" -ne 0 ]; then
    echo "deployment tests: FAILED (the images did not build)"
    status=1
  elif deploy/test.sh --images-built; then
    echo "deployment tests: passed"
  else
    echo "deployment tests: FAILED"
    status=1
  fi
  phase "deployment tests"
fi
# One closing line for the whole run (cargo's own last line is a doc-test binary's).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
echo "test.sh: $((SECONDS / 60)) min $((SECONDS % 60)) s in all"
exit "$status"
