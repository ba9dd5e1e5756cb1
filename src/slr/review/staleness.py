"""Whether a revision's results belong to its params and code: what `dvc status` would show for it, computed from
the revision's own files (no checkout, no DVC cache).

For each stage of the revision's dvc.yaml, its dvc.lock entry is compared with that revision's params.yaml (every
declared key), its command and declared deps, and the md5 of every dep and output that lives in git: code, and the
`cache: false` results (metrics, reports, plots). Data and models live in DVC's cache, not in git, and are not
checked; a stage whose inputs changed marks everything downstream of it as unreliable too, as `dvc repro` would rerun
it.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import yaml

from slr.review.revisions import Revision

PARAMS_FILE = "params.yaml"  # DVC's default params file and `vars` source
MISSING = object()  # a key a params file lacks


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading floats as YAML 1.2 does, as DVC's ruamel does: dvc.lock writes 1e-05, which
    YAML 1.1 (PyYAML) would read as a string."""


Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+"
               r"(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def parse_yaml(raw: bytes) -> Any:
    return yaml.load(raw, Loader=Yaml12Loader)


def load_yaml(revision: Revision, path: str) -> Any:
    raw = revision.read(path)
    return None if raw is None else parse_yaml(raw)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: leaf value} of nested dicts (lists are leaves)."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return MISSING
        tree = tree[part]
    return tree


def interpolate(text: str, params: dict) -> str:
    """dvc.yaml's `${key}` substitution from params.yaml (the default `vars`)."""
    return re.sub(r"\$\{\s*([^}\s]+)\s*\}", lambda m: str(lookup(params, m[1])), text)


def entry_path(entry: str | dict) -> tuple[str, dict]:
    """An out/dep entry of dvc.yaml (`path` or `{path: {options}}`): its path and options."""
    if isinstance(entry, str):
        return entry, {}
    path, options = next(iter(entry.items()))
    return path, options or {}


def uncached_outs(dvc_yaml: dict) -> set[str]:
    """Every `cache: false` output of the pipeline: committed to git, so comparable with dvc.lock from git alone."""
    return {path for stage in dvc_yaml.get("stages", {}).values()
            for kind in ("outs", "metrics", "plots") for path, options in map(entry_path, stage.get(kind, []))
            if options.get("cache") is False}


def dvc_md5(revision: Revision, path: str, contents: dict[str, bytes]) -> str | None:
    """The md5 DVC records for `path` (a file, or a folder: DVC's ".dir" md5 of the sorted listing of its files)."""
    if path in contents:
        return hashlib.md5(contents[path]).hexdigest()
    files = [p for p in contents if p.startswith(path.rstrip("/") + "/")]
    if not files:
        return None
    entries = [{"md5": hashlib.md5(contents[p]).hexdigest(), "relpath": p[len(path.rstrip("/")) + 1 :]}
               for p in sorted(files)]
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def declared_params(stage: dict) -> dict[str, list[str]]:
    """{params file: keys} a dvc.yaml stage declares."""
    files: dict[str, list[str]] = {}
    for entry in stage.get("params", []):
        if isinstance(entry, str):
            files.setdefault(PARAMS_FILE, []).append(entry)
        else:
            for name, keys in entry.items():
                files.setdefault(name, []).extend(keys or [])
    return files


def params_changes(revision: Revision, stage: dict, locked: dict, params: dict) -> list[str]:
    """The declared params whose value differs from the one dvc.lock recorded for the stage (leaf keys)."""
    changes = []
    for name, keys in declared_params(stage).items():
        current = params if name == PARAMS_FILE else (load_yaml(revision, name) or {})
        recorded = (locked.get("params") or {}).get(name, {})
        for key in keys:
            if key not in recorded:
                changes.append(f"new param {name}:{key}" if name != PARAMS_FILE else f"new param {key}")
                continue
            now, then = flatten(lookup(current, key), key), flatten(recorded[key], key)
            changes += [f"params {k}" for k in sorted(set(now) | set(then))
                        if now.get(k, MISSING) != then.get(k, MISSING)]
    return changes


def stage_changes(revision: Revision, name: str, stage: dict, locked: dict | None, params: dict,
                  checked: set[str], contents: dict[str, bytes]) -> list[str]:
    """Why `dvc status` would list stage `name` of this revision (empty: it would not)."""
    if locked is None:
        return ["never run (not in dvc.lock)"]
    changes = []
    if interpolate(stage["cmd"], params) != locked.get("cmd"):
        changes.append("command changed")
    declared = {interpolate(entry_path(d)[0], params) for d in stage.get("deps", [])}
    recorded = {d["path"] for d in locked.get("deps", [])}
    changes += [f"new dep {p}" for p in sorted(declared - recorded)]
    changes += [f"dep removed {p}" for p in sorted(recorded - declared)]
    changes += params_changes(revision, stage, locked, params)
    for kind, entries in (("code", locked.get("deps", [])), ("results", locked.get("outs", []))):
        for entry in entries:
            if entry["path"] in checked:
                md5 = dvc_md5(revision, entry["path"], contents)
                if md5 != entry.get("md5"):
                    changes.append(f"{kind} {entry['path']} {'deleted' if md5 is None else 'modified'}")
    return changes


def stale_stages(revision: Revision) -> dict[str, list[str]]:
    """Per stage of the revision whose recorded run does not match its params, code or committed results: why."""
    dvc_yaml = load_yaml(revision, "dvc.yaml") or {}
    lock = (load_yaml(revision, "dvc.lock") or {}).get("stages", {})
    params = load_yaml(revision, PARAMS_FILE) or {}
    uncached = uncached_outs(dvc_yaml)
    tracked = set(revision.files())
    # what can be checked from git alone: git-tracked files, and the cache: false outputs (files or folders)
    checked = {entry["path"] for stage in lock.values() for entry in [*stage.get("deps", []), *stage.get("outs", [])]
               if entry["path"] in tracked or entry["path"] in uncached}
    paths = [p for c in checked for p in ([c] if revision.is_file(c) else revision.files_under(c))]
    contents = revision.read_many(paths)
    stale = {}
    for name, stage in dvc_yaml.get("stages", {}).items():
        changes = stage_changes(revision, name, stage, lock.get(name), params, checked, contents)
        if changes:
            stale[name] = changes
    return stale
