"""The execution plan: settings resolved once, cached on the map, read (never the config) by the executors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from reference import random_coords

import torchsparse_lite.functional.plan as plan_mod
from torchsparse_lite import use_config
from torchsparse_lite.functional import plan_execution, resolve_settings, sparse_conv
from torchsparse_lite.grouping import ExecutionPlan, GroupingConfig, GroupingTuner, TorchConvFunction, plan_groups
from torchsparse_lite.kmap import KernelMap, build_kernel_map

ROOT = Path(__file__).resolve().parents[1]


def _kmap(mode: str = "submanifold") -> KernelMap:
    coords = random_coords(300, 10, batch=2, generator=torch.Generator().manual_seed(11))
    return build_kernel_map(coords, (3, 3, 3), (1, 1, 1) if mode == "submanifold" else (2, 2, 2), mode=mode)


def _plans(kmap: KernelMap) -> list[ExecutionPlan]:
    return [v for k, v in kmap.plans.items() if k[0] == "plan"]


def test_settings_resolve_once_and_plan_is_cached_on_the_map(monkeypatch: pytest.MonkeyPatch) -> None:
    kmap = _kmap()
    feats, weight = torch.randn(kmap.n_in, 8), torch.randn(kmap.volume, 8, 4)
    calls = []
    real = plan_mod.plan_groups
    monkeypatch.setattr(plan_mod, "plan_groups", lambda *a, **k: calls.append(a) or real(*a, **k))
    first = sparse_conv(feats, weight, kmap, backend="torch")
    second = sparse_conv(feats, weight, kmap, backend="torch")
    assert torch.equal(first, second) and len(calls) == 1  # planned once for this map
    (plan,) = _plans(kmap)
    assert plan.backend == "torch" and plan.groups.strategy == "separate"  # "separate" goes through the planner
    sparse_conv(feats, weight, kmap, backend="torch", grouping="dense")
    assert len(calls) == 2 and {p.groups.strategy for p in _plans(kmap)} == {"separate", "dense"}
    assert not kmap.to("cpu").plans  # a copy of the map starts with no plans


def test_tuner_plans_each_candidate_once() -> None:
    kmap = _kmap()
    feats, weight = torch.randn(kmap.n_in, 8), torch.randn(kmap.volume, 8, 8)
    tuner = GroupingTuner(epsilons=(0.0, 0.5), threshold_quantiles=(0.5, 1.0), repeats=1)
    sparse_conv(feats, weight, kmap, backend="torch", grouping=tuner)
    n = len(_plans(kmap))
    assert n == len(tuner.candidates(kmap))  # the winner reused its candidate's plan
    sparse_conv(feats, weight, kmap, backend="torch", grouping=tuner)
    assert len(_plans(kmap)) == n


def test_config_fills_arguments_and_arguments_win() -> None:
    cpu = torch.device("cpu")
    with use_config(deterministic=True, chunk_rows=64, tf32=True):
        s = resolve_settings(cpu)
        assert (s.backend, s.deterministic, s.chunk_rows, s.tf32) == ("torch", True, 64, True)
        s = resolve_settings(cpu, deterministic=False, chunk_rows=8, tf32=False)
        assert (s.deterministic, s.chunk_rows, s.tf32) == (False, 8, False)
    assert resolve_settings(torch.device("cuda")).backend == "triton"  # "auto" decided by the device


def test_deterministic_torch_plan_on_cuda_scatters_offset_by_offset() -> None:
    kmap = _kmap()
    weight = torch.randn(kmap.volume, 4, 4)
    grouping = GroupingConfig("fixed", group_size=4)
    cuda = resolve_settings(torch.device("cuda"), backend="torch", deterministic=True)
    assert plan_execution(kmap, weight, cuda, grouping).ordered_scatter
    cpu = resolve_settings(torch.device("cpu"), backend="torch", deterministic=True)
    assert not plan_execution(kmap, weight, cpu, grouping).ordered_scatter  # CPU index_add_ is sequential


@pytest.mark.parametrize("mode", ["submanifold", "conv"])
def test_ordered_scatter_equals_batched_scatter(mode: str) -> None:
    kmap = _kmap(mode)
    feats = torch.randn(kmap.n_in, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(kmap.volume, 6, 5, dtype=torch.float64, requires_grad=True)
    groups = plan_groups(kmap.counts, GroupingConfig("fixed", group_size=5), kmap.identity_offset, kmap.symmetric)
    outs = []
    for ordered in (False, True):
        out = TorchConvFunction.apply(feats, weight, kmap, ExecutionPlan("torch", groups, ordered_scatter=ordered))
        outs.append((out, *torch.autograd.grad(out.square().sum(), (feats, weight))))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_bad_settings_are_named() -> None:
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="Triton path"):
        resolve_settings(cpu, backend="torch", dataflow="atomic")
    with pytest.raises(ValueError, match="dataflow must be"):
        resolve_settings(cpu, backend="triton", dataflow="sideways")
    with pytest.raises(ValueError, match="deterministic"):
        resolve_settings(cpu, backend="triton", dataflow="atomic", deterministic=True)
    with pytest.raises(ValueError, match="chunk_rows"):
        resolve_settings(cpu, chunk_rows=0)
    with pytest.raises(TypeError, match="deterministic"):
        resolve_settings(cpu, deterministic="yes")
    with pytest.raises(ValueError, match="backend"):
        resolve_settings(cpu, backend="cuda")
    with pytest.raises(ValueError, match="tiles"):
        resolve_settings(cpu, backend="torch", tiles=object())
    with pytest.raises(ValueError, match="deterministic plan"):
        ExecutionPlan("triton", plan_groups((1,), GroupingConfig()), deterministic=True, dataflow="atomic", tiles=1)


def test_kernels_never_read_the_engine_config() -> None:
    """The Triton launcher and kernels read only the plan: no ``get_config``/``resolve`` anywhere in kernels/."""
    for path in sorted((ROOT / "kernels").glob("*.py")):
        names = {n.id for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Name)}
        names |= {n.attr for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Attribute)}
        assert not names & {"get_config", "resolve", "use_config"}, path.name
