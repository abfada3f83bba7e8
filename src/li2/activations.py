"""Activations σ with their derivatives σ', written out so the trainer needs no autograd.

Each entry maps a name to (σ, σ').  Both take and return tensors of any shape.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

Fn = Callable[[torch.Tensor], torch.Tensor]


def _sqr(h):
    return h * h


def _dsqr(h):
    return 2.0 * h


def _relu(h):
    return torch.relu(h)


def _drelu(h):
    return (h > 0).to(h.dtype)


def _silu(h):
    return torch.nn.functional.silu(h)


def _dsilu(h):
    s = torch.sigmoid(h)
    return s * (1.0 + h * (1.0 - s))


def _relusqr(h):
    r = torch.relu(h)
    return r * r


def _drelusqr(h):
    return 2.0 * torch.relu(h)


def _gelu(h):
    return torch.nn.functional.gelu(h)


def _dgelu(h):
    # d/dh [h Φ(h)] = Φ(h) + h φ(h)
    cdf = 0.5 * (1.0 + torch.erf(h / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * h * h) / math.sqrt(2.0 * math.pi)
    return cdf + h * pdf


ACTIVATIONS: dict[str, tuple[Fn, Fn]] = {
    "sqr": (_sqr, _dsqr),
    "relu": (_relu, _drelu),
    "silu": (_silu, _dsilu),
    "relusqr": (_relusqr, _drelusqr),
    "gelu": (_gelu, _dgelu),
}


def get_activation(name: str) -> tuple[Fn, Fn]:
    """Return (σ, σ') for `name`; KeyError-free: raises ValueError with the known names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation '{name}': choose one of {', '.join(ACTIVATIONS)}") from None
