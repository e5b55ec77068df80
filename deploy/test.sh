#!/usr/bin/env bash
# Every deployment path's test: the compose stack end to end, the Helm chart, the Terraform
# module. Builds the images first (wharf from source, haproxy/registry from Debian, s3s-fs).
# Needs docker, docker-compose, skopeo, debootstrap (installed if missing) and the venvs
# ./test.sh makes under ~/.cache/wharf-test (helm, checkov).
# --images-built: the caller already ran `compose/build-images.sh --with-upstream` (./test.sh
# builds them in the background while the Rust tests run).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
status=0
case "${1:-}" in
  --images-built) ;;
  "") "$here/compose/build-images.sh" --with-upstream
      echo "deploy/test.sh: images built at ${SECONDS} s" ;;
  *) echo "usage: $0 [--images-built]" >&2; exit 2 ;;
esac
if "$here/compose/smoke.sh"; then echo "compose smoke: passed"; else echo "compose smoke: FAILED"; status=1; fi
echo "deploy/test.sh: compose smoke done at ${SECONDS} s"
helm_py=${XDG_CACHE_HOME:-$HOME/.cache}/wharf-test/helm/bin/python
if "$helm_py" "$here/helm/test_chart.py"; then :; else echo "chart: FAILED"; status=1; fi
if "$here/terraform/test.sh"; then echo "terraform: passed"; else echo "terraform: FAILED"; status=1; fi
exit "$status"
