"""Representation theory of a finite group computed from its multiplication table alone.

Pipeline (all numpy, complex128):
1. Conjugacy classes from the conjugation table c[g, x] = g x g⁻¹ (class representative = the
   smallest element index in the class).  Canonical class order: identity first, then by
   (element order, class size, smallest element).
2. Characters by simultaneous diagonalisation of the class-multiplication matrices (Burnside):
   C_i C_j = Σ_k c_ijk C_k for class sums C_i.  In the orthonormal basis C_k/√|C_k| of the centre
   of the group algebra, multiplication by C_i is a normal matrix N_i[k, j] = c_ijk √(|C_k|/|C_j|),
   the N_i commute, and their common eigenvectors are v_k ∝ √|C_k| conj χ(C_k).  We diagonalise a
   random Hermitian combination of their Hermitian and skew parts with `eigh` and split any
   near-degenerate eigenspace further with the individual matrices, so the result is robust.
   χ/d follows from v, the degree from Σ_k |C_k| |χ(C_k)|² = |G|; values are rounded to 1e-10 and
   the orthogonality relations are verified.  Abelian tables (r = M classes, the largest
   eigenproblems) skip this and build the characters directly along a chain of subgroups
   (`_abelian_characters`, O(M²)); tests check both routes agree.
3. Frobenius–Schur indicators ν = (1/|G|) Σ_g χ(g²) ∈ {+1 real, 0 complex, -1 quaternionic}.
4. Real isotypic projectors of the regular representation on functions u: G → R (vectors of length
   M indexed by element).  Convention (L_g u)(x) = u(g⁻¹x); for irrep χ
       P_χ = (d/|G|) Σ_g conj χ(g) L_g,   i.e.   P_χ[x, y] = (d/|G|) conj χ(x y⁻¹).
   A complex-conjugate pair (ν = 0) is merged into P_χ + P_χ̄ = (2d/|G|) Re χ(x y⁻¹); real and
   quaternionic characters are real-valued, so P_χ is real already.  P depends only on the class
   of x y⁻¹, hence commutes with left and right translations.

Irrep order (character table and group_info): by degree, then indicator (+1, 0, -1), then the
character values on the classes in canonical order (larger real part, then larger imaginary part
first); the trivial character is therefore first.  Component order follows the first member irrep,
except for the standard cyclic table Z_M (a∘b = a+b mod M), whose components are ordered and named
by frequency: "trivial", "k=1", ..., "k=⌊M/2⌋" (frequency k merged with M-k).  Other components
are named "χ<c> (d=<d>)" with c the component index (index 0 is "trivial").

Results are cached per table contents (SHA-256 of the table); cached arrays are read-only.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .groups import Group, GroupError

MAX_PROJECTOR_BYTES = 2**30   # (C, M, M) float64 projectors are refused beyond this


@dataclass(frozen=True)
class CharacterTable:
    """Classes in canonical order (r of them) and irreps in canonical order (also r).

    class_of: (M,) int64 class index of each element; class_reps / class_sizes / class_orders: (r,)
    characters: (r, r) complex128, characters[k, i] = χ_k(any element of class i)
    degrees, indicators: (r,) int64; conjugate: (r,) index of the irrep with character conj χ_k.
    """

    class_of: np.ndarray
    class_reps: np.ndarray
    class_sizes: np.ndarray
    class_orders: np.ndarray
    characters: np.ndarray
    degrees: np.ndarray
    indicators: np.ndarray
    conjugate: np.ndarray


@dataclass(frozen=True)
class IsotypicComponents:
    names: tuple[str, ...]     # one per real component; index 0 is "trivial"
    degrees: tuple[int, ...]   # complex irrep degree d_k of each component
    kinds: tuple[str, ...]     # "real" | "complex" | "quaternionic"
    projectors: np.ndarray     # (C, M, M) float64, symmetric, idempotent, mutually orthogonal, sum to I


# ----------------------------------------------------------------------------- helpers

def _require_group(group: Group) -> tuple[np.ndarray, int, np.ndarray]:
    """(table, identity, inverses) or GroupError."""
    if not group.is_group:
        raise GroupError(f"{group.name} is an operation table, not a group: no representation theory")
    return group.table, group.identity, group.inverses


def _element_orders(table: np.ndarray, e: int) -> np.ndarray:
    m = table.shape[0]
    idx = np.arange(m)
    orders = np.zeros(m, dtype=np.int64)
    power = idx.copy()                       # x^n, starting at n = 1
    for n in range(1, m + 1):
        done = (power == e) & (orders == 0)
        orders[done] = n
        if orders.all():
            break
        power = table[power, idx]
    return orders


def _classes(table: np.ndarray, e: int, inv: np.ndarray):
    """(class_of (M,), reps (r,), sizes (r,), orders (r,)) in canonical class order."""
    conj = table[table, inv[:, None]]        # conj[g, x] = (g x) g⁻¹
    rep_of = conj.min(axis=0)                # smallest element of the class of x
    reps, first_class, sizes = np.unique(rep_of, return_inverse=True, return_counts=True)
    orders = _element_orders(table, e)[reps]
    order = sorted(range(len(reps)), key=lambda i: (reps[i] != e, orders[i], sizes[i], reps[i]))
    new_index = np.empty(len(reps), dtype=np.int64)
    new_index[order] = np.arange(len(reps))
    return new_index[first_class], reps[order], sizes[order], orders[order]


def _class_matrix(flat: np.ndarray, class_of: np.ndarray, sizes: np.ndarray, weights_per_class) -> np.ndarray:
    """Σ_i w_i N_i with N_i[k, j] = c_ijk √(|C_k|/|C_j|) and c_ijk = #{x ∈ C_i : x⁻¹ z_k ∈ C_j}.

    flat: (M, r) int, flat[x, k] = k·r + class(x⁻¹ z_k) for class representatives z_k.
    """
    r = len(sizes)
    w = np.broadcast_to(weights_per_class[class_of][:, None], flat.shape)
    counts = np.bincount(flat.ravel(), weights=w.ravel(), minlength=r * r).reshape(r, r)
    root = np.sqrt(sizes.astype(float))
    return counts * root[:, None] / root[None, :]


def _split(spaces: list[np.ndarray], H: np.ndarray, tol: float) -> list[np.ndarray]:
    """Refine orthonormal bases of invariant subspaces by the eigenspaces of Hermitian H."""
    out = []
    for Q in spaces:
        if Q.shape[1] == 1:
            out.append(Q)
            continue
        # The first split starts from the identity basis: skip the two r×r×r products.
        w, V = np.linalg.eigh(H if Q.shape[0] == Q.shape[1] else Q.conj().T @ H @ Q)
        cuts = np.flatnonzero(np.diff(w) > tol) + 1       # eigenvalues come sorted
        for idx in np.split(np.arange(len(w)), cuts):
            out.append(V[:, idx] if Q.shape[0] == Q.shape[1] else Q @ V[:, idx])
    return out


def _irrep_order(chars: np.ndarray, degrees: np.ndarray, indicators: np.ndarray) -> np.ndarray:
    """Canonical irrep order: degree, then indicator +1, 0, -1, then character values on the
    classes (larger real part first, then larger imaginary part), compared lexicographically."""
    vals = np.round(chars, 6)
    parts = np.stack([-vals.real, -vals.imag], axis=2).reshape(len(chars), -1)   # class-major
    keys = np.column_stack([degrees, -indicators, parts])
    return np.lexsort(keys.T[::-1])                         # lexsort's last key is the primary one


def _eigen_characters(table, inv, class_of, reps, sizes) -> np.ndarray:
    """(irreps, classes) complex characters, unsorted, by simultaneous diagonalisation (any group)."""
    m, r = table.shape[0], len(reps)
    rng = np.random.default_rng(12345)       # fixed seed: results are deterministic
    flat = np.arange(r)[None, :] * r + class_of[table[inv[:, None], reps[None, :]]]

    def hermitian(t: np.ndarray, s: np.ndarray) -> np.ndarray:
        # Hermitian part of Σ t_i N_i plus Hermitian form of the skew part of Σ s_i N_i: its
        # eigenvalues Σ t_i Re ω_i + Σ s_i Im ω_i separate characters, conjugate pairs included.
        A = _class_matrix(flat, class_of, sizes, t)
        B = _class_matrix(flat, class_of, sizes, s)
        return 0.5 * (A + A.T) - 0.5j * (B - B.T)

    tol = 1e-7 * m
    spaces = _split([np.eye(r, dtype=complex)], hermitian(rng.standard_normal(r), rng.standard_normal(r)), tol)
    for i in range(r):                       # rarely needed: split near-degenerate eigenspaces
        if len(spaces) == r:
            break
        unit = np.zeros(r)
        unit[i] = 1.0
        spaces = _split(spaces, hermitian(unit, np.zeros(r)), tol)
        spaces = _split(spaces, hermitian(np.zeros(r), unit), tol)
    if len(spaces) != r:
        raise GroupError(f"character table: could not separate the {r} characters numerically")

    V = np.concatenate(spaces, axis=1)                       # (r classes, r irreps)
    phi = np.conj(V / np.sqrt(sizes)[:, None])               # ∝ χ(C_k), one column per irrep
    phi = phi / phi[0][None, :]                              # χ/d, identity class is index 0
    d_float = np.sqrt(m / (sizes[:, None] * np.abs(phi) ** 2).sum(axis=0))
    degrees = np.rint(d_float)
    if np.abs(d_float - degrees).max() > 1e-6:
        raise GroupError("character table: non-integer irrep degree (numerical failure)")
    return (phi * degrees[None, :]).T


def _abelian_characters(table: np.ndarray, e: int) -> np.ndarray:
    """(M, M) complex, row k = character χ_k, column x = its value at element x (unsorted).

    No eigenproblem: grow a chain {e} = H_0 < H_1 < ... < G with H_j = H_{j-1}⟨g⟩, g the smallest
    element not yet in H. If n is the least n >= 1 with g^n ∈ H_{j-1}, each element of H_j is
    h·g^a (h ∈ H_{j-1}, 0 <= a < n) exactly once, and each character ψ of H_{j-1} extends in
    exactly n ways: χ(g) = ζ with ζ^n = ψ(g^n), χ(h·g^a) = ψ(h) ζ^a.  O(M²) work, values are
    roots of unity to machine precision.
    """
    m = table.shape[0]
    members = np.array([e])
    chars = np.ones((1, 1), dtype=complex)   # chars[k, i] = χ_k(members[i])
    pos = np.full(m, -1)
    pos[e] = 0
    while len(members) < m:
        g = int(np.flatnonzero(pos < 0)[0])
        gpow = [e]                            # g^0 .. g^(n-1)
        x = g
        while pos[x] < 0:
            gpow.append(x)
            x = int(table[x, g])
        n = len(gpow)                         # x = g^n ∈ H
        theta = (np.angle(chars[:, pos[x]])[:, None] + 2 * np.pi * np.arange(n)[None, :]) / n   # (c, n)
        a = np.arange(n)
        # new[(ψ, k), (a, h)] = ψ(h) · exp(i a θ_ψk)
        new = chars[:, None, None, :] * np.exp(1j * a[None, None, :, None] * theta[:, :, None, None])
        members = table[members[None, :], np.array(gpow)[:, None]].reshape(-1)   # h·g^a, a-major
        chars = new.reshape(len(theta) * n, -1)
        pos[members] = np.arange(len(members))
    out = np.empty((m, m), dtype=complex)
    out[:, members] = chars
    return out


def _compute_character_table(table: np.ndarray, e: int, inv: np.ndarray, method: str = "auto") -> CharacterTable:
    """method: "auto" (abelian construction for abelian tables, eigen otherwise), "eigen", "abelian"."""
    m = table.shape[0]
    class_of, reps, sizes, orders = _classes(table, e, inv)
    r = len(reps)
    abelian = np.array_equal(table, table.T)
    if method == "abelian" or (method == "auto" and abelian):
        chars = _abelian_characters(table, e)[:, reps]      # classes are single elements
    else:
        chars = _eigen_characters(table, inv, class_of, reps, sizes)
    degrees = np.rint(chars[:, 0].real).astype(np.int64)
    chars = np.round(chars.real, 10) + 1j * np.round(chars.imag, 10) + 0.0

    square_class = class_of[table[reps, reps]]
    nu_float = (chars[:, square_class] * sizes[None, :]).sum(axis=1) / m
    indicators = np.rint(nu_float.real).astype(np.int64)
    if np.abs(nu_float - indicators).max() > 1e-6 or not set(indicators) <= {-1, 0, 1}:
        raise GroupError("character table: bad Frobenius–Schur indicator (numerical failure)")

    order = _irrep_order(chars, degrees, indicators)
    chars, degrees, indicators = chars[order], degrees[order], indicators[order]

    # Verify: rows orthonormal under <χ, ψ> = (1/|G|) Σ_i |C_i| χ_i conj ψ_i, and Σ d² = |G|.
    # That is O(r³); beyond 512 classes (large abelian groups) 64 random rows are checked against all.
    rows = np.arange(r) if r <= 512 else np.sort(np.random.default_rng(0).choice(r, 64, replace=False))
    gram = (chars[rows] * sizes[None, :]) @ chars.conj().T / m
    if np.abs(gram - np.eye(r)[rows]).max() > 1e-8 or int((degrees**2).sum()) != m:
        raise GroupError("character table failed the orthogonality check (numerical failure)")
    # conj χ(g) = χ(g⁻¹): the conjugate irrep's row is this row read on the inverse classes.
    inverse_class = class_of[inv[reps]]
    row_index = {np.round(row, 6).tobytes(): k for k, row in enumerate(chars)}
    conjugate = np.array([row_index[np.round(row[inverse_class], 6).tobytes()] for row in chars])
    for arr in (class_of, reps, sizes, orders, chars, degrees, indicators, conjugate):
        arr.flags.writeable = False          # cached and shared between callers
    return CharacterTable(class_of, reps, sizes, orders, chars, degrees, indicators, conjugate)


class _TableCache:
    """Small LRU cache keyed on a SHA-256 digest of the table, so that keys stay 32 bytes even
    for large tables and equal tables (e.g. the same group built twice) share one result."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.data: OrderedDict[bytes, object] = OrderedDict()

    def get(self, group: Group, compute):
        key = hashlib.sha256(group.table.tobytes()).digest() + group.order.to_bytes(4, "little")
        if key in self.data:
            self.data.move_to_end(key)
            return self.data[key]
        value = compute(group)
        self.data[key] = value
        if len(self.data) > self.maxsize:
            self.data.popitem(last=False)
        return value

    def clear(self) -> None:
        self.data.clear()


