"""spectra.py: node spectra over isotypic components against explicit projector products (SPEC §8)."""
import math

import numpy as np
import pytest
import torch

from li2.algebra.groups import get_group
from li2.algebra.representations import isotypic_components
from li2.theory.spectra import node_spectrum, spectrum_summary

D = torch.float64


def _freq(M, k, phi=0.4):
    a = torch.arange(M, dtype=D)
    return torch.cos(2 * math.pi * k * a / M + phi)


def _slow_spectrum(W, comps, operands):
    """‖P_c x‖² / ‖x‖² with the explicit projectors, one node and block at a time."""
    P = torch.tensor(np.array(comps.projectors), dtype=D)
    M = P.shape[-1]
    B, _, K = W.shape
    out = torch.zeros(B, operands, K, P.shape[0], dtype=D)
    for b in range(B):
        for j in range(operands):
            for i in range(K):
                x = W[b, j * M:(j + 1) * M, i]
                if x.norm() > 0:
                    out[b, j, i] = torch.stack([(p @ x).square().sum() for p in P]) / x.square().sum()
    return out


@pytest.mark.parametrize("name", ["Z11", "S3", "D4", "Z2xZ4"])
def test_node_spectrum_equals_projector_formula(name):
    comps = isotypic_components(get_group(name))
    M = comps.projectors.shape[-1]
    W = torch.randn(2, 2 * M, 5, dtype=D, generator=torch.Generator().manual_seed(0))
    W[1, :M, 3] = 0.0                                             # a zero block → zeros
    frac = node_spectrum(W, comps)
    torch.testing.assert_close(frac, _slow_spectrum(W, comps, 2), rtol=1e-10, atol=1e-12)
    sums = frac.sum(-1)
    sums[1, 0, 3] += 1.0
    torch.testing.assert_close(sums, torch.ones_like(sums))
    for b in range(2):                                            # batched == per-model loop
        torch.testing.assert_close(node_spectrum(W[b], comps), frac[b])


def test_pure_frequency_node_is_dominated_by_its_component():
    M = 23
    comps = isotypic_components(get_group(f"Z{M}"))
    W = torch.stack([torch.cat([_freq(M, k), _freq(M, k, 1.3)]) for k in (1, 5, 11)], dim=1)   # (2M, 3)
    frac = node_spectrum(W, comps)                                # (2, 3, C)
    for i, k in enumerate((1, 5, 11)):
        c = comps.names.index(f"k={k}")
        torch.testing.assert_close(frac[:, i, c], torch.ones(2, dtype=D))
    # frequency M−k is the same real component as k
    frac2 = node_spectrum(torch.cat([_freq(M, M - 5), _freq(M, M - 5)])[:, None], comps)
    assert float(frac2[0, 0, comps.names.index("k=5")]) == pytest.approx(1.0)


def test_spectrum_summary_counts():
    M = 11
    comps = isotypic_components(get_group(f"Z{M}"))
    g = torch.Generator().manual_seed(1)
    cols = [torch.cat([_freq(M, k), _freq(M, k, 2.0)]) for k in (1, 2, 2, 3)]          # learned nodes
    cols.append(torch.cat([_freq(M, 1) + _freq(M, 4), _freq(M, 1) + _freq(M, 4)]))      # 50/50 mix
    cols.append(torch.randn(2 * M, dtype=D, generator=g) * 1e-3)                         # inactive
    W = torch.stack(cols, 1)[None].repeat(2, 1, 1)
    W[1, :, 0] *= 1e-4                                            # model 1: the k=1 node is inactive
    s = spectrum_summary(W, comps, active_threshold=0.1, learned_threshold=0.6)
    assert s.n_active.tolist() == [5, 4]
    assert s.coverage.tolist() == [3, 2]                          # {1,2,3} and {2,3}
    assert bool(s.learned[0, :4].all()) and not bool(s.learned[0, 4])
    names = [comps.names[int(d)] for d in s.dominant[0, :4]]
    assert names == ["k=1", "k=2", "k=2", "k=3"]
    torch.testing.assert_close(s.dominant_fraction[0, :4], torch.ones(4, dtype=D))
    rec = s.records()
    assert rec[0]["histogram"]["k=2"] == 2 and rec[0]["covered"] == ["k=1", "k=2", "k=3"]
    # effective number of learned components: histogram 1, 2, 1 → exp(entropy)
    p = np.array([1, 2, 1]) / 4
    assert rec[0]["diversity"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    one = spectrum_summary(W[0], comps, active_threshold=0.1, learned_threshold=0.6)   # unbatched == model 0
    assert one.coverage.tolist() == [3] and one.n_active.tolist() == [5]


def test_spectrum_of_big_m_and_k():
    comps = isotypic_components(get_group("Z127"))
    W = torch.randn(1, 254, 2048, generator=torch.Generator().manual_seed(0))
    spectrum_summary(W, comps)                                    # builds the cached basis
    s = spectrum_summary(W, comps)
    assert s.n_active.item() == 2048


def test_active_by_mass_keeps_the_fewest_nodes_holding_that_share():
    comps = isotypic_components(get_group("Z7"))
    norms = torch.tensor([3.0, 2.0, 1.0, 0.5], dtype=D)            # squared: 9, 4, 1, 0.25 of 14.25
    W = torch.randn(14, 4, dtype=D, generator=torch.Generator().manual_seed(0))
    W = W / W.norm(dim=0) * norms
    s = spectrum_summary(W, comps, active_mass=0.9)                 # 9+4 = 13 ≥ 0.9·14.25 = 12.8
    assert s.active[0].tolist() == [True, True, False, False]
    s = spectrum_summary(W[:, [3, 0, 2, 1]], comps, active_mass=0.95)   # needs the third node too
    assert s.active[0].tolist() == [False, True, True, True]
