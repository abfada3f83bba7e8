import math

import numpy as np
import pytest
import torch

from li2.algebra.groups import GroupError, get_group
from li2.config import TrainConfig, parse_seeds
from li2.task import critical_ratio, make_task, split, train_size


@pytest.mark.parametrize("n,ratio", [(5041, 0.4), (529, 0.15), (100, 1.0), (10, 0.01)])
def test_split_sizes_and_disjointness(n, ratio):
    tr, te = split(n, ratio, seed=3)
    assert len(tr) == train_size(n, ratio) == min(n, max(1, round(ratio * n)))
    assert len(set(tr.tolist()) & set(te.tolist())) == 0
    assert sorted(tr.tolist() + te.tolist()) == list(range(n))
    tr2, _ = split(n, ratio, seed=3)
    assert torch.equal(tr, tr2)
    if 1 < len(tr) < n - 1:
        assert not torch.equal(tr, split(n, ratio, seed=4)[0])


def test_critical_ratio_formula():
    assert critical_ratio(23) == pytest.approx(0.375, abs=5e-4)
    assert critical_ratio(71) == pytest.approx(0.165, abs=5e-4)
    assert critical_ratio(127) == pytest.approx(0.105, abs=5e-4)
    assert TrainConfig(train_ratio="critical").resolved_ratio(97) == pytest.approx(2.7482 * math.log(97) / 97)
    assert TrainConfig(train_ratio="critical:2").resolved_ratio(97) == pytest.approx(2 * math.log(97) / 97)


def _is_group(table):
    m = len(table)
    a = np.arange(m)
    assoc = np.array_equal(table[table[a[:, None, None], a[None, :, None]], a[None, None, :]],
                           table[a[:, None, None], table[a[None, :, None], a[None, None, :]]])
    e = [i for i in range(m) if np.array_equal(table[i], a) and np.array_equal(table[:, i], a)]
    inverses = bool(e) and all((table[i] == e[0]).any() for i in range(m))
    return assoc and bool(e) and inverses


@pytest.mark.parametrize("name,order", [("Z7", 7), ("71", 71), ("Z2xZ3xZ4", 24), ("Z4xZ4", 16)])
def test_product_group_tables_are_groups(name, order):
    g = get_group(name)
    assert g.order == order and _is_group(g.table)


def test_labels_fold_left_over_operands():
    task = make_task(get_group("Z5"), operands=3)
    assert task.num_samples == 125
    assert torch.equal(task.labels, task.inputs.sum(1) % 5)


@pytest.mark.parametrize("bad", ["", "Zx", "Z1", "foo", "Z3xx"])
def test_unknown_groups_are_refused(bad):
    with pytest.raises(GroupError):
        get_group(bad)


def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("0,5,2") == [0, 5, 2]
    with pytest.raises(ValueError):
        parse_seeds("3-1")
    with pytest.raises(ValueError):
        parse_seeds("a")