_CHARACTER_TABLES = _TableCache(32)
_LAYOUTS = _TableCache(32)
_ISOTYPIC = _TableCache(8)       # projectors can be large: keep fewer


def clear_caches() -> None:
    for cache in (_CHARACTER_TABLES, _LAYOUTS, _ISOTYPIC):
        cache.clear()


# ----------------------------------------------------------------------------- public API

def character_table(group: Group) -> CharacterTable:
    """Character table of a group (cached on the table contents). GroupError if not a group."""
    table, e, inv = _require_group(group)
    return _CHARACTER_TABLES.get(group, lambda g: _compute_character_table(table, e, inv))


def conjugacy_classes(group: Group) -> list[np.ndarray]:
    """Sorted element indices of each class, classes in canonical order (identity class first)."""
    ct = character_table(group)
    return [np.flatnonzero(ct.class_of == i) for i in range(len(ct.class_reps))]


def irrep_degrees(group: Group) -> list[int]:
    return [int(d) for d in character_table(group).degrees]


def frobenius_schur_indicators(group: Group) -> list[int]:
    """ν_k aligned with irrep_degrees: +1 real, 0 complex, -1 quaternionic."""
    return [int(v) for v in character_table(group).indicators]


def _is_standard_cyclic(table: np.ndarray) -> bool:
    a = np.arange(table.shape[0])
    return bool(np.array_equal(table, (a[:, None] + a[None, :]) % table.shape[0]))


