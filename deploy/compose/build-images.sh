#!/usr/bin/env bash
# Builds the images the compose stack runs, without any image registry:
#   wharf:latest          deploy/image/build.sh (skip with --skip-wharf)
#   wharf-haproxy:latest  Debian's haproxy in a root filesystem made with debootstrap
#   wharf-s3s-fs:latest   s3s-fs (an S3-compatible server over a directory), static, FROM scratch
# --with-upstream also tags the Debian root filesystem (which holds docker-registry) as
# wharf-test-registry:latest, the upstream registry smoke.sh seeds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/wharf-image
mkdir -p "$cache"
skip_wharf=0
with_upstream=0
for arg in "$@"; do
  case "$arg" in
    --skip-wharf) skip_wharf=1 ;;
    --with-upstream) with_upstream=1 ;;
    *) echo "usage: $0 [--skip-wharf] [--with-upstream]" >&2; exit 2 ;;
  esac
done
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo

# One Debian root filesystem holds haproxy and docker-registry (2.6 and 2.8 from bookworm).
if ! docker image inspect wharf-debian-base:bookworm >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || {
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq debootstrap >/dev/null
  }
  root=$(mktemp -d)
  echo "images: debootstrap bookworm (haproxy, docker-registry) into $root"
  $sudo debootstrap --variant=minbase --include=haproxy,docker-registry,ca-certificates \
    bookworm "$root" http://deb.debian.org/debian >/dev/null
  $sudo chroot "$root" apt-get clean
  $sudo rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
  $sudo tar -C "$root" -c . | docker import - wharf-debian-base:bookworm >/dev/null
  $sudo rm -rf "$root"
  echo "images: Debian root filesystem imported at ${SECONDS} s"
fi
docker tag wharf-debian-base:bookworm wharf-haproxy:latest
[ "$with_upstream" = 0 ] || docker tag wharf-debian-base:bookworm wharf-test-registry:latest

# s3s-fs 0.14.1 (the last release building with our Rust), statically linked.
s3s=$cache/s3s-fs/bin/s3s-fs
if [ ! -x "$s3s" ]; then
  echo "images: cargo install s3s-fs 0.14.1 (static)"
  RUSTFLAGS='-C target-feature=+crt-static' cargo install --quiet --locked s3s-fs@0.14.1 \
    --features binary --target x86_64-unknown-linux-gnu --root "$cache/s3s-fs"
  echo "images: s3s-fs built at ${SECONDS} s"
fi
ctx=$(mktemp -d)
cp "$s3s" "$ctx/s3s-fs"
mkdir -p "$ctx/data/wharf"
cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY s3s-fs /usr/local/bin/s3s-fs
# The bucket "wharf" is a directory; a new named volume on /data starts with it.
COPY data /data
VOLUME ["/data"]
EXPOSE 9000
ENTRYPOINT ["/usr/local/bin/s3s-fs"]
DOCKERFILE
docker build -q -t wharf-s3s-fs:latest "$ctx" >/dev/null
rm -rf "$ctx"
# wharf last: the Debian root (mostly downloads) goes first, so that under ./test.sh, which
# runs this in the background, it overlaps the compilers.
[ "$skip_wharf" = 1 ] || { "$here/../image/build.sh"; echo "images: wharf built at ${SECONDS} s"; }
echo "images: wharf-haproxy, wharf-s3s-fs$([ "$with_upstream" = 1 ] && echo ", wharf-test-registry") ready"
