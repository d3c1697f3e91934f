#!/usr/bin/env bash
# install.sh VENV: install the pinned BuildGrid into the venv VENV (idempotent).
#
# BuildGrid 0.9.x needs Python >= 3.13 (pyenv's 3.13 on these machines, not on
# PATH); 0.4.4 is the last for 3.11, the default python3, and its ByteStream
# read_limit is broken, so it is only a fallback. BGD_PYTHON forces an interpreter.
# Every package is pinned by lock-pyXY.txt (a `pip freeze` of a working venv) and
# installed from wheels only: no compiler or -dev package is needed.
set -euo pipefail
venv=${1:?usage: install.sh VENV}
here=$(cd "$(dirname "$0")" && pwd)

py=${BGD_PYTHON:-}
if [ -z "$py" ]; then
    # "Runs", not "exists": pyenv's python3.13 shim fails unless 3.13 is selected.
    for c in python3.13 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3 python3; do
        if "$c" -c 'import venv' 2>/dev/null; then py=$c; break; fi
    done
fi
[ -n "$py" ] || { echo "install.sh: no Python with venv found; set BGD_PYTHON" >&2; exit 1; }
pyver=$("$py" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
lock="$here/lock-py$pyver.txt"
[ -f "$lock" ] || { echo "install.sh: no lock file $lock for $py (Python $pyver); set BGD_PYTHON to a Python 3.13" >&2; exit 1; }
[ "$pyver" = 313 ] || echo "install.sh: warning: no Python 3.13, using $py and buildgrid 0.4.4 (its ByteStream read_limit is broken)" >&2
want=$(sed -n 's/^buildgrid==//p' "$lock")

# Already there: same Python minor version and BuildGrid version.
stamp="$venv/.ws-buildgrid"
if [ -x "$venv/bin/bgd" ] && [ "$(cat "$stamp" 2>/dev/null)" = "py$pyver buildgrid==$want" ]; then
    echo "install.sh: $venv already has buildgrid $want (Python $pyver)"; exit 0
fi
# A wrong or partial venv is made again, but a directory that is not a venv is never removed.
if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ] && [ -n "$(ls -A "$venv" 2>/dev/null)" ]; then
    echo "install.sh: $venv exists and is not a venv; refusing to replace it" >&2; exit 1
fi
rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check --only-binary=:all: -r "$lock"
"$venv/bin/bgd" --help >/dev/null   # the CLI imports
echo "py$pyver buildgrid==$want" > "$stamp"
echo "install.sh: installed buildgrid $want ($("$venv/bin/python" -V 2>&1)) into $venv"
