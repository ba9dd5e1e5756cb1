"""Rewrite DVC's plots page with Vega inlined: `python .dvc/plots/vega/update.py` (needs npm and its registry).

DVC's own page loads vega, vega-lite and vega-embed from cdn.jsdelivr.net, so offline its Vega plots stay blank.
This fetches the three packages with `npm pack`, at the versions the installed DVC's page names (dvc_render's
VegaRenderer.SCRIPTS), and writes beside itself: page.html (DVC's page with the three bundles inlined, the template
.dvc/config names as plots.html_template), each package's LICENSE, and README.md (versions, checksums, licences).
Run it after upgrading DVC; tests/test_plots_html.py fails while the page and DVC's versions differ.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dvc_render.html import HTML, PAGE_HTML
from dvc_render.vega import VegaRenderer

from slr.cli import run_main
from slr.errors import UserError
from slr.files import atomic_path

HERE = Path(__file__).resolve().parent
# Text that would end an inline <script> early, or that DVC substitutes anywhere in the template (HTML.embed).
PLACEHOLDERS = (HTML.SCRIPTS_PLACEHOLDER, HTML.PLOTS_PLACEHOLDER, HTML.REFRESH_PLACEHOLDER)
UNSAFE = ["</script", "<script", "<!--", *(f"{{{name}}}" for name in PLACEHOLDERS)]


@dataclass(frozen=True)
class Bundle:
    """One npm package's browser bundle (its package.json `jsdelivr` file, what the CDN URL serves)."""

    name: str
    version: str
    path: str  # inside the package, e.g. build/vega.min.js
    code: str
    license_id: str
    license_text: str
    integrity: str  # npm's checksum of the tarball
    bundled: list[str]  # third-party packages compiled into the bundle, read from its source map

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.code.encode()).hexdigest()


def dvc_versions() -> list[tuple[str, str]]:
    """(package, version) of each script DVC's page loads, in load order (vega-embed needs vega and vega-lite)."""
    return re.findall(r"https://cdn\.jsdelivr\.net/npm/([a-z-]+)@([\d.]+)", VegaRenderer.SCRIPTS)


def fetch(name: str, version: str, workdir: Path) -> Bundle:
    """`npm pack name@version` into `workdir` and read its bundle, LICENSE and source map."""
    npm = shutil.which("npm")
    if npm is None:
        raise UserError("npm not found: install Node.js's npm (apt-get install npm) to fetch the Vega packages")
    result = subprocess.run([npm, "pack", "--json", f"{name}@{version}"], cwd=workdir, capture_output=True,
                            text=True, timeout=300)
    if result.returncode != 0:
        raise UserError(f"npm pack {name}@{version} failed (no access to the npm registry?): "
                        f"{(result.stderr.strip().splitlines() or ['no message'])[-1]}")
    packed = json.loads(result.stdout)[0]
    with tarfile.open(workdir / packed["filename"]) as tar:
        def read(member: str) -> str:
            return tar.extractfile(f"package/{member}").read().decode()
        meta = json.loads(read("package.json"))
        path = meta["jsdelivr"]
        sources = json.loads(read(f"{path}.map"))["sources"]
        code, license_text = read(path), read("LICENSE")
    bundled = sorted({match.group(1) for source in sources
                      if (match := re.search(r"node_modules/((?:@[^/]+/)?[^/]+)/", source))})
    return Bundle(name, version, path, code, meta["license"], license_text, packed["integrity"], bundled)


def script_tag(bundle: Bundle) -> str:
    """The bundle as an inline <script>, after a comment naming its provenance (the test checks the sha256)."""
    code = bundle.code.lower()
    unsafe = [text for text in UNSAFE if text in code]
    if unsafe:
        raise UserError(f"{bundle.name}@{bundle.version} {bundle.path} contains {unsafe}: it cannot be inlined "
                        "in a <script> of DVC's template as it is")
    return (f"<!-- {bundle.name}@{bundle.version} {bundle.path} sha256={bundle.sha256} "
            f"({bundle.license_id}, LICENSE.{bundle.name}) -->\n<script>{bundle.code}</script>")


def readme(bundles: list[Bundle]) -> str:
    """README.md: what the folder holds, where each bundle came from, and how to update it."""
    rows = "\n".join(f"| {b.name} | {b.version} | `{b.path}` | {len(b.code.encode()):,} | {b.license_id} | "
                     f"`{b.integrity}` |" for b in bundles)
    bundled = "\n".join(f"- {b.name}: {', '.join(b.bundled) or 'none'}" for b in bundles)
    return f"""# Vega for DVC's plots page, offline

Written by `update.py`; do not edit by hand. `page.html` is DVC's own plots page (`dvc_render.html.PAGE_HTML`)
with the three Vega bundles below inlined where DVC would put its CDN `<script>` tags, and a UTF-8 `<meta charset>`.
`.dvc/config` names it as `plots.html_template`, so `dvc plots show` and `dvc plots diff` write a page that loads
nothing from the network.
The bundles are inlined rather than linked because `-o DIR` writes the page to any folder: a relative link from
there to this folder cannot be known in advance, and an absolute one would tie the page to this checkout.

| package | version | file (its `jsdelivr` entry: what DVC's CDN URL serves) | bytes | licence | npm tarball integrity |
|---|---|---|---|---|---|
{rows}

The versions are those of the installed DVC's page (`dvc_render.vega.VegaRenderer.SCRIPTS`); each bundle is
inlined byte for byte (its sha256 is in the comment above its `<script>`). `LICENSE.<package>` is the package's own
licence file. The bundles also hold third-party code, listed in their source maps, each under its own licence;
the npm packages ship none of those notices:
{bundled}

To update after upgrading DVC (needs npm and the npm registry): `python .dvc/plots/vega/update.py`, then commit
this folder. `tests/test_plots_html.py` fails while `page.html` and DVC's page name different versions.
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bundles = [fetch(name, version, Path(tmp)) for name, version in dvc_versions()]
    if not bundles:
        raise UserError("no Vega <script> found in dvc_render's VegaRenderer.SCRIPTS: has DVC's page changed?")
    scripts = "\n".join(script_tag(bundle) for bundle in bundles)
    # The page keeps DVC's {plot_divs} and {refresh_tag} but not {scripts}: DVC's CDN tags have nowhere to go. It
    # declares the UTF-8 that DVC writes it in, which the bundles need (d3-format's minus sign, "…", "≥") and which
    # a browser would otherwise have to guess for a file:// page.
    page = PAGE_HTML.replace("<head>", '<head>\n    <meta charset="utf-8">', 1)
    page = page.replace("{" + HTML.SCRIPTS_PLACEHOLDER + "}", scripts)
    outputs = {"page.html": page, "README.md": readme(bundles),
               **{f"LICENSE.{bundle.name}": bundle.license_text for bundle in bundles}}
    for name, text in outputs.items():
        with atomic_path(HERE / name) as tmp_path:
            tmp_path.write_text(text, encoding="utf-8")
        print(f"wrote {HERE / name} ({len(text.encode()):,} bytes)")


if __name__ == "__main__":
    run_main(main)
