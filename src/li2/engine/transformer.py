"""The one-layer transformer of Nanda et al. (2023) (`--model transformer`), stacked on a leading model
axis, through autograd.

Input sequence: the k operands' tokens x_1 … x_k (group elements 0 … M−1) and "=" (token M); the answer is
read at the last position. No LayerNorm, as in Nanda et al.; shapes (B models, H heads, d = d_model,
h = d/H per head, m = d_mlp, T = k+1 positions):
    embed (B, M+1, d)   pos (B, T, d)          x_t = embed[token_t] + pos[t]
    W_Q, W_K, W_V (B, H, d, h)   W_O (B, H, h, d)   causal attention, scores q·k/√h
    W_in (B, d, m), b_in (B, m), W_out (B, m, d), b_out (B, d)   MLP with σ (ReLU by default)
    unembed (B, d, M)                              logits = r₂ W_U at the last position
    r₁ = x_T + Σ_H softmax_t(q_T·k_t/√h) v_t W_O,   r₂ = r₁ + σ(r₁ W_in + b_in) W_out + b_out
Only the last position's output is read, and there (causal mask) every position is visible, so the
layer is computed at the last position only: its query, key and value are the same for every sample
("=" and its position are fixed), and the keys, values and scores of an operand position depend on
that position's token alone, so they are tables of M rows gathered per sample. This is the full
transformer's output exactly (tests compare it with a plain all-positions implementation); the
per-sample work is the attention mix, W_O, the MLP and the unembedding (≈ 2·(d² + 2dm + dM) flops).

Init as Nanda et al.: every weight N(0, 1/d) except the unembedding N(0, 1/M) (× --init-scale, and
× --top-init-scale for the unembedding), biases 0.
"""
from __future__ import annotations

import math

import torch

from ..activations import get_activation
from .model import Batch, Evaluation, _block_loss

LAYERS = ("embed", "pos", "W_Q", "W_K", "W_V", "W_O", "W_in", "b_in", "W_out", "b_out", "unembed")
EVAL_BLOCK = 4096      # samples per model per block of an evaluation (bounds the (B, n, d_mlp) temporary)


