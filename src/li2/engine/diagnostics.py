"""Theory diagnostics recorded at evaluation steps (SPEC §2–§4, §8), one column per quantity.

Ỹ follows the run's `--centring` (li2.task.Centring): "samples" (default) is the paper's
Ỹ = P⊥₁Y over the training rows (entries y_ic − n_c/n) and G_F = P⊥₁(Y − FV)Vᵀ, the negative gradient
of the paper's loss ½‖P⊥₁(Y − FV)‖² at the run's weights; "classes" is the reference loss li2 trains
with, Ỹ = Y − 1/M and G_F = (Ỹ − FVP⊥_M)Vᵀ, the gradient the training step itself sends to F.
(--loss ce has no paper G_F: "samples" then centres the cross-entropy gradient over the rows.)

`--diagnostics basic` (default) adds, per model:
    grad_norm            ‖G_F‖_F (G_F by centring, summed-loss scale)
    w_drift, v_drift     ‖W − W₀‖_F / ‖W₀‖_F and ‖V − V₀‖_F / ‖V₀‖_F (NaN for a zero-initialised V)
    energy_mean/max      per-node energy E_j = ½‖Ỹᵀ f_j‖² over the training rows (SPEC §3)
    stage2_cosine        cos(G_F, ηỸỸᵀF): how well the Stage-II node-wise form explains the gradient
    offdiag_ratio        mean |off-diagonal| / mean |diagonal| of F̃ᵀF̃ (F̃ = F centred over samples,
                         under both centrings: the reference logs it so too); exact for K ≤ MAX_GRAM_WIDTH,
                         else on a fixed random subset of GRAM_SAMPLE_NODES nodes
    ridge_distance       ‖V − V_ridge(F)‖_F / ‖V_ridge(F)‖_F, and
    ridge_output_distance ‖F(VP⊥_M − V_ridge)‖_F / ‖F V_ridge‖_F: how far the top layer is from the
                         Stage-I limit of THIS run's objective, i.e. the class-centred ridge solution
                         V_ridge = (FᵀF + λI)⁻¹FᵀỸ with λ = nη/2 (the exact minimiser over V of the mean
                         MSE plus coupled L2 η/2‖V‖²; the value `--top-layer ridge` uses). It does not
                         follow --centring on purpose: the distance to another objective's minimiser
                         never reaches 0 and would measure the convention gap, not Stage I. For
                         decoupled decay (adamw, muon) nη/2 is only the nominal λ. NaN for ce, η = 0
                         and K > MAX_GRAM_WIDTH.
    n_active, coverage, mean_dominant_fraction, diversity, concentrated_fraction
                         node spectra (groups only, M ≤ 400); active nodes are the fewest holding 90% of
                         Σ‖w_j‖²; concentrated_fraction = share of them with one component ≥ 90% of ‖w_j‖²
    grad_missing_share   top-down modulation (Thm 7): G_F = R Vᵀ (R the residual, by centring) split by
                         the irreps of the OUTPUT space, G_k = R P_k Vᵀ (P_k the isotypic projectors on
                         the M classes), and the share Σ_{k missing}‖G_k‖² / Σ_{k≠0}‖G_k‖² held by irreps
                         that no learned node covers yet (node spectra of W). From the accumulated
                         statistics: RᵀR = ỸᵀỸ − AV − VᵀAᵀ + VᵀCV (A = ỸᵀF, C = F̃ᵀF̃ or FᵀF), and
                         ‖G_k‖² = ⟨P_k RᵀR P_k, VᵀV⟩ — no (n, K) tensor;
    missing_share        the share of non-trivial dimensions those irreps hold (what a G_F spread evenly
                         would give). grad_missing_share > missing_share: G_F concentrates on the missing
                         irreps. Both NaN when every irrep is covered or K > MAX_GRAM_WIDTH.
`--diagnostics full` adds ntk_distance = ‖FFᵀ − (aI + b11ᵀ)‖/‖FFᵀ‖ for the best a, b, computed
without forming the n×n matrix.
Cost of `basic`: two (M×c)·(c×K) products and a K×K Gram per block of the evaluation step's own pass,
accumulated block by block (see Diagnostics), plus one K×K Cholesky solve per evaluation for the
ridge distance (LAPACK through scipy on the CPU: ≈ 8 ms at K = 1024 on one core).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from ..task import DEFAULT_CENTRING
from ..theory.ridge import gram_statistics, spd_solve
from ..theory.spectra import ACTIVE_MASS, component_dimensions, components_for, spectrum_summary
from .readouts import LayerReadouts
from .trainer import EvalContext, inline

GRAM_SAMPLE_NODES = 256
MAX_GRAM_WIDTH = 4096      # the exact K×K Gram (ridge distance, exact off-diagonal ratio) up to this width


def gram(F: torch.Tensor) -> torch.Tensor:
    """FᵀF per model: F (B, c, K) → (B, K, K). On the CPU through numpy, whose BLAS call for AᵀA is a
    symmetric rank-k update (half the work of a general product: 12.5 vs 21 ms for torch at c = 1008,
    K = 1024 on one core)."""
    if F.device.type != "cpu":
        return F.transpose(1, 2) @ F
    with np.errstate(over="ignore", invalid="ignore"):   # a diverged model's inf Gram is reported, not warned
        return torch.from_numpy(np.stack([f.T @ f for f in F.detach().numpy()]))


class Statistics:
    """One pass's accumulated statistics (Diagnostics.begin): `stats` {name: (B, …) tensor} summed over
    the blocks, `v` = V1 of the pass's weights (None unless the paper's sample-centred G_F needs it),
    and the intermediates the columns of one evaluation share (A = ỸᵀF, ỸᵀỸ)."""

    def __init__(self, v: torch.Tensor | None):
        self.v = v
        self.stats: dict[str, torch.Tensor] | None = None
        self.A = self.YtY = None


class Diagnostics:
    """A trainer hook: EvalContext → {column: (B,) tensor}.

    In `basic` mode it accumulates, block by block during the evaluation step's own forward and
    backward pass, only small statistics: YᵀF and YᵀG_F (B, M, K) with one-hot Y, the column sums
    1ᵀF, 1ᵀG_F, ‖G_F‖², the K×K Gram FᵀF, and the projections on v = V1 that the sample-centred
    G_F needs; the whole (n, K) F and G_F are never formed.
    `full` (and models with extra layers, whose step runs through autograd) takes F and G_F whole.

    Two ways to drive it. Statefully: `reset(params)`, `on_block(...)` per block, then `hook(ctx)`.
    With explicit accumulators (the trainer): `acc = begin(params)`, `block_part(acc, ...)` per block
    (pure: on any thread), `add(acc, part)` in row order, then `columns(ctx, acc, run)`, whose
    independent tasks `run` may execute side by side.
    """

    def __init__(self, level: str, task, layers: int = 0, centring: str = DEFAULT_CENTRING, loss: str = "mse"):
        self.full = level == "full"
        self.needs_features = self.full or layers > 0
        self.components = components_for(task.group)
        self.operands = task.operands
        self.order = task.order
        self.samples = centring == "samples"
        self.mse = loss == "mse"
        self.acc: Statistics | None = None
        self._P: torch.Tensor | None = None

    # -- block accumulation ------------------------------------------------------------------
    def begin(self, params: dict[str, torch.Tensor] | None = None) -> Statistics:
        """A fresh accumulator for one pass. params (the pass's weights) give v = V1, which the paper's
        G_F needs (mse)."""
        return Statistics(params["V"].sum(-1) if (params is not None and self.mse and self.samples) else None)

    def reset(self, params: dict[str, torch.Tensor] | None = None) -> None:
        """Start a pass (inline use)."""
        self.acc = self.begin(params)

    def on_block(self, chunk, F: torch.Tensor, D: torch.Tensor | None, scale: float = 1.0) -> None:
        """Add one block to the running statistics (inline use): F (B, c, K), G_F = scale·D (B, c, K)."""
        if self.acc is None:
            self.reset()
        self.add(self.acc, self.block_part(self.acc, chunk, F, D, scale))

    def _scatter(self, labels: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """YᵀX for one-hot Y without a GEMM: rows of X added by label. labels (B, c), X (B, c, K) → (B, M, K)."""
        B, c, K = X.shape
        M = self.order
        flat = (labels + torch.arange(B, device=labels.device)[:, None] * M).reshape(-1)
        out = torch.zeros(B * M, K, dtype=X.dtype, device=X.device).index_add_(0, flat, X.reshape(B * c, K))
        return out.view(B, M, K)

    def block_part(self, acc: Statistics, chunk, F: torch.Tensor, D: torch.Tensor | None, scale: float = 1.0) -> dict:
        """One block's statistics (reads only: safe on any thread)."""
        K = F.shape[-1]
        if K <= MAX_GRAM_WIDTH:
            Fs = F
        else:
            idx = torch.randperm(K, generator=torch.Generator().manual_seed(0))[:GRAM_SAMPLE_NODES].to(F.device)
            Fs = F[..., idx]
        counts = torch.nn.functional.one_hot(chunk.labels, self.order).sum(1).to(F.dtype)   # (B, M)
        part = {"YF": self._scatter(chunk.labels, F), "sF": F.sum(1), "counts": counts,
                "n": torch.tensor(float(F.shape[1])), "sFs": Fs.sum(1), "gram": gram(Fs)}
        if D is not None:
            part["YG"] = self._scatter(chunk.labels, D) * scale
            part["sG"] = D.sum(1) * scale
            part["G2"] = D.square().sum((1, 2)) * scale**2
            if acc.v is not None:
                Fv = (F @ acc.v[:, :, None].to(F.dtype)).squeeze(-1)        # (B, c)
                Dv = (D @ acc.v[:, :, None].to(D.dtype)).squeeze(-1)
                part["FvFv"] = Fv.square().sum(1)
                part["GvFv"] = (Dv * Fv).sum(1) * scale
        return part

    @staticmethod
    def add(acc: Statistics, part: dict) -> None:
        """Sum one block's part into the accumulator (blocks in row order: the sums are then the same
        whichever thread computed each part)."""
        if acc.stats is None:
            acc.stats = part
        else:
            for k, v in part.items():
                acc.stats[k] = acc.stats[k] + v

    # -- the columns ------------------------------------------------------------------------
    def __call__(self, ctx: EvalContext) -> dict[str, torch.Tensor]:
        if self.needs_features or self.acc is None or self.acc.stats is None:   # whole F and G_F: one block
            self.acc = self._whole(ctx)
        return self.columns(ctx, self.acc)

    def _whole(self, ctx: EvalContext) -> Statistics:
        """The statistics of the whole F and G_F of ctx.features, as one block."""
        acc = self.begin(ctx.params)
        with torch.no_grad():
            F, G = ctx.features.F, ctx.features.G
            if G is None:   # autograd path (extra layers): the formula on the top layer
                V = ctx.params["V"]
                Y = torch.nn.functional.one_hot(ctx.train.labels, self.order).to(F.dtype) - 1.0 / self.order
                O = F @ V
                G = (Y - (O - O.mean(-1, keepdim=True))) @ V.transpose(1, 2)
            chunk = SimpleNamespace(labels=ctx.train.labels, targets=ctx.train.targets)
            self.add(acc, self.block_part(acc, chunk, F, G))
        return acc

    def columns(self, ctx: EvalContext, acc: Statistics, run=inline) -> dict[str, torch.Tensor]:
        """Every column of one evaluation from its pass's accumulated statistics (module docstring).
        run(tasks) → results runs independent tasks (the trainer's lanes run the ridge solve beside the
        rest); their arithmetic does not depend on where they run."""
        if acc.stats is None:
            acc = self._whole(ctx)
        ridge, rest = run([lambda: self._ridge_task(ctx, acc), lambda: self._other_columns(ctx, acc)])
        gradient, weights, offdiag, spectrum = rest
        out = {**gradient, **weights, **offdiag, **ridge}
        if self.full:
            stats = gram_statistics(ctx.features.F)
            out["offdiag_ratio"] = stats["offdiag"] / stats["diag"].clamp_min(1e-30)
            out["ntk_distance"] = stats["ntk_distance"]
        return {**out, **spectrum}

    def _other_columns(self, ctx: EvalContext, acc: Statistics) -> tuple[dict, dict, dict, dict]:
        """Every column but the ridge distances: (gradient, weights, off-diagonal ratio, spectra)."""
        with torch.no_grad():
            gradient = self._gradient_columns(acc)
            spectrum = self._spectrum_columns(ctx, acc) if self.components is not None else {}
            return gradient, self._weight_columns(ctx), self._offdiag_columns(acc), spectrum

    def _label_products(self, acc: Statistics):
        """(A = ỸᵀF, ỸᵀG_F, ỸᵀỸ, ‖G_F‖²) under the run's centring, from the accumulated statistics."""
        st = acc.stats
        N, n, M = st["counts"], st["n"], self.order
        if self.samples:                               # Ỹ = Y − 1πᵀ, π = N/n
            pi = (N / n)[:, :, None]
            A = st["YF"] - pi * st["sF"][:, None, :]
            YtG = st["YG"] - pi * st["sG"][:, None, :]
            YtY = torch.diag_embed(N) - N[:, :, None] * N[:, None, :] / n
            G2, oneG = st["G2"], st["sG"]
            if acc.v is not None:                      # G_F = P⊥₁H, H = G_train − (Fv)vᵀ/M (module doc)
                v = acc.v.to(A.dtype)
                YtG = YtG - (A * v[:, None, :]).sum(-1, keepdim=True) * v[:, None, :] / M
                G2 = G2 - 2 * st["GvFv"] / M + st["FvFv"] * v.square().sum(-1) / M**2
                oneG = oneG - (st["sF"] * v).sum(-1, keepdim=True) * v / M
            G2 = G2 - oneG.square().sum(-1) / n
        else:                                          # Ỹ = Y − 11ᵀ/M
            A = st["YF"] - st["sF"][:, None, :] / M
            YtG = st["YG"] - st["sG"][:, None, :] / M
            YtY = torch.diag_embed(N) - (N[:, :, None] + N[:, None, :]) / M + n / M**2
            G2 = st["G2"]
        return A, YtG, YtY, G2

    def _gradient_columns(self, acc: Statistics) -> dict[str, torch.Tensor]:
        A, YtG, YtY, G2 = self._label_products(acc)
        acc.A, acc.YtY = A, YtY                  # for the residual's irrep split (_spectrum_columns)
        out = {"grad_norm": G2.clamp_min(0).sqrt()}
        node_energy = 0.5 * A.square().sum(1)                        # (B, K)
        out["energy_mean"], out["energy_max"] = node_energy.mean(-1), node_energy.max(-1).values
        # cos(G, ỸA) with ⟨G, ỸA⟩ = ⟨ỸᵀG, A⟩ and ‖ỸA‖² = ⟨A, (ỸᵀỸ)A⟩ — no (n, K) temporary
        dot = (YtG * A).sum((1, 2))
        norm_s2 = ((YtY @ A) * A).sum((1, 2)).clamp_min(0).sqrt()
        out["stage2_cosine"] = dot / (out["grad_norm"] * norm_s2).clamp_min(1e-30)
        return out

    def _weight_columns(self, ctx: EvalContext) -> dict[str, torch.Tensor]:
        W, V = ctx.params["W"], ctx.params["V"]
        out = {"w_drift": (W - ctx.W0).norm(dim=(1, 2)) / ctx.W0.norm(dim=(1, 2)).clamp_min(1e-30)}
        if ctx.V0 is not None:
            v0 = ctx.V0.norm(dim=(1, 2))
            drift = (V - ctx.V0).norm(dim=(1, 2)) / v0.clamp_min(1e-30)
            out["v_drift"] = torch.where(v0 > 0, drift, torch.full_like(drift, float("nan")))
        else:
            out["v_drift"] = torch.full((W.shape[0],), float("nan"), dtype=W.dtype, device=W.device)
        return out

    def _offdiag_columns(self, acc: Statistics) -> dict[str, torch.Tensor]:
        st = acc.stats
        n = st["n"]
        mean = st["sFs"] / n
        centred = st["gram"] - n * mean[:, :, None] * mean[:, None, :]      # F̃ᵀF̃ = FᵀF − nμμᵀ
        d = centred.diagonal(dim1=1, dim2=2).abs()
        k = centred.shape[-1]
        off = (centred.abs().sum((1, 2)) - d.sum(-1)) / max(k * (k - 1), 1)
        return {"offdiag_ratio": off / d.mean(-1).clamp_min(1e-30)}

    @staticmethod
    def _gram_times_V(acc: Statistics, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(FᵀF in float64, a copy of the accumulated one, and FᵀF·V in float64), or None when the Gram is
        not the exact K×K one. The ridge task and the missing shares each form their own (4 ms at
        K = 1024): sharing one would make the two column tasks wait for each other."""
        gram = acc.stats["gram"]
        if gram.shape[-1] != V.shape[1]:
            return None
        gram64 = gram.to(torch.float64, copy=True)    # the ridge solve overwrites it; the statistics stay
        return gram64, gram64 @ V.to(torch.float64)

    def _ridge_task(self, ctx: EvalContext, acc: Statistics) -> dict[str, torch.Tensor]:
        """Distance of V from V_ridge = (FᵀF + λI)⁻¹FᵀỸ_classes, λ = nη/2 (module docstring)."""
        with torch.no_grad():
            V = ctx.params["V"]
            B, K, M = V.shape
            nan = torch.full((B,), float("nan"), dtype=torch.float64, device=V.device)
            products = self._gram_times_V(acc, V) if self.mse else None
            if products is None:
                return {"ridge_distance": nan, "ridge_output_distance": nan}
            gram64, GV = products
            st = acc.stats
            lam = ctx.weight_decay.to(torch.float64) * float(st["n"]) / 2.0           # (B,)
            ok = lam > 0
            shift = torch.where(ok, lam, torch.ones_like(lam))
            gram64.diagonal(dim1=1, dim2=2).add_(shift[:, None])                        # FᵀF + λI
            FtY = (st["YF"] - st["sF"][:, None, :] / M).transpose(1, 2).to(torch.float64)   # FᵀỸ_classes (B, K, M)
            Vr, solved = spd_solve(gram64, FtY)
            Vd = V.to(torch.float64)
            dist = (Vd - Vr).norm(dim=(1, 2)) / Vr.norm(dim=(1, 2)).clamp_min(1e-300)
            delta = Vd - Vd.mean(-1, keepdim=True) - Vr                  # outputs are seen through P⊥_M
            # no second K×K product: FᵀF·V_ridge = FᵀỸ − λ·V_ridge, and FᵀF·(V P⊥_M) = (FᵀF·V) P⊥_M
            GVr = FtY - shift[:, None, None] * Vr
            out_num = ((GV - GV.mean(-1, keepdim=True) - GVr) * delta).sum((1, 2)).clamp_min(0)
            out_den = (GVr * Vr).sum((1, 2)).clamp_min(1e-300)           # ‖F·V_ridge‖²
            good = ok & solved.to(ok.device)
            return {"ridge_distance": torch.where(good, dist, nan),
                    "ridge_output_distance": torch.where(good, (out_num / out_den).sqrt(), nan)}

    def _spectrum_columns(self, ctx: EvalContext, acc: Statistics) -> dict[str, torch.Tensor]:
        W = ctx.params["W"]
        s = spectrum_summary(W, self.components, self.operands, active_mass=ACTIVE_MASS)
        out = {"n_active": s.n_active.to(torch.float64), "coverage": s.coverage.to(torch.float64),
               "mean_dominant_fraction": s.mean_dominant_fraction, "diversity": s.diversity}
        concentrated = (s.dominant_fraction >= 0.9) & s.active
        out["concentrated_fraction"] = concentrated.sum(-1) / s.n_active.clamp_min(1)
        shares = self._missing_shares(ctx.params["V"], s.learned_histogram, acc)
        if shares is not None:
            out["grad_missing_share"], out["missing_share"] = shares
        return out

    def _missing_shares(self, V: torch.Tensor, learned_histogram: torch.Tensor, acc: Statistics):
        """(grad_missing_share, missing_share) (module docstring), or None without the exact Gram."""
        products = self._gram_times_V(acc, V)
        if products is None:
            return None
        GV = products[1]
        st = acc.stats
        n = st["n"]
        A, YtY = acc.A.to(torch.float64), acc.YtY.to(torch.float64)         # (B, M, K), (B, M, M)
        Vd = V.to(torch.float64)
        if self.samples:                                                    # Vᵀ(FᵀF − nμμᵀ)V
            Vmu = Vd.transpose(1, 2) @ (st["sFs"] / n).to(torch.float64)[:, :, None]    # (B, M, 1)
            VCV = Vd.transpose(1, 2) @ GV - n * Vmu @ Vmu.transpose(1, 2)
        else:                                                               # outputs seen through P⊥_M
            Vd = Vd - Vd.mean(-1, keepdim=True)
            VCV = Vd.transpose(1, 2) @ (GV - GV.mean(-1, keepdim=True))
        AV = A @ Vd                                                         # ỸᵀFV: (B, M, M)
        RtR = YtY - AV - AV.transpose(1, 2) + VCV
        VtV = Vd.transpose(1, 2) @ Vd
        P = self._projectors(RtR)                                           # (C, M, M)
        energy = torch.einsum("cij,bjk,ckl,bli->bc", P, RtR, P, VtV)[:, 1:].clamp_min(0)   # ‖R P_c Vᵀ‖²
        dims = torch.as_tensor(component_dimensions(self.components), dtype=torch.float64)[1:].to(energy.device)
        missing = (learned_histogram[:, 1:] == 0).to(torch.float64)        # (B, C−1): no learned node
        share = (energy * missing).sum(-1) / energy.sum(-1).clamp_min(1e-300)
        base = (missing * dims).sum(-1) / dims.sum()
        nan = torch.full_like(share, float("nan"))
        none_missing = missing.sum(-1) == 0
        return torch.where(none_missing, nan, share), torch.where(none_missing, nan, base)

    def _projectors(self, like: torch.Tensor) -> torch.Tensor:
        if self._P is None or self._P.device != like.device:
            self._P = torch.tensor(np.array(self.components.projectors), dtype=torch.float64, device=like.device)
        return self._P


def hooks_for(config, task) -> tuple:
    """The diagnostics hooks a config asks for (none for `--diagnostics off`): the theory diagnostics of the
    top layer for the MLPs (F = the top hidden layer, V on top), the layer-wise read-outs
    (li2.engine.readouts) for the deep networks."""
    if config.diagnostics == "off":
        return ()
    if config.model == "transformer":
        return (LayerReadouts(task, config.centring),)
    extra = config.layers if config.model == "mlp2" else config.depth   # > 0: the autograd path, whole F
    hooks = (Diagnostics(config.diagnostics, task, extra, config.centring, config.loss),)
    return hooks if config.model == "mlp2" else (*hooks, LayerReadouts(task, config.centring))
