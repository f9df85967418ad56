"""Issue 7.3: ``deterministic=True`` gives bit-identical outputs and gradients run after run on the CPU.

Each run builds a fresh SparseTensor (so the kernel maps are rebuilt too) and
runs forward + backward through a net with every layer kind. Runs use one and
two threads (multi-threaded CPU kernels are the risk).
GPU atomics are covered elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import random_coords
from torch import nn

import torchsparse_lite as tsl
from torchsparse_lite import SparseTensor, sparse_quantize
from torchsparse_lite import nn as snn
from torchsparse_lite.functional.conv import sparse_conv
from torchsparse_lite.grouping.torch_exec import fixed_order_tn


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        snn.Conv3d(4, 8, 3),
        snn.BatchNorm(8),
        snn.ReLU(),
        snn.Conv3d(8, 16, 2, 2),
        snn.GroupNorm(4, 16),
        snn.ReLU(),
        snn.MaxPool3d(3, 1),
        snn.Conv3d(16, 16, 3, 2, dilation=2, downsample_mode="minkowski"),
        snn.Conv3d(16, 8, 3, 2, transposed=True, generative=True, downsample_mode="minkowski"),
        snn.Conv3d(8, 8, 2, 2, transposed=True, generative=True),
        snn.Linear(8, 3),
    )


def run_once(builder: str, chunk_rows: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    coords = random_coords(800, 14, 2, g)
    feats = torch.randn(len(coords), 4, generator=g).requires_grad_(True)
    model = net().train()
    with tsl.use_config(deterministic=True, kmap_builder=builder, chunk_rows=chunk_rows):
        y = model(SparseTensor(feats, coords))
        loss = (y.feats * torch.linspace(-1, 1, y.feats.numel()).reshape(y.feats.shape)).sum()
        loss.backward()
    out = {"y": y.feats.detach(), "coords": y.coords, "grad_feats": feats.grad}
    for name, p in model.named_parameters():
        out["grad_" + name] = p.grad
    for name, b in model.named_buffers():
        out["buf_" + name] = b
    return out


@pytest.mark.parametrize(
    ("builder", "chunk_rows", "threads", "repeats"),
    [("hash", 1 << 17, 1, 3), ("sort", 257, 1, 3), ("hash", 1 << 17, 2, 2)],
)
def test_deterministic_runs_are_bit_identical(builder: str, chunk_rows: int, threads: int, repeats: int) -> None:
    """Forward outputs, BN buffers and all gradients are bit-identical (2 threads: OpenMP kernels too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        runs = [run_once(builder, chunk_rows) for _ in range(repeats)]
    finally:
        torch.set_num_threads(before)
    for other in runs[1:]:
        assert runs[0].keys() == other.keys()
        for key in runs[0]:
            assert torch.equal(runs[0][key], other[key]), f"{key} differs between runs"


def test_maps_identical_between_runs() -> None:
    coords = random_coords(2000, 20, 2, torch.Generator().manual_seed(1))
    with tsl.use_config(deterministic=True):
        maps = [tsl.build_kernel_map(coords.clone(), (3, 3, 3), (2, 2, 2), mode="conv") for _ in range(2)]
    assert torch.equal(maps[0].in_idx, maps[1].in_idx) and torch.equal(maps[0].out_idx, maps[1].out_idx)


def test_quantize_is_deterministic() -> None:
    pts = np.random.default_rng(0).normal(size=(5000, 3)).astype(np.float32)
    a, b = sparse_quantize(pts, 0.2), sparse_quantize(pts.copy(), 0.2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_deterministic_mode_pins_the_tuner(monkeypatch) -> None:
    """With deterministic=True a GroupingTuner times nothing and takes the same choice every run."""
    from torchsparse_lite.functional.conv import sparse_conv  # noqa: PLC0415
    from torchsparse_lite.grouping import GroupingTuner  # noqa: PLC0415
    from torchsparse_lite.grouping import tuner as tuner_mod  # noqa: PLC0415
    from torchsparse_lite.kmap import build_kernel_map  # noqa: PLC0415

    def no_timing(*args, **kwargs):
        raise AssertionError("a deterministic run must not time grouping candidates")

    monkeypatch.setattr(tuner_mod, "_time", no_timing)
    g = torch.Generator().manual_seed(3)
    coords = random_coords(500, 12, 1, g)
    kmap = build_kernel_map(coords, 3)
    feats, weight = torch.randn(len(coords), 8, generator=g), torch.randn(27, 8, 8, generator=g)
    with tsl.use_config(deterministic=True):
        runs = [sparse_conv(feats, weight, kmap, grouping=GroupingTuner()) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    assert GroupingTuner().fixed_choice(kmap) == GroupingTuner().fixed_choice(kmap)


def _on_1_and_2_threads(fn):
    """``[fn() on 1 thread, fn() on 2 threads]``, the thread count restored after."""
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(fn())
        return results
    finally:
        torch.set_num_threads(before)


def _map_and_conv(coords: torch.Tensor, kind: str) -> dict[str, torch.Tensor]:
    """One layer's map, forward and gradients (feats and weight), 32 -> 32 channels, deterministic mode."""
    g = torch.Generator().manual_seed(7)
    with tsl.use_config(deterministic=True):
        if kind == "transposed":
            kmap = tsl.build_kernel_map(coords, 2, 2, mode="conv").transpose()
        else:
            kmap = tsl.build_kernel_map(coords, 3, 1 if kind == "subm" else 2, mode="submanifold" if kind == "subm"
                                        else "conv")  # fmt: skip
        feats = torch.randn(kmap.n_in, 32, generator=g).requires_grad_(True)
        weight = (torch.randn(kmap.volume, 32, 32, generator=g) / 16).requires_grad_(True)
        out = sparse_conv(feats, weight, kmap)
        out.backward(torch.randn(out.shape, generator=g))
    return {"in_idx": kmap.in_idx, "out_idx": kmap.out_idx, "out": out.detach(), "grad_feats": feats.grad,
            "grad_weight": weight.grad}  # fmt: skip


@pytest.mark.parametrize("kind", ["subm", "strided", "transposed"])
def test_map_and_conv_do_not_depend_on_the_thread_count(kind: str) -> None:
    """Issue 13: map + conv (forward and backward) on 2 threads are bit-identical to 1 thread, in
    deterministic mode, at sizes where the threaded searches and OpenMP kernels split the work."""
    coords = random_coords(40000, 64, 1, torch.Generator().manual_seed(3))
    runs = _on_1_and_2_threads(lambda: _map_and_conv(coords, kind))
    for key, value in runs[0].items():
        assert torch.equal(value, runs[1][key]), f"{key} differs between 1 and 2 threads"


@pytest.mark.parametrize("lead,rows,cin,cout", [((), 0, 8, 4), ((), 5, 16, 16), ((), 1000, 32, 24), ((2,), 700, 16, 8)])
def test_fixed_order_tn_is_a_transposed_product_whatever_the_thread_count(lead, rows, cin, cout) -> None:
    g = torch.Generator().manual_seed(rows)
    a, b = torch.randn(*lead, rows, cin, generator=g), torch.randn(*lead, rows, cout, generator=g)
    got = _on_1_and_2_threads(lambda: fixed_order_tn(a, b))
    assert torch.equal(got[0], got[1])
    ref = (a.double().transpose(-1, -2) @ b.double()).float()
    assert got[0].shape == ref.shape and torch.allclose(got[0], ref, atol=1e-4, rtol=1e-5)
