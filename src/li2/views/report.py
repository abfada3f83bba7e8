"""`li2 report DIR --out report.html`: one self-contained HTML page for a run, a recipe or a study folder.

The page opens offline: figures are embedded as base64 data URIs (PNG, or SVG when a figure exists only
as SVG — as an <img>, never inlined, so a figure cannot inject markup), styles are inline, there is
no script and no external resource (no CDN, no web font). Every piece of text from the folder is
HTML-escaped.

What each kind of folder shows (detected from the files present, in this order):
    recipe folder  (findings.json)                         claim, verdict + rule + reasons, headline, expected
                    vs measured, setup, figures (*.png / *.svg), tables (*.parquet, first rows); a folder
                    from `li2 reproduce all` gets one such section per recipe sub-folder
    run folder     (config.yaml + summary.json + metrics.parquet)   resolved config, per-model summary with
                    outcome and hint, stage boundaries, curves/dynamics/spectra figures, last metrics rows
    study folder   (results.parquet, + phase.json / phase.png / sweep.yaml)   sweep spec, run counts by
                    status, p_c table and scaling fits from phase.json, figures, results table
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from pathlib import Path

import pandas as pd

from ..store import StoreError, read_json, read_parquet, read_yaml, write_text

MAX_TABLE_ROWS = 60
MAX_FIGURES = 24

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;
     color:#1d232a;line-height:1.45;padding:0 16px}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:2px solid #d8dee4;padding-bottom:4px;margin-top:1.8em}
h3{margin-top:1.4em} .meta{color:#57606a;font-size:.9em}
table{border-collapse:collapse;margin:8px 0 16px;font-size:.85em}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7} tr:nth-child(even) td{background:#fafbfc}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:12px 0 20px} figure img{max-width:100%;height:auto;border:1px solid #e1e4e8}
figcaption{color:#57606a;font-size:.85em}
.verdict{display:inline-block;padding:2px 10px;border-radius:10px;font-weight:600;color:#fff}
.supports{background:#1a7f37} .contradicts{background:#cf222e} .inconclusive{background:#9a6700}
.box{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;margin:8px 0}
pre{background:#f6f8fa;padding:8px;overflow-x:auto;font-size:.8em;border:1px solid #e1e4e8}
code{font-size:.9em}
"""


class ReportError(ValueError):
    """The folder cannot be reported on (one-line message)."""


# -- building blocks -----------------------------------------------------------------------------------

def esc(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str)[:400]
    return str(v)


def table(rows: list[dict], columns: list[str] | None = None, note: str = "") -> str:
    """An HTML table of dict rows (values formatted and escaped); numbers right-aligned."""
    if not rows:
        return "<p class='meta'>(no rows)</p>"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            if c == "verdict" and v in ("supports", "contradicts", "inconclusive"):
                cells.append(f"<td>{verdict_badge(v)}</td>")
                continue
            cls = " class='num'" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{esc(_fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    extra = f"<p class='meta'>{esc(note)}</p>" if note else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{extra}"


def frame_table(df: pd.DataFrame, max_rows: int = MAX_TABLE_ROWS, columns: list[str] | None = None) -> str:
    if columns is not None:
        df = df[[c for c in columns if c in df.columns]]
    note = f"first {max_rows} of {len(df)} rows" if len(df) > max_rows else ""
    rows = [{k: (None if (isinstance(v, float) and math.isnan(v)) else (v.item() if hasattr(v, "item") else v))
             for k, v in r.items()} for r in df.head(max_rows).to_dict("records")]
    return table(rows, list(df.columns), note)


def kv_table(d: dict) -> str:
    """Two-column table of a (possibly nested) mapping; nested dicts become dotted keys."""
    rows = []

    def walk(prefix, obj, depth=0):
        if isinstance(obj, dict) and obj and depth < 3:
            for k, v in obj.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v, depth + 1)
        else:
            rows.append({"key": prefix, "value": obj})
    walk("", d)
    return table(rows, ["key", "value"])


def figure(path: Path, caption: str | None = None) -> str:
    """<figure> with the image embedded as a data URI (PNG or SVG)."""
    mime = "image/svg+xml" if path.suffix.lower() == ".svg" else "image/png"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cap = esc(caption or path.name)
    return (f"<figure><img src='data:{mime};base64,{data}' alt='{esc(path.name)}'>"
            f"<figcaption>{cap}</figcaption></figure>")


def figures_in(folder: Path, prefer: tuple[str, ...] = ()) -> list[Path]:
    """PNG figures of a folder (an SVG only where no PNG of the same name exists), `prefer` first."""
    pngs = {p.stem: p for p in sorted(folder.glob("*.png")) if not p.name.startswith(".")}
    for s in sorted(folder.glob("*.svg")):
        if not s.name.startswith("."):
            pngs.setdefault(s.stem, s)
    ordered = [pngs.pop(n) for n in prefer if n in pngs]
    return (ordered + list(pngs.values()))[:MAX_FIGURES]


def verdict_badge(v: str | None) -> str:
    v = v if v in ("supports", "contradicts", "inconclusive") else "inconclusive"
    return f"<span class='verdict {v}'>{esc(v)}</span>"


def page(title: str, body: str, source: Path) -> str:
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class='meta'>li2 report of <code>{esc(source)}</code>, {stamp}</p>"
            f"{body}</body></html>")


