"""slr-report: compare two runs for a review, or a grid of experiments, in one markdown report with its images.

  slr-report BASE [TARGET]            TARGET defaults to the workspace; each a git revision, a branch, a `dvc exp`
                                      name or `workspace`
  slr-report --exps [COMMIT]          every experiment of COMMIT (default HEAD) against its committed results
                                      (or --baseline REV)

The report goes to OUT/report.md (default report/), its images to OUT/images/: relative links, so the folder renders
as it is on GitHub and GitLab, or as a pull-request comment (.github/workflows/pr-report.yml).
"""

from __future__ import annotations

import html
from pathlib import Path

from slr.cli import run_main, stage_parser
from slr.errors import UserError
from slr.files import atomic_dir
from slr.review.revisions import WORKSPACE, repo_root, resolve

REPORT_FILES = {"report.md", "images"}  # what a report folder holds: the only folder --out may replace


def check_out(out: Path) -> None:
    """Refuse to replace a folder that is not an earlier report (a typo like `--out .` would take the clone)."""
    if out.exists() and (not out.is_dir() or not {p.name for p in out.iterdir()} <= REPORT_FILES):
        raise UserError(f"--out {out} exists and is not a report folder (it holds more than report.md and images/): "
                        "give a new or empty folder")


def pair_report(root: Path, base: str, target: str, out: Path) -> str:
    """Write the report of `base` vs `target` to `out`; return its verdict line."""
    from slr.review.compare import compare, load_run
    from slr.review.markdown import report, verdict
    from slr.review.render import render

    comparison = compare(load_run(resolve(root, base)), load_run(resolve(root, target)))
    with atomic_dir(out) as tmp:
        images = render(root, base, target, tmp)
        (tmp / "report.md").write_text(report(comparison, images))
    return verdict(comparison)


def grid_report(root: Path, commit: str, baseline: str | None, out: Path) -> str:
    """Write the report of the experiments of `commit` to `out`; return its first line."""
    from slr.review.grid import grid_report as render_grid
    from slr.review.grid import load_grid

    grid = load_grid(root, commit, baseline)
    with atomic_dir(out) as tmp:
        (tmp / "report.md").write_text(render_grid(grid))
    return f"{len(grid.names)} experiments of {commit} against {grid.baseline.revision.label}"


def main() -> None:
    parser = stage_parser(__doc__, params=False)
    parser.add_argument("revisions", nargs="*", metavar="REV", help="BASE [TARGET], or with --exps the COMMIT")
    parser.add_argument("--exps", action="store_true", help="report every experiment of one commit (a grid)")
    parser.add_argument("--baseline", metavar="REV", help="with --exps: the run to compare each experiment with")
    parser.add_argument("--out", type=Path, default=Path("report"), help="report folder (default: %(default)s)")
    args = parser.parse_args()
    root = repo_root(Path.cwd())
    check_out(args.out)
    if args.exps:
        if len(args.revisions) > 1:
            raise UserError("--exps takes at most one COMMIT (whose experiments to report)")
        headline = grid_report(root, args.revisions[0] if args.revisions else "HEAD", args.baseline, args.out)
    else:
        if not 1 <= len(args.revisions) <= 2 or args.baseline:
            raise UserError("give BASE [TARGET] (e.g. `slr-report main`), or --exps [COMMIT] [--baseline REV]")
        base, target = args.revisions[0], args.revisions[1] if len(args.revisions) == 2 else WORKSPACE
        headline = pair_report(root, base, target, args.out)
    print(html.unescape(headline))
    print(f"report: {args.out / 'report.md'}")


def cli() -> None:
    run_main(main)
