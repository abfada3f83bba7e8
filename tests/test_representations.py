"""Character tables, indicators and real isotypic projectors computed from tables alone."""
from __future__ import annotations

import json

import numpy as np
import pytest

from li2.algebra import GroupError, expression_task, get_group, load_group_table
from li2.algebra import representations as rep
from li2.algebra.representations import (
    character_table,
    component_layout,
    conjugacy_classes,
    group_info,
    isotypic_components,
)

GROUPS = ["Z2", "Z7", "Z12", "D3", "D4", "D5", "D6", "S3", "S4", "A4", "A5", "S5", "Q8", "Dic3", "Dic5",
          "Z7:Z3", "Z5:Z4", "Z13:Z3", "Z3xS3", "Z2xQ8", "Z2xZ2xZ3", "Z4xZ6"]
RANDOM_PRODUCTS = [
    "x".join(np.random.default_rng(s).choice(["Z2", "Z3", "Z4", "D3", "D4", "Q8", "A4", "Z7:Z3"], size=2))
    for s in range(4)
]


def relabel(table: np.ndarray, perm: np.ndarray) -> np.ndarray:
    out = np.empty_like(table)
    out[perm[:, None], perm[None, :]] = perm[table]
    return out


def translations(table: np.ndarray):
    """Permutation index arrays of left (x ↦ g x) and right (x ↦ x g) translations."""
    return [table[g, :] for g in range(len(table))], [table[:, g] for g in range(len(table))]


# ----------------------------------------------------------------------------- acceptance numbers

@pytest.mark.parametrize("name,degrees", [
    ("S4", [1, 1, 2, 3, 3]), ("Q8", [1, 1, 1, 1, 2]), ("D5", [1, 1, 2, 2]), ("A4", [1, 1, 1, 3]),
    ("S5", [1, 1, 4, 4, 5, 5, 6]), ("S3", [1, 1, 2]), ("A5", [1, 3, 3, 4, 5]), ("Z7:Z3", [1, 1, 1, 3, 3]),
    ("Dic3", [1, 1, 1, 1, 2, 2]),
])
def test_irrep_degrees(name, degrees):
    assert group_info(get_group(name))["irrep_degrees"] == degrees


def test_indicators():
    assert sorted(group_info(get_group("Q8"))["indicators"]) == [-1, 1, 1, 1, 1]
    assert group_info(get_group("Dic3"))["indicators"].count(-1) == 1
    assert group_info(get_group("D4"))["indicators"] == [1] * 5
    for m in (7, 12):
        info = group_info(get_group(f"Z{m}"))
        assert info["indicators"].count(0) == m - 1 - (m % 2 == 0)    # only ±1-valued characters are real
        assert info["num_real_components"] == m // 2 + 1
    # A4: the two non-trivial linear characters are complex conjugates.
    assert group_info(get_group("A4"))["indicators"] == [1, 0, 0, 1]


def test_s3_character_table_exact():
    ct = character_table(get_group("S3"))
    assert list(ct.class_sizes) == [1, 3, 2] and list(ct.class_orders) == [1, 2, 3]
    assert np.array_equal(ct.characters, np.array([[1, 1, 1], [1, -1, 1], [2, 0, -1]], dtype=complex))


def test_classes_partition_the_group():
    g = get_group("S4")
    classes = conjugacy_classes(g)
    assert sorted(len(c) for c in classes) == [1, 3, 6, 6, 8]
    assert np.array_equal(np.sort(np.concatenate(classes)), np.arange(24))
    t, inv = g.table, g.inverses
    for cls in classes:                       # closed under conjugation by every g
        conj = t[t[:, cls], inv[:, None]]
        assert set(conj.ravel()) == set(cls)


# ----------------------------------------------------------------------------- full checks