def transformer_init(order: int, operands: int, d_model: int, heads: int, d_mlp: int, seed: int,
                     init_scale: float = 1.0, top_init_scale: float = 1.0,
                     dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """One model's parameters (no B axis), drawn in float64 from the seed's own generator in LAYERS order."""
    gen = torch.Generator().manual_seed(int(seed))
    h = d_model // heads

    def normal(shape, std):
        return torch.randn(shape, generator=gen, dtype=torch.float64).mul_(std).to(dtype)

    s = init_scale / math.sqrt(d_model)
    return {"embed": normal((order + 1, d_model), s), "pos": normal((operands + 1, d_model), s),
            "W_Q": normal((heads, d_model, h), s), "W_K": normal((heads, d_model, h), s),
            "W_V": normal((heads, d_model, h), s), "W_O": normal((heads, h, d_model), s),
            "W_in": normal((d_model, d_mlp), s), "b_in": torch.zeros(d_mlp, dtype=dtype),
            "W_out": normal((d_mlp, d_model), s), "b_out": torch.zeros(d_model, dtype=dtype),
            "unembed": normal((d_model, order), top_init_scale / math.sqrt(order))}


class Transformer:
    """Stateless maths of the one-layer transformer; parameters live in a dict of stacked tensors."""

    name = "transformer"
    bottom, top = "embed", "unembed"

    def __init__(self, activation: str, loss: str, order: int):
        self.activation, self.loss, self.order = activation, loss, order
        self.sigma = get_activation(activation)[0]

    def uses_fused(self, device: torch.device) -> bool:
        return False

    def layer_weights(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: params[k] for k in LAYERS}

    # -- forward ----------------------------------------------------------------------------------
    def logits(self, p: dict[str, torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, n, k) element indices → logits at the last position (B, n, M)."""
        B, n, k = tokens.shape
        M = self.order
        H, d, h = p["W_Q"].shape[1], p["W_Q"].shape[2], p["W_Q"].shape[3]
        x_eq = p["embed"][:, M] + p["pos"][:, k]                                  # (B, d): "=" at the end
        q = torch.einsum("bd,bhde->bhe", x_eq, p["W_Q"]) / math.sqrt(h)          # (B, H, h)
        keys = [torch.einsum("bd,bhde->bhe", x_eq, p["W_K"])]                    # "=" attends to itself
        vals = [torch.einsum("bd,bhde->bhe", x_eq, p["W_V"])]
        scores = [(keys[0] * q).sum(-1)[:, None, :].expand(B, n, H)]              # (B, n, H)
        values = [vals[0][:, None].expand(B, n, H, h)]
        offsets = torch.arange(B, device=tokens.device)[:, None] * M
        for t in range(k):                     # operand position t: tables over its M tokens, gathered
            x = p["embed"][:, :M] + p["pos"][:, t:t + 1]                           # (B, M, d)
            key_table = torch.einsum("bmd,bhde->bmhe", x, p["W_K"])
            score_table = (key_table * q[:, None]).sum(-1)                        # (B, M, H)
            value_table = torch.einsum("bmd,bhde->bmhe", x, p["W_V"]).reshape(B * M, H * h)
            rows = (tokens[..., t] + offsets).reshape(-1)                         # (B·n,)
            # index_select, not [rows]: the latter's backward (index_put_ with accumulate) adds in parallel
            # with atomics on a multi-threaded CPU, so 2-thread runs would not repeat; index_add_ sums in order
            scores.append(score_table.reshape(B * M, H).index_select(0, rows).view(B, n, H))
            values.append(value_table.index_select(0, rows).view(B, n, H, h))
        attn = torch.softmax(torch.stack(scores, -1), -1)                         # (B, n, H, T)
        mixed = sum(attn[..., t, None] * v for t, v in enumerate(values))         # (B, n, H, h)
        r1 = x_eq[:, None] + torch.bmm(mixed.reshape(B, n, H * h), p["W_O"].reshape(B, H * h, d))
        hidden = self.sigma(torch.baddbmm(p["b_in"][:, None], r1, p["W_in"]))    # (B, n, m)
        r2 = r1 + torch.baddbmm(p["b_out"][:, None], hidden, p["W_out"])
        return torch.bmm(r2, p["unembed"])

    def evaluate(self, params: dict[str, torch.Tensor], batch: Batch) -> Evaluation:
        n = batch.size
        total, correct = 0, 0
        with torch.no_grad():
            for start in range(0, n, EVAL_BLOCK):
                part = _span(batch, start, min(n, start + EVAL_BLOCK))
                value, hits, _ = _block_loss(self.logits(params, part.tokens), part, self.loss, n, need_grad=False)
                total, correct = total + value, correct + hits
        return Evaluation(total / n, correct.double() / n)

    # -- training step ----------------------------------------------------------------------------
    def loss_and_grads(self, params: dict[str, torch.Tensor], batch: Batch, need_F: bool = False,
                       need_acc: bool = True, on_block=None):
        """(Evaluation, grads like params, None): there is no F = σ(XW) with V on top here."""
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        n = batch.size
        with torch.enable_grad():
            value, hits, _ = _block_loss(self.logits(leaves, batch.tokens), batch, self.loss, n, need_grad=False,
                                         need_acc=need_acc)
            grads = torch.autograd.grad(value.sum() / n, list(leaves.values()))
        acc = hits.double() / n if need_acc else None
        return Evaluation(value.detach() / n, acc), dict(zip(leaves.keys(), grads)), None


class _Part:
    """Samples start…stop−1 of a batch (tokens, labels, targets) for a blocked evaluation."""

    def __init__(self, batch: Batch, start: int, stop: int):
        self.tokens = batch.tokens[:, start:stop]
        self.labels = batch.labels[:, start:stop]
        self.targets = None if batch.targets is None else batch.targets[:, start:stop]


def _span(batch: Batch, start: int, stop: int) -> _Part:
    return _Part(batch, start, stop)
