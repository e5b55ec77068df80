#!/usr/bin/env bash
# Builds the wharf image, wharf:<version> and wharf:latest, FROM scratch: a statically linked
# release binary (glibc with crt-static), Mozilla's CA bundle (from Debian's ca-certificates
# package, never this machine's bundle), a non-root user (65532), /data as the volume.
# Usage: deploy/image/build.sh [--tag NAME]   (default: wharf)
set -euo pipefail
cd "$(dirname "$0")/../.."
name=wharf
while [ "$#" -gt 0 ]; do
  case "$1" in
    --tag) name=$2; shift 2 ;;
    *) echo "usage: $0 [--tag NAME]" >&2; exit 2 ;;
  esac
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' nodes/node/Cargo.toml | head -n1)
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
target=x86_64-unknown-linux-gnu

echo "image: building the static wharf binary (release, $target)"
WHARF_COMMIT=$commit RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --release --locked --target "$target" -p wharf-node

ctx=target/image
rm -rf "$ctx" && mkdir -p "$ctx/data"
cp deploy/image/Dockerfile "$ctx/"
cp "target/$target/release/wharf" "$ctx/wharf"
strip "$ctx/wharf"
if ldd "$ctx/wharf" 2>&1 | grep -q '=>'; then
  echo "image: the binary is not static:" >&2
  ldd "$ctx/wharf" >&2
  exit 1
fi

# Mozilla's roots as Debian ships them (cached: the package changes rarely).
certs=${XDG_CACHE_HOME:-$HOME/.cache}/wharf-image/ca-certificates.crt
if [ ! -s "$certs" ]; then
  tmp=$(mktemp -d)
  # Package lists may be missing on a fresh machine: refresh them once if the download fails.
  if ! (cd "$tmp" && apt-get download ca-certificates >/dev/null 2>&1); then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    (cd "$tmp" && apt-get download ca-certificates >/dev/null)
  fi
  dpkg-deb -x "$tmp"/ca-certificates_*.deb "$tmp/x"
  mkdir -p "$(dirname "$certs")"
  cat "$tmp"/x/usr/share/ca-certificates/mozilla/*.crt >"$certs"
  rm -rf "$tmp"
fi
cp "$certs" "$ctx/ca-certificates.crt"
echo 'wharf:x:65532:65532:wharf:/data:/sbin/nologin' >"$ctx/passwd"
echo 'wharf:x:65532:' >"$ctx/group"

docker build -q \
  --build-arg "VERSION=$version" --build-arg "COMMIT=$commit" \
  --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -t "$name:$version" -t "$name:latest" "$ctx" >/dev/null
size=$(docker image inspect "$name:latest" --format '{{.Size}}')
echo "image: $name:$version and $name:latest, $((size / 1024 / 1024)) MiB"
