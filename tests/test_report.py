"""`li2 report`: one self-contained HTML page for a run, a recipe and a sweep/phase study folder.

Static checks (always): every figure is a data URI, nothing points outside the page, text is escaped.
Browser checks: the page is opened in headless Chromium (Debian's /usr/bin/chromium, driven by
playwright's Python client with executable_path — no browser download) and every <img> must have
loaded (naturalWidth > 0), with no console error and no failed request. Skipped when chromium or
playwright is absent, unless the environment variable CI is set (then the test fails).
"""
import os
import re
import shutil
from pathlib import Path

import pytest

import li2
from li2.views.report import ReportError, render

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run<&>"
    li2.train(group="Z7", train_ratio=0.7, width=16, steps=40, seeds=[0, 1], diagnostics="basic", out=out)
    return out


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """A real two-run sweep (one worker) analysed by `li2 phase`."""
    from li2.studies import run_sweep
    from li2.studies.phase import analyse_sweep_dir as analyse_dir
    out = tmp_path_factory.mktemp("report") / "study"
    run_sweep({"base": {"width": 16, "steps": 30, "diagnostics": "off"},
               "grid": {"group": ["Z5", "Z7"], "train_ratio": [0.4, 0.9]}}, out, workers=1)
    analyse_dir(out)
    return out


@pytest.fixture(scope="module")
def recipe_dir(tmp_path_factory):
    from li2.recipes import reproduce
    out = tmp_path_factory.mktemp("report") / "energy"
    reproduce("energy", out, size="smoke")
    return out


def static_checks(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r"""(src|href)\s*=\s*['"](?!data:)""", page), "a resource outside the page"
    assert not re.search(r"url\(\s*['\"]?(?!data:)", page)
    srcs = re.findall(r"<img src='(data:image/(?:png|svg\+xml);base64,[A-Za-z0-9+/=]+)'", page)
    assert srcs and len(srcs) == page.count("<img ")


def test_run_report_is_self_contained(run_dir, tmp_path, run_cli):
    out = tmp_path / "r.html"
    code, stdout, stderr = run_cli("report", run_dir, "--out", out)
    assert code == 0, stderr
    page = out.read_text()
    static_checks(page)
    assert "run&lt;&amp;&gt;" in page and "run<&>" not in page            # the folder name is escaped
    for text in ("Models", "Stage boundaries", "outcome", "Configuration (resolved)", "curves.png", "dynamics.png"):
        assert text in page, text


def test_study_and_recipe_reports(study_dir, recipe_dir):
    page = render(study_dir)
    static_checks(page)
    assert "Critical ratio per group order" in page and "phase.png" in page and "Results" in page
    page = render(recipe_dir)
    static_checks(page)
    assert "Verdict rule" in page and "energy_vs_p.png" in page and "energy.parquet" in page


def test_report_refuses_other_folders_in_one_line(tmp_path, run_cli):
    with pytest.raises(ReportError):
        render(tmp_path)
    code, stdout, stderr = run_cli("report", tmp_path / "missing", "--out", tmp_path / "x.html")
    assert code == 2 and stderr.startswith("error: ") and stderr.count("\n") == 1
    assert not (tmp_path / "x.html").exists()


# -- in a real browser -----------------------------------------------------------------------------------

def _browser():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI is set but playwright is not installed (pip install -e '.[test]')")
        pytest.skip("playwright is not installed")
    return sync_playwright


def open_in_chromium(html: Path, screenshot: Path | None = None) -> dict:
    sync_playwright = _browser()
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.goto(html.resolve().as_uri(), wait_until="load")
            images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
            title = page.title()
            if screenshot is not None:
                page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    return {"images": images, "problems": problems, "title": title}


@pytest.mark.parametrize("kind", ["run", "study"])
def test_report_renders_in_headless_chromium(kind, run_dir, study_dir, tmp_path):
    folder = run_dir if kind == "run" else study_dir
    out = tmp_path / f"{kind}.html"
    from li2.views.report import write_report
    write_report(folder, out)
    got = open_in_chromium(out, tmp_path / f"{kind}.png")
    assert got["images"], "no images on the page"
    for alt, complete, width in got["images"]:
        assert complete and width > 0, f"image {alt} did not load"
    assert got["problems"] == []
    assert got["title"].startswith("li2 ")
    assert (tmp_path / f"{kind}.png").stat().st_size > 10_000
