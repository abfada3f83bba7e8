"""Hostile input (issue 6): generated CLI arguments, YAML configs, Cayley tables, expressions and
sweep specs, valid and invalid.  li2 never lets an exception escape: valid input runs (tiny sizes,
exit 0), invalid input exits 2 with exactly one line on stderr, `error: …`, naming the problem.

One hypothesis strategy per input kind builds `Case`s; `check` runs each through the console
entry point (`li2.cli.main`, in process) in a fresh working folder.  To cover a new input kind,
write a strategy returning `Case`s and a test that feeds it to `check`.  Commands that are not
there yet (sweep, groups, --config, --group-table, --expression) are skipped, not failed.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from li2_cli import cli_in_process

from li2 import cli

# CI sees the same cases every time; LI2_HOSTILE_EXPLORE=N draws N times as many fresh ones.
EXPLORE = int(os.environ.get("LI2_HOSTILE_EXPLORE", "0") or 0)
SETTINGS = dict(deadline=None, derandomize=not EXPLORE, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])


# -- what exists now ------------------------------------------------------------------------------------------

def _commands() -> dict:
    import typer.main
    return typer.main.get_command(cli.app).commands


def has_command(name: str) -> bool:
    return name in _commands()


def train_options() -> set[str]:
    cmd = _commands()["train"]
    return {opt for p in cmd.params for opt in getattr(p, "opts", [])}


HAS_CONFIG = "--config" in train_options()
HAS_TABLE = "--group-table" in train_options()
HAS_EXPR = "--expression" in train_options() and "--modulus" in train_options()


@pytest.fixture
def no_figures(monkeypatch):
    """curves.png costs ten times a tiny run; tests whose input cannot reach a figure skip it."""
    from li2.runs import training
    monkeypatch.setattr(training, "run_figures", lambda *args, **kwargs: [])


# -- the harness -------------------------------------------------------------------------------------------------

@dataclass
class Case:
    """argv for `li2`, the files to create first (path → bytes), and what must happen:
    expect "ok" (exit 0), "error" (exit 2, one line mentioning one of `hints`) or "either"."""

    argv: list[str]
    expect: str = "ok"
    hints: tuple[str, ...] = ()
    files: dict[str, bytes] = field(default_factory=dict)
    dirs: tuple[str, ...] = ()
    copies: dict[str, str] = field(default_factory=dict)   # path → name of a source folder (see check)


def run_li2(argv: list[str]) -> tuple[int, str, str]:
    return cli_in_process(*argv)


def check(case: Case, sources: dict[str, Path] | None = None) -> None:
    """Run one case in a fresh folder; any exception other than SystemExit fails the test.

    Folders are made first, then `copies` (from `sources`), then `files` are written (over copies)."""
    work = Path(tempfile.mkdtemp(prefix="li2-hostile-"))
    here = os.getcwd()
    try:
        for d in case.dirs:
            (work / d).mkdir(parents=True, exist_ok=True)
        for dest, source in case.copies.items():
            shutil.copytree((sources or {})[source], work / dest)
        for name, data in case.files.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_bytes(data)
        os.chdir(work)
        code, out, err = run_li2(case.argv)
    finally:
        os.chdir(here)
        shutil.rmtree(work, ignore_errors=True)
    if currently_in_test_context():
        event(f"expected {case.expect}, exit {code}")
    where = (f"\nargv: {case.argv!r}\nfiles: {list(case.files)}\nexit {code}\nstdout: {out[-500:]!r}"
             f"\nstderr: {err[-1500:]!r}")
    assert "Traceback" not in err, "a traceback reached the user" + where
    assert code in (0, 2), "exit status must be 0 or 2" + where
    if case.expect == "ok":
        assert code == 0, "valid input was refused" + where
    elif case.expect == "error":
        assert code == 2, "invalid input was accepted" + where
    if code == 2:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1, "an error must be exactly one line" + where
        assert lines[0].startswith("error: ") and len(lines[0]) > len("error: ") + 3, where
        if case.expect == "error" and case.hints:
            low = lines[0].lower().replace("_", "-")
            named = any(h.lower().replace("_", "-") in low for h in case.hints)
            assert named, f"message should name one of {case.hints}" + where


# -- values ---------------------------------------------------------------------------------------------------

SMALL_GROUPS = ["Z5", "z7", "6", "Z2xZ3", "D3", "S3", "Q8", "Z2 x Z2", "D4", "A4", "Dic2", "Z5:Z2", "Z3×Z3",
                "Z11", "Z2xZ2xZ2"]
BAD_GROUPS = ["Q5", "Z0", "S9", "A7", "Z99999999", "", "x", "Zx3", "D", "Z2xx3", "Z7:Z4", "Z6:Z2", "∞",
              "Z5; rm -rf /", "__import__('os')", "Z" + "9" * 300, "S3xS3xS3xS3", "Ｚ５", "\u202eZ5"]
WEIRD = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                min_size=0, max_size=12)
NUM_JUNK = ["abc", "", " ", "1e", "--", "0x", "½", "١٢", "1,5", "NaN?", "1_000_000_000_000_000_000_000"]


def reals(lo: float, hi: float) -> st.SearchStrategy:
    # no subnormals: training turns flush-to-zero on for the process, and hypothesis refuses them then
    return st.floats(lo, hi, allow_subnormal=False)


def fmt(x: float) -> str:
    return repr(float(x)) if isinstance(x, float) else str(x)


# option → (valid values strategy, invalid values [(text, hint)])
OPTIONS: dict[str, tuple[st.SearchStrategy, list[tuple[str, str]]]] = {
    "--train-ratio": (st.one_of(reals(0.05, 1.0).map(fmt),
                                st.sampled_from(["critical", "critical:1.5", "1", "0.5"])),
                      [("0", "ratio"), ("-0.5", "ratio"), ("1.5", "ratio"), ("nan", "ratio"), ("inf", "ratio"),
                       ("critical:abc", "ratio"), ("critical:", "ratio"), ("critical:-1", "ratio"), ("abc", "ratio"),
                       ("critical:100", "ratio"), ("critical:0", "ratio"), ("1e999", "ratio")]),
    "--activation": (st.sampled_from(["sqr", "relu", "silu", "relusqr", "gelu"]),
                     [("SQR", "activation"), ("tanh", "activation"), ("", "activation"), ("sqr ", "activation")]),
    "--loss": (st.sampled_from(["mse", "ce"]), [("mae", "loss"), ("MSE", "loss"), ("", "loss")]),
    "--optimizer": (st.sampled_from(["sgd", "adam", "adamw", "muon"]),
                    [("lion", "optimizer"), ("Adam", "optimizer"), ("", "optimizer")]),
    "--lr": (reals(1e-5, 1.0).map(fmt), [("0", "lr"), ("-1", "lr"), ("nan", "lr"), ("inf", "lr"), ("1e3", "lr"),
                                             ("abc", "lr"), ("", "lr")]),
    "--weight-decay": (reals(0, 0.1).map(fmt), [("-1", "weight-decay"), ("nan", "weight-decay"),
                                                    ("1000", "weight-decay"), ("x", "weight-decay")]),
    "--init-scale": (reals(0, 2).map(fmt), [("-1", "init-scale"), ("nan", "init-scale"),
                                            ("inf", "init-scale"),
                                                ("one", "init-scale")]),
    "--top-init-scale": (reals(0, 2).map(fmt), [("-0.1", "top-init-scale"), ("-inf", "top-init-scale")]),
    "--layers": (st.integers(0, 2).map(str), [("-1", "layers"), ("9", "layers"), ("1.5", "layers")]),
    "--operands": (st.sampled_from(["2", "3"]), [("1", "operands"), ("5", "operands"), ("0", "operands"),
                                                 ("two", "operands")]),
    "--seeds": (st.sampled_from(["0", "0-1", "0,2", "1-2", "3"]),
                [("3-1", "seed"), ("0,0", "seed"), ("-1", "seed"), ("a", "seed"), ("", "seed"), ("0-", "seed"),
                 ("0;1", "seed"), ("1-200000", "seed")]),
    "--seed": (st.integers(0, 5).map(str), [("-1", "seed"), ("x", "seed"), ("1.0", "seed")]),
    "--eval-every": (st.integers(1, 3).map(str), [("0", "eval-every"), ("-2", "eval-every")]),
    "--checkpoint-every": (st.integers(0, 3).map(str), [("-1", "checkpoint-every"), ("x", "checkpoint-every")]),
    "--stop-margin": (st.integers(0, 5).map(str), [("-1", "stop-margin")]),
    "--diagnostics": (st.sampled_from(["off", "basic", "full"]), [("none", "diagnostics"), ("on", "diagnostics")]),
    "--device": (st.sampled_from(["cpu", "auto"]), [("tpu", "device"), ("gpu", "device"), ("cpu:0", "device")]),
    "--execution": (st.sampled_from(["auto", "stack", "sequential"]), [("parallel", "execution")]),
    "--threads": (st.just("1"), [("0", "threads"), ("-4", "threads"), ("4096", "threads")]),
    "--muon-lr": (st.sampled_from(["0.01", "0.5"]), [("0", "muon-lr"), ("-1", "muon-lr"), ("nan", "muon-lr")]),
    "--top-layer": (st.sampled_from(["learned", "ridge"]), [("fixed", "top-layer")]),
    "--width": (st.integers(1, 16).map(str), [("0", "width"), ("-3", "width"), ("abc", "width"), ("1.5", "width"),
                                              ("10000000", "width"), ("", "width"), ("8k", "width")]),
    "--steps": (st.integers(1, 5).map(str), [("0", "steps"), ("-1", "steps"), ("x", "steps"), ("1e2", "steps"),
                                             ("100000000", "steps")]),
    "--group": (st.sampled_from(SMALL_GROUPS), [(g, "group") for g in BAD_GROUPS]),
}
FLAGS = ["--early-stop", "--no-early-stop", "--json"]
UNKNOWN = [(["--bogus", "3"], "bogus"), (["--widht", "8"], "widht"), (["-Z"], "-z"), (["extra-positional"], "extra"),
           (["--width"], "--width"), (["--", "--width", "8"], ""), (["--lr=0.1=2"], "lr"), (["—width", "8"], "width"),
           (["--résumé", "x"], "sum")]


@st.composite
def train_cases(draw) -> Case:
    """`li2 train …` with tiny sizes; at most one thing wrong."""
    chosen = draw(st.lists(st.sampled_from(sorted(OPTIONS)), unique=True, max_size=6))
    values = {"--width": draw(OPTIONS["--width"][0]), "--steps": draw(OPTIONS["--steps"][0]),
              "--group": draw(OPTIONS["--group"][0])}
    for opt in chosen:
        values[opt] = draw(OPTIONS[opt][0])
    flags = draw(st.lists(st.sampled_from(FLAGS), unique=True, max_size=2))
    mode = draw(st.sampled_from(["ok", "ok", "bad value", "bad value", "unknown option", "bad out", "weird"]))
    expect, hints, extra, files, dirs = "ok", (), [], {}, ()
    out = "out"
    if mode == "bad value":
        opt = draw(st.sampled_from(sorted(OPTIONS)))
        values[opt], hint = draw(st.sampled_from(OPTIONS[opt][1]))
        expect, hints = "error", (hint, values[opt][:20] if len(values[opt]) > 2 else hint)
    elif mode == "unknown option":
        extra, hint = draw(st.sampled_from(UNKNOWN))
        expect, hints = ("either" if hint == "" else "error"), (hint, "option", "argument")
    elif mode == "bad out":
        kind = draw(st.sampled_from(["file", "foreign", "under file", "proc", "same run"]))
        expect, hints = "error", ("out",)
        if kind == "file":
            files = {"out": b"not a folder"}
        elif kind == "foreign":
            files = {"out/notes.txt": b"my thesis"}
        elif kind == "under file":
            files, out = {"f": b"x"}, "f/out"
        elif kind == "proc":
            out = "/proc/li2-hostile/out"
        else:   # a different run is already there
            files = {"out/config.yaml": yaml.safe_dump({"config": {"group": "Z7"}}).encode()}
    elif mode == "weird":   # any text in a string option: valid or not, never a traceback
        opt = draw(st.sampled_from(["--group", "--train-ratio", "--seeds", "--activation", "--width", "--lr", "--out"]))
        values[opt] = draw(WEIRD)
        expect = "either"
        if opt == "--group":
            assume(_tiny_group(values[opt]) is not False)
        if opt == "--seeds":
            assume(_few_seeds(values[opt]))
        if opt == "--width":
            assume(_int_or_none(values[opt]) is None or _int_or_none(values[opt]) <= 64)   # tiny runs only
    out = values.pop("--out", out)
    args = ["train"]
    for opt, v in values.items():
        args += [opt, v] if v == "" or not v.startswith("-") else [f"{opt}={v}"]
    args += flags + ["--quiet", f"--out={out}"] + extra
    if "--diagnostics" not in values:
        args += ["--diagnostics", "off"]
    # rules between options (a second problem: either one may be named)
    for broken, hint in (("--seed" in values and "--seeds" in values, "seed"),
                         (values.get("--top-layer") == "ridge" and values.get("--loss") == "ce", "ridge"),
                         (values.get("--train-ratio") == "critical:1.5" and _order(values["--group"]) in (2, 3),
                          "ratio")):
        if broken:
            expect, hints = ("error", (*hints, hint)) if expect != "either" else ("either", ())
    return Case(args, expect, hints, files, dirs)


def _order(name: str) -> int | None:
    from li2.algebra.groups import GroupError, get_group
    try:
        return get_group(name).order
    except (GroupError, ValueError):
        return None


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _few_seeds(text: str) -> bool:
    from li2.config import parse_seeds
    try:
        return len(parse_seeds(text)) <= 4
    except ValueError:
        return True


def _tiny_group(name: str):
    """None: not a group name (fine, an error); True: a small group; False: too big to train here."""
    order = _order(name)
    return None if order is None else order <= 16


@settings(max_examples=120 * max(1, EXPLORE), **SETTINGS)
@given(train_cases())
def test_train_arguments(no_figures, case):
    check(case)


# -- --resume targets and `li2 phase` folders ---------------------------------------------------------------------

@st.composite
def resume_cases(draw) -> Case:
    kind = draw(st.sampled_from(["missing", "file", "empty", "junk config", "list config", "foreign config",
                                 "binary", "yaml tag", "no config key"]))
    files, dirs = {}, ()
    if kind == "file":
        files = {"r": b"x"}
    elif kind == "empty":
        dirs = ("r",)
    elif kind == "junk config":
        files = {"r/config.yaml": draw(st.binary(max_size=40)) + b"\n: : {{["}
    elif kind == "list config":
        files = {"r/config.yaml": b"- 1\n- 2\n"}
    elif kind == "foreign config":
        files = {"r/config.yaml": yaml.safe_dump({"config": {"group": "Z5", "width": -4}}).encode()}
    elif kind == "binary":
        files = {"r/config.yaml": draw(st.binary(min_size=1, max_size=64))}
    elif kind == "yaml tag":
        files = {"r/config.yaml": b"config: !!python/object/apply:os.system ['touch PWNED']\n"}
    elif kind == "no config key":
        files = {"r/config.yaml": b"group: Z5\n"}
    return Case(["train", "--resume", "r", "--quiet"], "error", ("r", "config", "resume"), files, dirs)


@settings(max_examples=15 * max(1, EXPLORE), **SETTINGS)
@given(resume_cases())
def test_resume_targets(no_figures, case):
    check(case)


# -- YAML configs (li2 train --config FILE) ------------------------------------------------------------------------

YAML_VALID = {
    "group": st.sampled_from(SMALL_GROUPS), "width": st.integers(1, 16), "steps": st.integers(1, 5),
    "train_ratio": st.one_of(reals(0.05, 1.0), st.just("critical")),
    "activation": st.sampled_from(["sqr", "relu", "gelu"]), "loss": st.just("mse"),
    "optimizer": st.sampled_from(["sgd", "adam", "adamw", "muon"]), "lr": reals(1e-4, 0.5),
    "weight_decay": reals(0, 0.01), "seeds": st.sampled_from([[0], [0, 1], "0-1", 2]), "layers": st.integers(0, 1),
    "eval_every": st.integers(1, 3), "early_stop": st.booleans(), "diagnostics": st.sampled_from(["off", "basic"]),
    "dtype": st.sampled_from(["float32", "float64"]), "checkpoint_every": st.integers(0, 2),
}
YAML_INVALID = {  # key → [(value, hint)]
    "width": [(-1, "width"), ("wide", "width"), (2.5, "width"), (None, "width"), ([8], "width"), ({"a": 1}, "width")],
    "steps": [(0, "steps"), ("many", "steps"), (10**9, "steps")],
    "train_ratio": [(0, "ratio"), (2, "ratio"), ("critical:x", "ratio"), (float("nan"), "ratio"), ([0.5], "ratio"),
                    (True, "ratio")],
    "lr": [(-0.1, "lr"), (float("inf"), "lr"), ("fast", "lr")],
    "group": [(5.5, "group"), ("Q5", "group"), (None, "group"), (["Z5"], "group")],
    "activation": [("tanh", "activation"), (1, "activation")],
    "seeds": [([], "seed"), ([-1], "seed"), ("x", "seed"), ([0, 0], "seed"), ({"a": 1}, "seed"), ([[1]], "seed"),
              ([None], "seed"), ([1.5], "seed"), (True, "seed"), (10**20, "seed"), (["0", 0], "seed")],
    "dtype": [("float16", "dtype")],
    "unknown_key": [(1, "unknown_key")],
    "Width": [(8, "width")],
}


# "billion laughs": nine levels of nine aliases, 9^9 strings if anything walked the expansion
ALIAS_BOMB = (b'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
              + b"".join(b"%s: &%s [%s]\n" % (n, n, b",".join([b"*" + p] * 9))
                         for p, n in zip([bytes([c]) for c in b"abcdefgh"], [bytes([c]) for c in b"bcdefghi"]))
              + b"seeds: [*i, *i]\nwidth: 4\nsteps: 1\n")


@st.composite
def config_cases(draw) -> Case:
    cfg = {"width": draw(YAML_VALID["width"]), "steps": draw(YAML_VALID["steps"]), "group": draw(YAML_VALID["group"]),
           "diagnostics": "off"}
    for key in draw(st.lists(st.sampled_from(sorted(YAML_VALID)), unique=True, max_size=5)):
        cfg[key] = draw(YAML_VALID[key])
    mode = draw(st.sampled_from(["ok", "ok", "bad value", "bad file", "wrapped", "override"]))
    expect, hints, extra = "ok", (), []
    if mode == "bad value":
        key = draw(st.sampled_from(sorted(YAML_INVALID)))
        cfg[key], hint = draw(st.sampled_from(YAML_INVALID[key]))
        expect, hints = "error", (hint, "config")
    elif mode == "wrapped":                      # the `config:` block of a run folder's config.yaml
        cfg = {"config": cfg, "resolved": {"order": 5}}
    elif mode == "override":                     # the command line wins over the file
        cfg["width"] = -5
        extra = ["--width", "4"]
    data = yaml.safe_dump(cfg, allow_unicode=True).encode()
    if mode == "bad file":
        data = draw(st.sampled_from([b"", b"- 1\n- 2\n", b"just a string\n", b"{{{{", b"\xff\xfe\x00junk",
                                     b"width: [1, 2\n", b"!!python/object/apply:os.system ['touch PWNED']\n",
                                     b"width: !!python/name:os.system\n", b"a: &a [*a]\n", b"? [1]\n: 2\n",
                                     b"width: 8\nwidth: 9\nsteps: [" + b"[" * 200 + b"\n", ALIAS_BOMB]))
        expect, hints = "error", ("cfg.yaml", "config", "yaml", "mapping", "option", "seed")
    files = {"cfg.yaml": data}
    return Case(["train", "--config", "cfg.yaml", "--quiet", "--out", "out", *extra], expect, hints, files)


@pytest.mark.skipif(not HAS_CONFIG, reason="li2 train --config does not exist yet")
@settings(max_examples=50 * max(1, EXPLORE), **SETTINGS)
@given(config_cases())
def test_yaml_configs(no_figures, case):
    check(case)
    assert not Path("PWNED").exists()


# -- Cayley tables (li2 train --group-table FILE) ------------------------------------------------------------------

def _cyclic(n):
    return [[(a + b) % n for b in range(n)] for a in range(n)]


def _s3():
    import itertools
    perms = list(itertools.permutations(range(3)))
    idx = {p: i for i, p in enumerate(perms)}
    return [[idx[tuple(p[q[i]] for i in range(3))] for q in perms] for p in perms]


def _klein():
    return [[a ^ b for b in range(4)] for a in range(4)]


VALID_TABLES = st.one_of(st.integers(2, 9).map(_cyclic), st.just(_s3()), st.just(_klein()))


@st.composite
def relabelled(draw, table):
    n = len(table)
    perm = draw(st.permutations(range(n)))
    inv = {perm[i]: i for i in range(n)}
    return [[perm[table[inv[a]][inv[b]]] for b in range(n)] for a in range(n)]


def _csv(rows, header=None) -> bytes:
    lines = ([",".join(header)] if header else []) + [",".join(str(v) for v in r) for r in rows]
    return ("\n".join(lines) + "\n").encode()


@st.composite
def table_cases(draw) -> Case:
    table = draw(VALID_TABLES.flatmap(relabelled))
    n = len(table)
    fmt_ = draw(st.sampled_from(["json", "json-list", "csv", "csv-header", "txt-json"]))
    mode = draw(st.sampled_from(["ok", "ok", "broken", "broken", "junk"]))
    expect, hints = "ok", ()
    labels = None
    if mode == "broken":
        kind = draw(st.sampled_from(["entry", "ragged", "not square", "range", "negative", "non-int", "float",
                                     "bool", "null", "empty", "order 1", "labels"]))
        expect, hints = "error", ("table", "entry", "row", "square", "range", "integer", "identity", "inverse",
                                  "associative", "latin", "label", "order", "empty", "json", ".json", ".csv")
        table = [list(r) for r in table]
        i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        if kind == "entry":
            table[i][j] = (table[i][j] + draw(st.integers(1, n - 1))) % n
        elif kind == "ragged":
            table[i] = table[i][:-1]
        elif kind == "not square":
            table = table[:-1]
        elif kind == "range":
            table[i][j] = n + draw(st.integers(0, 10**6))
        elif kind == "negative":
            table[i][j] = -1
        elif kind == "non-int":
            table[i][j] = draw(st.sampled_from(["a", "1a", "", "∞", " "]))
        elif kind == "float":
            table[i][j] = 1.5
        elif kind == "bool":
            table[i][j] = True
        elif kind == "null":
            table[i][j] = None
        elif kind == "empty":
            table = []
        elif kind == "order 1":
            table = [[0]]
        else:
            labels = ["e"] * n
            fmt_ = draw(st.sampled_from(["json", "csv-header"]))
    if fmt_ in ("json", "txt-json"):
        names = st.sampled_from(["G", "$x$", "$\\foo{$", "a_b^c", "S₃", "50%", "{name}", "line\nbreak"])
        doc = {"name": draw(st.one_of(names, WEIRD.filter(lambda s: s.strip()))), "table": table}
        if labels is not None:
            doc["labels"] = labels
        data, name = json.dumps(doc).encode(), ("g.json" if fmt_ == "json" else "g.txt")
    elif fmt_ == "json-list":
        data, name = json.dumps(table).encode(), "g.json"
    else:
        header = labels or ([f"g{k}" for k in range(n)] if fmt_ == "csv-header" else None)
        data, name = _csv(table, header), "g.csv"
    if mode == "junk":
        data = draw(st.sampled_from([b"", b"\xff\xfe\x00", b"[[[[[[[[[[", b"{\"table\": 5}", b"[" * 100000,
                                     b"0,1\n1\n", b"# only a comment\n", b"{\"table\": [[0, 1], [1, 0]], \"name\": 7}",
                                     b"null", b"\"table\"", b"1e999,0\n0,1\n"])) + draw(st.binary(max_size=8))
        expect, hints = "either", ()
    args = ["train", "--group-table", name, "--width", "4", "--steps", "2", "--diagnostics", "off", "--quiet",
            "--out", "out"]
    return Case(args, expect, hints, {name: data})


@pytest.mark.skipif(not HAS_TABLE, reason="li2 train --group-table does not exist yet")
@settings(max_examples=40 * max(1, EXPLORE), **SETTINGS)
@given(table_cases())
def test_cayley_tables(case):
    check(case)


# -- expressions (li2 train --expression EXPR --modulus M) ---------------------------------------------------------

def _expr_tree():
    leaves = st.one_of(st.sampled_from(["x", "y"]), st.integers(-20, 20).map(lambda v: f"({v})"))
    return st.recursive(leaves, lambda sub: st.one_of(
        st.tuples(sub, st.sampled_from(["+", "-", "*"]), sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(sub, st.integers(0, 5)).map(lambda t: f"({t[0]})**{t[1]}"),
        sub.map(lambda s: f"-{s}")), max_leaves=8)


BAD_EXPRESSIONS = ["", "   ", "x / y", "x % y", "x ** y", "x ** 1000", "x ** -1",
                   "__import__('os').system('touch PWNED')",
                   "x.__class__", "lambda: 0", "[x for x in ()]", "x if y else 1", "open('f')", "x @ y", "x // y",
                   "x << 2", "x & y", "1.5 * x", "'a' * x", "x y", "(x", "z + 1", "x ** 2.0", "X + Y", "f'{x}'",
                   "x; y", "x\ny", "(" * 300 + "x" + ")" * 300, "x+" * 300 + "y", "1" * 600, "x == y", "-" * 200 + "x",
                   "∑x", "x\u00a0+ y", "x+y#", "not x", "~x", "yield x", "await x", "x := 1"]


@st.composite
def expression_cases(draw) -> Case:
    mode = draw(st.sampled_from(["ok", "ok", "bad expression", "bad modulus", "missing", "weird"]))
    expr, modulus = draw(_expr_tree()), str(draw(st.integers(2, 11)))
    expect, hints = "ok", ()
    if mode == "bad expression":
        expr = draw(st.sampled_from(BAD_EXPRESSIONS))
        expect, hints = "either" if expr.strip() in ("x+y#",) else "error", ("expression", "allowed", "parse")
    elif mode == "bad modulus":
        modulus, hint = draw(st.sampled_from([("0", "modulus"), ("1", "modulus"), ("-7", "modulus"), ("abc", "modulus"),
                                              ("100000", "modulus"), ("2.5", "modulus")]))
        expect, hints = "error", (hint,)
    elif mode == "weird":
        expr, expect = draw(WEIRD), "either"
    args = ["train", "--expression", expr, "--width", "4", "--steps", "2", "--diagnostics", "off", "--quiet",
            "--out", "out"]
    if mode == "missing":
        expect, hints = "error", ("modulus",)
    else:
        args += [f"--modulus={modulus}"]
    return Case(args, expect, hints)


@pytest.mark.skipif(not HAS_EXPR, reason="li2 train --expression does not exist yet")
@settings(max_examples=40 * max(1, EXPLORE), **SETTINGS)
@given(expression_cases())
def test_expressions(no_figures, case):
    check(case)
    assert not Path("PWNED").exists()


# -- sweep specs (li2 sweep SPEC --out DIR) ------------------------------------------------------------------------

SWEEP_BASE = {"group": "Z5", "width": 4, "steps": 2, "diagnostics": "off", "checkpoint_every": 0}
SWEEP_AXES = {
    "seed": st.sampled_from([[0, 1], {"range": [0, 2]}, [3]]),
    "width": st.sampled_from([[2, 4], {"range": [2, 5, 2]}]),
    "train_ratio": st.sampled_from([[0.5, 1.0], {"critical_multiple": [0.5, 1.0]}, {"linspace": [0.3, 0.9, 2]}]),
    "lr": st.sampled_from([{"geomspace": [0.001, 0.01, 2]}, {"logspace": [-3, -2, 2]}, [0.01]]),
    "group": st.sampled_from([["Z5", "Z7"], ["S3"]]),
}
SWEEP_BAD = [  # (spec object or raw YAML bytes, hint)
    ({"grid": {"seed": {"range": "x"}}}, "range"), ({"grid": {"seed": {"linspace": [0, 1]}}}, "linspace"),
    ({"grid": {"width": {"critical_multiple": [1]}}}, "critical"), ({"grid": {"widht": [1]}}, "widht"),
    ({"grid": {"width": [-1]}}, "width"), ({"grid": {"seed": {"range": [0, 10**9]}}}, "range"),
    ({"base": {"steps": "x"}}, "steps"), ({"base": [1, 2]}, "base"), ({"grid": 5}, "grid"),
    ({"nme": "x"}, "nme"), ({"figures": "yes"}, "figures"), ({"grid": {"seed": []}}, "seed"),
    ({"grid": {"seed": {"range": [0, 2], "linspace": [0, 1, 2]}}}, "seed"), ({"grid": {"group": ["Q5"]}}, "group"),
    ({"grid": {"train_ratio": [0]}}, "ratio"), ({"grid": {"lr": {"geomspace": [0, 1, 3]}}}, "geomspace"),
    (b"", "empty"), (b"- 1\n", "mapping"), (b"{{{", "yaml"), (b"\xff\xfe", "spec"),
    (b"grid: !!python/object:os.system {}\n", "yaml"),
    (b"a: &a [*a, *a]\nb: *a\n", "a"),
]


@st.composite
def sweep_cases(draw) -> Case:
    mode = draw(st.sampled_from(["ok", "bad spec", "bad spec", "bad spec", "bad option", "missing spec"]))
    expect, hints, extra = "ok", (), []
    spec: object = {"name": "hostile", "base": dict(SWEEP_BASE), "grid": {}}
    for key in draw(st.lists(st.sampled_from(sorted(SWEEP_AXES)), unique=True, min_size=1, max_size=2)):
        spec["grid"][key] = draw(SWEEP_AXES[key])
        spec["base"].pop(key, None)   # a key lives in base or in grid, not both
    if mode == "bad spec":
        bad, hint = draw(st.sampled_from(SWEEP_BAD))
        if isinstance(bad, dict):
            for k, v in bad.items():
                spec[k] = ({**spec.get(k, {}), **v} if isinstance(v, dict) and isinstance(spec.get(k), dict) else v)
            if isinstance(spec.get("grid"), dict) and isinstance(spec.get("base"), dict):
                for key in spec["grid"]:
                    spec["base"].pop(key, None)
        else:
            spec = bad
        expect, hints = "error", (hint, "spec", "sweep")
    elif mode == "bad option":
        extra, hint = draw(st.sampled_from([(["--workers", "0"], "workers"), (["--executor", "slurm"], "executor"),
                                            (["--workers", "x"], "workers"), (["--bogus"], "bogus")]))
        expect, hints = "error", (hint,)
    data = spec if isinstance(spec, bytes) else yaml.safe_dump(spec).encode()
    name = "missing.yaml" if mode == "missing spec" else "spec.yaml"
    if mode == "missing spec":
        expect, hints = "error", ("missing.yaml", "exist")
    return Case(["sweep", name, "--out", "sw", "--workers", "1", "--quiet", *extra], expect, hints,
                {"spec.yaml": data})


@pytest.fixture
def serial_sweeps(monkeypatch):
    """Runs of a sweep train in this process (the process pool is test_sweep's business)."""
    from li2.studies import sweep

    def serial(todo, dirs, workers, figures, *args, **kwargs):
        for run in todo:
            yield run, sweep.execute_run(run.config.model_dump(mode="json"), str(dirs[run.run_id]), figures)
    monkeypatch.setattr(sweep, "_local", serial)


@pytest.mark.skipif(not has_command("sweep"), reason="li2 sweep does not exist yet")
@settings(max_examples=30 * max(1, EXPLORE), **SETTINGS)
@given(case=sweep_cases())
def test_sweep_specs(serial_sweeps, case):
    check(case)


@pytest.mark.skipif(not has_command("phase"), reason="li2 phase does not exist yet")
@pytest.mark.parametrize("files,dirs", [
    ({}, ()), ({"sw": b"x"}, ()), ({}, ("sw",)), ({"sw/results.parquet": b"PAR1junk"}, ()),
    ({"sw/results.parquet": b""}, ()),
])
def test_phase_on_bad_folders(files, dirs):
    check(Case(["phase", "sw"], "error", ("sw", "results", "parquet", "folder"), files, dirs))


# -- commands that read a folder: diagnose, report, phase ------------------------------------------------------------

FOLDER_COMMANDS = [c for c in ("diagnose", "report", "phase") if has_command(c)]
RUN_FILES = ("config.yaml", "summary.json", "metrics.parquet", "checkpoints/seed0-final.safetensors")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished tiny run folder to copy and damage."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    from li2.runs import train
    train(group="Z5", width=4, steps=3, seeds=[0], diagnostics="basic", threads=1, out=out, figures=True)
    return out


@st.composite
def folder_cases(draw) -> Case:
    command = draw(st.sampled_from(FOLDER_COMMANDS))
    kind = draw(st.sampled_from(["missing", "file", "empty", "junk", "run", "run", "damaged run"]))
    files, dirs, copies, expect = {}, (), {}, "error"
    if kind == "file":
        files = {"d": draw(st.binary(max_size=16))}
    elif kind == "empty":
        dirs = ("d",)
    elif kind == "junk":
        for name in draw(st.lists(st.sampled_from(RUN_FILES + ("results.parquet", "findings.json", "sweep.yaml")),
                                  min_size=1, max_size=4, unique=True)):
            files[f"d/{name}"] = draw(st.sampled_from([b"", b"{}", b"[]", b"null", b"PAR1", b"\xff\x00" * 8,
                                                       b"models: 5", b'{"models": [{"seed": "x"}]}']))
        if command == "report":   # a page about whatever is there (e.g. an empty findings.json) is fine
            expect = "either"
    else:
        copies = {"d": "run"}
        expect = "error" if command == "phase" else "ok"
        if kind == "damaged run":
            name = draw(st.sampled_from(RUN_FILES))
            files = {f"d/{name}": draw(st.sampled_from([b"", b"{", b"[1, 2]", b"\x00" * 40, b'{"models": []}']))}
            expect = "either"
    args = [command, "d"] + (["--out", "page.html"] if command == "report" else [])
    return Case(args, expect, ("d", "folder", "run", "summary", "config", "metrics", "results", "checkpoint",
                               "exist", "parquet", "json", "yaml"), files, dirs, copies)


@pytest.mark.skipif(not FOLDER_COMMANDS, reason="no command that reads a folder exists yet")
@settings(max_examples=30 * max(1, EXPLORE), **SETTINGS)
@given(case=folder_cases())
def test_folder_commands(tiny_run, case):
    check(case, {"run": tiny_run})


# -- li2 energy -----------------------------------------------------------------------------------------------------

ENERGY_OPTIONS = {
    "--group": (st.sampled_from(["Z5", "Z7", "S3", "Z2xZ3"]), [(g, "group") for g in BAD_GROUPS[:8]]),
    "--restarts": (st.integers(1, 3).map(str), [("0", "restarts"), ("-1", "restarts"), ("x", "restarts"),
                                               ("1000000", "restarts")]),
    "--train-ratio": (st.sampled_from(["1.0", "0.5", "critical"]), [("0", "ratio"), ("2", "ratio"), ("nan", "ratio")]),
    "--activation": (st.sampled_from(["sqr", "relu", "gelu"]), [("tanh", "activation")]),
    "--seed": (st.integers(0, 9).map(str), [("-1", "seed"), ("z", "seed")]),
}


@st.composite
def energy_cases(draw) -> Case:
    values = {"--group": draw(ENERGY_OPTIONS["--group"][0]), "--restarts": draw(ENERGY_OPTIONS["--restarts"][0])}
    for opt in draw(st.lists(st.sampled_from(sorted(ENERGY_OPTIONS)), unique=True, max_size=3)):
        values[opt] = draw(ENERGY_OPTIONS[opt][0])
    expect, hints, out = "ok", (), "e"
    mode = draw(st.sampled_from(["ok", "ok", "bad value", "bad out"]))
    if mode == "bad value":
        opt = draw(st.sampled_from(sorted(ENERGY_OPTIONS)))
        values[opt], hint = draw(st.sampled_from(ENERGY_OPTIONS[opt][1]))
        expect, hints = "error", (hint, values[opt][:12] or hint)
    files = {"e": b"a file"} if mode == "bad out" else {}
    if mode == "bad out":
        expect, hints = "error", ("e", "out", "exist", "directory")
    args = ["energy"] + [f"{k}={v}" for k, v in values.items()] + ["--out", out]
    return Case(args, expect, hints, files)


@pytest.mark.skipif(not has_command("energy"), reason="li2 energy does not exist yet")
@settings(max_examples=20 * max(1, EXPLORE), **SETTINGS)
@given(energy_cases())
def test_energy_command(no_figures, case):
    check(case)


@pytest.mark.skipif(not has_command("reproduce"), reason="li2 reproduce does not exist yet")
@settings(max_examples=10 * max(1, EXPLORE), **SETTINGS)
@given(st.one_of(st.sampled_from(["nosuch", "", "ALL", "Energy", "../phase", "phase ", "all,phase"]), WEIRD))
def test_reproduce_unknown_recipe(name):
    from li2.recipes import RECIPES
    assume(name not in RECIPES and name != "all")
    check(Case(["reproduce", name, "--out", "r", "--quiet"], "error", ("recipe",)))


# -- li2 groups (when mounted) -------------------------------------------------------------------------------------

@st.composite
def groups_cases(draw) -> Case:
    mode = draw(st.sampled_from(["ok", "bad name", "weird", "table"]))
    if mode == "ok":
        return Case(["groups", "show", draw(st.sampled_from(SMALL_GROUPS))], "ok")
    if mode == "bad name":
        name = draw(st.sampled_from(BAD_GROUPS[:-3]))
        return Case(["groups", "show", name], "error", ("group", "order", name.strip()[:12] or "group"))
    if mode == "table":
        return Case(["groups", "show", "--group-table", "t.json"], "error", ("t.json", "table"),
                    {"t.json": draw(st.sampled_from([b"[[0,1],[1,1]]", b"{}", b"", b"[[0]]"]))})
    name = draw(WEIRD)
    assume(_tiny_group(name) is not False)
    return Case(["groups", "show", name], "either")


@pytest.mark.skipif(not has_command("groups"), reason="li2 groups is not mounted yet")
@settings(max_examples=20 * max(1, EXPLORE), **SETTINGS)
@given(groups_cases())
def test_groups_command(case):
    check(case)
