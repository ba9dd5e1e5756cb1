"""DVC's plots page draws every plot offline, in a real browser (Debian's chromium) that has no network at all.

.dvc/config names .dvc/plots/vega/page.html as DVC's `plots.html_template`: DVC's own page with vega, vega-lite and
vega-embed inlined (written by .dvc/plots/vega/update.py), where DVC's default page loads them from a CDN. The
browser tests skip where chromium is not installed (.ci/run installs it).
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from dvc.config import Config
from dvc_render.image import ImageRenderer
from dvc_render.vega import VegaRenderer

from conftest import REPO, sh

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM, reason="needs Debian's chromium (apt-get install chromium)")
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--virtual-time-budget=15000"]
# No network: every request goes to a proxy on a closed port, loopback included (Chromium otherwise exempts it),
# and no host name resolves. test_chromium_flags_block_the_network checks both.
OFFLINE = ["--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--host-resolver-rules=MAP * ~NOTFOUND"]

# Injected into a copy of the page: it wraps vegaEmbed (whichever script defines it, wherever DVC calls it) and, once
# every view has drawn, writes each view's text (axis titles, legends, facet headers) into <pre id="views">.
PROBE = """<script>
(() => {
  let embed;
  const drawn = [];
  Object.defineProperty(window, "vegaEmbed", {
    set: value => { embed = value; },
    get: () => (...args) => {
      const result = embed(...args);
      drawn.push(result.then(({view}) => view.toSVG()));
      return result;
    },
  });
  window.addEventListener("load", async () => {
    const texts = (await Promise.all(drawn)).map(svg => Array.from(
      new DOMParser().parseFromString(svg, "image/svg+xml").querySelectorAll("text"), text => text.textContent));
    const out = document.createElement("pre");
    out.id = "views";
    out.textContent = JSON.stringify(texts);
    document.body.append(out);
  });
})();
</script>"""


class Tags(HTMLParser):
    """The start tags of an HTML document, as (tag, attributes); script bodies are text, not tags."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def named(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def chromium(url: str, profile: Path, *args: str, offline: bool = True) -> str:
    """Load `url` in headless Chromium (with no network if `offline`); return what it printed (e.g. --dump-dom)."""
    command = [CHROMIUM, *HEADLESS, *(OFFLINE if offline else []), f"--user-data-dir={profile}", *args, url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def declared_plots(root: Path) -> tuple[int, int]:
    """(Vega plots, image files) that dvc.yaml's top-level `plots` declare: a named entry is one Vega plot; a path is
    one plot per file under it, an image or a Vega plot by its suffix, as DVC's renderers tell them apart."""
    vega = images = 0
    for entry in yaml.safe_load((root / "dvc.yaml").read_text())["plots"]:
        if isinstance(entry, dict):
            vega += 1
            continue
        path = root / entry
        files = [path] if path.is_file() else [file for file in path.rglob("*") if file.is_file()]
        is_image = [file.suffix.lower() in ImageRenderer.EXTENSIONS for file in files]
        images += sum(is_image)
        vega += len(files) - sum(is_image)
    return vega, images


def render(repo: Path, out: Path, *command: str) -> tuple[str, Tags]:
    """Run `dvc plots <command> -o out`; return its page and the page's tags, after checking that the page names
    no network URL and that its images are files beside it."""
    printed = sh(repo, "dvc", "plots", *command, "-o", str(out))
    page = out / "index.html"
    assert page.as_uri() in printed
    text = page.read_text()
    tags = Tags(text)
    urls = [value for _, attrs in tags.tags for name, value in attrs.items()
            if name in ("src", "href") and re.match(r"\s*(https?:)?//", value or "")]
    assert urls == [], urls
    assert all((out / attrs["src"]).is_file() for attrs in tags.named("img"))
    return text, tags


def drawn_views(dom: str) -> int:
    """How many Vega views drew: vega-embed gives each view's canvas (or svg) the class "marks"."""
    return sum(attrs.get("class") == "marks" for _, attrs in Tags(dom).tags)


def view_texts(page: Path, profile: Path) -> list[list[str]]:
    """The text of each Vega view of `page` once drawn (axis titles, legends, facet headers), from a copy of the page
    with PROBE injected."""
    probed = page.with_name("probed.html")
    probed.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    dom = chromium(probed.as_uri(), profile, "--dump-dom")
    return json.loads(html.unescape(re.search(r'<pre id="views">(.*?)</pre>', dom, re.S).group(1)))


def test_page_template_inlines_the_vega_dvc_uses() -> None:
    """The template .dvc/config names inlines, byte for byte as recorded, the packages and versions DVC's own page
    loads from the CDN, each with its licence; and it leaves DVC nowhere to put its CDN <script> tags."""
    name = Config(dvc_dir=str(REPO / ".dvc")).load_one("repo")["plots"]["html_template"]
    template = REPO / ".dvc" / name  # DVC resolves a relative html_template against .dvc/ (CmdPlots)
    text = template.read_text()
    assert "{plot_divs}" in text and "{scripts}" not in text
    inlined = re.findall(r"<!-- ([a-z-]+)@([\d.]+) \S+ sha256=([0-9a-f]{64}) .*?-->\n<script>(.*?)</script>", text,
                         re.S)
    dvc_uses = re.findall(r"https://cdn\.jsdelivr\.net/npm/([a-z-]+)@([\d.]+)", VegaRenderer.SCRIPTS)
    assert [(package, version) for package, version, _, _ in inlined] == dvc_uses, \
        "DVC's page uses other Vega versions: run `python .dvc/plots/vega/update.py`"
    for package, _, sha256, code in inlined:
        assert hashlib.sha256(code.encode()).hexdigest() == sha256, package
        assert "Copyright" in (template.parent / f"LICENSE.{package}").read_text(), package


@needs_chromium
def test_chromium_flags_block_the_network(tmp_path: Path) -> None:
    """The premise of the page test: under OFFLINE, Chromium fetches nothing, not even from this machine by IP or
    by name, where without the flags the same page fetches both scripts."""
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        page = tmp_path / "fetch.html"
        page.write_text(f'<script src="http://127.0.0.1:{port}/by-ip.js"></script>'
                        f'<script src="http://localhost:{port}/by-name.js"></script>')
        chromium(page.as_uri(), tmp_path / "online", "--dump-dom", offline=False)
        assert sorted(requests) == ["/by-ip.js", "/by-name.js"]
        requests.clear()
        chromium(page.as_uri(), tmp_path / "offline", "--dump-dom")
        assert requests == []
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
@needs_chromium
def test_plots_pages_draw_every_plot_offline(repo: Path, mc3_experiment: str, tmp_path: Path) -> None:
    """`dvc plots diff HEAD <exp>` and `dvc plots show`: with no network, every Vega plot dvc.yaml declares draws
    (and, in the diff, names both runs), and every image is there for each run."""
    vega, images = declared_plots(repo)
    revs = ["HEAD", mc3_experiment]
    text, tags = render(repo, tmp_path / "diff", "diff", *revs)
    assert text.count("vegaEmbed(") == vega and len(tags.named("img")) == images * len(revs)
    page = tmp_path / "diff" / "index.html"
    assert drawn_views(chromium(page.as_uri(), tmp_path / "p1", "--dump-dom")) == vega

    views = view_texts(page, tmp_path / "p2")
    assert len(views) == vega
    for texts in views:
        assert all(rev in texts for rev in revs), texts  # a legend entry or facet header per run

    shot = tmp_path / "plots.png"
    chromium(page.as_uri(), tmp_path / "p3", "--window-size=1400,2000", f"--screenshot={shot}")
    assert shot.stat().st_size > 50_000  # a blank page is a few kB

    text, tags = render(repo, tmp_path / "show", "show")
    assert text.count("vegaEmbed(") == vega and len(tags.named("img")) == images
    assert drawn_views(chromium((tmp_path / "show" / "index.html").as_uri(), tmp_path / "p4", "--dump-dom")) == vega
