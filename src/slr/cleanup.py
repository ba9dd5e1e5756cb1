"""`slr-cleanup`: keep the best and the latest `dvc exp` experiment of each group, remove the rest, free their cache.

Every experiment keeps its checkpoints (models/best.pth, models/last.pth: 46 MB and 138 MB for MC3_18) in the DVC
cache, so old experiments fill the disk. This groups the experiments by params (default: model and data.split),
keeps in each group the best one by a metric and the latest one, and removes the others with `dvc exp remove`; then
`dvc gc --workspace --all-commits --all-experiments` deletes the cache objects that nothing left uses. Commits,
branches, tags and the workspace are never touched, and neither is their data: only experiments are removed.

By default it is a dry run: it prints every experiment with its group, metric, date and KEEP or REMOVE, the exact
commands, and every cache object gc would then delete, and deletes nothing. It deletes only with --yes, or after
you answer y at its prompt in a terminal; then it deletes what the dry run listed, and stops before gc if the cache
no longer matches that list.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from slr.cli import run_main, stage_parser
from slr.errors import UserError

DEFAULT_METRIC = "metrics/eval.json:ordered.top1"
DEFAULT_BY = "model,data.split"
# --all-commits keeps the data of every commit reachable from a branch, tag or HEAD (not only branch tips, as
# --all-branches would), --all-experiments that of the experiments left; gc always keeps the workspace's.
GC_COMMAND = ("dvc", "gc", "--workspace", "--all-commits", "--all-experiments", "--force")


@dataclass(frozen=True)
class Experiment:
    """One saved `dvc exp` experiment, as `dvc exp show --json` reports it."""

    name: str
    rev: str  # full commit SHA
    baseline: str  # full SHA of the commit it was run from
    timestamp: str  # ISO 8601, local time, as git records the experiment commit
    group: tuple[str, ...]
    metric: float | None  # None: the experiment has no such metric (e.g. its evaluation failed)
    outs: dict[str, str]  # cached output path -> hash


@dataclass(frozen=True)
class Plan:
    """What a cleanup keeps and removes, and the cache objects `dvc gc` deletes afterwards."""

    experiments: list[Experiment]
    keep: dict[str, tuple[str, ...]]  # experiment rev -> reasons ("best", "latest"); missing: removed
    unused: dict[str, int]  # cache object id -> bytes, as gc will find them once the experiments are gone

    @property
    def removed(self) -> list[Experiment]:
        return [exp for exp in self.experiments if exp.rev not in self.keep]

    @property
    def freed(self) -> str:
        return _bytes(sum(self.unused.values()))


def dvc(root: Path, *args: str) -> str:
    """Run `dvc args` in `root` with this Python's DVC; return stdout, or raise DVC's last error line."""
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()] or ["(no message)"]
        raise UserError(f"`dvc {' '.join(args)}` failed: {lines[-1].removeprefix('ERROR: ')}")
    return result.stdout


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1}: the dotted names `dvc exp show` and `-S` use."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def columns(files: dict) -> dict[str, object]:
    """exp show's {file: {"data": {...}}} as {"file:dotted.key": value}, skipping files DVC could not read."""
    return {f"{name}:{key}": value for name, file in files.items()
            for key, value in flatten(file.get("data") or {}).items()}


def resolve(name: str, available: set[str], what: str) -> str:
    """The file-qualified column `name` means: itself, or the one column whose key after `file:` is `name`."""
    if name in available:
        return name
    matches = sorted(column for column in available if column.split(":", 1)[1] == name)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UserError(f"{what} '{name}' is in several files; choose one of: {', '.join(matches)}")
    raise UserError(f"unknown {what} '{name}'; available: {', '.join(sorted(available))}")


def _finished(exp: dict) -> bool:
    """A saved experiment: run in the workspace (no executor) or by `dvc queue` to success."""
    executor = exp.get("executor")
    return executor is None or executor.get("state") == "success"