# -- run folder -------------------------------------------------------------------------------------------

def is_run(folder: Path) -> bool:
    return all((folder / f).exists() for f in ("config.yaml", "summary.json", "metrics.parquet"))


def run_section(folder: Path, heading: str = "h2", with_figures: bool = True) -> str:
    try:
        cfg = read_yaml(folder / "config.yaml")
        summary = read_json(folder / "summary.json")
        metrics = read_parquet(folder / "metrics.parquet")
        models = summary["models"]
    except (StoreError, KeyError, TypeError) as e:
        raise ReportError(f"{folder} is not a readable li2 run: {e}") from None
    h = heading
    out = [f"<{h}>Run <code>{esc(folder.name)}</code></{h}>"]
    resolved = cfg.get("resolved", {}) if isinstance(cfg, dict) else {}
    if resolved:
        out.append("<div class='box'>" + esc(", ".join(f"{k} = {_fmt(v)}" for k, v in resolved.items())) + "</div>")
    cols = ["seed", "final_train_acc", "final_test_acc", "grok_step", "memorize_step", "steps_trained", "status",
            "outcome", "wall_seconds"]
    out.append("<h3>Models</h3>" + table(models, cols))
    hints = [{"seed": m.get("seed"), "outcome": m.get("outcome"), "hint": m.get("hint")} for m in models if m.get("hint")]
    if hints:
        out.append("<h3>Diagnosis</h3>" + table(hints, ["seed", "outcome", "hint"]))
    stages = [{"seed": m.get("seed"), **(m.get("stages") or {})} for m in models if m.get("stages")]
    if stages:
        out.append("<h3>Stage boundaries (steps)</h3>" +
                   table(stages, ["seed", "lazy_end", "lazy_w_drift", "independent_end", "stage3_signal",
                                  "interactive_end"]) +
                   "<p class='meta'>lazy_end = Stage I ends (V within 30% of V_ridge; lazy_w_drift = how far W "
                   "had moved by then), independent_end = Stage III begins (an interaction signal rises after "
                   "the Stage-II cosine held), interactive_end = coverage settled; never from test accuracy — "
                   "see li2.theory.stages for the rules.</p>")
    for p in figures_in(folder, ("curves", "dynamics", "spectra")) if with_figures else ():
        out.append(figure(p))
    if isinstance(cfg, dict) and isinstance(cfg.get("config"), dict):
        out.append("<h3>Configuration (resolved)</h3>" + kv_table(cfg["config"]))
        if cfg.get("versions"):
            out.append("<p class='meta'>" + esc(", ".join(f"{k} {v}" for k, v in cfg["versions"].items())) + "</p>")
    if len(metrics):
        last = metrics.sort_values(["seed", "step"]).groupby("seed").tail(1)
        out.append("<h3>Last evaluation per model</h3>" + frame_table(last))
    return "\n".join(out)


