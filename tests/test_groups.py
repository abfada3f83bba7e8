"""Named groups, table files, expression tables and the `li2 groups` CLI."""
from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from li2.algebra import GroupError, direct_product, expression_task, get_group, group_from_table, load_group_table
from li2.algebra import tables as groups_mod
from li2.cli.groups import groups_app

NAMED = {
    "Z2": 2, "Z71": 71, "71": 71, "D2": 4, "D5": 10, "D6": 12, "S2": 2, "S3": 6, "S4": 24, "S5": 120,
    "A3": 3, "A4": 12, "A5": 60, "Q8": 8, "Dic2": 8, "Dic3": 12, "Dic5": 20, "Z7:Z3": 21,
    "Z7sdZ3": 21, "Z5:Z4": 20, "Z13:Z3": 39, "Z11:Z5": 55, "Z3xS3": 18, "Z2xZ3xZ4": 24, "D4xZ2": 16,
    "Q8xZ3": 24,
}


def assert_is_group(table: np.ndarray) -> None:
    """Independent brute-force check: identity 0, inverses, associativity (all triples)."""
    m = table.shape[0]
    ar = np.arange(m)
    assert table.dtype == np.int64 and table.shape == (m, m)
    assert (table >= 0).all() and (table < m).all()
    assert (table[0] == ar).all() and (table[:, 0] == ar).all(), "element 0 is not the identity"
    assert ((table == 0).sum(axis=1) == 1).all() and ((table == 0) == (table == 0).T).all()
    for a in range(m):  # loop over a keeps memory at M² per step
        assert (table[table[a]] == table[a][table]).all(), f"not associative at a={a}"


def element_orders(table: np.ndarray) -> Counter:
    m = table.shape[0]
    out = Counter()
    for g in range(m):
        x, n = g, 1
        while x != 0:
            x, n = table[x, g], n + 1
        out[n] += 1
    return out


