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
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt 2> >(grep -v "^WARNING: Location" >&2)
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e . 2> >(grep -v "^WARNING: Location" >&2)
    echo "$want" > "$STAMP"
}

# data.dvc tracks data/wlasl, the WLASL copy you bring, empty until then. DVC cannot check out or pull anything
# (`dvc exp apply`, `dvc pull`) while that empty folder's listing is missing from the cache, as it is in a fresh
# clone: record it, only while data.dvc still names the empty folder (never over a copy you have brought).
EMPTY_DIR=d751713988987e9331980363e24189ce.dir
seed_data_dvc() {
    if grep -q "md5: $EMPTY_DIR" data.dvc && [[ ! -f .dvc/cache/files/md5/${EMPTY_DIR:0:2}/${EMPTY_DIR:2} ]]; then
        mkdir -p data/wlasl && dvc commit -q -f data.dvc
    fi
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case "$cmd" in
    setup) setup ;;
    repro)
        setup
        export PATH="$PWD/$VENV/bin:$PATH" DVC_NO_ANALYTICS=1
        seed_data_dvc
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
