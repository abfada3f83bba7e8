"""Figures of a run folder (matplotlib, Agg backend; nothing here is needed to train)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .store import save_figure  # noqa: E402

STAGE_COLOURS = {"lazy": "#fde0c5", "independent": "#d5e8f7", "interactive": "#dff2d8"}


def shade_stages(ax, stages: dict | None) -> None:
    """Shade Stage I/II/III bands given {"lazy_end", "independent_end", "interactive_end"} (steps or None)."""
    if not stages:
        return
    edges = [0, stages.get("lazy_end"), stages.get("independent_end"), stages.get("interactive_end")]
    for (name, colour), lo, hi in zip(STAGE_COLOURS.items(), edges[:-1], edges[1:]):
        if lo is None or hi is None or hi <= lo:
            continue
        ax.axvspan(max(lo, 1), hi + 1, color=colour, alpha=0.6, lw=0, label=f"stage: {name}")


def _x(steps):
    return steps + 1   # log-x: step 0 sits at 1


def curves_figure(metrics: pd.DataFrame, summary: dict, title: str = ""):
    """Train/test accuracy and loss against step (log-x), one line per seed, grok step marked."""
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    models = {m["seed"]: m for m in summary["models"]}
    first = summary["models"][0] if summary["models"] else {}
    for ax in (ax_acc, ax_loss):
        shade_stages(ax, first.get("stages"))
    for i, (seed, m) in enumerate(metrics.groupby("seed")):
        alpha = 1.0 if i == 0 else 0.45
        lab = (lambda s: s) if i == 0 else (lambda s: None)
        ax_acc.plot(_x(m.step), m.train_acc, color="C0", alpha=alpha, label=lab("train"))
        ax_acc.plot(_x(m.step), m.test_acc, color="C1", alpha=alpha, label=lab("test"))
        ax_loss.plot(_x(m.step), m.train_loss, color="C0", alpha=alpha, label=lab("train"))
        ax_loss.plot(_x(m.step), m.test_loss, color="C1", alpha=alpha, label=lab("test"))
        g = models.get(int(seed), {}).get("grok_step")
        if g is not None:
            for ax in (ax_acc, ax_loss):
                ax.axvline(g + 1, color="C2", ls="--", alpha=alpha, label=lab(f"grok step {g}"))
    ax_acc.set(xscale="log", xlabel="step + 1", ylabel="accuracy", ylim=(-0.02, 1.02), title="accuracy")
    ax_loss.set(xscale="log", yscale="log", xlabel="step + 1", ylabel="loss", title="loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def run_figures(out_dir: Path, metrics: pd.DataFrame, summary: dict, config, task, params) -> list[Path]:
    """Write every figure of a run folder; returns their paths."""
    title = f"{task.group.name}  p={config.train_ratio}  K={config.width}  σ={config.activation}"
    fig = curves_figure(metrics, summary, title)
    path = Path(out_dir) / "curves.png"
    save_figure(fig, path)
    plt.close(fig)
    return [path]