def relabel(table: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Table of the same group with element x renamed perm[x]."""
    out = np.empty_like(table)
    out[perm[:, None], perm[None, :]] = perm[table]
    return out


# ----------------------------------------------------------------------------- named groups

@pytest.mark.parametrize("name,order", sorted(NAMED.items()))
def test_named_groups_are_groups(name, order):
    g = get_group(name)
    assert g.order == order and g.is_group
    assert len(g.labels) == order and len(set(g.labels)) == order
    assert_is_group(g.table)


def test_random_products_are_groups():
    rng = np.random.default_rng(0)
    pool = ["Z2", "Z3", "Z5", "D3", "D4", "S3", "Q8", "A4", "Dic3", "Z7:Z3"]
    for _ in range(6):
        names = list(rng.choice(pool, size=2))
        g = get_group("x".join(names))
        assert g.order == get_group(names[0]).order * get_group(names[1]).order
        assert_is_group(g.table)


def test_abelian_flags():
    for name in ["Z71", "Z2xZ3xZ4", "D2", "S2", "A3"]:
        assert get_group(name).abelian, name
    for name in ["D5", "S3", "S4", "A4", "Q8", "Dic3", "Z7:Z3", "Z3xS3"]:
        assert not get_group(name).abelian, name


def test_aliases_give_the_same_table():
    assert np.array_equal(get_group("71").table, get_group("Z71").table)
    assert get_group(71).name == "Z71"
    assert np.array_equal(get_group("z7sdz3").table, get_group("Z7:Z3").table)
    assert np.array_equal(get_group(" Z3 x s3 ").table, get_group("Z3xS3").table)
    assert np.array_equal(get_group("Dic2").table, get_group("Q8").table)
    assert get_group("71").name == "Z71" and get_group("z7sdz3").name == "Z7:Z3"
    # The old two-argument call still works.
    assert np.array_equal(direct_product(get_group("Z2"), get_group("Z3")).table, get_group("Z2xZ3").table)


def test_cyclic_and_product_encoding():
    assert np.array_equal(get_group("Z5").table, np.add.outer(np.arange(5), np.arange(5)) % 5)
    t = get_group("Z2xZ3").table
    enc = lambda i, j: 3 * i + j  # noqa: E731  first factor most significant
    assert t[enc(1, 2), enc(1, 2)] == enc(0, 1)


def test_dihedral_relations_and_labels():
    g = get_group("D5")
    lab = {s: i for i, s in enumerate(g.labels)}
    r, s = lab["r"], lab["s"]
    t = g.table
    assert t[t[s, r], s] == lab["r^4"]                # s r s = r⁻¹
    assert t[r, s] == lab["r s"] and t[lab["r^2"], s] == lab["r^2 s"]
    assert element_orders(t) == Counter({1: 1, 2: 5, 5: 4})


def test_quaternion_labels_multiply_like_quaternions():
    g = get_group("Q8")
    lab = {s: i for i, s in enumerate(g.labels)}
    t = g.table
    assert t[lab["i"], lab["j"]] == lab["k"] and t[lab["j"], lab["i"]] == lab["-k"]
    assert t[lab["i"], lab["i"]] == lab["-1"] and t[lab["k"], lab["k"]] == lab["-1"]
    assert element_orders(t) == Counter({1: 1, 2: 1, 4: 6})


def test_dicyclic_has_unique_involution():
    for n in (3, 4, 5):
        counts = element_orders(get_group(f"Dic{n}").table)
        assert counts[2] == 1 and sum(counts.values()) == 4 * n


def test_symmetric_labels_and_composition_convention():
    g = get_group("S3")
    assert set(g.labels) == {"()", "(1 2)", "(1 3)", "(2 3)", "(1 2 3)", "(1 3 2)"}
    lab = {s: i for i, s in enumerate(g.labels)}
    # (p∘q)(i) = p(q(i)), q first: (1 2)∘(2 3) sends 1→1→2, 2→3→3, 3→2→1, i.e. (1 2 3).
    assert g.table[lab["(1 2)"], lab["(2 3)"]] == lab["(1 2 3)"]
    assert g.table[lab["(2 3)"], lab["(1 2)"]] == lab["(1 3 2)"]
    assert element_orders(get_group("S4").table) == Counter({1: 1, 2: 9, 3: 8, 4: 6})
    assert element_orders(get_group("A4").table) == Counter({1: 1, 2: 3, 3: 8})
    assert element_orders(get_group("A5").table) == Counter({1: 1, 2: 15, 3: 20, 5: 24})


def test_semidirect_products():
    g = get_group("Z7:Z3")
    assert element_orders(g.table) == Counter({1: 1, 7: 6, 3: 14})
    assert g.labels[1] == "a" and g.labels[7] == "b" and g.labels[8] == "a b"
    f20 = get_group("Z5:Z4")   # Frobenius group of order 20
    assert element_orders(f20.table) == Counter({1: 1, 2: 5, 4: 10, 5: 4})


def test_product_labels_are_flat_tuples():
    g = get_group("Z2xS3xZ3")
    assert g.labels[0] == "(0,(),0)" and "(1,(1 2),2)" in g.labels


@pytest.mark.parametrize("name,fragment", [
    ("", "accepted: Z<n>"),
    ("foo", "accepted: Z<n>"),
    ("Zx", "accepted"),
    ("x", "accepted"),
    ("Z2xx Z3", "accepted"),
    ("S6", "2 <= n <= 5"),
    ("A2", "3 <= n <= 5"),
    ("Z1", ">= 2"),
    ("D1", "n >= 2"),
    ("Dic1", "n >= 2"),
    ("Z7:Z4", "divide p-1 = 6"),
    ("Z8:Z2", "not prime"),
    ("Z99999999999", "order 99999999999 > 4096"),
    ("Z3xZ2000", "> 4096"),
    ("Q9", "accepted"),
])
def test_bad_names(name, fragment):
    with pytest.raises(GroupError) as info:
        get_group(name)
    msg = str(info.value)
    assert fragment in msg and "\n" not in msg


# ----------------------------------------------------------------------------- table files

def write_json(path, table, **extra):
    path.write_text(json.dumps({"table": np.asarray(table).tolist(), **extra}))
    return path


def write_csv(path, table, header=None):
    lines = ([",".join(f'"{h}"' for h in header)] if header else []) + [",".join(map(str, r)) for r in np.asarray(table)]
    path.write_text("# a comment\n" + "\n".join(lines) + "\n\n")
    return path


def test_load_json_and_csv(tmp_path):
    s3 = get_group("S3")
    g = load_group_table(write_json(tmp_path / "s3.json", s3.table, name="my S3", labels=list(s3.labels)))
    assert g.name == "my S3" and g.labels == s3.labels and np.array_equal(g.table, s3.table)
    g = load_group_table(write_csv(tmp_path / "s3.csv", s3.table))
    assert g.name == "s3" and np.array_equal(g.table, s3.table) and g.labels[1] == "1"
    g = load_group_table(write_csv(tmp_path / "lab.csv", s3.table, header=s3.labels))
    assert g.labels == s3.labels
    (tmp_path / "bare.txt").write_text(json.dumps(s3.table.tolist()))
    assert np.array_equal(load_group_table(tmp_path / "bare.txt").table, s3.table)


def test_large_table_uses_exact_test(tmp_path):
    """Order 260 > 128: a relabelled group passes, one changed entry is caught."""
    g = get_group("Z2xD65")
    perm = np.random.default_rng(1).permutation(g.order)
    table = relabel(g.table, perm)
    assert load_group_table(write_json(tmp_path / "ok.json", table)).order == 260
    bad = table.copy()
    a, b = int(perm[3]), int(perm[70])
    bad[a, b] = bad[a, perm[71]]                    # wrong product, identity row/column untouched
    with pytest.raises(GroupError, match=r"not associative: \(\d+·\d+\)·\d+ = \d+ but") as info:
        load_group_table(write_json(tmp_path / "bad.json", bad))
    x, y, z, lhs, _, _, _, rhs = map(int, re.findall(r"\d+", str(info.value).split(":", 1)[1]))
    assert bad[bad[x, y], z] == lhs != rhs == bad[x, bad[y, z]]


def test_light_test_agrees_with_brute_force(monkeypatch):
    """Light's test (used above order 128) must find exactly the non-associative tables."""
    rng = np.random.default_rng(7)
    monkeypatch.setattr(groups_mod, "EXHAUSTIVE_ASSOC_MAX", 0)
    for name in ["S4", "Q8", "Z7:Z3", "D6", "Z2xZ2xZ2xZ3"]:
        table = get_group(name).table
        assert groups_mod._check_assoc(table) is None
        for _ in range(5):
            bad = table.copy()
            a, b = rng.integers(1, table.shape[0], size=2)
            bad[a, b] = (bad[a, b] + rng.integers(1, table.shape[0])) % table.shape[0]
            found = groups_mod._check_assoc(bad)
            brute = np.argwhere(bad[bad] != bad[np.arange(len(bad))[:, None, None], bad[None]])
            assert (found is None) == (brute.size == 0)
            if found:
                x, y, z = found
                assert bad[bad[x, y], z] != bad[x, bad[y, z]]


LOOP5 = [[0, 1, 2, 3, 4], [1, 0, 3, 4, 2], [2, 4, 0, 1, 3], [3, 2, 4, 0, 1], [4, 3, 1, 2, 0]]


@pytest.mark.parametrize("table,message", [
    ([[0, 1], [1]], "ragged table: row 1 has 1 entries but row 0 has 2"),
    ([[0, 1, 2], [1, 2, 0]], "not square: 2 rows of 3 entries"),
    ([[0, 1], [1, 2]], "entry 2 out of range at row 1, column 1: elements are 0..1"),
    ([[0, 1], [1, -1]], "entry -1 out of range at row 1, column 1"),
    ([[0, 1], [1, 0.5]], "non-integer entry 0.5 at row 1, column 1"),
    ([[0, 1], [1, "a"]], "non-integer entry 'a' at row 1, column 1"),
    ([[0, 1], [1, True]], "non-integer entry True at row 1, column 1"),
    ([[0]], "table order 1 out of range"),
    ([], "non-empty list of rows"),
    ([[0, 0], [1, 1]], "no identity"),
    ([[0, 1, 2, 3], [1, 1, 2, 3], [2, 2, 2, 3], [3, 3, 3, 3]], "no inverses: element 1 has no b"),
    (LOOP5, "not associative: (1·1)·2 = 2 but 1·(1·2) = 4"),
])
def test_bad_tables(tmp_path, table, message):
    with pytest.raises(GroupError) as info:
        load_group_table(_json_raw(tmp_path, table))
    assert message in str(info.value)


def _json_raw(tmp_path, table):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"table": table}))
    return path