# -- recipe folder --------------------------------------------------------------------------------------

def is_recipe(folder: Path) -> bool:
    return (folder / "findings.json").exists()


def read_findings(folder: Path) -> dict:
    """findings.json of a recipe folder, checked: ReportError (one line) when it is empty, not JSON, or
    lacks what `li2 reproduce` writes (a "recipe" name, and a "verdict" — or, for `all`, "recipes")."""
    path = folder / "findings.json"
    try:
        if path.is_file() and not path.read_bytes().strip():
            raise ReportError(f"{path} is empty; rerun li2 reproduce into {folder}")
        f = read_json(path)
    except StoreError as e:
        raise ReportError(str(e)) from None
    except OSError as e:
        raise ReportError(f"cannot read {path}: {e.strerror or e.__class__.__name__}") from None
    if not isinstance(f, dict):
        raise ReportError(f"{path} is not a findings object (written by li2 reproduce)")
    verdict_or_recipes = isinstance(f.get("verdict"), str) or isinstance(f.get("recipes"), dict)
    if not (isinstance(f.get("recipe"), str) and verdict_or_recipes):
        raise ReportError(f"{path} has no li2 findings schema (needs 'recipe' and 'verdict'); "
                          f"rerun li2 reproduce into {folder}")
    return f


def recipe_section(folder: Path, heading: str = "h2") -> str:
    f = read_findings(folder)
    h = heading
    name = f.get("recipe") or folder.name
    badge = verdict_badge(f["verdict"]) if f.get("verdict") else ""
    out = [f"<{h}>Recipe <code>{esc(name)}</code> {badge}</{h}>"]
    if isinstance(f.get("recipes"), dict):   # `reproduce all`: one line per recipe, then each section
        rows = [{"recipe": k, "verdict": v.get("verdict"), "headline": v.get("headline"),
                 "wall_seconds": v.get("wall_seconds")} for k, v in f["recipes"].items() if isinstance(v, dict)]
        out.append(table(rows, ["recipe", "verdict", "headline", "wall_seconds"]))
        if f.get("wall_seconds") is not None:
            out.append(f"<p class='meta'>total wall time {esc(_fmt(f['wall_seconds']))} s</p>")
        for k in f["recipes"]:
            sub = folder / str(k)
            if Path(str(k)).name == str(k) and k not in (".", "..") and sub.is_dir() and is_recipe(sub):
                out.append(recipe_section(sub, "h2"))
        return "\n".join(out)
    if f.get("claim"):
        out.append(f"<p><b>Claim.</b> {esc(f['claim'])}</p>")
    if f.get("headline"):
        out.append(f"<div class='box'><b>Finding.</b> {esc(f['headline'])}</div>")
    if f.get("rule"):
        out.append(f"<p><b>Verdict rule.</b> {esc(f['rule'])}</p>")
    reasons = f.get("reasons")
    if isinstance(reasons, list) and reasons:
        out.append("<ul>" + "".join(f"<li>{esc(r)}</li>" for r in reasons) + "</ul>")
    notes = f.get("notes")
    if isinstance(notes, list) and notes:
        out.append("<p><b>Notes.</b></p><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    if isinstance(f.get("verdict_parts"), dict):
        out.append(table([{"part": k, "verdict": v} for k, v in f["verdict_parts"].items()], ["part", "verdict"]))
    for key, label in (("paper_setting", "The paper's setting"), ("setting", "li2's setting"),
                       ("expected", "Expected (paper)"), ("measured", "Measured")):
        if isinstance(f.get(key), dict) and f[key]:
            out.append(f"<h3>{label}</h3>" + kv_table(f[key]))
    devs = f.get("deviations")
    if isinstance(devs, list) and devs and all(isinstance(d, dict) for d in devs):
        out.append("<h3>Deviations from the paper</h3>" + table(devs, ["what", "paper", "here", "why"]))
    for p in figures_in(folder):
        out.append(figure(p))
    for t in sorted(folder.glob("*.parquet")):
        if t.name.startswith("."):
            continue
        try:
            df = read_parquet(t)
        except StoreError:
            continue
        out.append(f"<h3>Table <code>{esc(t.name)}</code></h3>" + frame_table(df))
    if isinstance(f.get("setup"), dict):
        out.append("<h3>Setup</h3>" + kv_table(f["setup"]))
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if is_run(sub):   # a recipe's own training run, e.g. dynamics/run (its figures are shown above)
            out.append(run_section(sub, "h3", with_figures=False))
    return "\n".join(out)


# -- study folder (sweep / phase) ------------------------------------------------------------------------

def is_study(folder: Path) -> bool:
    return (folder / "results.parquet").exists()


STUDY_COLUMNS = ["run_index", "run_id", "group", "order", "train_ratio", "ratio_over_critical", "seed", "width",
                 "final_train_acc", "final_test_acc", "grok_step", "steps_trained", "status", "outcome"]


def study_section(folder: Path, heading: str = "h2") -> str:
    try:
        results = read_parquet(folder / "results.parquet")
    except StoreError as e:
        raise ReportError(str(e)) from None
    h = heading
    out = [f"<{h}>Study <code>{esc(folder.name)}</code></{h}>"]
    counts = results["status"].value_counts().to_dict() if "status" in results else {}
    out.append("<div class='box'>" + esc(f"{len(results)} runs; " +
                                          ", ".join(f"{k}: {v}" for k, v in counts.items())) + "</div>")
    if (folder / "sweep.yaml").exists():
        try:
            spec = read_yaml(folder / "sweep.yaml")
            out.append("<h3>Sweep spec</h3><pre>" + esc(json.dumps(spec, indent=1, default=str)) + "</pre>")
        except StoreError:
            pass
    if (folder / "phase.json").exists():
        try:
            ph = read_json(folder / "phase.json")
        except StoreError:
            ph = None
        if isinstance(ph, dict):
            rows = [{"M": k, "p_c": v.get("estimate"), "ci": v.get("ci"), "bracketed": v.get("bracketed"),
                     "reason": v.get("reason")} for k, v in (ph.get("pc") or {}).items() if isinstance(v, dict)]
            out.append("<h3>Critical ratio per group order</h3>" + table(rows))
            fit = {k: ph.get(k) for k in ("c", "c_ci", "r2", "reference_c", "reference_r2", "preferred",
                                           "preferred_adjusted", "note") if k in ph}
            out.append("<h3>Fit p_c = c·ln M / M</h3>" + kv_table(fit))
            alts = [{"form": k, **{kk: vv for kk, vv in v.items() if kk in ("r2", "r2_adj", "params")}}
                    for k, v in (ph.get("alternatives") or {}).items() if isinstance(v, dict)]
            if alts:
                out.append(table(alts, ["form", "r2", "r2_adj", "params"]))
    for p in figures_in(folder, ("phase",)):
        out.append(figure(p))
    out.append("<h3>Results</h3>" + frame_table(results, columns=[c for c in STUDY_COLUMNS if c in results]))
    return "\n".join(out)


# -- entry -------------------------------------------------------------------------------------------------

def render(folder: str | Path) -> str:
    """The report page of a folder as an HTML string (ReportError when the folder is none of the kinds)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder} is not a folder")
    if is_recipe(folder):
        f = read_findings(folder)
        body = recipe_section(folder)
        if is_study(folder):   # the phase recipe is also a study folder
            body += study_section(folder)
        title = f"li2 recipe: {f['recipe']}"
    elif is_run(folder):
        body, title = run_section(folder), f"li2 run: {folder.name}"
    elif is_study(folder):
        body, title = study_section(folder), f"li2 study: {folder.name}"
    else:
        raise ReportError(f"{folder} holds no li2 run (config.yaml, summary.json, metrics.parquet), recipe "
                          f"(findings.json) or study (results.parquet)")
    return page(title, body, folder)


def write_report(folder: str | Path, out: str | Path) -> Path:
    """Render `folder` and write the page atomically to `out`; returns the path."""
    text = render(folder)
    out = Path(out)
    write_text(out, text)
    return out
