"""dvc.yaml tells DVC the truth: every param a stage reads is declared, every module it imports is a dep."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from conftest import REPO

DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]


def _params_read(script: str) -> set[str]:
    """Dotted params paths a stage script reads: attribute chains on `params`, on `load_params(...)`, or on a local
    alias of either (`p = params.train`)."""
    tree = ast.parse((REPO / script).read_text())
    aliases = {"params": ""}
    for node in ast.walk(tree):  # `p = params.train` makes p an alias of "train"
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Attribute):
            chain = _chain(node.value, aliases)
            if chain and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                aliases[node.targets[0].id] = chain
    reads = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = _chain(node, aliases)
            if chain:
                reads.add(chain)
    # keep only the longest chains (params.train.lr implies params.train)
    return {r for r in reads if not any(o != r and o.startswith(r + ".") for o in reads)}


def _chain(node: ast.AST, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id in aliases:
        return ".".join(filter(None, [aliases[node.id], *reversed(parts)]))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "load_params" and parts:
        return ".".join(reversed(parts))  # load_params(...).evaluate
    return None


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_param_read_is_declared(stage: str) -> None:
    declared = [p if isinstance(p, str) else next(iter(p)) for p in STAGES[stage].get("params", [])]
    reads = _params_read(f"stages/{stage}.py")
    assert reads, f"stages/{stage}.py reads no params?"
    for read in reads:
        assert any(read == d or read.startswith(d + ".") for d in declared), f"{stage} reads {read}, not declared"


def _module_file(name: str) -> Path | None:
    """The source file of slr module `name` (a package's __init__.py counts as none: those hold no code)."""
    path = REPO / "src" / Path(*name.split("."))
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _imported(path: Path) -> set[str]:
    """The slr modules the file imports anywhere in it (stages import the heavy ones inside `main`, after parsing
    their arguments, so that `--help` answers at once)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return {n for n in names if n.split(".")[0] == "slr" and _module_file(n)}


def _slr_modules(script: str) -> set[str]:
    """Every slr source file a stage script reaches through imports, read from the code (no torch to import)."""
    seen: set[str] = set()
    todo = _imported(REPO / script)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo |= _imported(_module_file(name))
    return {str(_module_file(n).relative_to(REPO)) for n in seen}


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_imported_module_is_a_dep(stage: str) -> None:
    modules = _slr_modules(f"stages/{stage}.py")
    deps = set(STAGES[stage]["deps"])
    assert f"stages/{stage}.py" in deps
    assert modules <= deps, f"{stage}: imported but not a dep: {sorted(modules - deps)}"
    assert {d for d in deps if d.startswith("src/")} <= modules, f"{stage}: dep not imported (stale dvc.yaml)"


def test_package_inits_hold_no_code() -> None:
    # __init__ files are not deps, so they must not hold logic that could change results.
    for init in (REPO / "src").rglob("__init__.py"):
        body = ast.parse(init.read_text()).body
        assert all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body), init


def test_stage_outputs_do_not_overlap_data_dvc() -> None:
    tracked = yaml.safe_load((REPO / "data.dvc").read_text())["outs"][0]["path"]
    for stage in STAGES.values():
        for out in stage.get("outs", []) + stage.get("metrics", []):
            path = out if isinstance(out, str) else next(iter(out))
            assert not (path + "/").startswith(tracked + "/") and not (tracked + "/").startswith(path + "/")
