"""Spectra of hidden nodes over the real isotypic components of any group (SPEC §8).

Only the `IsotypicComponents` interface is used (names, projectors (C, M, M)), so cyclic, product
and non-abelian groups all work the same way.

Speed: instead of applying C projectors (C·M² per block), an orthonormal basis adapted to the
components is built once (P_c = Q_c Q_cᵀ; stacking gives an orthogonal Q (M, M)), and ‖P_c x‖² is
the sum of the squared coefficients Qᵀx over the columns of component c. One (M × M) · (M × kK) product per model:
M = 127, K = 2048 is ~66 MFLOP.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..algebra.representations import isotypic_components

MAX_SPECTRUM_ORDER = 400      # projectors are (C, M, M): beyond this, spectra cost more than training
ACTIVE_MASS = 0.9             # active nodes: the fewest holding 90% of Σ‖w_j‖² (see spectrum_summary)

def components_for(group):
    """The group's real isotypic components, or None for operation tables that are not groups and for
    orders above MAX_SPECTRUM_ORDER (where spectra would cost more than training)."""
    if not group.is_group or group.order > MAX_SPECTRUM_ORDER:
        return None
    return isotypic_components(group)


_BASIS_CACHE: dict[int, tuple[object, np.ndarray, np.ndarray]] = {}


def _basis(components) -> tuple[np.ndarray, np.ndarray]:
    """(Q (M, M) orthogonal, indicator (M, C)): column r of Q lies in component argmax indicator[r].

    Cached per components object (kept alive in the cache so its id cannot be reused).
    """
    key = id(components)
    hit = _BASIS_CACHE.get(key)
    if hit is not None and hit[0] is components:
        return hit[1], hit[2]
    P = np.asarray(components.projectors, dtype=np.float64)
    C, M, _ = P.shape
    # The P_c are mutually orthogonal projectors summing to I, so S = Σ_c c·P_c has eigenvalue c
    # exactly on component c: ONE symmetric eigendecomposition yields the whole basis (instead of C).
    S = np.tensordot(np.arange(C, dtype=np.float64), P, axes=1)
    vals, Q = np.linalg.eigh(0.5 * (S + S.T))
    owner = np.rint(vals).astype(np.int64)
    ranks = np.rint(np.trace(P, axis1=1, axis2=2)).astype(np.int64)
    if (np.abs(vals - owner).max() > 1e-6 or owner.min() < 0 or owner.max() >= C
            or not np.array_equal(np.bincount(owner, minlength=C), ranks)):
        raise ValueError("isotypic projectors are not mutually orthogonal idempotents summing to I")
    ind = np.zeros((M, C))
    ind[np.arange(M), owner] = 1.0
    _BASIS_CACHE[key] = (components, Q, ind)
    return Q, ind


def node_spectrum(W: torch.Tensor, components, operands: int = 2) -> torch.Tensor:
    """Fraction of each operand block's ‖·‖² in each isotypic component.

    W: (B, kM, K) or (kM, K), operand j in rows j·M … j·M+M−1 → (B, k, K, C) or (k, K, C):
    frac[b, j, i, c] = ‖P_c W[b, jM:(j+1)M, i]‖² / ‖W[b, jM:(j+1)M, i]‖², zero where the block is zero.
    Computed in W's dtype.
    """
    Q, ind = _basis(components)
    M = Q.shape[0]
    squeeze = W.ndim == 2
    if squeeze:
        W = W.unsqueeze(0)
    B, rows, K = W.shape
    if rows != operands * M:
        raise ValueError(f"W has {rows} rows, expected operands·M = {operands}·{M}")
    Qt = torch.as_tensor(Q, dtype=W.dtype, device=W.device)
    It = torch.as_tensor(ind, dtype=W.dtype, device=W.device)
    coeff = torch.einsum("bjmi,mr->bjir", W.reshape(B, operands, M, K), Qt)    # (B, k, K, M)
    energy = (coeff * coeff) @ It                                               # (B, k, K, C)
    total = energy.sum(-1, keepdim=True)
    frac = torch.where(total > 0, energy / total.clamp_min(torch.finfo(W.dtype).tiny), torch.zeros_like(energy))
    return frac[0] if squeeze else frac


def component_dimensions(components) -> np.ndarray:
    """Dimension (rank of the projector) of each isotypic component: (C,), summing to M."""
    return _basis(components)[1].sum(0)


@dataclass
class SpectrumSummary:
    """Per-model feature read-out. Node-level tensors are (B, K); model-level ones (B,); histogram (B, C).

    node_norm: ‖w_i‖ over all operand blocks. active: with active_mass set, the fewest nodes that hold
    that share of Σ‖w_i‖² (the trainer's diagnostics use 0.9); otherwise node_norm ≥ active_threshold · max node norm of
    that model. dominant: the component with the largest fraction averaged over blocks;
    dominant_fraction: that block-averaged fraction. learned: active and dominant_fraction ≥
    learned_threshold and dominant non-trivial. coverage: number of distinct non-trivial components
    that some learned node is dominated by. diversity: exp(entropy) of the learned nodes' component
    histogram (effective number of components; 0 when no node has learned). histogram: number of
    ACTIVE nodes per dominant component (trivial included).
    """

    names: tuple[str, ...]
    node_norm: torch.Tensor
    active: torch.Tensor
    dominant: torch.Tensor
    dominant_fraction: torch.Tensor
    learned: torch.Tensor
    n_active: torch.Tensor
    coverage: torch.Tensor
    diversity: torch.Tensor
    mean_dominant_fraction: torch.Tensor
    histogram: torch.Tensor
    learned_histogram: torch.Tensor

    def records(self) -> list[dict]:
        """JSON-ready per-model dicts (histograms keep only non-zero components)."""
        out = []
        for b in range(self.node_norm.shape[0]):
            hist = {self.names[c]: int(n) for c, n in enumerate(self.histogram[b].tolist()) if n}
            covered = [self.names[c] for c, n in enumerate(self.learned_histogram[b].tolist()) if n and c != 0]
            out.append({
                "n_active": int(self.n_active[b]),
                "n_learned": int(self.learned[b].sum()),
                "coverage": int(self.coverage[b]),
                "diversity": float(self.diversity[b]),
                "mean_dominant_fraction": float(self.mean_dominant_fraction[b]),
                "covered": covered,
                "histogram": hist,
            })
        return out


def spectrum_summary(W: torch.Tensor, components, operands: int = 2, active_threshold: float = 0.1,
                     learned_threshold: float = 0.5, active_mass: float | None = None) -> SpectrumSummary:
    """Summarise node spectra per model. W: (B, kM, K) or (kM, K) (treated as B = 1). See SpectrumSummary."""
    if W.ndim == 2:
        W = W.unsqueeze(0)
    frac = node_spectrum(W, components, operands)             # (B, k, K, C)
    mean = frac.mean(1)                                       # (B, K, C)
    dom_frac, dom = mean.max(-1)                              # (B, K)
    norm = W.norm(dim=1)                                      # (B, K)
    if active_mass is not None:
        # the fewest nodes that together hold `active_mass` of Σ‖w‖² (scale-free: no norm cut-off)
        sq = norm.square()
        srt, idx = sq.sort(-1, descending=True)
        before = srt.cumsum(-1) - srt                         # mass of the nodes ranked above
        keep = before < active_mass * sq.sum(-1, keepdim=True)
        active = torch.zeros_like(keep).scatter(-1, idx, keep)
    else:
        active = norm >= active_threshold * norm.max(-1, keepdim=True).values.clamp_min(torch.finfo(W.dtype).tiny)
    C = frac.shape[-1]
    onehot = torch.nn.functional.one_hot(dom, C).to(W.dtype)  # (B, K, C)
    hist = (onehot * active[..., None]).sum(1)                # (B, C)
    learned = active & (dom_frac >= learned_threshold) & (dom != 0)
    lhist = (onehot * learned[..., None]).sum(1)              # (B, C), trivial column is 0
    coverage = (lhist > 0).sum(-1)
    p = lhist / lhist.sum(-1, keepdim=True).clamp_min(1)
    ent = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
    diversity = torch.where(lhist.sum(-1) > 0, ent.exp(), torch.zeros_like(ent))
    n_active = active.sum(-1)
    mean_dom = (dom_frac * active).sum(-1) / n_active.clamp_min(1)
    return SpectrumSummary(tuple(components.names), norm, active, dom, dom_frac, learned, n_active, coverage,
                           diversity, mean_dom, hist.long(), lhist.long())


# -- the spectrum of a whole embedding matrix ------------------------------------------------------------

# Key components of an embedding (Nanda et al.'s "key frequencies" for Z_M): the fewest non-trivial
# isotypic components, largest first, that hold KEY_MASS of the non-trivial energy. A random embedding
# spreads its energy by dimension (≈ 80% of the components are needed); a grokked transformer's
# embedding holds it in a handful.
KEY_MASS = 0.8


@dataclass
class EmbeddingSpectrum:
    """shares (B, C): each component's fraction of the embedding's non-trivial energy (trivial: 0);
    key (B, C) bool: the key components (KEY_MASS); count (B,): how many; held (B,): their total share;
    trivial_share (B,): the trivial component's fraction of the whole energy."""

    names: tuple[str, ...]
    shares: torch.Tensor
    key: torch.Tensor
    count: torch.Tensor
    held: torch.Tensor
    trivial_share: torch.Tensor

    def records(self) -> list[dict]:
        """JSON-ready per model: key components (largest share first) with their shares."""
        out = []
        for b in range(self.shares.shape[0]):
            idx = [c for c in torch.argsort(self.shares[b], descending=True).tolist() if bool(self.key[b, c])]
            out.append({"key": [self.names[c] for c in idx], "key_shares": [float(self.shares[b, c]) for c in idx],
                        "count": int(self.count[b]), "held": float(self.held[b]),
                        "trivial_share": float(self.trivial_share[b])})
        return out


def embedding_spectrum(E: torch.Tensor, components, blocks: int = 1, mass: float = KEY_MASS) -> EmbeddingSpectrum:
    """Spectrum of a whole embedding. E: (B, blocks·M, width) or (blocks·M, width), block j = the rows of
    operand j (one block for a shared token embedding): energy_c = Σ_blocks Σ_columns ‖P_c e‖²."""
    Q, ind = _basis(components)
    M = Q.shape[0]
    if E.ndim == 2:
        E = E.unsqueeze(0)
    B, rows, K = E.shape
    if rows != blocks * M:
        raise ValueError(f"embedding has {rows} rows, expected blocks·M = {blocks}·{M}")
    E = E.detach().to(torch.float64)
    coeff = torch.einsum("bjmi,mr->bjir", E.reshape(B, blocks, M, K), torch.as_tensor(Q, device=E.device))
    energy = coeff.square().sum((1, 2)) @ torch.as_tensor(ind, device=E.device)          # (B, C)
    total = energy.sum(-1)
    rest = energy[:, 1:].sum(-1, keepdim=True)
    shares = torch.cat([torch.zeros_like(rest), energy[:, 1:] / rest.clamp_min(1e-300)], -1)
    srt, idx = shares.sort(-1, descending=True)
    before = srt.cumsum(-1) - srt                       # share of the components ranked above
    keep = (before < mass) & (srt > 0)
    key = torch.zeros_like(keep).scatter(-1, idx, keep)
    return EmbeddingSpectrum(tuple(components.names), shares, key, key.sum(-1), (shares * key).sum(-1),
                             energy[:, 0] / total.clamp_min(1e-300))
