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

Tables from files (`load_group_table`) and operation tables from expressions (`expression_task`)
are documented on those functions.
"""
from __future__ import annotations

import ast
import csv
import io
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAX_ORDER = 4096            # a table is M² int64: 128 MiB at this size
EXHAUSTIVE_ASSOC_MAX = 128  # above this order associativity uses Light's test (exact, see _check_assoc)
MAX_MODULUS = 2000
MAX_EXPONENT = 64
MAX_EXPR_LENGTH = 500
MAX_EXPR_DEPTH = 100       # AST levels; a flat sum of n terms is n levels deep

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


# ----------------------------------------------------------------------------- validation

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


def _check_assoc(table: np.ndarray) -> tuple[int, int, int] | None:
    """First triple (a, b, c) with (a·b)·c != a·(b·c), or None.

    Up to EXHAUSTIVE_ASSOC_MAX all M³ triples are compared at once. Beyond that we use Light's
    test, which is exact, not a sample: the set N of elements g with (x·g)·y = x·(g·y) for all x, y
    is closed under the operation, so if it contains a generating set it is everything. We pick
    generators greedily (each new one not yet in the closure) and check each with M² lookups.
    """
    m = table.shape[0]
    if m <= EXHAUSTIVE_ASSOC_MAX:
        lhs = table[table]                                          # [a,b,c] = (a·b)·c
        rhs = table[np.arange(m)[:, None, None], table[None, :, :]]  # [a,b,c] = a·(b·c)
        bad = np.argwhere(lhs != rhs)
        return tuple(int(v) for v in bad[0]) if bad.size else None
    covered = np.zeros(m, dtype=bool)
    gens: list[int] = []
    while not covered.all():
        g = int(np.flatnonzero(~covered)[0])
        lhs = np.take(table, table[:, g], axis=0)    # [x, y] = (x·g)·y
        rhs = np.take(table, table[g, :], axis=1)    # [x, y] = x·(g·y)
        if not np.array_equal(lhs, rhs):
            bad = np.argwhere(lhs != rhs)[0]
            return int(bad[0]), g, int(bad[1])
        gens.append(g)
        covered[g] = True
        # Grow by right-multiplying with generators (BFS). Every element reached is a product of
        # checked generators, hence in N; reaching less than the full closure only costs an
        # extra generator, never soundness.
        frontier = np.flatnonzero(covered)
        while frontier.size:
            products = np.unique(table[np.ix_(frontier, gens)])
            frontier = products[~covered[products]]
            covered[frontier] = True
    return None


def check_group_table(table: np.ndarray, labels: tuple[str, ...] | None = None) -> None:
    """Raise GroupError naming the first violated group axiom of a square int table with
    entries in range: identity, two-sided inverses, associativity."""
    e = _find_identity(table)
    if e is None:
        raise GroupError("no identity: no element e with e·a = a·e = a for all a")
    _, bad = _find_inverses(table, e)
    if bad is not None:
        raise GroupError(f"no inverses: element {_describe(bad, labels)} has no b with "
                         f"{bad}·b = b·{bad} = {e} (the identity)")
    triple = _check_assoc(table)
    if triple is not None:
        a, b, c = triple
        ab, bc = table[a, b], table[b, c]
        raise GroupError(f"not associative: ({a}·{b})·{c} = {table[ab, c]} but {a}·({b}·{c}) = {table[a, bc]}")


def _table_from_rows(rows, what: str = "table") -> np.ndarray:
    """Rows of Python values (ints, or strings from CSV) -> validated square (M, M) int64 array."""
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) for r in rows):
        raise GroupError(f"{what} must be a non-empty list of rows")
    n = len(rows)
    lengths = [len(r) for r in rows]
    for i, length in enumerate(lengths):
        if length != lengths[0]:
            raise GroupError(f"ragged table: row {i} has {length} entries but row 0 has {lengths[0]}")
    if lengths[0] != n:
        raise GroupError(f"not square: {n} rows of {lengths[0]} entries")
    if not 2 <= n <= MAX_ORDER:
        raise GroupError(f"table order {n} out of range: need 2 <= M <= {MAX_ORDER}")
    out = np.empty((n, n), dtype=np.int64)
    for i, row in enumerate(rows):
        # Fast path with builtins; the per-entry loop only runs to name the offending entry.
        if all(type(v) is int for v in row) and min(row) >= 0 and max(row) < n:
            out[i] = row
            continue
        for j, v in enumerate(row):
            if type(v) is not int:                 # bool is an int subclass: refuse it too
                raise GroupError(f"non-integer entry {v!r} at row {i}, column {j}")
            if not 0 <= v < n:
                raise GroupError(f"entry {v} out of range at row {i}, column {j}: elements are 0..{n - 1}")
    return out


def group_from_table(table, name: str = "table", labels=None) -> Group:
    """Validate a 0-based multiplication table (nested lists or an int array) and wrap it.

    Raises GroupError naming the first violation: shape (ragged / not square), non-integer or
    out-of-range entries, bad labels, no identity, no inverses, not associative.
    """
    rows = table.tolist() if isinstance(table, np.ndarray) else table
    arr = _table_from_rows(rows)
    m = arr.shape[0]
    if labels is not None:
        if (not isinstance(labels, (list, tuple)) or len(labels) != m
                or not all(isinstance(s, str) for s in labels) or len(set(labels)) != m):
            raise GroupError(f"labels must be {m} distinct strings")
        labels = tuple(labels)
    check_group_table(arr, labels)
    return Group(str(name), arr, labels or (), True)


_INT = re.compile(r"[+-]?\d{1,18}")


def load_group_table(path) -> Group:
    """Read and validate a group table file.

    JSON (suffix .json, or content starting with '{' or '['):
        {"name": "S3", "table": [[0, 1, ...], ...], "labels": ["e", ...]}  (name, labels optional)
        or just the list of rows. Entries are 0-based element indices, table[a][b] = a∘b.
    CSV (anything else): one row per line, comma separated integers; blank lines and lines
        starting with '#' are skipped. The first row is a header of element labels when any of
        its fields is not an integer. Name = file stem.
    Every problem (unreadable file, bad JSON, bad table, failed axiom) raises GroupError.
    """
    path = Path(path)
    try:
        if path.stat().st_size > 256 * 2**20:
            raise GroupError(f"{path}: file too large")
        text = path.read_text(encoding="utf-8-sig")   # tolerate a byte-order mark
    except (OSError, UnicodeDecodeError) as exc:
        raise GroupError(f"cannot read group table {str(path)!r}: {exc.__class__.__name__}") from None
    stripped = text.lstrip()
    try:
        if path.suffix.lower() == ".json" or stripped[:1] in ("{", "["):
            try:
                data = json.loads(text)
            except (json.JSONDecodeError, RecursionError) as exc:
                msg = getattr(exc, "msg", "too deeply nested")
                raise GroupError(f"bad JSON ({msg})") from None
            if isinstance(data, list):
                data = {"table": data}
            if not isinstance(data, dict) or "table" not in data:
                raise GroupError('JSON must be an object with a "table" key (optional "name", "labels")')
            name = data.get("name", path.stem)
            if not isinstance(name, str) or not name.strip() or len(name) > 100:
                raise GroupError('"name" must be a non-empty string of at most 100 characters')
            return group_from_table(data["table"], name, data.get("labels"))
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        rows = [[f.strip() for f in r] for r in csv.reader(io.StringIO("\n".join(lines)))]
        labels = None
        if rows and any(not _INT.fullmatch(f) for f in rows[0]):
            labels, rows = rows[0], rows[1:]
        # Integer-looking fields become ints; anything else stays a string and is reported.
        rows = [[int(f) if _INT.fullmatch(f) else f for f in r] for r in rows]
        return group_from_table(rows, path.stem, labels)
    except GroupError as exc:
        raise GroupError(f"{path.name}: {exc}") from None


# ----------------------------------------------------------------------------- expressions

def _mod_pow(base: np.ndarray, exp: int, m: int) -> np.ndarray:
    """base**exp mod m by square-and-multiply; all intermediates < m² <= 4e6, no int64 overflow."""
    result = np.ones_like(base)
    while exp:
        if exp & 1:
            result = (result * base) % m
        base = (base * base) % m
        exp >>= 1
    return result


_ALLOWED_HINT = f"allowed: integers, x, y, + - *, ** with a constant exponent 0..{MAX_EXPONENT}, parentheses"


def _eval_node(node: ast.AST, x: np.ndarray, y: np.ndarray, m: int, depth: int) -> np.ndarray:
    """Evaluate one whitelisted AST node mod m. Anything not listed here is refused."""
    if depth > MAX_EXPR_DEPTH:
        raise GroupError(f"expression nested too deeply (more than {MAX_EXPR_DEPTH} levels)")
    if isinstance(node, ast.Constant):
        if type(node.value) is not int:
            raise GroupError(f"constant {node.value!r} not allowed: only integers; {_ALLOWED_HINT}")
        return np.int64(node.value % m)
    if isinstance(node, ast.Name):
        if node.id == "x":
            return x
        if node.id == "y":
            return y
        raise GroupError(f"unknown name {node.id!r}: only x and y; {_ALLOWED_HINT}")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _eval_node(node.operand, x, y, m, depth + 1)
        return (-v) % m if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        e = node.right
        if not (isinstance(e, ast.Constant) and type(e.value) is int and 0 <= e.value <= MAX_EXPONENT):
            raise GroupError(f"exponent must be an integer constant 0..{MAX_EXPONENT}; {_ALLOWED_HINT}")
        return _mod_pow(_eval_node(node.left, x, y, m, depth + 1), e.value, m)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
        a = _eval_node(node.left, x, y, m, depth + 1)
        b = _eval_node(node.right, x, y, m, depth + 1)
        if isinstance(node.op, ast.Add):
            return (a + b) % m
        if isinstance(node.op, ast.Sub):
            return (a - b) % m
        return (a * b) % m
    kind = type(node.op).__name__ if isinstance(node, (ast.BinOp, ast.UnaryOp)) else type(node).__name__
    raise GroupError(f"{kind} not allowed in expression; {_ALLOWED_HINT}")


def expression_task(expr: str, modulus: int) -> Group:
    """Operation table table[x, y] = expr(x, y) mod modulus, with is_group=False (always: the
    table is treated as a plain operation even if it happens to be a group).

    expr is parsed with ast.parse(mode="eval") and evaluated by a whitelist walker (no eval):
    integer constants, the names x and y, binary + - *, unary - and +, ** with an integer constant
    exponent 0..64, parentheses. Length <= 500 characters, nesting <= 100 levels, 2 <= modulus <= 2000.
    Everything else raises GroupError.
    """
    if type(modulus) is not int or not 2 <= modulus <= MAX_MODULUS:
        raise GroupError(f"modulus must be an integer 2..{MAX_MODULUS}, got {modulus!r}")
    if not isinstance(expr, str) or not expr.strip():
        raise GroupError(f"empty expression; {_ALLOWED_HINT}")
    if len(expr) > MAX_EXPR_LENGTH:
        raise GroupError(f"expression too long ({len(expr)} > {MAX_EXPR_LENGTH} characters)")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise GroupError(f"cannot parse expression {expr!r}; {_ALLOWED_HINT}") from None
    x = np.arange(modulus, dtype=np.int64)[:, None]
    y = np.arange(modulus, dtype=np.int64)[None, :]
    try:
        values = _eval_node(tree.body, x, y, modulus, 0)
    except RecursionError:
        raise GroupError(f"expression nested too deeply (more than {MAX_EXPR_DEPTH} levels)") from None
    table = np.array(np.broadcast_to(values, (modulus, modulus)), dtype=np.int64)
    return Group(f"{ast.unparse(tree)} mod {modulus}", table, (), False)
