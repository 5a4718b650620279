"""The docs agree with the code: docs/CONFIGURATION.md and docs/METRICS.md are what `python -m scripts.docs` generates
from service/settings.py and the metrics, and every relative link in README.md and docs/*.md points to a file."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from scripts import docs
from service.metrics import Metrics
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def test_the_generated_docs_match_the_code():
    done = subprocess.run(
        [sys.executable, "-m", "scripts.docs", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_the_check_names_the_file_that_differs(tmp_path):
    (tmp_path / "docs").mkdir()
    for path in docs.DOCS:
        shutil.copyfile(ROOT / path, tmp_path / path)
    assert docs.check(tmp_path) == []
    stale = tmp_path / "docs/CONFIGURATION.md"
    stale.write_text(stale.read_text().replace("`APG_MAX_ROWS`", "`APG_MAX_LINES`"))
    (problem,) = docs.check(tmp_path)
    assert problem.startswith("docs/CONFIGURATION.md differs from the code") and "APG_MAX_LINES" in problem


def test_every_setting_and_metric_says_what_it_is():
    assert [name for name, field in Settings.model_fields.items() if not (field.description or "").strip()] == []
    registry = CollectorRegistry()
    Metrics(registry)
    assert [f.name for f in registry.collect() if len(f.documentation) < 10] == []
    text = (ROOT / "docs/CONFIGURATION.md").read_text()
    assert {f"`APG_{name.upper()}`" for name in Settings.model_fields} <= set(re.findall(r"`APG_[A-Z0-9_]+`", text))


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def relative_links(text: str) -> list[str]:
    """The targets of markdown links and images outside code (fenced blocks and `spans`), web addresses excluded."""
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_relative_links_in_the_readme_and_docs_resolve():
    broken = []
    for path in markdown_files():
        for target in relative_links(path.read_text()):
            if not (path.parent / target.split("#")[0]).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_link_reader_finds_links_and_skips_code():
    text = (
        "see [a](docs/A.md#x) and ![p](figures/p.png), [w](https://x.y) `[c](no.md)`\n```\n[d](no.md)\n```\n[e](#top)"
    )
    assert relative_links(text) == ["docs/A.md#x", "figures/p.png"]
