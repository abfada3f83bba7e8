"""The docs site builds with warnings as errors (what `make docs` runs), and every docs/theory.md#anchor that
li2's help texts, hints and recipe claims point to exists."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WARNING" not in done.stderr, done.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "runs" / "index.html").read_text()
    assert 'id="li2.runs.training.train"' in api and 'id="li2.runs.loggers"' in api
    assert (tmp_path / "site" / "theory" / "index.html").exists()


def slug(heading: str) -> str:
    """GitHub's (and the site's, pymdownx.slugs) anchor of a heading: lower case, punctuation dropped,
    each space a hyphen."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_theory_anchor_in_the_package_exists():
    headings = [line.lstrip("#").strip() for line in (ROOT / "docs" / "theory.md").read_text().splitlines()
                if line.startswith("#")]
    anchors = {slug(h) for h in headings}
    used = set()
    for path in (ROOT / "src" / "li2").rglob("*.py"):
        used |= set(re.findall(r"docs/theory\.md#([\w\-]+)", path.read_text()))
    assert used, "no help text points at docs/theory.md"
    assert used <= anchors, sorted(used - anchors)


def test_no_user_facing_text_cites_the_spec():
    """SPEC.md is a project note, not part of the repository: help texts, hints and recipe claims cite
    docs/theory.md or the paper instead (module docstrings and comments may still mention it)."""
    import li2.recipes.registry as registry
    from li2.theory import outcomes
    texts = [m.CLAIM + m.RULE for m in registry.MODULES.values()]
    texts += [outcomes._hint(o, __import__("li2").TrainConfig(), 23, {}) for o in outcomes.OUTCOMES]
    help_text = subprocess.run([sys.executable, "-m", "li2.cli", "reproduce", "--help"], capture_output=True,
                               text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}).stdout
    for text in texts + [help_text]:
        assert "SPEC" not in text, text