def test_bad_csv(tmp_path):
    (tmp_path / "r.csv").write_text("0,1\n1,0,1\n")
    with pytest.raises(GroupError, match="ragged"):
        load_group_table(tmp_path / "r.csv")
    (tmp_path / "f.csv").write_text("0,1\n1,1.5\n")
    with pytest.raises(GroupError, match="non-integer entry '1.5' at row 1, column 1"):
        load_group_table(tmp_path / "f.csv")
    (tmp_path / "h.csv").write_text("a,b,c\n0,1\n1,0\n")
    with pytest.raises(GroupError, match="labels must be 2 distinct strings"):
        load_group_table(tmp_path / "h.csv")


def test_bad_files_and_labels(tmp_path):
    with pytest.raises(GroupError, match="cannot read group table"):
        load_group_table(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"table": [[0, 1], [1, 0]')
    with pytest.raises(GroupError, match="bad JSON"):
        load_group_table(tmp_path / "bad.json")
    (tmp_path / "obj.json").write_text('{"rows": []}')
    with pytest.raises(GroupError, match='"table" key'):
        load_group_table(tmp_path / "obj.json")
    with pytest.raises(GroupError, match="labels must be 2 distinct strings"):
        load_group_table(write_json(tmp_path / "l.json", [[0, 1], [1, 0]], labels=["a", "a"]))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(GroupError, match="non-empty"):
        load_group_table(tmp_path / "empty.csv")
    with pytest.raises(GroupError, match="no identity"):
        group_from_table(np.array([[0, 0], [1, 1]]))


# ----------------------------------------------------------------------------- expressions

def test_expression_table():
    g = expression_task("x**2 + x*y + y**2", 23)
    x, y = np.meshgrid(np.arange(23), np.arange(23), indexing="ij")
    assert not g.is_group and g.order == 23 and g.table.dtype == np.int64
    assert np.array_equal(g.table, (x**2 + x * y + y**2) % 23)
    g = expression_task("-(x - 3*y) + +5", 7)
    assert g.table[2, 4] == (-(2 - 12) + 5) % 7
    big = expression_task("x**64 * y**63 - 7", 1999)   # modular powers, no int64 overflow
    assert big.table[1998, 1997] == (pow(1998, 64, 1999) * pow(1997, 63, 1999) - 7) % 1999
    assert expression_task("y**0", 5).table[0, 0] == 1
    flat = expression_task(" + ".join(["x"] * 60) + " - y", 7)     # long flat sums are fine
    assert flat.table[3, 2] == (60 * 3 - 2) % 7
    assert np.array_equal(expression_task("3", 5).table, np.full((5, 5), 3))


@pytest.mark.parametrize("expr,fragment", [
    ("__import__('os').system('x')", "Call not allowed"),
    ("x.__class__", "Attribute not allowed"),
    ("(lambda: 1)()", "Call not allowed"),
    ("x**99999999", "exponent must be an integer constant 0..64"),
    ("x**65", "exponent must be"),
    ("x**-1", "exponent must be"),
    ("x**y", "exponent must be"),
    ("1.5*x", "constant 1.5 not allowed"),
    ("'a'", "constant 'a' not allowed"),
    ("True", "constant True not allowed"),
    ("z + 1", "unknown name 'z'"),
    ("os", "unknown name 'os'"),
    ("x / y", "Div not allowed"),
    ("x % y", "Mod not allowed"),
    ("x[0]", "Subscript not allowed"),
    ("x if y else 1", "IfExp not allowed"),
    ("x == y", "Compare not allowed"),
    ("[x]", "List not allowed"),
    ("x +", "cannot parse"),
    ("x; y", "cannot parse"),
    ("", "empty expression"),
    ("x" + "+x" * 300, "too long"),
    ("-" * 150 + "x", "nested too deeply"),
    ("-(" * 120 + "x" + ")" * 120, "nested too deeply"),
    ("(" * 300 + "x" + ")" * 300, "too long"),
])
def test_hostile_expressions(expr, fragment):
    with pytest.raises(GroupError) as info:
        expression_task(expr, 7)
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("modulus", [1, 0, -3, 2001, 7.0, True, "7"])
def test_bad_modulus(modulus):
    with pytest.raises(GroupError, match="modulus"):
        expression_task("x + y", modulus)


# ----------------------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_list():
    res = runner.invoke(groups_app, ["list"])
    assert res.exit_code == 0
    for fragment in ("Z7:Z3", "Dic<n>", "S4", "Z3xS3", "--group-table"):
        assert fragment in res.stdout
    res = runner.invoke(groups_app, ["list", "--json"])
    assert res.exit_code == 0 and any(row["form"] == "Q8" for row in json.loads(res.stdout))


def test_cli_show_json_and_text(tmp_path):
    res = runner.invoke(groups_app, ["show", "S4", "--json"])
    assert res.exit_code == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["order"] == 24 and info["irrep_degrees"] == [1, 1, 2, 3, 3]
    res = runner.invoke(groups_app, ["show", "Q8"])
    assert res.exit_code == 0 and "quaternionic" in res.stdout and "irrep degrees    1 1 1 1 2" in res.stdout
    path = write_json(tmp_path / "q.json", get_group("Q8").table, name="quat")
    res = runner.invoke(groups_app, ["show", "--group-table", str(path), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["name"] == "quat"


@pytest.mark.parametrize("args,fragment", [
    (["show", "S7", "--json"], "2 <= n <= 5"),
    (["show", "nonsense"], "accepted"),
    (["show"], "exactly one of NAME or --group-table"),
    (["show", "S3", "--group-table", "x.json"], "exactly one"),
    (["show", "--group-table", "/no/such/file.json"], "cannot read group table"),
])
def test_cli_errors(args, fragment):
    res = runner.invoke(groups_app, args)
    assert res.exit_code == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]


def test_cli_bad_table_file(tmp_path):
    path = _json_raw(tmp_path, LOOP5)
    res = runner.invoke(groups_app, ["show", "--group-table", str(path)])
    assert res.exit_code == 2 and res.stderr.strip() == "error: t.json: not associative: (1·1)·2 = 2 but 1·(1·2) = 4"
    assert res.exception is None or isinstance(res.exception, SystemExit)
