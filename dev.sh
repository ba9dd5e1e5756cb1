#!/usr/bin/env bash
# One entry point for the two things people do here; each sets up .venv first if it is missing or stale.
#   ./dev.sh repro [dvc repro args]   run the pipeline (the embedded synthetic default) with DVC
#   ./dev.sh test [pytest args]       run the test suite
#   ./dev.sh setup                    only create/update .venv
set -euo pipefail
cd "$(dirname "$0")"

# Python: $PYTHON if set, else the newest of python3.13, python3.12, python3.11 and python3 that runs and is 3.11 to
# 3.13 (the versions every pinned package has wheels for, and that CI tests).
SUPPORTED='import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))'
if [[ -z ${PYTHON:-} ]]; then
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null && "$candidate" -c "$SUPPORTED" 2>/dev/null; then
            PYTHON=$candidate
            break
        fi
    done
fi
VENV=${VENV:-.venv}  # another folder for a second Python beside the first (.ci/run: VENV=.venv-second)
STAMP=$VENV/.installed

setup() {
    if [[ -z ${PYTHON:-} ]] || ! command -v "$PYTHON" >/dev/null; then
        echo "error: no Python 3.11, 3.12 or 3.13 found${PYTHON:+ ($PYTHON not found)}; install one, or set PYTHON=/path/to/python3.1x" >&2
        exit 2
    fi
    if ! "$PYTHON" -c "$SUPPORTED" 2>/dev/null; then
        echo "error: PYTHON=$PYTHON is $("$PYTHON" --version 2>&1), not 3.11, 3.12 or 3.13; set PYTHON to one of those" >&2
        exit 2
    fi
    local want
    want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
    if [[ -f $STAMP && $(cat "$STAMP") == "$want" ]]; then
        return
    fi
    echo "setup: installing pinned requirements into $VENV (torch is a large download the first time)"
    if [[ ! -x $VENV/bin/python ]]; then
        echo "setup: a virtual environment of $("$PYTHON" --version) ($PYTHON)"
        "$PYTHON" -m venv "$VENV"
    fi
    echo "setup: step 1 of 2, the pinned requirements (pip lists each package as it goes)"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -r requirements.txt 2> >(grep -v "^WARNING: Location" >&2)
    echo "setup: step 2 of 2, this project (editable)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e . 2> >(grep -v "^WARNING: Location" >&2)
    echo "$want" > "$STAMP"
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case "$cmd" in
    setup) setup ;;
    repro)
        setup
        export PATH="$PWD/$VENV/bin:$PATH" DVC_NO_ANALYTICS=1
        dvc repro "$@"
        ;;
    test)
        setup
        export PATH="$PWD/$VENV/bin:$PATH" DVC_NO_ANALYTICS=1
        python -m pytest "$@"
        ;;
    *)
        sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
