"""The documentation: a short README whose links resolve, and the site `make docs` builds.

The site is built as `make docs` builds it (mkdocs, strict: a broken link or anchor fails), with
torch made unimportable, since the API pages are read from the source and never import it. Its
pages are then rendered in headless Chromium, and the DOM is checked: the README's sections on
the home page, a documented function with its docstring on the API page.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from irm_lens.export import find_browser
from tests import _procs

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# Markdown links and images: [text](target) or ![alt](target "title").
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# A page element that loads something from the network when the page is viewed (a script, style
# sheet, font or image); the site must read offline. Links a reader may follow are fine.
FETCH = re.compile(r"<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)=\"(?:https?:)?//")
# Tags that start a new line of text (so words of adjacent blocks do not run together).
BLOCKS = {"p", "div", "li", "pre", "tr", "td", "th", "br", "table", "ul", "ol", "section"}
BLOCKS |= {f"h{level}" for level in range(1, 7)}
# Building stays well under this (seconds); rendering one page too.
BUILD_TIMEOUT_S = 300
RENDER_TIMEOUT_S = 120


class _Page(HTMLParser):
    """The text of a page, and the text of each heading by level."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.headings: dict[str, list[str]] = {}
        self.ids: set[str] = set()
        self._heading: str | None = None
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
        if tag in BLOCKS:
            self.text.append("\n")
        if tag in ("script", "style"):
            self._skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._heading = tag
            self.headings.setdefault(tag, []).append("")
        elif tag == "a" and self._heading and ("class", "headerlink") in attrs:
            self._skip += 1  # the permalink sign after a heading's text

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") or (tag == "a" and self._skip and self._heading):
            self._skip = max(0, self._skip - 1)
        elif tag == self._heading:
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.text.append(data)
        if self._heading:
            self.headings[self._heading][-1] += data

    def plain(self) -> str:
        """All text, whitespace collapsed."""
        return " ".join("".join(self.text).split())


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def _clean(text: str) -> str:
    """Markdown inline code and emphasis removed, whitespace collapsed: what a page shows."""
    return " ".join(re.sub(r"[`*]", "", text).split())


def _readme_sections() -> list[str]:
    return [_clean(line[3:]) for line in README.read_text().splitlines() if line.startswith("## ")]


