#!/usr/bin/env bash
# Creates .venv with exactly the versions in uv.lock (LeadWheel, editable, with its dev tools), as
# CI tested them; refuses when pyproject.toml and uv.lock disagree (`uv lock` updates the lock).
# Nothing is installed when uv.lock, pyproject.toml, uv and the interpreter are as at the last
# install. Needs only python3: uv itself is pip-installed once, at a pinned version, into
# ${XDG_CACHE_HOME:-~/.cache}/leadwheel/ (shared by every checkout on the machine).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
UV_VERSION=0.13.8
python=$(command -v "${PYTHON:-python3}")
python=$("$python" -c 'import sys; print(sys.executable)')  # the interpreter itself, not a shim
export UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1

tools=${LEADWHEEL_TOOLS:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/leadwheel}
uv=$tools/uv-$UV_VERSION/bin/uv
if [ ! -x "$uv" ]; then
    # pip from a throw-away virtualenv (a system python's packages are never touched) installs it
    # into a directory that is moved into place in one rename: of two set-ups at once, one wins
    mkdir -p "$tools"
    tmp=$(mktemp -d "$tools/.uv-$UV_VERSION.XXXXXX")
    if ! out=$("$python" -m venv "$tmp/venv" 2>&1 && "$tmp/venv/bin/python" -m pip install -q \
        --disable-pip-version-check --target "$tmp/uv" "uv==$UV_VERSION" 2>&1); then
        echo "$out" >&2
        rm -rf "$tmp"
        echo "setup.sh: could not install uv $UV_VERSION with $python" >&2
        exit 1
    fi
    mv -T "$tmp/uv" "$tools/uv-$UV_VERSION" 2>/dev/null || true
    rm -rf "$tmp"
fi

stamp=.venv/.leadwheel-installed
want=$(cat uv.lock pyproject.toml | sha256sum | cut -d' ' -f1)-uv$UV_VERSION-$python
if [ ! -x .venv/bin/python ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$uv" sync --locked --extra dev --compile-bytecode --python "$python" --quiet
    ln -sfn "$uv" .venv/bin/uv  # the tests and scripts/test.sh use this uv
    echo "$want" >"$stamp"
fi
