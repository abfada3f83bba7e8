"""Figures of a run folder, and li2's one matplotlib set-up (Agg: files only, no screen).

Nothing here is needed to train; every file is written atomically through the store.
"""
from __future__ import annotations

import functools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib import font_manager  # noqa: E402

from ..engine.networks import embedding_blocks  # noqa: E402
from ..store import FIGURE_DPI, save_figure  # noqa: E402
from ..theory.spectra import components_for, node_spectrum, spectrum_summary  # noqa: E402


def pyplot():
    """matplotlib.pyplot on the Agg backend (the set-up every li2 figure uses)."""
    return plt


@functools.lru_cache(maxsize=1)
def _font():
    return font_manager.get_font(font_manager.findfont(font_manager.FontProperties()))


def plain_text(text) -> str:
    """A user's text (a group's name) as a figure can draw it: never mathtext ($ escaped), and each
    character the font has no glyph for (or that is not printable) written as its \\u escape, so
    drawing it warns about no missing glyph."""
    font = _font()
    out = []
    for c in str(text):
        if c == "$":
            out.append(r"\$")
        elif c.isprintable() and font.get_char_index(ord(c)):
            out.append(c)
        else:
            out.append(ascii(c)[1:-1])
    return "".join(out)


def _has_positive(values: pd.Series) -> bool:
    """Whether a log axis can show these values (a model that diverged at once has only inf or NaN)."""
    v = values.to_numpy(dtype=float)
    return bool(((v > 0) & np.isfinite(v)).any())


def save_both(fig, folder: Path, stem: str) -> list[str]:
    """Write fig as stem.png and stem.svg (atomically) and close it; returns the two file names."""
    save_figure(fig, Path(folder) / f"{stem}.png")
    save_figure(fig, Path(folder) / f"{stem}.svg")
    plt.close(fig)
    return [f"{stem}.png", f"{stem}.svg"]


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
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4), dpi=FIGURE_DPI)
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
    losses = metrics[["train_loss", "test_loss"]].to_numpy(dtype=float)
    finite = losses[(losses > 0) & (losses < float("inf"))]   # a model that diverged at once has none
    ax_loss.set(xscale="log", yscale="log" if finite.size else "linear", xlabel="step + 1", ylabel="loss",
                title="loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(plain_text(title))   # a table's name is the user's: never mathtext, no missing glyphs
    fig.tight_layout()
    return fig


def dynamics_figure(metrics: pd.DataFrame, summary: dict, title: str = ""):
    """‖G_F‖, W drift, coverage and dominant fraction against step (log-x), stage bands shaded."""
    panels = [("grad_norm", "‖G_F‖_F", "log"), ("w_drift", "‖W − W₀‖ / ‖W₀‖", "linear"),
              ("coverage", "irreps covered", "linear"), ("mean_dominant_fraction", "mean dominant fraction", "linear"),
              ("stage2_cosine", "cos(G_F, ηỸỸᵀF)", "linear"), ("energy_max", "max node energy", "log")]
    panels = [p for p in panels if p[0] in metrics and metrics[p[0]].notna().any()]
    if not panels:
        return None
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, dpi=FIGURE_DPI)
    first = summary["models"][0] if summary["models"] else {}
    for ax, (col, label, yscale) in zip(axes.flat, panels):
        shade_stages(ax, first.get("stages"))
        for i, (seed, m) in enumerate(metrics.groupby("seed")):
            ax.plot(_x(m.step), m[col], color="C0", alpha=1.0 if i == 0 else 0.4)
        ax.set(xscale="log", yscale=yscale if _has_positive(metrics[col]) else "linear", xlabel="step + 1",
               title=label)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower right", fontsize=8)
    if title:
        fig.suptitle(plain_text(title))
    fig.tight_layout()
    return fig