@dataclass(frozen=True)
class ComponentLayout:
    """Which irreps form each real component, without the (C, M, M) projectors.

    members[c]: indices into the character table (one irrep, or a complex-conjugate pair).
    """

    names: tuple[str, ...]
    degrees: tuple[int, ...]
    kinds: tuple[str, ...]
    members: tuple[tuple[int, ...], ...]


def _compute_layout(group: Group) -> ComponentLayout:
    table, m = group.table, group.order
    ct = character_table(group)
    # Real components: each real/quaternionic irrep alone, each complex pair once, in irrep order.
    members: list[tuple[int, ...]] = []
    seen: set[int] = set()
    for k in range(len(ct.degrees)):
        if k not in seen:
            group_k = (k,) if ct.indicators[k] != 0 else (k, int(ct.conjugate[k]))
            seen.update(group_k)
            members.append(group_k)
    kind_of = {1: "real", 0: "complex", -1: "quaternionic"}
    kinds = [kind_of[int(ct.indicators[g[0]])] for g in members]
    degrees = [int(ct.degrees[g[0]]) for g in members]
    c = len(members)
    if _is_standard_cyclic(table):
        # χ(1) = exp(±2πik/M) identifies the frequency; components ordered by k.
        one = ct.characters[:, ct.class_of[1]]
        freq = [int(round(np.angle(one[g[0]]) * m / (2 * np.pi))) % m for g in members]
        freq = [min(f, m - f) for f in freq]
        perm = sorted(range(c), key=lambda i: freq[i])
        names = ["trivial" if freq[i] == 0 else f"k={freq[i]}" for i in perm]
    else:
        perm = list(range(c))
        names = ["trivial" if i == 0 else f"χ{i} (d={degrees[i]})" for i in perm]
    return ComponentLayout(tuple(names), tuple(degrees[i] for i in perm), tuple(kinds[i] for i in perm),
                           tuple(members[i] for i in perm))


