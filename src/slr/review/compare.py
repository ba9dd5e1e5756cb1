"""Two runs side by side: the params that differ, the metrics with the interval of each change (paired clip by clip
when both runs scored the same test clips), McNemar's test, the verdict, and the glosses that moved most.

Everything read from a revision is data: it is compared and printed, never evaluated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from slr.errors import UserError
from slr.predictions import Predictions, loads
from slr.review.revisions import Revision
from slr.review.staleness import MISSING, flatten, parse_yaml, stale_stages
from slr.review.stats import McNemar, Distribution, difference, hits_from_count, mcnemar, resample_mean

METRICS, REPORT, PREDICTIONS = "metrics/eval.json", "reports/eval.json", "reports/predictions.json"
BY_GLOSS = "plots/eval/order_by_gloss.json"
GLOSS_ROWS = 10  # glosses listed each way (up, down) per table
# Shown side by side without an interval: (label, key path in metrics/eval.json)
PLAIN = (("ordered top-5", "ordered.top5"), ("ordered mean per-class top-1", "ordered.mean_class_top1"),
         ("ordered loss", "ordered.loss"), ("shuffled top-5", "shuffled.top5"), ("reversed top-1", "reversed.top1"),
         ("sweep mean top-1", "sweep.top1_mean"))


@dataclass(frozen=True)
class Run:
    """What a report needs of one revision's committed results."""

    revision: Revision
    params: dict
    metrics: dict
    num_test: int | None  # test clips scored (reports/eval.json), for intervals without per-clip predictions
    predictions: Predictions | None
    by_gloss: list[dict] | None
    stale: dict[str, list[str]]

    @property
    def model(self) -> str:
        return str(self.params.get("model", "?"))

    def metric(self, dotted: str) -> float | None:
        value: Any = self.metrics
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def load_run(revision: Revision) -> Run:
    """The results of `revision`; a one-line error if it has none."""
    files = revision.read_many(["params.yaml", METRICS, REPORT, PREDICTIONS, BY_GLOSS])
    if METRICS not in files:
        raise UserError(f"{revision.label} has no {METRICS}: run `dvc repro` (and commit the results) first")
    where = f"{PREDICTIONS} of {revision.label}"
    report = json.loads(files[REPORT]) if REPORT in files else {}
    return Run(revision, parse_yaml(files.get("params.yaml", b"")) or {}, json.loads(files[METRICS]),
               (report.get("test") or {}).get("num_videos"),
               loads(files[PREDICTIONS].decode(), where) if PREDICTIONS in files else None,
               json.loads(files[BY_GLOSS]) if BY_GLOSS in files else None, stale_stages(revision))


@dataclass(frozen=True)
class Pairing:
    """Whether two runs scored the same test clips, and if so the target's row for each of the base's rows."""

    paired: bool
    reason: str  # why not (empty when paired)
    target_rows: list[int]


def pairing(base: Run, target: Run) -> Pairing:
    """Paired only when both runs have per-clip predictions of the same copy and the same clips (ids and glosses)."""
    b, t = base.predictions, target.predictions
    missing = [run.revision.label for run in (base, target) if run.predictions is None]
    if b is None or t is None:
        return Pairing(False, f"{' and '.join(missing)} {'have' if len(missing) > 1 else 'has'} no per-clip "
                       f"predictions ({PREDICTIONS}: results committed before they existed)", [])
    if b.copy != t.copy:
        return Pairing(False, f"the test clips come from different copies of the data (copy {b.copy} vs {t.copy})",
                       [])
    base_ids, target_ids = b.by_id(), t.by_id()
    if base_ids.keys() != target_ids.keys():
        only_b, only_t = len(base_ids.keys() - target_ids.keys()), len(target_ids.keys() - base_ids.keys())
        return Pairing(False, f"different test clips ({only_b} only in the base, {only_t} only in the target)", [])
    relabelled = sum(base_ids[v][0] != target_ids[v][0] for v in base_ids)
    if relabelled:
        return Pairing(False, f"{relabelled} test clips carry another gloss in the target (another split?)", [])
    return Pairing(True, "", [target_ids[v][1] for v in b.video_ids])


@dataclass(frozen=True)
class Change:
    """One metric of both runs, its change, and the change's 95% interval (None where none can be computed)."""

    label: str
    base: float | None
    target: float | None
    interval: tuple[float, float] | None = None
    test: McNemar | None = None

    @property
    def change(self) -> float | None:
        return None if self.base is None or self.target is None else self.target - self.base


