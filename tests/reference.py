"""Slow, obvious reference pieces the tests compare li2's fast paths against."""
import torch


def one_hot_inputs(inputs: torch.Tensor, order: int, dtype=torch.float32) -> torch.Tensor:
    """X = [e_{x1}; …; e_{xk}]: (n, kM), the one-hot rows the model's gathers stand for."""
    k = inputs.shape[1]
    parts = [torch.nn.functional.one_hot(inputs[:, j], order).to(dtype) for j in range(k)]
    return torch.cat(parts, dim=1)