def read_experiments(root: Path, metric: str, by: list[str], all_commits: bool) -> tuple[list[Experiment], str]:
    """The saved experiments of HEAD's baseline (all baselines if `all_commits`), and the metric's column name.

    `dvc exp show --json` rather than `dvc.api.exp_show()`: the API flattens the table, rounds the creation time to
    the minute ("01:25 PM") and drops the file names, so neither "latest" nor a qualified metric survive it.
    Queued, running and failed runs have no commit of their own to remove, so they are never candidates; a run
    that `dvc queue` finished keeps an executor entry in state "success" and is one.
    """
    rows = json.loads(dvc(root, "exp", "show", "--json", *(["--all-commits"] if all_commits else [])))
    runs = [(row["rev"], rev) for row in rows for exp in row.get("experiments") or []
            if _finished(exp) for rev in exp["revs"]]
    if not runs:
        raise UserError(f"no experiments in {root}: nothing to clean up (`dvc exp run` saves experiments)")
    metrics = [columns(run["data"].get("metrics") or {}) for _, run in runs]
    params = [columns(run["data"].get("params") or {}) for _, run in runs]
    metric = resolve(metric, {key for m in metrics for key, value in m.items() if _is_number(value)}, "metric")
    keys = [resolve(key, set().union(*params), "param") for key in by]
    experiments = [
        Experiment(
            name=run["name"], rev=run["rev"], baseline=baseline, timestamp=run["data"]["timestamp"],
            group=tuple(str(param.get(key, "-")) for key in keys),
            metric=float(m[metric]) if _is_number(m.get(metric)) else None,
            outs={path: out["hash"] for path, out in (run["data"].get("outs") or {}).items()
                  if out.get("use_cache") and out.get("hash")},
        )
        for (baseline, run), m, param in zip(runs, metrics, params)
    ]
    return experiments, metric


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def choose(experiments: list[Experiment], lower_is_better: bool) -> dict[str, tuple[str, ...]]:
    """Per group, the best experiment by metric (ties: the later) and the latest; rev -> why it is kept."""
    keep: dict[str, tuple[str, ...]] = {}
    for group in {exp.group for exp in experiments}:
        members = sorted((exp for exp in experiments if exp.group == group), key=lambda exp: exp.timestamp)
        scored = [exp for exp in members if exp.metric is not None]
        if scored:
            sign = -1 if lower_is_better else 1
            best = max(reversed(scored), key=lambda exp: sign * exp.metric)  # reversed: ties go to the later
            keep[best.rev] = ("best",)
        latest = members[-1]
        keep[latest.rev] = (*keep.get(latest.rev, ()), "latest")
    return keep


def unused_cache(root: Path, keep_revs: list[str], all_experiments: bool) -> dict[str, int]:
    """The local cache objects `dvc gc -w -A` would delete keeping `keep_revs` (and all experiments if asked).

    This asks DVC's own `Repo.used_objs`, the call `dvc gc` makes (force=True as with gc's --force: a folder whose
    listing is missing from the cache does not stop it), because gc's own --dry run can only describe the present,
    not "after these experiments are gone".
    """
    from dvc.repo import Repo

    logging.getLogger("dvc").setLevel(logging.ERROR)  # its warnings about old commits' lock files are gc's business
    with Repo(str(root)) as repo:
        used = set()
        for objs in repo.used_objs(all_commits=True, all_experiments=all_experiments, revs=keep_revs,
                                   force=True).values():
            used |= {obj.value for obj in objs}
        return {oid: Path(odb.oid_to_path(oid)).stat().st_size
                for _, odb in repo.cache.by_scheme() if odb for oid in odb.all() if oid not in used}


def make_plan(root: Path, experiments: list[Experiment], lower_is_better: bool) -> Plan:
    """Choose what to keep, then find what gc deletes once the others are removed (other baselines' runs stay)."""
    keep = choose(experiments, lower_is_better)
    removed = {exp.rev for exp in experiments if exp.rev not in keep}
    remaining = [rev for rev in dvc(root, "exp", "list", "--all-commits", "--sha-only").split() if rev not in removed]
    return Plan(experiments, keep, unused_cache(root, remaining, all_experiments=False))


def commands(plan: Plan, head: str) -> list[tuple[str, ...]]:
    """The commands that carry the plan out: `dvc exp remove` (by name; by ref for other baselines), then gc."""
    refs = [exp.name if exp.baseline == head else f"refs/exps/{exp.baseline[:2]}/{exp.baseline[2:]}/{exp.name}"
            for exp in plan.removed]
    return ([("dvc", "exp", "remove", *refs)] if refs else []) + ([GC_COMMAND] if plan.unused else [])