def hits(p: Predictions, column: str, rows: list[int] | None = None) -> np.ndarray:
    h = np.array(p.hits(column), dtype=np.int64)
    return h if rows is None else h[rows]


def interval_changes(base: Run, target: Run, pair: Pairing) -> list[Change]:
    """Ordered top-1, shuffled top-1 and the drop between them: each change with its interval (paired, or else
    unpaired), and McNemar's test for the top-1s when paired."""
    b, t = base.predictions, target.predictions
    changes = []
    for column in ("ordered", "shuffled"):
        label, key = f"{column} top-1", f"{column}.top1"
        if pair.paired:
            bh, th = hits(b, column), hits(t, column, pair.target_rows)
            changes.append(Change(label, base.metric(key), target.metric(key), resample_mean(th - bh).interval(),
                                  mcnemar(bh, th)))
        else:
            dists = [count_distribution(run, column, key) for run in (target, base)]
            changes.append(Change(label, base.metric(key), target.metric(key),
                                  None if None in dists else difference(*dists).interval()))
    if pair.paired:
        drop = (hits(t, "ordered", pair.target_rows) - hits(t, "shuffled", pair.target_rows)
                - hits(b, "ordered") + hits(b, "shuffled"))
        interval = resample_mean(drop).interval()
    elif b is not None and t is not None:
        interval = difference(*(resample_mean(hits(p, "ordered") - hits(p, "shuffled")) for p in (t, b))).interval()
    else:
        interval = None  # the drop pairs ordered and shuffled within a run: it needs the per-clip predictions
    changes.append(Change("drop (ordered - shuffled top-1)", base.metric("drop.top1"), target.metric("drop.top1"),
                          interval))
    return changes


def count_distribution(run: Run, column: str, key: str) -> Distribution | None:
    """One run's bootstrap distribution of a top-1 on its own clips: from its predictions, else from its top-1 and
    clip count."""
    if run.predictions is not None:
        return resample_mean(hits(run.predictions, column))
    top1 = run.metric(key)
    if top1 is None or not run.num_test:
        return None
    return resample_mean(hits_from_count(round(top1 * run.num_test), run.num_test))


def params_diff(base: Run, target: Run) -> list[tuple[str, Any, Any]]:
    """(dotted key, base value, target value) of every param that differs; a key a run lacks has value MISSING."""
    b, t = flatten(base.params), flatten(target.params)
    return [(k, b.get(k, MISSING), t.get(k, MISSING)) for k in sorted(set(b) | set(t))
            if b.get(k, MISSING) != t.get(k, MISSING)]


@dataclass(frozen=True)
class GlossChange:
    gloss: str
    clips: int
    base: float
    target: float


def gloss_changes(base: Run, target: Run, field: str) -> tuple[list[GlossChange], list[GlossChange], int, int]:
    """The glosses whose `field` (of plots/eval/order_by_gloss.json) rose and fell most: up to GLOSS_ROWS each way,
    largest first, and how many rose and fell in all."""
    if base.by_gloss is None or target.by_gloss is None:
        return [], [], 0, 0
    before = {r["gloss"]: r for r in base.by_gloss}
    moved = [GlossChange(r["gloss"], r["clips"], before[r["gloss"]][field], r[field])
             for r in target.by_gloss if r["gloss"] in before and r[field] != before[r["gloss"]][field]]
    up = sorted((m for m in moved if m.target > m.base), key=lambda m: (m.base - m.target, m.gloss))
    down = sorted((m for m in moved if m.target < m.base), key=lambda m: (m.target - m.base, m.gloss))
    return up[:GLOSS_ROWS], down[:GLOSS_ROWS], len(up), len(down)


@dataclass(frozen=True)
class Comparison:
    base: Run
    target: Run
    pairing: Pairing
    changes: list[Change]  # ordered top-1, shuffled top-1, drop: with intervals
    plain: list[Change]  # the other metrics, side by side

    @property
    def clips(self) -> int | None:
        p = self.base.predictions
        return len(p.video_ids) if p is not None and self.pairing.paired else None

    def verdict_word(self) -> str:
        """On ordered top-1: "better"/"worse" only when the paired interval of the change excludes 0."""
        ordered = self.changes[0]
        if not self.pairing.paired:
            return "not comparable clip by clip"
        low, high = ordered.interval
        if low == high == 0:
            return "no change"
        return "better" if low > 0 else "worse" if high < 0 else "no clear difference"


def compare(base: Run, target: Run) -> Comparison:
    pair = pairing(base, target)
    plain = [Change(label, base.metric(key), target.metric(key)) for label, key in PLAIN]
    return Comparison(base, target, pair, interval_changes(base, target, pair), plain)
