"""A grid of experiments of one commit (the queued grid), in one table: every experiment with its intervals and its
paired comparison with one baseline, the p-values Holm-corrected (k experiments against one baseline are k tests),
and the mean and spread of runs that differ only in their seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slr.errors import UserError
from slr.review.compare import Comparison, Run, compare, load_run, params_diff
from slr.review.markdown import code, number, points, pvalue, span, stale_lines, table, text
from slr.review.revisions import experiments, resolve
from slr.review.staleness import flatten
from slr.review.stats import holm

ALPHA = 0.05
SEED = "seed"  # the param whose runs are repeats of one configuration
FIGURES = (("ordered top-1", "ordered"), ("shuffled top-1", "shuffled"), ("drop", "drop"))


@dataclass(frozen=True)
class Grid:
    commit: str
    baseline: Run
    names: list[str]  # experiment names, by name
    comparisons: list[Comparison]  # each experiment (target) against the baseline
    holm_p: list[float | None]  # Holm-adjusted McNemar p of ordered top-1, None where not paired


def load_grid(root: Path, commit: str, baseline: str | None) -> Grid:
    """The experiments whose baseline is `commit`, compared with `baseline` (default: the commit's own results)."""
    sha = resolve(root, commit).sha
    if sha is None:
        raise UserError("--exps reports the experiments of a commit: name one (default HEAD), not the workspace")
    found = [(name, exp) for name, exp, parent in experiments(root) if parent == sha]
    if not found:
        raise UserError(f"no experiments of {commit} ({sha[:7]}): run them first (`dvc exp run --queue -S ...` and "
                        "`dvc queue start`), or name their commit (`dvc exp show` lists them)")
    base = load_run(resolve(root, baseline or commit))
    comparisons = [compare(base, load_run(resolve(root, exp))) for _, exp in found]
    tested = [i for i, c in enumerate(comparisons) if c.changes[0].test is not None]
    adjusted = dict(zip(tested, holm([comparisons[i].changes[0].test.p for i in tested])))
    return Grid(commit, base, [n for n, _ in found], comparisons, [adjusted.get(i) for i in range(len(found))])


def grid_verdict(c: Comparison, adjusted: float | None) -> str:
    """A pair's verdict (`Comparison.verdict_word`), where better or worse also needs the Holm-corrected p below
    ALPHA: the grid's comparisons are several tests at once."""
    word = c.verdict_word()
    if word in ("better", "worse") and adjusted is not None and adjusted >= ALPHA:
        return "no clear difference"
    return word


def with_interval(run: Run, key: str) -> str:
    value, low, high = (run.metric(f"{key}.{k}") for k in ("top1", "top1_low", "top1_high"))
    return number(value) + ("" if low is None or high is None else f" ({low:.2f}..{high:.2f})")


def seed_groups(runs: list[tuple[str, Run]]) -> list[tuple[str, list[tuple[str, Run]]]]:
    """Runs that differ only in `seed`, grouped (groups of 2 or more): (the configuration's params, its runs)."""
    groups: dict[str, list[tuple[str, Run]]] = {}
    for name, run in runs:
        config = {k: v for k, v in flatten(run.params).items() if k != SEED}
        groups.setdefault(json.dumps(config, sort_keys=True, default=str), []).append((name, run))
    return [(key, members) for key, members in groups.items() if len(members) > 1]


def seeds_section(grid: Grid) -> list[str]:
    runs = [("baseline", grid.baseline), *((n, c.target) for n, c in zip(grid.names, grid.comparisons))]
    groups = seed_groups(runs)
    if not groups:
        return []
    rows = []
    for _, members in groups:
        label = ", ".join(text(f"{n} (seed {r.params.get(SEED)})") for n, r in members)
        cells = []
        for _, key in FIGURES:
            values = np.array([r.metric(f"{key}.top1") for _, r in members], dtype=float)
            cells.append(f"{values.mean():.3f} ± {values.std(ddof=1):.3f} ({values.min():.2f}..{values.max():.2f})")
        rows.append([label, str(len(members)), *cells])
    return ["## Seeds: one configuration trained several times", "",
            *table(["runs", "n", *(f"{label}: mean ± sd (min..max)" for label, _ in FIGURES)], rows), "",
            "The seed spread covers training (initialisation, batch order, augmentation) on the same test clips; a "
            "paired interval covers which test clips were drawn. A difference between configurations is real only "
            "when it exceeds both.", ""]


def grid_report(grid: Grid) -> str:
    """The report.md of a grid."""
    base = grid.baseline
    header = ["experiment", "params that differ from the baseline", *(f"{label} (95%)" for label, _ in FIGURES),
              "ordered top-1 change (paired 95%)", "McNemar p", "Holm p", "verdict"]
    rows = [[f"baseline {code(base.revision.label)}", "", *(with_interval(base, key) for _, key in FIGURES),
             "", "", "", ""]]
    for name, c, adjusted in zip(grid.names, grid.comparisons, grid.holm_p):
        ordered = c.changes[0]
        differ = ", ".join(f"{k}={json.dumps(t)}" for k, _, t in params_diff(base, c.target))
        rows.append([code(name), text(differ, 200), *(with_interval(c.target, key) for _, key in FIGURES),
                     f"{points(ordered.change)} ({span(ordered.interval)})",
                     "" if ordered.test is None else pvalue(ordered.test.p),
                     "" if adjusted is None else pvalue(adjusted), grid_verdict(c, adjusted)])
    lines = [f"# {len(grid.names)} experiments of {code(grid.commit)} against {code(base.revision.label)}", "",
             *stale_lines([(f"experiment {n}", c.target) for n, c in zip(grid.names, grid.comparisons)]
                          + [("baseline", base)]), "", *table(header, rows), "",
             f"Each experiment is compared with the baseline on the same test clips (paired; McNemar's exact test on "
             f"ordered top-1). {len(grid.names)} comparisons with one baseline are {len(grid.names)} tests at once: "
             f"the Holm column corrects their p-values for that, and the verdict is *better* or *worse* only where "
             f"the Holm-corrected p is below {ALPHA}. The intervals in the metric columns are each run's own (from "
             "its metrics/eval.json), over its test clips.", ""]
    not_paired = [(n, c.pairing.reason) for n, c in zip(grid.names, grid.comparisons) if not c.pairing.paired]
    lines += [f"- {code(n)}: not comparable clip by clip: {text(why, 300)}" for n, why in not_paired]
    return "\n".join([*lines, "", *seeds_section(grid)]).rstrip() + "\n"
