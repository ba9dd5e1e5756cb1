"""`dvc plots diff` of two revisions as image files, without a browser or node: DVC gives each plot of dvc.yaml as a
Vega-Lite spec with both revisions' data inlined (`--json`), vl-convert renders it to PNG in-process, and the PNGs
that the runs committed (plots/eval/images) come back as files, one per revision.

This is what iterative/example-get-started's CML workflow does with node's `vl2svg`, in Python.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from slr.errors import UserError

VEGA_LITE = "5.21"  # DVC's templates are Vega-Lite 5 specs: render them with the newest 5.x vl-convert bundles
SCALE = 1.5  # pixels per CSS pixel: sharp on a high-density screen, still small (tens of kB a plot)


@dataclass
class PlotImages:
    """The rendered plots of a diff: relative paths under the report folder, and what could not be shown."""

    charts: dict[str, str] = field(default_factory=dict)  # plot id -> PNG (both revisions in one chart)
    only_in: dict[str, list[str]] = field(default_factory=dict)  # plot id -> the revisions it has data from
    images: dict[str, dict[str, str]] = field(default_factory=dict)  # image name -> {"base"/"target": PNG}
    errors: list[str] = field(default_factory=list)  # "plot: revision: message", as DVC reported them


def safe_name(text: str) -> str:
    """A file name made of `text` (a plot id may hold any character)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "plot"


def plots_diff(root: Path, base: str, target: str, work: Path) -> dict:
    """DVC's `plots diff --json` of revisions `base` and `target`, its images written below `work`."""
    dvc = shutil.which("dvc")
    if dvc is None:
        raise UserError("dvc not found on PATH: `pip install -r requirements-report.txt` (or the project's "
                        "requirements.txt) first")
    # both names always: `dvc plots diff REV` alone would compare REV with the workspace
    result = subprocess.run([dvc, "plots", "diff", "--json", "-o", str(work), base, target], cwd=root,
                            capture_output=True, text=True)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise UserError(f"dvc plots diff {base} {target} failed: {lines[-1] if lines else 'no message'}")
    return json.loads(result.stdout)


def render(root: Path, base: str, target: str, out: Path, images_dir: str = "images") -> PlotImages:
    """Render every plot of `dvc plots diff base target` to PNG under out/images_dir; return what went where."""
    import vl_convert  # imported here: only rendering needs it

    found = PlotImages()
    folder = out / images_dir
    (folder / "plots").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        diff = plots_diff(root, base, target, Path(work))
        for plot_id, entries in diff.get("data", {}).items():
            for entry in entries:
                if entry["type"] == "vega":
                    png = vl_convert.vegalite_to_png(entry["content"], vl_version=VEGA_LITE, scale=SCALE)
                    path = f"{images_dir}/plots/{safe_name(plot_id)}.png"
                    (out / path).write_bytes(png)
                    found.charts[plot_id] = path
                    if len(set(entry["revisions"])) < len({base, target}):
                        found.only_in[plot_id] = entry["revisions"]
                elif entry["type"] == "image":
                    copy_image(plot_id, entry, base, target, out, images_dir, found)
    found.errors = [f"{e.get('name', '?')}: {e.get('rev', '?')}: {e.get('msg', e.get('type', ''))}"
                    for e in diff.get("errors", [])]
    return found


def copy_image(plot_id: str, entry: dict, base: str, target: str, out: Path, images_dir: str,
               found: PlotImages) -> None:
    """Copy one revision's committed image (DVC wrote it to its work folder) into the report, under base/ and/or
    target/ (both when the two revisions are one)."""
    name = Path(plot_id).name
    for revision in entry["revisions"]:
        for side, rev in (("base", base), ("target", target)):
            if revision == rev:
                path = f"{images_dir}/{side}/{safe_name(name)}"
                (out / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(entry["url"], out / path)
                found.images.setdefault(name, {})[side] = path
