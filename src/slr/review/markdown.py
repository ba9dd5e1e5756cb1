"""The report as markdown that GitHub and GitLab render alike: tables, relative image links, and every string read
from a revision (params, gloss names, revision names) escaped so that it shows as text, never as markup, a link,
a mention or a table cell boundary.
"""

from __future__ import annotations

import json
from typing import Any

from slr.review.compare import GLOSS_ROWS, Change, Comparison, Run, gloss_changes, params_diff
from slr.review.staleness import MISSING
from slr.review.render import PlotImages

LONG = 80  # characters of a param value shown before it is cut
# Markup characters of GitHub's and GitLab's markdown (and @mentions, #references, $math$), written as HTML entities
ESCAPES = {c: f"&#{ord(c)};" for c in "\\`*_[]<>#!|~&@$"}
PLOTS_FIRST = ("frame-order", "confusion-test", "order-sensitive-glosses", "per-class-f1")


def text(value: Any, limit: int = LONG) -> str:
    """`value` as inert markdown text on one line (JSON for anything but a string), cut to `limit` characters."""
    if value is MISSING:
        return "(absent)"
    raw = value if isinstance(value, str) else json.dumps(value)
    raw = " ".join(raw.split())
    if len(raw) > limit:
        raw = raw[: limit - 1] + "…"
    return "".join(ESCAPES.get(c, c) for c in raw if c.isprintable())


def code(value: str) -> str:
    """A revision name or path in code style, safe whatever it holds."""
    return f"<code>{text(value)}</code>"


def points(value: float | None, signed: bool = True) -> str:
    """A fraction as percentage points, e.g. +4.1."""
    return "n/a" if value is None else f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}"


def span(interval: tuple[float, float] | None) -> str:
    """An interval of a change in points, e.g. +1.2..+7.0."""
    return "n/a" if interval is None else f"{points(interval[0])}..{points(interval[1])}"


def number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def pvalue(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.2g}" if p < 0.995 else "1"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def name(run: Run) -> str:
    """What a run is called in the verdict: its model where the models differ, else its revision."""
    return text(run.revision.label)


def verdict(c: Comparison) -> str:
    """The one-line verdict on ordered top-1, e.g. "MC3_18 vs R3D_18: ordered top-1 +4.1 points (paired 95% CI
    +1.2..+7.0, McNemar p = 0.006, 258 test clips): better"."""
    base, target = (text(r.model) if c.base.model != c.target.model else name(r) for r in (c.base, c.target))
    ordered = c.changes[0]
    figures = []
    if ordered.interval is not None:
        kind = "paired" if c.pairing.paired else "unpaired"
        figures.append(f"{kind} 95% CI {span(ordered.interval)}")
    if ordered.test is not None:
        figures.append(f"McNemar p = {pvalue(ordered.test.p)}")
    if c.clips is not None:
        figures.append(f"{c.clips} test clips")
    detail = f" ({', '.join(figures)})" if figures else ""
    return f"{target} vs {base}: ordered top-1 {points(ordered.change)} points{detail}: {c.verdict_word()}"


def stale_lines(runs: list[tuple[str, Run]]) -> list[str]:
    lines = []
    for role, run in runs:
        if run.stale:
            stages = "; ".join(f"**{text(s)}** ({text(', '.join(why), 200)})" for s, why in run.stale.items())
            lines.append(f"> **Stale results in the {role}** ({code(run.revision.label)}): its dvc.lock does not match "
                         f"its params, code or committed results, as `dvc status` would show, in {stages}. Its "
                         "numbers may not belong to its params and code: `dvc repro` makes them again.")
    return lines


def runs_table(c: Comparison) -> list[str]:
    rows = [["revision", code(c.base.revision.label), code(c.target.revision.label)],
            ["model", text(c.base.model), text(c.target.model)],
            ["test clips", *(str(r.num_test) if r.num_test else "n/a" for r in (c.base, c.target))],
            ["WLASL copy", *(text(r.metrics.get("copy") or "n/a") for r in (c.base, c.target))],
            *([label, *(text(", ".join(str(r.metrics.get(k, "n/a")) for k in keys)) for r in (c.base, c.target))]
              for label, keys in (("device, precision", ("device", "precision")),
                                  ("threads, torch, CPU", ("threads", "torch", "cpu"))))]
    return table(["", "base", "target"], rows)


def change_row(change: Change, paired: bool) -> list[str]:
    interval = span(change.interval) + ("" if change.interval is None else " (paired)" if paired else " (unpaired)")
    test = "" if change.test is None else f"{pvalue(change.test.p)} (+{change.test.gained} / -{change.test.lost})"
    return [change.label, number(change.base), number(change.target), points(change.change), interval, test]


