"""Theory diagnostics recorded at evaluation steps (SPEC §2–§4, §8), one column per quantity.

`--diagnostics basic` (default) adds, per model:
    grad_norm            ‖G_F‖_F, G_F = −∂L_sum/∂F = P⊥1(Ỹ − FV)Vᵀ (mse), straight from the training step
    w_drift              ‖W − W₀‖_F / ‖W₀‖_F
    energy_mean/max      per-node energy E_j = ½‖Ỹᵀ f_j‖² over the training rows (SPEC §3)
    stage2_cosine        cos(G_F, ηỸỸᵀF): how well the Stage-II node-wise form explains the gradient
    offdiag_ratio        mean |off-diagonal| / mean |diagonal| of F̃ᵀF̃ (F̃ = F centred over samples),
                         estimated on a fixed random subset of ≤ 256 nodes (exact in `full`)
    n_active, coverage, mean_dominant_fraction, diversity, concentrated_fraction
                         node spectra (groups only, M ≤ 400); active nodes are the fewest holding 90% of
                         Σ‖w_j‖²; concentrated_fraction = share of them with one component ≥ 90% of ‖w_j‖²
`--diagnostics full` adds ntk_distance = ‖FFᵀ − (aI + b11ᵀ)‖/‖FFᵀ‖ for the best a, b, computed
without forming the n×n matrix, and the exact off-diagonal ratio.
Cost of `basic`: two (M×n)·(n×K) products and a small Gram per evaluation (≈ ⅔ of a step).
"""
from __future__ import annotations

import torch

from .spectra import spectrum_summary
from .theory import gram_statistics
from .trainer import EvalContext

MAX_SPECTRUM_ORDER = 400      # projectors are (C, M, M): beyond this, spectra cost more than training
GRAM_SAMPLE_NODES = 256
ACTIVE_MASS = 0.9             # active nodes: the fewest holding 90% of Σ‖w_j‖² (see spectra.spectrum_summary)


def _components(task):
    if not task.group.is_group or task.order > MAX_SPECTRUM_ORDER:
        return None
    from .representations import isotypic_components
    return isotypic_components(task.group)


class Diagnostics:
    """A trainer hook: EvalContext → {column: (B,) tensor}."""

    def __init__(self, level: str, task):
        self.full = level == "full"
        self.components = _components(task)
        self.operands = task.operands
        self._targets: dict[int, torch.Tensor] = {}

    def _centred_targets(self, ctx: EvalContext) -> torch.Tensor:
        if ctx.train.targets is not None:
            return ctx.train.targets
        key = id(ctx.train)
        if key not in self._targets:
            m = ctx.task.order
            y = torch.nn.functional.one_hot(ctx.train.labels, m).to(ctx.params["W"].dtype)
            self._targets[key] = y - 1.0 / m
        return self._targets[key]

    def __call__(self, ctx: EvalContext) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return self._compute(ctx)

    def _compute(self, ctx: EvalContext) -> dict[str, torch.Tensor]:
        W, V = ctx.params["W"], ctx.params["V"]
        F, G = ctx.features.F, ctx.features.G
        Y = self._centred_targets(ctx)
        if G is None:   # autograd path (extra layers): the formula on the top layer
            G = (Y - (F @ V - (F @ V).mean(-1, keepdim=True))) @ V.transpose(1, 2)
        out: dict[str, torch.Tensor] = {}
        out["grad_norm"] = G.norm(dim=(1, 2))
        out["w_drift"] = (W - ctx.W0).norm(dim=(1, 2)) / ctx.W0.norm(dim=(1, 2)).clamp_min(1e-30)
        A = Y.transpose(1, 2) @ F                                     # ỸᵀF: (B, M, K)
        node_energy = 0.5 * A.square().sum(1)                         # (B, K)
        out["energy_mean"], out["energy_max"] = node_energy.mean(-1), node_energy.max(-1).values
        # cos(G, ỸA) with ⟨G, ỸA⟩ = ⟨ỸᵀG, A⟩ and ‖ỸA‖² = ⟨A, (ỸᵀỸ)A⟩ — no (n, K) temporary
        YtG = Y.transpose(1, 2) @ G
        dot = (YtG * A).sum((1, 2))
        norm_s2 = ((Y.transpose(1, 2) @ Y) @ A * A).sum((1, 2)).clamp_min(0).sqrt()
        out["stage2_cosine"] = dot / (out["grad_norm"] * norm_s2).clamp_min(1e-30)
        if self.full:
            stats = gram_statistics(F)
            out["offdiag_ratio"] = stats["offdiag"] / stats["diag"].clamp_min(1e-30)
            out["ntk_distance"] = stats["ntk_distance"]
        else:
            K = F.shape[-1]
            idx = torch.randperm(K, generator=torch.Generator().manual_seed(0))[:GRAM_SAMPLE_NODES]
            Fs = F[..., idx.to(F.device)]
            Fs = Fs - Fs.mean(1, keepdim=True)
            gram = Fs.transpose(1, 2) @ Fs
            d = gram.diagonal(dim1=1, dim2=2).abs()
            k = Fs.shape[-1]
            off = (gram.abs().sum((1, 2)) - d.sum(-1)) / max(k * (k - 1), 1)
            out["offdiag_ratio"] = off / d.mean(-1).clamp_min(1e-30)
        if self.components is not None:
            s = spectrum_summary(W, self.components, self.operands, active_mass=ACTIVE_MASS)
            out["n_active"] = s.n_active.to(torch.float64)
            concentrated = (s.dominant_fraction >= 0.9) & s.active
            out["concentrated_fraction"] = concentrated.sum(-1) / s.n_active.clamp_min(1)
            out["coverage"] = s.coverage.to(torch.float64)
            out["mean_dominant_fraction"] = s.mean_dominant_fraction
            out["diversity"] = s.diversity
        return out


def hooks_for(config, task) -> tuple:
    """The diagnostics hooks a config asks for (none for `--diagnostics off`)."""
    if config.diagnostics == "off":
        return ()
    return (Diagnostics(config.diagnostics, task),)
