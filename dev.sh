#!/usr/bin/env bash
# One entry point for the two things people do here; each sets up .venv first if it is missing or stale.
#   ./dev.sh repro [dvc repro args]   run the pipeline (the embedded synthetic default) with DVC
#   ./dev.sh test [pytest args]       run the test suite
#   ./dev.sh setup                    only create/update .venv
set -euo pipefail
cd "$(dirname "$0")"

# Python 3.11: $PYTHON if set, else python3.11, else a python3 that is 3.11.
if [[ -z ${PYTHON:-} ]]; then
    PYTHON=python3.11
    if ! command -v python3.11 >/dev/null && python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
        PYTHON=python3
    fi
fi
VENV=.venv
STAMP=$VENV/.installed

setup() {
    command -v "$PYTHON" >/dev/null || { echo "error: $PYTHON not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2; exit 2; }
    local want
    want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
    if [[ -f $STAMP && $(cat "$STAMP") == "$want" ]]; then
        return
    fi
    echo "setup: installing pinned requirements into $VENV (torch is a large download the first time)"
    [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
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
