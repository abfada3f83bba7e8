"""Groups from Cayley tables (validated completely: identity, inverses, associativity) and operation
tables from safe expressions (`x**2 + x*y + y**2` mod m: parsed, never evaluated as Python).
"""
from __future__ import annotations

import ast
import csv
import io
import json
import re
from pathlib import Path

import numpy as np

from .groups import MAX_ORDER, Group, GroupError, _describe, _find_identity, _find_inverses

EXHAUSTIVE_ASSOC_MAX = 128  # above this order associativity uses Light's test (exact, see _check_assoc)
MAX_MODULUS = 2000
MAX_EXPONENT = 64
MAX_EXPR_LENGTH = 500
MAX_EXPR_DEPTH = 100       # AST levels; a flat sum of n terms is n levels deep


# ----------------------------------------------------------------------------- validation

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
        or just the list of rows. Entries are 0-based element indices, `table[a][b]` = a∘b.
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
