"""Grouping plans: coverage, padding rules, fold, work reports and config validation (pure Python)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchsparse_lite.grouping import STRATEGIES, GroupingConfig, as_grouping, plan_groups

COUNTS = (5, 0, 9, 40, 41, 3, 0, 7, 100, 7, 3, 41, 40, 9, 0, 5, 2)  # 17 offsets, centre 8


def _covered(plan) -> list[int]:
    out = [k for g in plan.groups for k in g.offsets]
    return sorted(out + ([plan.identity] if plan.identity is not None else []))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_nonempty_offset_runs_exactly_once(strategy: str) -> None:
    plan = plan_groups(COUNTS, GroupingConfig(strategy, threshold=30), identity_offset=8)
    covered = _covered(plan)
    assert len(covered) == len(set(covered))
    assert {k for k, c in enumerate(COUNTS) if c} <= set(covered)
    assert plan.identity == 8 and 8 not in [k for g in plan.groups for k in g.offsets]
    for g in plan.groups:
        assert g.rows == max(COUNTS[k] for k in g.offsets) > 0
    w = plan.work(3, 5)
    assert w.real_flops == 2 * sum(COUNTS) * 15
    assert w.padded_flops >= w.real_flops and w.launches == len(plan.groups) + 1


def test_separate_has_no_padding_and_dense_one_group() -> None:
    sep = plan_groups(COUNTS, GroupingConfig("separate"), identity_offset=8)
    assert sep.padded_pairs == sep.real_pairs and sep.launches == sum(1 for c in COUNTS if c)
    dense = plan_groups(COUNTS, GroupingConfig("dense"), identity_offset=8)
    assert len(dense.groups) == 1 and dense.groups[0].rows == 41 and dense.launches == 2
    assert dense.padded_pairs == 16 * 41 + 100


def test_fixed_groups_are_consecutive_offsets() -> None:
    plan = plan_groups(COUNTS, GroupingConfig("fixed", group_size=4), identity_offset=8)
    assert [g.offsets for g in plan.groups] == [(0, 1, 2, 3), (4, 5, 6, 7), (9, 10, 11, 12), (13, 14, 15, 16)]


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 500), min_size=1, max_size=27),
    eps=st.floats(0.0, 0.95),
    thr=st.integers(0, 600),
)
def test_adaptive_respects_epsilon_and_threshold(counts: list[int], eps: float, thr: int) -> None:
    plan = plan_groups(counts, GroupingConfig("adaptive", epsilon=eps, threshold=thr))
    assert sorted(k for g in plan.groups for k in g.offsets) == [k for k, c in enumerate(counts) if c]
    for g in plan.groups:
        sizes = [counts[k] for k in g.offsets]
        if len(sizes) > 1:
            assert max(sizes) < thr  # big maps run alone
            assert 1 - sum(sizes) / (len(sizes) * g.rows) <= eps + 1e-12


def test_adaptive_epsilon_zero_groups_equal_sizes_only() -> None:
    plan = plan_groups((4, 4, 4, 9, 9, 1), GroupingConfig("adaptive", epsilon=0.0, threshold=100))
    assert [g.offsets for g in plan.groups] == [(3, 4), (0, 1, 2), (5,)]
    assert plan.padded_pairs == plan.real_pairs


def test_fold_pairs_symmetric_offsets() -> None:
    counts = (3, 8, 5, 20, 5, 8, 3)  # symmetric around the centre 3
    plan = plan_groups(counts, GroupingConfig("adaptive", epsilon=0.0, threshold=100), 3, symmetric=True)
    assert plan.folded
    for g in plan.groups:
        assert all((len(counts) - 1 - k) in g.offsets for k in g.offsets)
    unfolded = plan_groups(counts, GroupingConfig("adaptive", fold=False), 3, symmetric=True)
    assert not unfolded.folded
    with pytest.raises(ValueError, match="symmetric"):
        plan_groups((1, 2, 3, 4, 5), GroupingConfig("adaptive"), 2, symmetric=True)


def test_config_validation() -> None:
    assert as_grouping("dense") == GroupingConfig("dense")
    cfg = GroupingConfig("adaptive", epsilon=0.1)
    assert as_grouping(cfg) is cfg
    with pytest.raises(ValueError, match="strategy"):
        GroupingConfig("greedy")
    with pytest.raises(ValueError, match="epsilon"):
        GroupingConfig("adaptive", epsilon=1.5)
    with pytest.raises(ValueError, match="group_size"):
        GroupingConfig("fixed", group_size=0)
    with pytest.raises(ValueError, match="threshold"):
        GroupingConfig("adaptive", threshold=-1)
    with pytest.raises(TypeError, match="grouping"):
        as_grouping(3)
