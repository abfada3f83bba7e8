"""Layer-wise read-outs of the deep networks (`--model mlp`, `--model transformer`) at evaluation steps.

The paper's §6 extends Li2 to L hidden layers F_l = σ(F_{l−1}W_l): once the top layer has fitted, every
hidden layer's backpropagated gradient takes the Stage-II form G_l ∝ D̃ỸỸᵀD̃F_l (D̃ the σ′ masks above l),
the lowest layer sees the input and "learning starts from there", each layer above starting once the
one below has learned. These columns let a run show which layer moved first and whether each layer's
gradient follows the energy ascent:

    drift_<layer>      ‖θ_l − θ_l(0)‖_F / ‖θ_l(0)‖_F per weight layer (bottom up: W, U1 …, V; or the
                       transformer's embed, pos, W_Q, W_K, W_V, W_O, W_in, W_out, unembed); layers that start
                       at zero (biases) have none
    grad_<layer>       ‖∂L/∂θ_l‖_F, the training loss's gradient at this step (mean loss), every parameter
    key_count          the embedding's key components (li2.theory.spectra.embedding_spectrum: the fewest
    key_share          non-trivial irreps holding 80% of its non-trivial energy) and the share they hold;
                       groups only. The embedding is W (both operand blocks) for the MLPs, the token
                       embedding of the M group elements for the transformer.
  mlp only, for each hidden layer l = 1 … L (F_l over the training rows, G_l = −∂L_sum/∂F_l):
    energy_share_h<l>  ‖P_Y F̃_l‖² / ‖F̃_l‖²: the share of the layer's sample-centred activation energy that
                       lies in the label directions (between-class over total variance), Σ_j ‖Ỹᵀf̃_j‖²-like
                       but scale-free: ≈ (M−1)/n for random features, → 1 for features of the label alone
    grad_align_h<l>    cos(G_l, ỸỸᵀF_l): how well the layer's backpropagated gradient follows the ascent of
                       its units' energy E(F) = ½‖ỸᵀF‖² (∇_F E = ỸỸᵀF); Ỹ by --centring
    grad_norm_h<l>     ‖G_l‖_F
The transformer has no F = σ(XW) with V on top: li2.engine.diagnostics' columns are absent from its
metrics, and so are the hidden-layer columns above.
"""
from __future__ import annotations

import torch

from ..task import DEFAULT_CENTRING
from ..theory.spectra import components_for, embedding_spectrum
from .networks import embedding, embedding_blocks
from .trainer import EvalContext


def _norm(x: torch.Tensor) -> torch.Tensor:
    return x.norm(dim=(1, 2)) if x.dim() == 3 else x.reshape(x.shape[0], -1).norm(dim=1)


def label_energy_share(F: torch.Tensor, labels: torch.Tensor, order: int) -> torch.Tensor:
    """Between-class over total energy of F centred over the samples: F (B, n, K), labels (B, n) → (B,)."""
    B, n, K = F.shape
    Fc = F - F.mean(1, keepdim=True)
    flat = (labels + torch.arange(B, device=labels.device)[:, None] * order).reshape(-1)
    sums = torch.zeros(B * order, K, dtype=F.dtype, device=F.device).index_add_(0, flat, Fc.reshape(B * n, K))
    counts = torch.bincount(flat, minlength=B * order).to(F.dtype).clamp_min(1)
    between = (sums.square().sum(-1) / counts).view(B, order).sum(-1)
    return between / Fc.square().sum((1, 2)).clamp_min(1e-300)


def centred_labels(labels: torch.Tensor, order: int, centring: str, dtype) -> torch.Tensor:
    """Ỹ (B, n, M): P⊥₁Y over the training rows ("samples") or Y − 1/M ("classes")."""
    Y = torch.nn.functional.one_hot(labels, order).to(dtype)
    return Y - (Y.mean(1, keepdim=True) if centring == "samples" else 1.0 / order)


def gradient_alignment(G: torch.Tensor, F: torch.Tensor, Yt: torch.Tensor) -> torch.Tensor:
    """cos(G, ỸỸᵀF) per model: G, F (B, n, K), Ỹ (B, n, M) → (B,)."""
    T = Yt @ (Yt.transpose(1, 2) @ F)
    return (G * T).sum((1, 2)) / (_norm(G) * _norm(T)).clamp_min(1e-300)


class LayerReadouts:
    """A trainer hook (EvalContext → {column: (B,) tensor}) with the columns of the module docstring."""

    needs_features = True

    def __init__(self, task, centring: str = DEFAULT_CENTRING):
        self.order, self.operands = task.order, task.operands
        self.components = components_for(task.group)
        self.centring = centring

    def __call__(self, ctx: EvalContext) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            out = self._layer_columns(ctx)
            if self.components is not None:
                spec = embedding_spectrum(embedding(ctx.config, ctx.params, self.order), self.components,
                                          embedding_blocks(ctx.config, self.operands))
                out["key_count"], out["key_share"] = spec.count.to(torch.float64), spec.held
            hidden = getattr(ctx.features, "hidden", None)
            if hidden:
                Yt = centred_labels(ctx.train.labels, self.order, self.centring, hidden[0][0].dtype)
                for l, (F, G) in enumerate(hidden, start=1):
                    out[f"energy_share_h{l}"] = label_energy_share(F, ctx.train.labels, self.order)
                    out[f"grad_align_h{l}"] = gradient_alignment(G, F, Yt)
                    out[f"grad_norm_h{l}"] = _norm(G)
            return out

    def _layer_columns(self, ctx: EvalContext) -> dict[str, torch.Tensor]:
        model = ctx.model
        now = model.layer_weights(ctx.params)
        out = {}
        if ctx.init is not None:
            for name, w0 in model.layer_weights(ctx.init).items():
                n0 = _norm(w0)
                if bool((n0 > 0).all()):
                    out[f"drift_{name}"] = _norm(now[name] - w0) / n0
        if ctx.grads is not None:
            for name, g in model.layer_weights(ctx.grads).items():
                out[f"grad_{name}"] = _norm(g)
        return out
