"""Slow, obvious reference pieces the tests compare li2's fast paths against."""
import torch


def one_hot_inputs(inputs: torch.Tensor, order: int, dtype=torch.float32) -> torch.Tensor:
    """X = [e_{x1}; …; e_{xk}]: (n, kM), the one-hot rows the model's gathers stand for."""
    k = inputs.shape[1]
    parts = [torch.nn.functional.one_hot(inputs[:, j], order).to(dtype) for j in range(k)]
    return torch.cat(parts, dim=1)


def transformer_logits(p: dict, tokens: torch.Tensor, order: int, activation=torch.relu) -> torch.Tensor:
    """Nanda et al.'s one-layer transformer written plainly for ONE model (no model axis): every position
    computed, causal mask, heads concatenated, the logits of the last position. tokens (n, k) → (n, M)."""
    n, k = tokens.shape
    seq = torch.cat([tokens, torch.full((n, 1), order, dtype=tokens.dtype)], 1)       # (n, T): a, b, "="
    T = k + 1
    x = p["embed"][seq] + p["pos"][None]                                               # (n, T, d)
    H, d, h = p["W_Q"].shape
    q = torch.einsum("ntd,hde->nhte", x, p["W_Q"])
    key = torch.einsum("ntd,hde->nhte", x, p["W_K"])
    v = torch.einsum("ntd,hde->nhte", x, p["W_V"])
    scores = torch.einsum("nhte,nhse->nhts", q, key) / h ** 0.5
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)                 # s > t is the future
    attn = torch.softmax(scores.masked_fill(mask, float("-inf")), -1)
    z = torch.einsum("nhts,nhse->nthe", attn, v).reshape(n, T, H * h)
    r1 = x + z @ p["W_O"].reshape(H * h, d)
    r2 = r1 + activation(r1 @ p["W_in"] + p["b_in"]) @ p["W_out"] + p["b_out"]
    return (r2 @ p["unembed"])[:, -1]
