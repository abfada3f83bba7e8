"""The two-layer network of SPEC §1, stacked on a leading model axis, with hand-written gradients.

Shapes (B models, n samples, k operands, group order M, width K):
    W: (B, kM, K)   operand j of sample i selects row j·M + x_ij
    V: (B, K, M)
    H = Σ_j W[j·M + x_j]          (B, n, K)   — a gather, never a one-hot product
    F = σ(H)                        (B, n, K)
    O = F V                         (B, n, M)
    mse: loss = (1/n) Σ_i ‖P⊥1 o_i − ỹ_i‖²,   ce: loss = (1/n) Σ_i −log softmax(o_i)[c_i]

The two-layer path computes gradients by hand so that each (n, K) tensor is touched as few
times as possible; the optional residual layers (x ← σ(x + x U_l)) go through autograd.
Both are checked against autograd on the one-hot formulation in tests.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .activations import get_activation


@dataclass
class Batch:
    """Samples of one split for all B models.

    rows: (B·n, k) int64 indices into W viewed as (B·kM, K) — model and operand offsets baked in.
    labels: (B, n) int64.  targets: (B, n, M) centred one-hot Ỹ (mse) — None for ce.
    """

    rows: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor | None

    @property
    def num_models(self) -> int:
        return int(self.labels.shape[0])

    @property
    def size(self) -> int:
        return int(self.labels.shape[1])


def make_batch(inputs: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor, order: int, loss: str,
               dtype: torch.dtype, device: torch.device) -> Batch:
    """inputs (N, k), labels (N,), idx (B, n) sample indices per model → Batch."""
    b, n = idx.shape
    k = inputs.shape[1]
    x = inputs[idx]                                                   # (B, n, k)
    offsets = torch.arange(k) * order + (torch.arange(b) * k * order)[:, None]   # (B, k)
    rows = (x + offsets[:, None, :]).reshape(b * n, k)
    y = labels[idx]
    targets = None
    if loss == "mse":
        targets = torch.nn.functional.one_hot(y, order).to(dtype) - 1.0 / order
        targets = targets.to(device)
    return Batch(rows.to(device), y.to(device), targets)


def hidden_preactivation(W: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """H = Σ_j W[rows[:, j]]: W (B, kM, K), rows (B·n, k) → (B, n, K), one fused gather-sum."""
    b, km, k_width = W.shape
    h = torch.nn.functional.embedding_bag(rows, W.reshape(b * km, k_width), mode="sum")
    return h.view(b, -1, k_width)


@dataclass
class Evaluation:
    """Per-model loss (B,) and accuracy (B,) on one split."""

    loss: torch.Tensor
    acc: torch.Tensor


def _loss_and_output_grad(O: torch.Tensor, batch: Batch, loss: str, need_grad: bool):
    """Return per-model loss (B,), accuracy (B,) and dL/dO (B, n, M) (or None)."""
    n = batch.size
    acc = (O.argmax(-1) == batch.labels).double().mean(-1)
    if loss == "mse":
        R = O - O.mean(-1, keepdim=True) - batch.targets          # P⊥1 o − ỹ (Ỹ is already centred)
        value = R.square().sum((1, 2)) / n
        grad = R.mul_(2.0 / n) if need_grad else None             # P⊥1 is symmetric and R is centred
    else:
        logp = torch.log_softmax(O, -1)
        value = -logp.gather(-1, batch.labels[..., None]).squeeze(-1).mean(-1)
        if need_grad:
            grad = logp.exp_()
            grad.scatter_add_(-1, batch.labels[..., None], -torch.ones_like(batch.labels[..., None], dtype=O.dtype))
            grad.div_(n)
        else:
            grad = None
    return value, acc, grad


class TwoLayerNet:
    """Stateless maths of the network; parameters live in a dict of stacked tensors.

    params: {"W": (B, kM, K), "V": (B, K, M), "U": (B, L, K, K) when layers > 0}.
    """

    def __init__(self, activation: str, loss: str, layers: int = 0):
        self.activation = activation
        self.sigma, self.dsigma = get_activation(activation)
        self.loss = loss
        self.layers = layers

    # -- features -------------------------------------------------------------------------
    def features(self, params: dict[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        """Top hidden layer activations: (B, n, K)."""
        F = self.sigma(hidden_preactivation(params["W"], rows))
        for layer in range(self.layers):
            F = self.sigma(F + torch.bmm(F, params["U"][:, layer]))
        return F

    def evaluate(self, params: dict[str, torch.Tensor], batch: Batch) -> Evaluation:
        with torch.no_grad():
            O = torch.bmm(self.features(params, batch.rows), params["V"])
            value, acc, _ = _loss_and_output_grad(O, batch, self.loss, need_grad=False)
        return Evaluation(value, acc)

    # -- training step ----------------------------------------------------------------------
    def loss_and_grads(self, params: dict[str, torch.Tensor], batch: Batch, need_F: bool = False):
        """Loss/accuracy of the current parameters on `batch` and the gradients of the loss.

        Returns (Evaluation, grads dict like params, F or None).  Per-model losses are
        independent, so the gradient of model b only depends on model b.
        """
        if self.layers > 0:
            return self._autograd_step(params, batch, need_F)
        W, V = params["W"], params["V"]
        b, km, k_width = W.shape
        H = hidden_preactivation(W, batch.rows)                      # (B, n, K)
        F = self.sigma(H)
        O = torch.bmm(F, V)                                          # (B, n, M)
        value, acc, dO = _loss_and_output_grad(O, batch, self.loss, need_grad=True)
        dV = torch.bmm(F.transpose(1, 2), dO)                        # (B, K, M)
        if self.activation == "sqr":
            # dH = (dO Vᵀ) ⊙ 2H: fold the 2 into the small V so the big tensor sees one pass.
            dH = torch.bmm(dO, V.transpose(1, 2) * 2.0).mul_(H)
        else:
            dH = torch.bmm(dO, V.transpose(1, 2)).mul_(self.dsigma(H))
        dW = torch.zeros(b * km, k_width, dtype=W.dtype, device=W.device)
        dH_flat = dH.view(-1, k_width)
        for j in range(batch.rows.shape[1]):                         # k operands (2), not samples
            dW.index_add_(0, batch.rows[:, j], dH_flat)
        grads = {"W": dW.view(b, km, k_width), "V": dV}
        return Evaluation(value, acc), grads, (F if need_F else None)

    def _autograd_step(self, params, batch, need_F):
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        with torch.enable_grad():
            F = self.features(leaves, batch.rows)
            O = torch.bmm(F, leaves["V"])
            value, acc, _ = _loss_and_output_grad(O.detach(), batch, self.loss, need_grad=False)
            if self.loss == "mse":
                R = O - O.mean(-1, keepdim=True) - batch.targets
                per_model = R.square().sum((1, 2)) / batch.size
            else:
                logp = torch.log_softmax(O, -1)
                per_model = -logp.gather(-1, batch.labels[..., None]).squeeze(-1).mean(-1)
            grads = torch.autograd.grad(per_model.sum(), list(leaves.values()))
        return Evaluation(value, acc), dict(zip(leaves.keys(), grads)), (F.detach() if need_F else None)


def init_params(order: int, operands: int, width: int, layers: int, seed: int, init_scale: float,
                top_init_scale: float, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """One model's parameters, uniform ±scale/√fan_in, from its own generator (so a model's
    init does not depend on which other models it is stacked with).  Shapes without the B axis."""
    gen = torch.Generator().manual_seed(int(seed))

    def uniform(shape, fan_in, scale):
        bound = scale / fan_in**0.5
        return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1).mul_(bound).to(dtype)

    params = {"W": uniform((operands * order, width), operands * order, init_scale)}
    params["V"] = uniform((width, order), width, top_init_scale)
    if layers > 0:
        params["U"] = uniform((layers, width, width), width, init_scale)
    return params
