#!/usr/bin/env bash
# The pull-request report of .github/workflows/pr-report.yml; run it anywhere to see what the job would post:
#   .github/scripts/pr-report.sh BASE HEAD PR_NUMBER OUT RUN_URL
# Compares HEAD with its merge base with BASE (what the pull request changes, not what BASE gained since) and writes
# OUT/report.md with its images (slr-report), OUT/comment.md (the same with each image as a link to RUN_URL, whose
# artifact holds them: posted where images are not published) and OUT/pr.json (the pull request it is for).
set -euo pipefail
if [[ $# -ne 5 ]]; then
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
base=$1 head=$2 number=$3 out=$(realpath -m "$4") run_url=$5
[[ $number =~ ^[0-9]{1,9}$ ]] || { echo "error: PR_NUMBER must be a number, got '$number'" >&2; exit 2; }
[[ $run_url =~ ^https?://[A-Za-z0-9./:_-]+$ ]] || { echo "error: RUN_URL must be a plain URL, got '$run_url'" >&2; exit 2; }
cd "$(git rev-parse --show-toplevel)"
head_sha=$(git rev-parse --verify "$head^{commit}")
# A pull_request job checks out a merge commit whose dvc.lock is a textual merge of both sides: compare the PR's
# own head with where it forked instead.
merge_base=$(git merge-base "$base" "$head_sha")
PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" python -m slr.review "$merge_base" "$head_sha" --out "$out"
printf '{"number": %d, "head_sha": "%s", "base_sha": "%s"}\n' "$number" "$head_sha" "$merge_base" > "$out/pr.json"
# slr-report escapes every text it reads from a revision, so an image's alt text holds no ']' and its path no ')'
{
    sed -E "s#!\[([^]]*)\]\([^)]*\)#[\1](${run_url})#g" "$out/report.md"
    printf '\nImages: not published with this comment; they are in the artifact pr-report of [the run](%s).\n' \
        "$run_url"
} > "$out/comment.md"
