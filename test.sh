#!/usr/bin/env bash
# Runs every wharf test on a fresh Debian machine: installs what the tests start for real
# (CNCF distribution as the upstream registry, skopeo, htpasswd, openssl), then cargo test.
# Extra arguments go to `cargo test` (e.g. ./test.sh -p wharf-edge skopeo).
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "test.sh: installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cargo test --workspace --locked "$@"
