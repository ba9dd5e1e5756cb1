"""`dvc plots diff` HTML rendered in a real headless browser (Debian's chromium): every plot draws, for both runs.

DVC's page loads Vega from a CDN; this machine has no internet, so the test fetches the same Vega releases from the
npm registry and points the page at them. Skipped where chromium or npm is not installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import sh

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium")
NPM = shutil.which("npm")
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--allow-file-access-from-files",
            "--virtual-time-budget=15000"]


@pytest.mark.skipif(not (CHROMIUM and NPM), reason="needs Debian's chromium and npm (apt-get install chromium npm)")
def test_plots_diff_html_renders_both_runs(repo: Path, mc3_experiment: str, tmp_path: Path) -> None:
    out = tmp_path / "dvc_plots"
    sh(repo, "dvc", "plots", "diff", "HEAD", mc3_experiment, "-o", str(out))
    html = (out / "index.html").read_text()
    for package, version in re.findall(r"https://cdn\.jsdelivr\.net/npm/([a-z-]+)@([\d.]+)", html):
        fetched = subprocess.run([NPM, "pack", f"{package}@{version}"], cwd=tmp_path, capture_output=True, timeout=120)
        if fetched.returncode != 0:
            pytest.skip(f"npm could not fetch {package}@{version} (no registry access?)")
        shutil.unpack_archive(tmp_path / f"{package}-{version}.tgz", tmp_path / package)
        local = (tmp_path / package / "package" / "build" / f"{package}.min.js").as_uri()
        html = html.replace(f"https://cdn.jsdelivr.net/npm/{package}@{version}", local)
    (out / "index.html").write_text(html)
    assert "cdn.jsdelivr" not in html
    page = (out / "index.html").as_uri()
    dom = subprocess.run([CHROMIUM, *HEADLESS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page],
                         capture_output=True, text=True, timeout=120).stdout
    views = html.count("vegaEmbed(")  # one per top-level Vega plot of dvc.yaml
    rendered = dom.count('class="marks"')  # one per Vega view that actually drew
    assert views == 7 and rendered == views, (rendered, views)
    assert html.count("<img") == 2 * 3  # the three PNGs, once per run
    for rev in ("HEAD", mc3_experiment):
        assert rev in dom  # legends and facets name both runs
    shot = tmp_path / "plots.png"
    subprocess.run([CHROMIUM, *HEADLESS, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1400,2000",
                    f"--screenshot={shot}", page], capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 50_000  # a blank page is a few kB
