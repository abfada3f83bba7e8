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
Cost of `basic`: two (M×c)·(c×K) products and a small Gram per block of the evaluation step's own
pass (≈ ⅔ of a step), accumulated block by block (see Diagnostics).
"""
from __future__ import annotations

from types import SimpleNamespace

import torch

from ..theory.ridge import gram_statistics
from ..theory.spectra import ACTIVE_MASS, components_for, spectrum_summary
from .trainer import EvalContext

GRAM_SAMPLE_NODES = 256


class Diagnostics:
    """A trainer hook: EvalContext → {column: (B,) tensor}.

    In `basic` mode it accumulates, block by block during the evaluation step's own forward and
    backward pass (`on_block`), only small statistics: ỸᵀF and ỸᵀG_F (B, M, K), ‖G_F‖², and the
    sums Σf, ΣffᵀG of a fixed subset of nodes; the whole (n, K) F and G_F are never formed.
    `full` (and models with extra layers, whose step runs through autograd) takes F and G_F whole.
    """

    def __init__(self, level: str, task, layers: int = 0):
        self.full = level == "full"
        self.needs_features = self.full or layers > 0
        self.components = components_for(task.group)
        self.operands = task.operands
        self.order = task.order
        self.stats: dict[str, torch.Tensor] | None = None

    # -- block accumulation ------------------------------------------------------------------
    def reset(self) -> None:
        self.stats = None

    def _yt(self, labels: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """ỸᵀX for Ỹ = onehot(labels) − 1/M without a GEMM: a scatter-add of X's rows by label,
        minus the column sums over M.  labels (B, c), X (B, c, K) → (B, M, K)."""
        B, c, K = X.shape
        M = self.order
        flat = (labels + torch.arange(B, device=labels.device)[:, None] * M).reshape(-1)
        out = torch.zeros(B * M, K, dtype=X.dtype, device=X.device).index_add_(0, flat, X.reshape(B * c, K))
        return out.view(B, M, K) - X.sum(1, keepdim=True) / M

    def on_block(self, chunk, F: torch.Tensor, D: torch.Tensor | None, scale: float = 1.0) -> None:
        """Add one block to the running statistics: F (B, c, K), G_F = scale·D (B, c, K)."""
        K = F.shape[-1]
        idx = torch.randperm(K, generator=torch.Generator().manual_seed(0))[:GRAM_SAMPLE_NODES].to(F.device)
        Fs = F[..., idx] if K > GRAM_SAMPLE_NODES else F
        counts = torch.nn.functional.one_hot(chunk.labels, self.order).sum(1).to(F.dtype)   # (B, M)
        part = {"YtF": self._yt(chunk.labels, F), "counts": counts, "n": torch.tensor(float(F.shape[1])),
                "s1": Fs.sum(1), "s2": Fs.transpose(1, 2) @ Fs}
        if D is not None:
            part["YtG"] = self._yt(chunk.labels, D) * scale
            part["G2"] = D.square().sum((1, 2)) * scale**2
        if self.stats is None:
            self.stats = part
        else:
            for k, v in part.items():
                self.stats[k] = self.stats[k] + v

    def __call__(self, ctx: EvalContext) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            if self.needs_features or self.stats is None:   # whole F and G_F given: one "block"
                self.reset()
                F, G = ctx.features.F, ctx.features.G
                if G is None:   # autograd path (extra layers): the formula on the top layer
                    V = ctx.params["V"]
                    Y = torch.nn.functional.one_hot(ctx.train.labels, self.order).to(F.dtype) - 1.0 / self.order
                    O = F @ V
                    G = (Y - (O - O.mean(-1, keepdim=True))) @ V.transpose(1, 2)
                self.on_block(SimpleNamespace(labels=ctx.train.labels, targets=ctx.train.targets), F, G)
            return self._compute(ctx)

    def _compute(self, ctx: EvalContext) -> dict[str, torch.Tensor]:
        W = ctx.params["W"]
        st = self.stats
        out: dict[str, torch.Tensor] = {}
        out["grad_norm"] = st["G2"].clamp_min(0).sqrt()
        out["w_drift"] = (W - ctx.W0).norm(dim=(1, 2)) / ctx.W0.norm(dim=(1, 2)).clamp_min(1e-30)
        A = st["YtF"]                                                 # ỸᵀF: (B, M, K)
        node_energy = 0.5 * A.square().sum(1)                         # (B, K)
        out["energy_mean"], out["energy_max"] = node_energy.mean(-1), node_energy.max(-1).values
        # cos(G, ỸA) with ⟨G, ỸA⟩ = ⟨ỸᵀG, A⟩ and ‖ỸA‖² = ⟨A, (ỸᵀỸ)A⟩ — no (n, K) temporary
        dot = (st["YtG"] * A).sum((1, 2))
        # ỸᵀỸ = diag(N) − (N1ᵀ + 1Nᵀ)/M + n/M² (N: label counts), from the counts alone
        N, n_rows, M = st["counts"], st["n"], self.order
        YtY = torch.diag_embed(N) - (N[:, :, None] + N[:, None, :]) / M + n_rows / M**2
        norm_s2 = ((YtY @ A) * A).sum((1, 2)).clamp_min(0).sqrt()
        out["stage2_cosine"] = dot / (out["grad_norm"] * norm_s2).clamp_min(1e-30)
        # centred Gram of the sampled nodes: F̃ᵀF̃ = ΣffᵀG − n μμᵀ
        n = st["n"]
        mean = st["s1"] / n
        gram = st["s2"] - n * mean[:, :, None] * mean[:, None, :]
        d = gram.diagonal(dim1=1, dim2=2).abs()
        k = gram.shape[-1]
        off = (gram.abs().sum((1, 2)) - d.sum(-1)) / max(k * (k - 1), 1)
        out["offdiag_ratio"] = off / d.mean(-1).clamp_min(1e-30)
        if self.full:
            stats = gram_statistics(ctx.features.F)
            out["offdiag_ratio"] = stats["offdiag"] / stats["diag"].clamp_min(1e-30)
            out["ntk_distance"] = stats["ntk_distance"]
        if self.components is not None:
            s = spectrum_summary(W, self.components, self.operands, active_mass=ACTIVE_MASS)
            out["n_active"] = s.n_active.to(torch.float64)
            out["coverage"] = s.coverage.to(torch.float64)
            out["mean_dominant_fraction"] = s.mean_dominant_fraction
            out["diversity"] = s.diversity
            concentrated = (s.dominant_fraction >= 0.9) & s.active
            out["concentrated_fraction"] = concentrated.sum(-1) / s.n_active.clamp_min(1)
        return out


def hooks_for(config, task) -> tuple:
    """The diagnostics hooks a config asks for (none for `--diagnostics off`)."""
    if config.diagnostics == "off":
        return ()
    return (Diagnostics(config.diagnostics, task, config.layers),)
