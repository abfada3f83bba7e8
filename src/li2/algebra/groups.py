"""Finite groups (and plain operation tables) behind one small interface.

A task only needs a multiplication table: `table[a, b] = a∘b` with elements 0..M-1.
Everything else (names, labels, representation theory) hangs off the same object.

Group names accepted by `get_group` (case-insensitive, spaces ignored):

    Z<n> or <n>      cyclic group of order n (Z71, 71); elements 0..n-1, a∘b = a+b mod n
    D<n>             dihedral group of order 2n, n >= 2 (D5 has order 10); labels r^i and r^i s
    S<n>, A<n>       symmetric (2 <= n <= 5) and alternating (3 <= n <= 5) groups; labels are
                     permutations of 1..n in cycle notation, (p∘q)(i) = p(q(i)) (q acts first)
    Q8               quaternion group; labels 1, i, -1, -i, j, k, -j, -k
    Dic<n>           dicyclic group of order 4n, n >= 2: <a, x | a^2n = 1, x^2 = a^n, x a x^-1 = a^-1>
    Z<p>:Z<q>        the non-abelian semidirect product Z_p ⋊ Z_q, p prime, q >= 2 dividing p-1
                     (also written Z<p>sdZ<q>); order pq; labels a^i b^j with b a b^-1 = a^r,
                     r = g^((p-1)/q) for the smallest primitive root g mod p
    GxHx...          direct products of any of the above (Z2xZ3xZ4, Z3xS3); labels (g,h,...)

Element 0 is always the identity of a named group. Orders are capped at MAX_ORDER.

Tables from files and operation tables from expressions live in li2.algebra.tables.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field

import numpy as np

MAX_ORDER = 4096            # a table is M² int64: 128 MiB at this size

# (form, order, example, description): shared by error messages and `li2 groups list`.
NAME_FORMS: tuple[tuple[str, str, str, str], ...] = (
    ("Z<n> or <n>", "n", "Z71, 71", "cyclic group"),
    ("D<n>", "2n", "D5 (order 10)", "dihedral group, n >= 2"),
    ("S<n>", "n!", "S4 (order 24)", "symmetric group, 2 <= n <= 5"),
    ("A<n>", "n!/2", "A4 (order 12)", "alternating group, 3 <= n <= 5"),
    ("Q8", "8", "Q8", "quaternion group"),
    ("Dic<n>", "4n", "Dic3 (order 12)", "dicyclic group, n >= 2 (Dic2 = Q8)"),
    ("Z<p>:Z<q>", "pq", "Z7:Z3 (order 21)", "non-abelian Z_p ⋊ Z_q, p prime, q | p-1 (also Z7sdZ3)"),
    ("AxB", "|A||B|", "Z3xS3 (order 18)", "direct product of any of the above"),
)

_ACCEPTED = ("accepted: Z<n> or <n>, D<n> (order 2n), S<n>/A<n> (n <= 5), Q8, Dic<n> (order 4n), "
             "Z<p>:Z<q> (p prime, q | p-1), and products joined by x, e.g. Z3xS3")


class GroupError(ValueError):
    """Bad group name, table or expression. The message is one line meant for the user."""


@dataclass(frozen=True, eq=False)
class Group:
    """A binary operation on {0..M-1}.

    table: (M, M) int64, table[a, b] = a∘b.  `is_group` is False for operation tables
    that are not groups (e.g. from `--expression`); irrep analysis is skipped for those.
    labels: M human-readable element names (defaults to "0".."M-1").
    """

    name: str
    table: np.ndarray
    labels: tuple[str, ...] = field(default=())
    is_group: bool = True

    def __post_init__(self) -> None:
        # Callers may pass int32 or lists; everything downstream indexes with int64.
        object.__setattr__(self, "table", np.ascontiguousarray(self.table, dtype=np.int64))
        if not self.labels:
            object.__setattr__(self, "labels", tuple(str(i) for i in range(self.order)))

    @property
    def order(self) -> int:
        return int(self.table.shape[0])

    @property
    def abelian(self) -> bool:
        return bool(np.array_equal(self.table, self.table.T))

    @property
    def identity(self) -> int:
        """Index e with e∘a = a∘e = a for all a; GroupError if there is none."""
        e = _find_identity(self.table)
        if e is None:
            raise GroupError(f"{self.name}: no identity: no element e with e·a = a·e = a for all a")
        return e

    @property
    def inverses(self) -> np.ndarray:
        """(M,) int64, inverses[a] = a⁻¹ (two-sided); GroupError if some element has none."""
        e = self.identity
        inv, bad = _find_inverses(self.table, e)
        if bad is not None:
            raise GroupError(f"{self.name}: no inverses: element {_describe(bad, self.labels)} "
                             f"has no b with a·b = b·a = {e} (the identity)")
        return inv


# ----------------------------------------------------------------------------- named groups

def cyclic(n: int) -> Group:
    if n < 2:
        raise GroupError(f"cyclic group order must be >= 2, got {n}")
    a = np.arange(n)
    return Group(f"Z{n}", (a[:, None] + a[None, :]) % n, tuple(str(i) for i in range(n)))


def _power_label(base: str, k: int) -> str:
    return "" if k == 0 else base if k == 1 else f"{base}^{k}"


def _word(*parts: str) -> str:
    return " ".join(p for p in parts if p) or "e"


def dihedral(n: int) -> Group:
    """D_n, order 2n: code i is r^i, code n+i is r^i s; s r s = r⁻¹.

    (r^i s^e)(r^j s^f) = r^(i + (-1)^e j) s^(e+f).
    """
    if n < 2:
        raise GroupError(f"dihedral group D<n> needs n >= 2, got {n}")
    code = np.arange(2 * n)
    i, e = code % n, code // n
    sign = 1 - 2 * e[:, None]
    table = (i[:, None] + sign * i[None, :]) % n + n * ((e[:, None] + e[None, :]) % 2)
    labels = tuple(_word(_power_label("r", a), "s" if b else "") for b in (0, 1) for a in range(n))
    return Group(f"D{n}", table, labels)


def dicyclic(n: int) -> Group:
    """Dic_n, order 4n: code i + 2n·e is a^i x^e, with a^(2n) = 1, x² = a^n, x a x⁻¹ = a⁻¹."""
    if n < 2:
        raise GroupError(f"dicyclic group Dic<n> needs n >= 2, got {n}")
    m = 2 * n
    code = np.arange(2 * m)
    i, e = code % m, code // m
    I, J = i[:, None], i[None, :]
    E, F = e[:, None], e[None, :]
    # x a^j = a^-j x, and x·x = a^n: the exponent of a picks up n when both carry x.
    exp_a = np.where(E == 0, I + J, I - J + n * F) % m
    table = exp_a + m * ((E + F) % 2)
    labels = tuple(_word(_power_label("a", a), "x" if b else "") for b in (0, 1) for a in range(m))
    return Group(f"Dic{n}", table, labels)


def quaternion() -> Group:
    """Q8 = Dic2 with a = i, x = j (so a x = k)."""
    g = dicyclic(2)
    return Group("Q8", g.table, ("1", "i", "-1", "-i", "j", "k", "-j", "-k"))


def _cycle_label(p: tuple[int, ...]) -> str:
    seen, cycles = set(), []
    for start in range(len(p)):
        if start in seen or p[start] == start:
            continue
        cyc, j = [], start
        while j not in seen:
            seen.add(j)
            cyc.append(j + 1)
            j = p[j]
        cycles.append("(" + " ".join(map(str, cyc)) + ")")
    return "".join(cycles) or "()"


def _permutation_group(name: str, perms: list[tuple[int, ...]]) -> Group:
    """Table of the given permutations under (p∘q)(i) = p(q(i)); perms[0] must be the identity."""
    n = len(perms[0])
    P = np.array(perms, dtype=np.int64)                       # (M, n)
    radix = n ** np.arange(n - 1, -1, -1)
    lookup = np.full(n**n, -1, dtype=np.int64)
    lookup[P @ radix] = np.arange(len(perms))
    comp = P[np.arange(len(perms))[:, None, None], P[None, :, :]]   # comp[a, b, i] = p_a(p_b(i))
    table = lookup[comp @ radix]
    assert (table >= 0).all(), "permutation set is not closed"
    return Group(name, table, tuple(_cycle_label(p) for p in perms))


def _is_even(p: tuple[int, ...]) -> bool:
    return sum(1 for a, b in itertools.combinations(range(len(p)), 2) if p[a] > p[b]) % 2 == 0


def symmetric(n: int) -> Group:
    if not 2 <= n <= 5:
        raise GroupError(f"symmetric group S<n> needs 2 <= n <= 5, got {n}")
    return _permutation_group(f"S{n}", list(itertools.permutations(range(n))))


def alternating(n: int) -> Group:
    if not 3 <= n <= 5:
        raise GroupError(f"alternating group A<n> needs 3 <= n <= 5, got {n}")
    return _permutation_group(f"A{n}", [p for p in itertools.permutations(range(n)) if _is_even(p)])


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % d for d in range(2, math.isqrt(p) + 1))


def _primitive_root(p: int) -> int:
    factors = {d for d in range(2, p) if (p - 1) % d == 0 and _is_prime(d)}
    return next(g for g in range(2, p) if all(pow(g, (p - 1) // f, p) != 1 for f in factors)) if p > 2 else 1


def semidirect(p: int, q: int) -> Group:
    """Z_p ⋊ Z_q (p prime, q | p-1, q >= 2), order pq; unique up to isomorphism.

    Code i + p·j is a^i b^j with b a b⁻¹ = a^r, r of multiplicative order q mod p, so
    (a^i b^j)(a^k b^l) = a^(i + r^j k) b^(j+l).
    """
    _semidirect_order(p, q)
    r = pow(_primitive_root(p), (p - 1) // q, p)
    code = np.arange(p * q)
    i, j = code % p, code // p
    rpow = np.array([pow(r, t, p) for t in range(q)], dtype=np.int64)
    table = (i[:, None] + rpow[j][:, None] * i[None, :]) % p + p * ((j[:, None] + j[None, :]) % q)
    labels = tuple(_word(_power_label("a", a), _power_label("b", b)) for b in range(q) for a in range(p))
    return Group(f"Z{p}:Z{q}", table, labels)


def direct_product(*factors: Group) -> Group:
    """Element (i, j, ...) is encoded in mixed radix, first factor most significant
    (i*|H| + j for two factors); the operation is componentwise."""
    if not factors:
        raise GroupError("direct product of no groups")
    table = factors[0].table
    for h in factors[1:]:
        m, n = table.shape[0], h.order
        i = np.arange(m * n) // n
        j = np.arange(m * n) % n
        table = table[i[:, None], i[None, :]] * n + h.table[j[:, None], j[None, :]]
    if len(factors) == 1:
        return factors[0]
    labels = tuple("(" + ",".join(t) + ")" for t in itertools.product(*(f.labels for f in factors)))
    return Group("x".join(f.name for f in factors), table, labels, all(f.is_group for f in factors))


def _checked(ok: bool, message: str) -> None:
    if not ok:
        raise GroupError(message)


def _semidirect_order(p: int, q: int) -> int:
    if p * q > MAX_ORDER:
        return p * q                      # too large anyway; skip the primality test on huge p
    _checked(_is_prime(p), f"semidirect product Z{p}:Z{q}: {p} is not prime")
    _checked(q >= 2 and (p - 1) % q == 0, f"semidirect product Z{p}:Z{q}: q must be >= 2 and divide p-1 = {p - 1}")
    return p * q


# Each factor token: (regex, order function that also validates the arguments, builder).
# Orders are known (and checked against MAX_ORDER) before any table is allocated.
_FACTORS = (
    (re.compile(r"^z?(\d+)$"),
     lambda n: _checked(n >= 2, f"cyclic group order must be >= 2, got {n}") or n, cyclic),
    (re.compile(r"^d(\d+)$"),
     lambda n: _checked(n >= 2, f"dihedral group D<n> needs n >= 2, got {n}") or 2 * n, dihedral),
    (re.compile(r"^s(\d+)$"),
     lambda n: _checked(2 <= n <= 5, f"symmetric group S<n> needs 2 <= n <= 5, got {n}") or math.factorial(n),
     symmetric),
    (re.compile(r"^a(\d+)$"),
     lambda n: _checked(3 <= n <= 5, f"alternating group A<n> needs 3 <= n <= 5, got {n}") or math.factorial(n) // 2,
     alternating),
    (re.compile(r"^q8$"), lambda: 8, quaternion),
    (re.compile(r"^dic(\d+)$"),
     lambda n: _checked(n >= 2, f"dicyclic group Dic<n> needs n >= 2, got {n}") or 4 * n, dicyclic),
    (re.compile(r"^z?(\d+)(?::|sd)z?(\d+)$"), _semidirect_order, semidirect),
)


def _parse_factor(token: str, name: str):
    for pattern, order, build in _FACTORS:
        m = pattern.match(token)
        if m:
            args = [int(a) for a in m.groups()]
            return order(*args), build, args
    raise GroupError(f"unknown group {name!r} (bad factor {token!r}): {_ACCEPTED}")


def get_group(name: str) -> Group:
    """Parse a group name (see the module docstring): 'Z71', '71', 'D5', 'S4', 'Z7:Z3', 'Z3xS3'.
    A plain int n is read as Z<n>."""
    if type(name) is int:
        name = str(name)
    if not isinstance(name, str) or len(name) > 200:
        raise GroupError(f"unknown group: name must be a short string; {_ACCEPTED}")
    clean = re.sub(r"\s+", "", name).lower().replace("×", "x")
    tokens = clean.split("x")
    if not clean or any(not t for t in tokens):
        raise GroupError(f"unknown group {name!r}: {_ACCEPTED}")
    parsed = [_parse_factor(t, name) for t in tokens]
    # Check the total order before building anything, so 'Z99999999' cannot allocate.
    total = math.prod(p[0] for p in parsed)
    if total > MAX_ORDER:
        raise GroupError(f"group {name!r} has order {total} > {MAX_ORDER} (the largest supported)")
    return direct_product(*(build(*args) for _, build, args in parsed))


# ----------------------------------------------------------------------------- table helpers

def _describe(a: int, labels: tuple[str, ...] | None) -> str:
    if labels and labels[a] != str(a):
        return f"{a} ({labels[a]!r})"
    return str(a)


def _find_identity(table: np.ndarray) -> int | None:
    ar = np.arange(table.shape[0])
    rows = (table == ar[None, :]).all(axis=1)   # e·a = a for all a
    cols = (table == ar[:, None]).all(axis=0)   # a·e = a for all a
    hits = np.flatnonzero(rows & cols)
    return int(hits[0]) if hits.size else None


def _find_inverses(table: np.ndarray, e: int) -> tuple[np.ndarray, int | None]:
    """(inv, first element without a two-sided inverse or None)."""
    two_sided = (table == e) & (table.T == e)            # [a, b]: a·b = e and b·a = e
    has = two_sided.any(axis=1)
    inv = np.argmax(two_sided, axis=1).astype(np.int64)
    bad = np.flatnonzero(~has)
    return inv, (int(bad[0]) if bad.size else None)