@pytest.mark.parametrize("name", GROUPS + RANDOM_PRODUCTS)
def test_character_table_and_projectors(name):
    g = get_group(name)
    m, t = g.order, g.table
    ct = character_table(g)
    X, sizes = ct.characters, ct.class_sizes
    assert int((ct.degrees**2).sum()) == m and sizes.sum() == m
    assert np.allclose(X[:, 0], ct.degrees)
    # Row and column orthogonality under the class-weighted inner product.
    assert np.allclose((X * sizes) @ X.conj().T / m, np.eye(len(sizes)), atol=1e-9)
    assert np.allclose(X.conj().T @ X, np.diag(m / sizes), atol=1e-9)
    # Indicators from the definition, element by element.
    squares = ct.class_of[t[np.arange(m), np.arange(m)]]
    assert np.allclose(X[:, squares].sum(axis=1) / m, ct.indicators, atol=1e-9)

    iso = isotypic_components(g)
    P = iso.projectors
    c = len(iso.names)
    assert P.shape == (c, m, m) and P.dtype == np.float64
    assert iso.names[0] == "trivial" and np.allclose(P[0], 1.0 / m)
    assert len(iso.degrees) == len(iso.kinds) == c
    assert np.allclose(P, P.transpose(0, 2, 1))
    assert np.allclose(P.sum(axis=0), np.eye(m), atol=1e-9)
    prod = np.einsum("aij,bjk->abik", P, P)
    for a in range(c):
        for b in range(c):
            assert np.allclose(prod[a, b], P[a] if a == b else 0.0, atol=1e-9), (a, b)
    # Rank: d² for a real or quaternionic irrep, 2d² for a merged complex pair.
    for k in range(c):
        expected = iso.degrees[k] ** 2 * (2 if iso.kinds[k] == "complex" else 1)
        assert round(float(np.trace(P[k]))) == expected
    assert c == group_info(g)["num_real_components"]
    # Commute with the regular action: P[π(x), π(y)] = P[x, y] for left and right translations.
    lefts, rights = translations(t)
    for perm in lefts + rights:
        assert np.allclose(P[:, perm][:, :, perm], P, atol=1e-12)


@pytest.mark.parametrize("name", ["Z12", "Z2xZ6", "Z3xZ3xZ2", "Z8xZ4", "Z31"])
def test_abelian_construction_matches_eigen_path(name):
    """Abelian tables skip the eigenproblem; both routes must give the same sorted table,
    also under a relabelling (identity no longer element 0)."""
    g = get_group(name)
    table = relabel(g.table, np.random.default_rng(3).permutation(g.order))
    e = int(np.flatnonzero((table == np.arange(g.order)).all(axis=1))[0])
    inv = np.argmax(table == e, axis=1)
    a = rep._compute_character_table(table, e, inv, method="abelian")
    b = rep._compute_character_table(table, e, inv, method="eigen")
    assert np.allclose(a.characters, b.characters, atol=1e-8)
    assert np.array_equal(a.indicators, b.indicators) and np.array_equal(a.conjugate, b.conjugate)


