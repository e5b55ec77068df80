#!/usr/bin/env bash
# The chart's tests (test_chart.py) in the virtualenv ./test.sh makes; --no-behaviour skips
# running the rendered pods as containers.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${XDG_CACHE_HOME:-$HOME/.cache}/wharf-test/helm
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'helm-python-sdk==0.2.2' 'kubernetes-validate==1.37.0' 'PyYAML==6.0.4'
fi
exec "$venv/bin/python" "$here/test_chart.py" "$@"
