"""The PyTorch executor of grouped plans equals the separate path; the dispatcher and the tuner use it."""

from __future__ import annotations

import pytest
import torch
from reference import random_coords

from torchsparse_lite import SparseTensor
from torchsparse_lite.functional.conv import SparseConvFunction, sparse_conv
from torchsparse_lite.grouping import (
    GroupingConfig,
    GroupingTuner,
    grouped_sparse_conv,
    layer_signature,
    plan_groups,
)
from torchsparse_lite.kmap import KernelMap, build_kernel_map
from torchsparse_lite.nn import Conv3d

CONFIGS = [
    GroupingConfig("fixed", group_size=3),
    GroupingConfig("adaptive", epsilon=0.3, threshold=20),
    GroupingConfig("adaptive", epsilon=0.0, threshold=1 << 30, fold=False),
    GroupingConfig("dense"),
]


def _kmap(mode: str, n: int = 300, extent: int = 10) -> KernelMap:
    coords = random_coords(n, extent, batch=2, generator=torch.Generator().manual_seed(4))
    stride = (1, 1, 1) if mode == "submanifold" else (2, 2, 2)
    return build_kernel_map(coords, (3, 3, 3), stride, mode=mode)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.strategy}-{c.epsilon}-{c.fold}")
@pytest.mark.parametrize("mode", ["submanifold", "conv"])
@pytest.mark.parametrize("chunk_rows", [1 << 17])
def test_grouped_equals_separate(cfg: GroupingConfig, mode: str, chunk_rows: int) -> None:
    kmap = _kmap(mode)
    feats = torch.randn(kmap.n_in, 20, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(kmap.volume, 20, 3, dtype=torch.float64, requires_grad=True)
    ref = SparseConvFunction.apply(feats, weight, kmap, 1 << 17)
    out = grouped_sparse_conv(feats, weight, kmap, cfg, chunk_rows)
    grad = torch.randn_like(ref)
    rf, rw = torch.autograd.grad(ref, (feats, weight), grad)
    gf, gw = torch.autograd.grad(out, (feats, weight), grad)
    for a, b in ((out, ref), (gf, rf), (gw, rw)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_chunked_gathers_equal_unchunked() -> None:
    test_grouped_equals_separate(CONFIGS[1], "conv", 7)


def test_gradcheck_with_empty_offsets() -> None:
    x = torch.arange(0, 16, 2, dtype=torch.int32)
    coords = torch.stack([torch.zeros_like(x), x, torch.zeros_like(x), torch.zeros_like(x)], 1)
    kmap = build_kernel_map(coords, (3, 3, 3), (2, 2, 2), mode="conv")
    assert 0 in kmap.counts
    feats = torch.randn(kmap.n_in, 2, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(kmap.volume, 2, 3, dtype=torch.float64, requires_grad=True)
    for cfg in CONFIGS:
        assert torch.autograd.gradcheck(lambda f, w, c=cfg: grouped_sparse_conv(f, w, kmap, c), (feats, weight))


@pytest.mark.parametrize("grouping", ["fixed", "adaptive", "dense", GroupingConfig("adaptive", epsilon=0.1)])
def test_dispatcher_runs_grouped_torch_path(grouping) -> None:
    kmap = _kmap("submanifold")
    feats, weight = torch.randn(kmap.n_in, 16), torch.randn(kmap.volume, 16, 8)
    ref = sparse_conv(feats, weight, kmap, backend="torch", grouping="separate")
    got = sparse_conv(feats, weight, kmap, backend="torch", grouping=grouping)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_conv3d_layer_with_grouping() -> None:
    coords = random_coords(200, 8, generator=torch.Generator().manual_seed(5))
    x = SparseTensor(torch.randn(coords.shape[0], 4), coords)
    conv = Conv3d(4, 6, 3, backend="torch")
    ref = conv(x).feats
    conv.grouping = "adaptive"
    torch.testing.assert_close(conv(x).feats, ref, rtol=1e-5, atol=1e-5)


def test_tuner_measures_once_per_signature_and_device() -> None:
    kmap = _kmap("submanifold")
    feats, weight = torch.randn(kmap.n_in, 8), torch.randn(kmap.volume, 8, 8)
    tuner = GroupingTuner(epsilons=(0.0, 0.5), threshold_quantiles=(0.5, 1.0), repeats=1)
    calls: list[GroupingConfig] = []

    def run(cfg: GroupingConfig) -> torch.Tensor:
        calls.append(cfg)
        return grouped_sparse_conv(feats, weight, kmap, cfg)

    best = tuner.choose(feats, weight, kmap, run)
    n = len(calls)
    candidates = tuner.candidates(kmap)
    assert best in candidates and n == 2 * len(candidates)  # one warm-up + one timed run each
    assert len({plan_groups(kmap.counts, c, kmap.identity_offset, kmap.symmetric).groups for c in candidates}) == len(
        candidates
    )
    assert tuner.choose(feats, weight, kmap, run) == best and len(calls) == n  # cached
    assert tuner.cached(kmap, weight) == best and len(tuner) == 1
    sig = layer_signature(kmap, weight)
    assert (sig.cin, sig.cout, sig.mode) == (8, 8, "submanifold")
    assert tuner.timings[(sig, "cpu", "")]
    assert tuner.cached(kmap, weight, tag="triton") is None  # another executor is tuned separately
    tuner.clear()
    assert len(tuner) == 0


def test_tuner_as_layer_grouping() -> None:
    coords = random_coords(200, 8, generator=torch.Generator().manual_seed(6))
    x = SparseTensor(torch.randn(coords.shape[0], 4), coords)
    conv = Conv3d(4, 6, 3, backend="torch")
    ref = conv(x).feats
    tuner = GroupingTuner(epsilons=(0.2,), threshold_quantiles=(1.0,), repeats=1)
    conv.grouping = tuner
    out = conv(x)
    assert len(tuner) == 1
    torch.testing.assert_close(out.feats, ref, rtol=1e-5, atol=1e-5)
    out.feats.sum().backward()
    assert conv.weight.grad is not None
    with pytest.raises(ValueError, match="at least one"):
        GroupingTuner(epsilons=())
