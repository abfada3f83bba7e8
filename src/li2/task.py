"""Group-arithmetic tasks: every k-tuple of elements is one sample, labelled by its product.

Inputs are kept as element indices, never as one-hot rows: the model gathers rows of W
instead of multiplying by a one-hot matrix (x = [e_a; e_b], docs/theory.md).
torch is imported inside the functions that build tensors, so `li2.config` (and the CLI's
parsing) can use `critical_ratio` without paying torch's import time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from .algebra.groups import Group

if TYPE_CHECKING:
    import torch

# The reference code's calibrated constant of p_c = c·ln M / M (docs/theory.md, scaling law).
REFERENCE_C = 2.7482

# Where Ỹ (and F̃) are centred in the theory instruments (docs/theory.md, two loss conventions):
# "samples" = the paper's P⊥₁ = I_n − 11ᵀ/n over the training rows (Ỹ entries y_ic − n_c/n);
# "classes" = each output row over the M classes (Ỹ = onehot − 1/M), the reference code's loss,
# which training always uses. They agree at full data.
Centring = Literal["samples", "classes"]
CENTRINGS: tuple[str, ...] = ("samples", "classes")
DEFAULT_CENTRING = "samples"


def critical_ratio(order: int, c: float = REFERENCE_C) -> float:
    """p_c = c · ln M / M (natural log), SPEC §5."""
    return c * math.log(order) / order


@dataclass(frozen=True, eq=False)
class Task:
    """All M^k samples of a k-operand product.

    inputs: (N, k) int64 element indices; labels: (N,) int64 with labels[i] = x_1∘x_2∘…∘x_k.
    """

    group: Group
    operands: int
    inputs: torch.Tensor
    labels: torch.Tensor

    @property
    def order(self) -> int:
        return self.group.order

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])


def make_task(group: Group, operands: int = 2) -> Task:
    if operands < 2:
        raise ValueError(f"--operands must be >= 2, got {operands}")
    m = group.order
    if m**operands > 50_000_000:
        raise ValueError(f"{m}^{operands} samples is too many; use fewer operands or a smaller group")
    import torch

    grids = np.meshgrid(*([np.arange(m)] * operands), indexing="ij")
    inputs = np.stack([g.reshape(-1) for g in grids], axis=1)
    labels = inputs[:, 0]
    for j in range(1, operands):  # left fold: ((x1∘x2)∘x3)…
        labels = group.table[labels, inputs[:, j]]
    return Task(group, operands, torch.from_numpy(inputs.astype(np.int64)), torch.from_numpy(labels.astype(np.int64)))


def train_size(num_samples: int, ratio: float) -> int:
    """Number of training samples for ratio p: round(p·N), at least 1 and at most N."""
    return min(num_samples, max(1, int(round(ratio * num_samples))))


def split(num_samples: int, ratio: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniformly random train/test split of fraction `ratio`, chosen by `seed`.

    Returns (train_idx, test_idx), each sorted, disjoint, covering 0..N-1.
    """
    import torch

    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(num_samples, generator=gen)
    n = train_size(num_samples, ratio)
    return perm[:n].sort().values, perm[n:].sort().values


def centred_targets(labels: torch.Tensor, order: int, dtype=None) -> torch.Tensor:
    """Ỹ = onehot(c) − 1/M, centred over the M classes (the reference code's loss): (n, M)."""
    import torch

    y = torch.nn.functional.one_hot(labels, order).to(dtype or torch.float32)
    return y - 1.0 / order