def report(plan: Plan, metric: str, by: list[str], steps: list[tuple[str, ...]]) -> str:
    """The table of experiments, the commands, and the cache objects gc deletes, with what each one holds."""
    header = ("experiment", ",".join(by), metric.split(":", 1)[1], "created", "action")
    rows = [header] + [
        (exp.name, " ".join(exp.group), "-" if exp.metric is None else f"{exp.metric:.4g}", exp.timestamp,
         f"KEEP ({', '.join(plan.keep[exp.rev])})" if exp.rev in plan.keep else "REMOVE")
        for exp in sorted(plan.experiments, key=lambda exp: (exp.group, exp.timestamp))
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines += ["", "commands:", *(f"  {' '.join(step)}" for step in steps or [("(none: nothing to remove)",)])]
    if plan.unused:
        owners = {oid: f"{exp.name}: {path}" for exp in plan.removed for path, oid in exp.outs.items()}
        lines += ["", f"dvc gc then deletes {len(plan.unused)} cache objects, {plan.freed}:"]
        lines += [f"  {_bytes(size):>9}  {owners[oid]}  ({oid})" for oid, size in plan.unused.items() if oid in owners]
        if others := [size for oid, size in plan.unused.items() if oid not in owners]:
            lines.append(f"  {_bytes(sum(others)):>9}  {len(others)} other objects nothing uses (outputs of runs never "
                         "saved, files of removed folders)")
    return "\n".join(lines)


def _bytes(count: int) -> str:
    """184123456 -> "184.1 MB": decimal units, as DVC's own progress bars count."""
    units = ("B", "kB", "MB", "GB", "TB")
    power = 0
    while power < len(units) - 1 and count >= 1000 ** (power + 1):
        power += 1
    return f"{count} B" if power == 0 else f"{count / 1000 ** power:.1f} {units[power]}"


def confirmed(yes: bool, question: str) -> bool:
    """--yes, or a "y" typed in a terminal; never a default yes, and never a prompt read from a pipe."""
    if yes:
        return True
    if not sys.stdin.isatty():
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def execute(root: Path, plan: Plan, steps: list[tuple[str, ...]]) -> None:
    """Run the plan's commands; check before gc that it will delete exactly the planned objects."""
    for step in steps:
        if step == GC_COMMAND and set(unused_cache(root, [], all_experiments=True)) != set(plan.unused):
            raise UserError(f"the cache changed since the plan (a run or a removal meanwhile), so gc was not run; "
                             f"check `{' '.join(GC_COMMAND[:-1])} --dry`, then run it yourself")
        print(f"$ {' '.join(step)}", flush=True)
        dvc(root, *step[1:])


def main() -> None:
    parser = stage_parser(__doc__, params=False)
    parser.add_argument("--repo", type=Path, default=Path("."), help="the DVC project (default: this folder)")
    parser.add_argument("--metric", default=DEFAULT_METRIC,
                        help="metric that picks the best, [file:]dotted.key (default: %(default)s)")
    parser.add_argument("--lower-is-better", action="store_true", help="for losses, e.g. --metric best_val_loss")
    parser.add_argument("--by", default=DEFAULT_BY, help="comma-separated params that form groups (%(default)s)")
    parser.add_argument("-A", "--all-commits", action="store_true",
                        help="experiments of every baseline commit, not only HEAD's")
    parser.add_argument("--yes", action="store_true", help="delete without asking (default: dry run)")
    args = parser.parse_args()
    root = _project_root(args.repo)
    by = [key.strip() for key in args.by.split(",") if key.strip()]
    experiments, metric = read_experiments(root, args.metric, by, args.all_commits)
    plan = make_plan(root, experiments, args.lower_is_better)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    steps = commands(plan, head)
    print(report(plan, metric, by, steps))
    if not steps:
        return
    if not confirmed(args.yes, f"Remove {len(plan.removed)} experiments and {plan.freed} of cache?"):
        print("\ndry run: nothing deleted (pass --yes, or run it in a terminal and answer y)")
        return
    execute(root, plan, steps)
    print(f"removed {len(plan.removed)} experiments, freed {plan.freed}")


def _project_root(path: Path) -> Path:
    """The DVC project containing `path`, or a one-line error."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Path(Repo.find_root(str(path)))
    except NotDvcRepoError:
        raise UserError(f"{path.resolve()} is not in a DVC project: run slr-cleanup in one, or pass --repo") from None


def cli() -> None:
    """Console entry point (`slr-cleanup`)."""
    run_main(main)


if __name__ == "__main__":
    cli()
