#!/usr/bin/env bash
# Makes docs/review-example/ again: `slr-report` of two real runs of the synthetic default, R3D_18 (the baseline)
# against MC3_18 (`dvc exp run -S model=MC3_18`), in a temporary clone of this repository's HEAD (your workspace and
# its experiments are untouched). About 4 minutes on 2 cores; commit docs/review-example/ afterwards.
#   docs/review-example/make.sh
set -euo pipefail
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/clone"
cd "$work/clone"
git config user.name "review example"
git config user.email "review-example@slr.invalid"
export DVC_NO_ANALYTICS=1 PYTHONPATH="$PWD/src"
# A clone has no DVC cache, so the baseline runs again; on the machine type that committed HEAD's results it makes
# them byte for byte. Where it does not (stale results, another CPU), this machine's run is committed in the clone
# and is the example's baseline.
dvc repro
if [[ -n $(git status --porcelain) ]]; then
    echo "note: HEAD's committed results are not this machine's run of its params and code; the example uses this run"
    git add -A
    git commit -qm "the baseline as this machine runs it"
fi
dvc exp run -n mc3-example -S model=MC3_18
python -m slr.review HEAD mc3-example --out "$work/report"
rm -rf "$repo/docs/review-example/report.md" "$repo/docs/review-example/images"
cp -r "$work/report/report.md" "$work/report/images" "$repo/docs/review-example/"
echo "docs/review-example/ written: review it, then commit it"
