"""Optimisers over stacked parameters with a learning rate and weight decay per model.

torch.optim cannot give each slice of a stacked tensor its own hyperparameters, so the
update rules are written out here; tests check them against torch.optim step for step.

State is a flat dict of tensors (safetensors-friendly) plus the integer step count.
    sgd    θ ← θ − lr·buf,  buf ← μ·buf + (g + η θ)                         (torch.optim.SGD)
    adam   g ← g + η θ (coupled L2, as the reference), then Adam             (torch.optim.Adam)
    adamw  θ ← θ(1 − lr·η), then Adam on g                                  (torch.optim.AdamW)
    muon   on W: m ← β m + (1−β) g, θ ← θ(1 − lr·η) − lr·NS5(m)  (SPEC §6); Adam (coupled) on the rest
"""
from __future__ import annotations

import math

import torch

from .kernels import adam_update
from .kernels import available as fused_kernels_available

# SPEC §6: the reference's five Newton–Schulz (a, b, c) steps.
NS_COEFFS = ((4.01, -9.22, 5.80), (3.49, -6.38, 3.23), (3.34, -6.21, 3.20), (3.64, -7.48, 4.43),
             (3.46, -5.35, 2.85))


def newton_schulz5(G: torch.Tensor) -> torch.Tensor:
    """Approximate orthogonal polar factor of each matrix in G: (B, r, c) → (B, r, c).

    X ← G/‖G‖_F (transposed so rows ≤ cols); each step A = XXᵀ, X ← aX + (bA + cA²)X.
    """
    X = G
    transposed = X.shape[-2] > X.shape[-1]
    if transposed:
        X = X.transpose(-2, -1)
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for a, b, c in NS_COEFFS:
        A = X @ X.transpose(-2, -1)
        X = a * X + (b * A + c * (A @ A)) @ X
    return X.transpose(-2, -1) if transposed else X


def _fusable(*tensors: torch.Tensor) -> bool:
    """Whether the fused CPU kernel can update these tensors in place."""
    same = lambda t: t.dtype == tensors[0].dtype and t.dtype in (torch.float32, torch.float64)
    return FUSED_ADAM and fused_kernels_available() and all(t.device.type == "cpu" and t.is_contiguous() and same(t)
                                                            for t in tensors)


FUSED_ADAM = True   # tests switch it off to compare the kernel with the torch ops


def _per_model(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) → (B, 1, 1, …) broadcastable against `like`."""
    return x.view(-1, *([1] * (like.dim() - 1))).to(like.dtype)


class Optimizer:
    """One optimiser for all stacked models.  lr, weight_decay: (B,) tensors."""

    def __init__(self, name: str, params: dict[str, torch.Tensor], lr: torch.Tensor, weight_decay: torch.Tensor,
                 momentum: float = 0.9, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 muon_momentum: float = 0.99, muon_lr: torch.Tensor | None = None):
        if name not in ("sgd", "adam", "adamw", "muon"):
            raise ValueError(f"unknown optimizer '{name}': choose sgd, adam, adamw or muon")
        self.name = name
        self.lr, self.weight_decay = lr, weight_decay
        self.muon_lr = lr if muon_lr is None else muon_lr
        self.momentum, self.betas, self.eps, self.muon_momentum = momentum, betas, eps, muon_momentum
        self.step_count = 0
        self.state: dict[str, torch.Tensor] = {}
        for key, p in params.items():
            if name == "sgd" or (name == "muon" and key == "W"):
                self.state[f"{key}.momentum"] = torch.zeros_like(p)
            else:
                self.state[f"{key}.exp_avg"] = torch.zeros_like(p)
                self.state[f"{key}.exp_avg_sq"] = torch.zeros_like(p)

    def step(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
             active: torch.Tensor | None = None) -> None:
        """Update params in place.  active: (B,) bool — models that are frozen keep their values."""
        self.step_count += 1
        for key, p in params.items():
            g = grads[key]
            if active is not None and not bool(active.all()):
                old = p.clone()
            if self.name == "sgd":
                self._sgd(key, p, g)
            elif self.name == "muon" and key == "W":
                self._muon(key, p, g)
            else:
                self._adam(key, p, g, decoupled=self.name == "adamw")
            if active is not None and not bool(active.all()):
                keep = _per_model(~active, p).bool()
                p.copy_(torch.where(keep, old, p))

    def _sgd(self, key, p, g):
        wd, lr = _per_model(self.weight_decay, p), _per_model(self.lr, p)
        g = g + wd * p
        buf = self.state[f"{key}.momentum"]
        if self.step_count == 1:
            buf.copy_(g)
        else:
            buf.mul_(self.momentum).add_(g)
        p.sub_(lr * buf)

    def _adam(self, key, p, g, decoupled: bool):
        beta1, beta2 = self.betas
        m, v = self.state[f"{key}.exp_avg"], self.state[f"{key}.exp_avg_sq"]
        if _fusable(p, g, m, v):   # one pass per model instead of ~10 torch ops (tests compare both)
            lr, wd = self.lr.tolist(), self.weight_decay.tolist()
            for b in range(p.shape[0]):
                adam_update(p[b].view(-1).numpy(), g[b].reshape(-1).numpy(), m[b].view(-1).numpy(),
                            v[b].view(-1).numpy(), lr[b], wd[b], beta1, beta2, self.eps, self.step_count, decoupled)
            return
        wd, lr = _per_model(self.weight_decay, p), _per_model(self.lr, p)
        if decoupled:
            p.mul_(1 - lr * wd)
        else:
            g = g + wd * p
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        t = self.step_count
        bias1, bias2_sqrt = 1 - beta1**t, math.sqrt(1 - beta2**t)
        denom = (v.sqrt() / bias2_sqrt).add_(self.eps)
        p.sub_((lr / bias1) * m / denom)

    def _muon(self, key, p, g):
        wd, lr = _per_model(self.weight_decay, p), _per_model(self.muon_lr, p)
        m = self.state[f"{key}.momentum"]
        m.mul_(self.muon_momentum).add_(g, alpha=1 - self.muon_momentum)
        p.mul_(1 - lr * wd)
        p.sub_(lr * newton_schulz5(m))

    # -- checkpointing ----------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"opt.{k}": v for k, v in self.state.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], step_count: int) -> None:
        for k in self.state:
            self.state[k].copy_(tensors[f"opt.{k}"])
        self.step_count = step_count