def _render(page: Path, profile: Path) -> str:
    """The DOM of ``page`` after headless Chromium has loaded it and run its scripts."""
    browser = find_browser()  # the browser kaleido uses: $BROWSER_PATH, else one on PATH
    if browser is None:
        pytest.skip(
            "no Chromium found ($BROWSER_PATH, or a Chromium-family browser on PATH): "
            "run `make browser` to render the docs"
        )
    flags = [
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        "--dump-dom",
    ]
    done = _procs.run([browser, *flags, page.as_uri()], timeout=RENDER_TIMEOUT_S)
    assert done.returncode == 0 and "</html>" in done.stdout, (
        f"{browser} could not render {page} (exit {done.returncode}):\n{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as `make docs` builds it, into a temporary folder, with torch unimportable."""
    out = tmp_path_factory.mktemp("site")
    build = (
        "import sys; sys.modules['torch'] = None; "  # any `import torch` now fails
        "from mkdocs.__main__ import cli; cli()"
    )
    command = [sys.executable, "-c", build, "build", "--strict", "-f", "mkdocs.yml", "-d", str(out)]
    done = _procs.run(command, cwd=ROOT, timeout=BUILD_TIMEOUT_S)
    assert done.returncode == 0, (
        "`mkdocs build --strict` failed (a broken link or anchor, a missing README section, a "
        "module that moved, or `pip install -e '.[docs]'` not run):\n"
        f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    )
    return out


def test_the_readme_is_read_in_five_minutes() -> None:
    lines = README.read_text().count("\n")  # what `wc -l` counts
    assert lines < 200, f"README.md has {lines} lines; move detail to docs/ (limit: 199)"


def test_the_readme_names_the_command_ci_runs() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    commands = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    assert "make test" in commands


def test_every_relative_link_in_the_readme_points_at_a_file() -> None:
    targets = LINK.findall(README.read_text())
    local = [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]
    assert len(local) >= 5, f"expected links to the docs pages and the report, found {targets}"
    missing = [t for t in local if not (README.parent / t.split("#")[0]).exists()]
    assert missing == [], f"README.md links to files that do not exist: {missing}"
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.md") if p.name != "index.md"}
    unlinked = pages - {t.split("#")[0] for t in local}
    assert unlinked == set(), f"docs pages the README does not point to: {sorted(unlinked)}"


def test_the_checks_see_links_and_sections() -> None:
    """The link pattern and the page parser find what the tests above and below rely on."""
    text = 'See [a](docs/a.md), ![b](fig.png "t"), [c](https://x.org) and [d](#here).'
    assert LINK.findall(text) == ["docs/a.md", "fig.png", "https://x.org", "#here"]
    page = _parse('<h2 id="x">Quick <code>start</code><a class="headerlink">¶</a></h2><p>a\nb</p>')
    assert page.headings["h2"] == ["Quick start"] and page.plain() == "Quick start a b"
    assert "x" in page.ids
    fonts = '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">'
    assert FETCH.search(fonts) and FETCH.search('<script src="//cdn.example/x.js">')
    assert not FETCH.search('<a href="https://arxiv.org/abs/2407.03621">')
    assert not FETCH.search('<link rel="stylesheet" href="assets/main.css">')


def test_the_site_builds_strictly_without_importing_torch(site: Path) -> None:
    pages = sorted(p.relative_to(DOCS).with_suffix(".html") for p in DOCS.rglob("*.md"))
    missing = [str(p) for p in pages if not (site / p).is_file()]
    assert missing == [], f"pages not built: {missing}"
    assert Path("api/inject.html") in pages
    online = [str(p.relative_to(site)) for p in site.rglob("*.html") if FETCH.search(p.read_text())]
    assert online == [], f"pages that fetch from the network when viewed: {online}"


def test_the_search_index_lists_every_page(site: Path) -> None:
    index = json.loads((site / "search" / "search_index.json").read_text())
    locations = {entry["location"].split("#")[0] or "index.html" for entry in index["docs"]}
    pages = {str(p.relative_to(DOCS).with_suffix(".html")) for p in DOCS.rglob("*.md")}
    assert pages <= locations, f"not in the search index: {sorted(pages - locations)}"
    assert any(e["location"].endswith("irm_lens.inject.attach") for e in index["docs"])


def test_the_home_page_renders_the_readme(site: Path, tmp_path: Path) -> None:
    page = _parse(_render(site / "index.html", tmp_path / "profile"))
    assert page.headings["h1"][0] == "irm_lens"
    sections = _readme_sections()
    assert len(sections) >= 5
    missing = [s for s in sections if s not in page.headings.get("h2", [])]
    assert missing == [], f"README sections missing from the home page: {missing}"
    text = page.plain()
    # The README's sections came through whole (docs/index.md includes them by marker).
    assert "--8<--" not in text
    for shown in ("make install", "IRM.for_host(host, seed=0)", "517 MB", "make test"):
        assert shown in text, f"{shown!r} is not on the home page"


def test_the_api_page_shows_attach_with_its_docstring(site: Path, tmp_path: Path) -> None:
    source = (ROOT / "irm_lens" / "inject.py").read_text()
    attach = next(
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef) and node.name == "attach"
    )
    summary = _clean((ast.get_docstring(attach) or "").split("\n\n")[0])
    assert summary, "irm_lens.inject.attach lost its docstring"
    page = _parse(_render(site / "api" / "inject.html", tmp_path / "profile"))
    assert "irm_lens.inject.attach" in page.ids
    text = page.plain()
    assert summary in text, f"the docstring summary {summary!r} is not on the API page"
    for argument in (a.arg for a in attach.args.args + attach.args.kwonlyargs):
        assert argument in text, f"attach's argument {argument!r} is not documented on the page"
