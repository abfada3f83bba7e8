"""The deep MLP of the paper's §6 (`--model mlp`), stacked on a leading model axis, through autograd.

Shapes (B models, n samples, k operands, group order M, width K, L = depth hidden layers):
    W: (B, kM, K)          the lowest layer (one-hot inputs: a gather, as in the two-layer network)
    U: (B, L−1, K, K)      the hidden-to-hidden layers U_1 … U_{L−1}
    V: (B, K, M)           the top layer
    F_1 = σ(Σ_j W[j·M + x_j])                                              (B, n, K)
    F_l = σ(F_{l−1} U_{l−1})      or, residual (--residual), σ(F_{l−1} + F_{l−1} U_{l−1})
    O = F_L V, and the loss of engine.model (mse on class-centred targets, or ce).
With --residual the network is the two-layer network with L−1 extra layers (`--model mlp2 --layers L−1`),
parameter for parameter: the same init, the same forward (a test checks it).

Models are independent: the loss summed over the model axis has, for model b, exactly model b's
gradient. The backpropagated gradient of each hidden layer, G_l = −∂L_sum/∂F_l (L_sum = ½Σ‖P⊥1 o − ỹ‖²
for mse, ΣCE for ce: the two-layer network's convention), comes from the same backward pass when an
evaluation asks for it (Features.hidden).
"""
from __future__ import annotations

import torch

from ..activations import get_activation
from .model import Batch, Evaluation, Features, _block_loss


def gathered_preactivation(W: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """H = Σ_j W[rows[:, j]]: W (B, kM, K), rows (B·c, k) → (B, c, K), one index_select per operand.

    engine.model.hidden_preactivation's embedding_bag gives the same H, but its backward sorts every index of
    the stack together, which changes the order in which a row's gradient is summed with the stack's size;
    index_select's backward (index_add_) sums in sample order, so a stacked model's gradient is bit for bit
    the one it has alone."""
    b, km, width = W.shape
    flat = W.reshape(b * km, width)
    H = flat.index_select(0, rows[:, 0])
    for j in range(1, rows.shape[1]):
        H = H + flat.index_select(0, rows[:, j])
    return H.view(b, -1, width)


class DeepMLP:
    """Stateless maths of the L-hidden-layer MLP; parameters live in a dict of stacked tensors."""

    name = "mlp"
    bottom, top = "W", "V"

    def __init__(self, activation: str, loss: str, depth: int, residual: bool = False):
        if depth < 1:
            raise ValueError(f"an MLP needs at least one hidden layer, got depth {depth}")
        self.activation, self.loss, self.depth, self.residual = activation, loss, depth, residual
        self.sigma = get_activation(activation)[0]

    def uses_fused(self, device: torch.device) -> bool:
        return False

    def layer_weights(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{layer name: (B, …) weights}: U split into its L−1 layers."""
        out = {"W": params["W"]}
        out.update({f"U{i}": params["U"][:, i - 1] for i in range(1, self.depth)})
        out["V"] = params["V"]
        return out

    # -- forward ----------------------------------------------------------------------------------
    def hidden(self, params: dict[str, torch.Tensor], rows: torch.Tensor) -> list[torch.Tensor]:
        """[F_1, …, F_L] for rows (B·n, k) (offsets of engine.model.make_batch): each (B, n, K)."""
        F = self.sigma(gathered_preactivation(params["W"], rows))
        out = [F]
        for layer in range(self.depth - 1):
            U = params["U"][:, layer]
            F = self.sigma(F + torch.bmm(F, U)) if self.residual else self.sigma(torch.bmm(F, U))
            out.append(F)
        return out

    def features(self, params: dict[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        """Top hidden layer F_L: (B, n, K)."""
        return self.hidden(params, rows)[-1]

    def evaluate(self, params: dict[str, torch.Tensor], batch: Batch) -> Evaluation:
        with torch.no_grad():
            O = torch.bmm(self.features(params, batch.rows), params["V"])
            value, hits, _ = _block_loss(O, batch, self.loss, batch.size, need_grad=False)
        return Evaluation(value / batch.size, hits.double() / batch.size)

    # -- training step ----------------------------------------------------------------------------
    def loss_and_grads(self, params: dict[str, torch.Tensor], batch: Batch, need_F: bool = False,
                       need_acc: bool = True, on_block=None):
        """(Evaluation, grads like params, Features or None). With need_F the Features hold the top layer
        (F_L, G_L) and `hidden` = [(F_l, G_l)] for every hidden layer; on_block is not used (no blocks)."""
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        n = batch.size
        with torch.enable_grad():
            hidden = self.hidden(leaves, batch.rows)
            O = torch.bmm(hidden[-1], leaves["V"])
            value, hits, _ = _block_loss(O, batch, self.loss, n, need_grad=False, need_acc=need_acc)
            inputs = list(leaves.values()) + (hidden if need_F else [])
            grads = torch.autograd.grad(value.sum() / n, inputs)
        out = dict(zip(leaves.keys(), grads[:len(leaves)]))
        features = None
        if need_F:
            scale = -(n / 2.0 if self.loss == "mse" else float(n))     # G = −∂L_sum/∂F (module docstring)
            pairs = [(F.detach(), g * scale) for F, g in zip(hidden, grads[len(leaves):])]
            features = Features(pairs[-1][0], pairs[-1][1], hidden=pairs)
        acc = hits.double() / n if need_acc else None
        return Evaluation(value.detach() / n, acc), out, features