def _compute_isotypic(group: Group) -> IsotypicComponents:
    table, m = group.table, group.order
    ct = character_table(group)
    layout = component_layout(group)
    c = len(layout.names)
    if c * m * m * 8 > MAX_PROJECTOR_BYTES:
        raise GroupError(f"order {m} with {c} real components: dense projectors would need "
                         f"{c * m * m * 8 / 2**30:.1f} GiB (limit {MAX_PROJECTOR_BYTES / 2**30:.0f} GiB)")
    inv = group.inverses
    diff_class = ct.class_of[table[:, inv]]                  # [x, y] = class of x y⁻¹
    projectors = np.empty((c, m, m), dtype=np.float64)
    for i, group_k in enumerate(layout.members):
        values = ct.characters[list(group_k)].sum(axis=0).real   # Re(χ + conj χ) = Re(conj χ + χ)
        projectors[i] = (layout.degrees[i] / m) * values[diff_class]
    projectors.flags.writeable = False
    return IsotypicComponents(layout.names, layout.degrees, layout.kinds, projectors)


def component_layout(group: Group) -> ComponentLayout:
    """Names, degrees, kinds and member irreps of the real components (no projectors; cheap)."""
    _require_group(group)
    return _LAYOUTS.get(group, _compute_layout)


def isotypic_components(group: Group) -> IsotypicComponents:
    """Real isotypic components of the regular representation (see module docstring).

    Cached per table contents (the same object is returned for equal tables); projectors are
    read-only. GroupError if `group` is not a group or the projectors would exceed 1 GiB.
    """
    _require_group(group)
    return _ISOTYPIC.get(group, _compute_isotypic)


def group_info(group: Group) -> dict:
    """JSON-ready summary; invariant under relabelling of the elements (apart from name)."""
    ct = character_table(group)
    components = len(component_layout(group).names)
    return {
        "name": group.name,
        "order": group.order,
        "abelian": group.abelian,
        "num_classes": int(len(ct.class_reps)),
        "irrep_degrees": [int(d) for d in ct.degrees],
        "indicators": [int(v) for v in ct.indicators],
        "class_sizes": [int(s) for s in ct.class_sizes],
        "num_real_components": int(components),
    }