def spectra_figure(snapshots: dict[int, torch.Tensor], components, operands: int, title: str = "",
                   max_panels: int = 6):
    """Node-spectrum heat maps (active nodes × isotypic components) at several steps of one model.

    Nodes are ordered by their dominant component at the last snapshot, so the emergence of
    features reads left to right; fractions are averaged over operand blocks.
    """
    steps = sorted(snapshots)
    if len(steps) > max_panels:
        pick = [round(i * (len(steps) - 1) / (max_panels - 1)) for i in range(max_panels)]
        steps = [steps[i] for i in sorted(set(pick))]
    last = spectrum_summary(snapshots[steps[-1]], components, operands)
    active = last.active[0]
    order = sorted(range(int(active.shape[0])), key=lambda j: (int(last.dominant[0, j]),
                                                                -float(last.dominant_fraction[0, j])))
    order = [j for j in order if bool(active[j])][:400]
    fig, axes = plt.subplots(1, len(steps), figsize=(2.6 * len(steps) + 1, 4.2), squeeze=False, sharey=True,
                             dpi=FIGURE_DPI)
    for ax, step in zip(axes[0], steps):
        frac = node_spectrum(snapshots[step][None], components, operands)[0].mean(0)   # (K, C)
        im = ax.imshow(frac[order].T.numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set(title=f"step {step}", xlabel="active node")
    names = list(components.names)
    tick = max(1, len(names) // 12)
    axes[0, 0].set_yticks(range(0, len(names), tick), [names[i] for i in range(0, len(names), tick)], fontsize=7)
    axes[0, 0].set_ylabel("isotypic component")
    fig.colorbar(im, ax=axes[0].tolist(), fraction=0.02, label="share of ‖w‖²")
    if title:
        fig.suptitle(plain_text(title))
    return fig


LAYER_PANELS = (("drift_", "drift ‖θ − θ₀‖ / ‖θ₀‖ per layer", "log"), ("grad_", "‖∂L/∂θ‖ per layer", "log"),
                ("energy_share_h", "label share of F_l's energy", "linear"),
                ("grad_align_h", "cos(G_l, ỸỸᵀF_l)", "linear"))


def layers_figure(metrics: pd.DataFrame, title: str = ""):
    """The layer-wise read-outs of the deep networks (li2.engine.readouts) against step, first seed: one
    line per layer, bottom layer darkest; None without them."""
    m = metrics[metrics.seed == metrics.seed.min()].sort_values("step")
    panels = [(pre, label, scale, [c for c in m.columns if c.startswith(pre) and m[c].notna().any()
                                   and not (pre == "grad_" and c.startswith(("grad_norm", "grad_align",
                                                                            "grad_missing")))])
              for pre, label, scale in LAYER_PANELS]
    panels = [p for p in panels if p[3]]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False, dpi=FIGURE_DPI)
    for ax, (pre, label, scale, cols) in zip(axes[0], panels):
        for i, col in enumerate(cols):
            shade = plt.cm.viridis(i / max(1, len(cols) - 1))
            ax.plot(_x(m.step), m[col], color=shade, label=col[len(pre):] if pre.endswith("_") else col[len(pre) - 1:])
        ax.set(xscale="log", yscale=scale if scale == "linear" or _has_positive(m[cols].stack()) else "linear",
               xlabel="step + 1", title=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(plain_text(title))
    fig.tight_layout()
    return fig


def run_title(config, task) -> str:
    """A run's figure title: the task and the network's size."""
    size = {"mlp2": f"K={config.width}", "mlp": f"mlp L={config.depth} K={config.width}",
            "transformer": f"transformer d={config.d_model} H={config.heads} d_mlp={config.d_mlp}"}[config.model]
    return f"{task.group.name}  p={config.train_ratio}  {size}  σ={config.activation}"


def run_figures(out_dir: Path, metrics: pd.DataFrame, summary: dict, config, task,
                snapshots: dict | None = None) -> list[Path]:
    """Write every figure of a run folder: curves.png, dynamics.png, layers.png (deep networks), spectra.png;
    returns their paths."""
    out_dir = Path(out_dir)
    title = run_title(config, task)
    written = []
    for name, fig in (("curves.png", curves_figure(metrics, summary, title)),
                      ("dynamics.png", dynamics_figure(metrics, summary, title)),
                      ("layers.png", layers_figure(metrics, title))):
        if fig is not None:
            save_figure(fig, out_dir / name, crop=False)   # laid out by tight_layout already
            plt.close(fig)
            written.append(out_dir / name)
    seed = summary["models"][0]["seed"] if summary["models"] else None
    if snapshots and seed in snapshots and task.group.is_group and config.diagnostics != "off":
        components = components_for(task.group)
        if components is not None:
            fig = spectra_figure(snapshots[seed], components, embedding_blocks(config, task.operands),
                                 f"{'embedding' if config.model == 'transformer' else 'node'} spectra, seed {seed}")
            save_figure(fig, out_dir / "spectra.png", crop=False)
            plt.close(fig)
            written.append(out_dir / "spectra.png")
    return written