def test_cyclic_components_are_fourier_frequencies():
    for m in (12, 13):
        iso = isotypic_components(get_group(f"Z{m}"))
        assert iso.names == ("trivial",) + tuple(f"k={k}" for k in range(1, m // 2 + 1))
        diff = np.subtract.outer(np.arange(m), np.arange(m))
        for k, P in enumerate(iso.projectors):
            scale = 1.0 if k == 0 or 2 * k == m else 2.0
            assert np.allclose(P, scale / m * np.cos(2 * np.pi * k * diff / m), atol=1e-12)
            assert iso.kinds[k] == ("real" if scale == 1.0 else "complex")


def test_non_cyclic_names_kinds_and_order():
    iso = isotypic_components(get_group("Q8"))
    assert iso.names == ("trivial", "χ1 (d=1)", "χ2 (d=1)", "χ3 (d=1)", "χ4 (d=2)")
    assert iso.kinds == ("real",) * 4 + ("quaternionic",) and iso.degrees == (1, 1, 1, 1, 2)
    iso = isotypic_components(get_group("Z7:Z3"))
    assert iso.kinds == ("real", "complex", "complex") and iso.degrees == (1, 1, 3)


def test_spectrum_fractions_sum_to_one():
    iso = isotypic_components(get_group("S4"))
    u = np.random.default_rng(0).standard_normal((24, 5))
    parts = np.einsum("kij,jn->kin", iso.projectors, u)              # (C, M, N): P_k u
    assert np.allclose((parts**2).sum(axis=(0, 1)), (u**2).sum(axis=0))


# ----------------------------------------------------------------------------- tables, caching, errors

@pytest.mark.parametrize("name", ["S4", "Q8", "D5", "A4", "Z7:Z3", "Z3xS3", "Z12", "Dic3"])
def test_table_files_match_named_groups_under_relabelling(tmp_path, name):
    g = get_group(name)
    perm = np.random.default_rng(g.order).permutation(g.order)
    table = relabel(g.table, perm)
    assert not np.array_equal(table, g.table)
    (tmp_path / "g.json").write_text(json.dumps({"name": "from-json", "table": table.tolist()}))
    (tmp_path / "g.csv").write_text("\n".join(",".join(map(str, row)) for row in table))
    expected = {k: v for k, v in group_info(g).items() if k != "name"}
    for path in (tmp_path / "g.json", tmp_path / "g.csv"):
        h = load_group_table(path)
        info = group_info(h)
        assert {k: v for k, v in info.items() if k != "name"} == expected
        iso, iso_h = isotypic_components(g), isotypic_components(h)
        assert sorted(zip(iso.degrees, iso.kinds)) == sorted(zip(iso_h.degrees, iso_h.kinds))
        # The relabelled projectors are the original ones with rows/columns permuted.
        original = {np.round(P, 9).tobytes() for P in iso.projectors}
        moved = {np.round(P[np.ix_(perm, perm)], 9).tobytes() for P in iso_h.projectors}
        assert original == moved


def test_group_info_is_json_ready():
    info = group_info(get_group("D4"))
    assert json.loads(json.dumps(info)) == info
    assert set(info) == {"name", "order", "abelian", "num_classes", "irrep_degrees", "indicators",
                         "class_sizes", "num_real_components"}
    assert info["class_sizes"] == [1, 1, 2, 2, 2] and info["num_classes"] == 5


def test_not_a_group_is_refused():
    g = expression_task("x*y", 7)
    with pytest.raises(GroupError, match="not a group"):
        isotypic_components(g)
    with pytest.raises(GroupError, match="not a group"):
        group_info(g)


def test_cache_and_read_only():
    a = isotypic_components(get_group("S4"))
    b = isotypic_components(get_group("S4"))
    assert a is b
    with pytest.raises(ValueError):
        a.projectors[0, 0, 0] = 1.0


def test_projector_memory_guard(monkeypatch):
    monkeypatch.setattr(rep, "MAX_PROJECTOR_BYTES", 1000)
    rep.clear_caches()
    with pytest.raises(GroupError, match="dense projectors would need"):
        isotypic_components(get_group("Z11"))
    assert component_layout(get_group("Z11")).names[-1] == "k=5"     # the layout needs no projectors


@pytest.mark.parametrize("name", ["Z127", "Dic32", "D64", "Z2xZ64", "S5", "Z2xZ2xZ2xZ2xZ2xZ2xZ2"])
def test_larger_groups(name):
    """Order-120-ish groups go through the whole pipeline (speed is a benchmark matter, not a test's)."""
    g = get_group(name)
    rep.clear_caches()
    comps = isotypic_components(g)
    info = group_info(g)
    assert sum(d * d for d in info["irrep_degrees"]) == g.order
    np.testing.assert_allclose(comps.projectors.sum(0), np.eye(g.order), atol=1e-8)