def metrics_section(c: Comparison) -> list[str]:
    rows = [change_row(ch, c.pairing.paired) for ch in c.changes]
    rows += [[ch.label, number(ch.base), number(ch.target),
              "n/a" if ch.change is None else f"{ch.change:+.3f}", "", ""] for ch in c.plain]
    lines = ["## Metrics", "", *table(["metric (test set)", "base", "target", "change (points)",
                                        "95% interval of the change", "McNemar p (clips gained / lost)"], rows), ""]
    if c.pairing.paired:
        lines.append(f"Paired: both runs scored the same {c.clips} test clips of the same copy, so each interval "
                     "resamples clips and counts each drawn clip in both runs (the exact bootstrap distribution, "
                     "2.5% and 97.5% quantiles), and McNemar's exact test weighs the clips only one run gets right.")
    else:
        lines.append(f"**Not comparable clip by clip**: {text(c.pairing.reason, 300)}. The intervals are unpaired "
                     "(each run's test clips resampled on their own, from its per-clip predictions or its top-1 and "
                     "clip count), wider than a paired one, and there is no McNemar test.")
    return lines + [""]


def gloss_section(c: Comparison, field: str, title: str) -> list[str]:
    up, down, n_up, n_down = gloss_changes(c.base, c.target, field)
    lines = [f"## {title}", ""]
    if c.base.by_gloss is None or c.target.by_gloss is None:
        return lines + ["Not available: a run has no `plots/eval/order_by_gloss.json`.", ""]
    lines.append(f"{n_up} glosses rose and {n_down} fell; at most {GLOSS_ROWS} each way, largest first:"
                 if up or down else "No gloss changed.")
    for heading, moved in (("up", up), ("down", down)):
        if moved:
            lines += ["", *table(["gloss", "test clips", "base", "target", f"change ({heading})"],
                                 [[text(m.gloss), str(m.clips), f"{m.base:.2f}", f"{m.target:.2f}",
                                   f"{m.target - m.base:+.2f}"] for m in moved])]
    return lines + [""]


def plots_section(images: PlotImages, c: Comparison) -> list[str]:
    lines = ["## Plots (`dvc plots diff`)", ""]
    first = [p for p in PLOTS_FIRST if p in images.charts]
    for plot_id in first + sorted(p for p in images.charts if p not in first):
        lines += [f"### {text(plot_id)}", ""]
        if plot_id in images.only_in:
            lines += [f"Only {', '.join(code(r) for r in images.only_in[plot_id])} has this plot's data.", ""]
        lines += [f"![{text(plot_id)}]({images.charts[plot_id]})", ""]
    if images.errors:
        lines += ["DVC could not load some plots (a revision that lacks a plot's file is left out of it):", "",
                  *(f"- {text(e, 300)}" for e in images.errors), ""]
    if images.images:
        lines += ["## Images (`plots/eval/images`)", "",
                  *table([f"base {code(c.base.revision.label)}", f"target {code(c.target.revision.label)}"],
                         [[f"![base {text(n)}]({sides['base']})" if "base" in sides else "(none)",
                           f"![target {text(n)}]({sides['target']})" if "target" in sides else "(none)"]
                          for n, sides in sorted(images.images.items())]), ""]
    return lines


def report(c: Comparison, images: PlotImages) -> str:
    """The whole report.md of a comparison."""
    lines = [f"# {name(c.target)} vs {name(c.base)}", "", f"**{verdict(c)}**", ""]
    stale = stale_lines([("base", c.base), ("target", c.target)])
    if stale:
        lines += [*stale, ""]
    lines += [
        "The verdict is on ordered top-1: *better* or *worse* only when the paired 95% interval of the change "
        "excludes 0. That interval covers which test clips were drawn, not training: runs of one configuration "
        "with other seeds differ too (`slr-report --exps` on a seed grid gives that spread). A verdict needs both.",
        "", "## Runs", "", *runs_table(c), "", "## Params that differ", ""]
    diff = params_diff(c.base, c.target)
    lines += [*table(["param", "base", "target"], [[code(k), text(b), text(t)] for k, b, t in diff]), ""] if diff \
        else ["None.", ""]
    lines += metrics_section(c)
    lines += gloss_section(c, "ordered", "Glosses whose ordered top-1 recall changed most")
    lines += gloss_section(c, "drop_sweep", "Order sensitivity per gloss: ordered recall minus the sweep's mean")
    lines += plots_section(images, c)
    return "\n".join(lines).rstrip() + "\n"
