"""The segment-sum scatter (``scatter="segment"``, the CPU default) equals the ``index_add_`` one."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from reference import random_coords

from torchsparse_lite.functional import plan_execution, resolve_settings, sparse_conv
from torchsparse_lite.grouping import ExecutionPlan, GroupingConfig, TorchConvFunction, plan_groups
from torchsparse_lite.grouping.segments import BLOCK_BYTES, block_cells, run_segments, segment_blocks, workspace
from torchsparse_lite.kmap import KernelMap, build_kernel_map
from torchsparse_lite.kmap.kernel_map import MapPairs

GROUPINGS = [
    GroupingConfig(),
    GroupingConfig("fixed", group_size=3),
    GroupingConfig("adaptive", epsilon=0.3, threshold=20),
    GroupingConfig("adaptive", epsilon=0.0, threshold=1 << 30, fold=False),
    GroupingConfig("dense"),
]


def _kmap(mode: str, n: int = 400, extent: int = 10) -> KernelMap:
    coords = random_coords(n, extent, batch=2, generator=torch.Generator().manual_seed(21))
    if mode == "submanifold":
        return build_kernel_map(coords, (3, 3, 3))
    km = build_kernel_map(coords, (3, 3, 3), (2, 2, 2), mode="conv")
    return km.transpose() if mode == "transposed" else km


def _run(feats, weight, kmap, grouping: GroupingConfig, scatter: str, chunk_rows: int = 1 << 17):
    groups = plan_groups(kmap.counts, grouping, kmap.identity_offset, kmap.symmetric)
    return TorchConvFunction.apply(feats, weight, kmap, ExecutionPlan("torch", groups, chunk_rows, scatter=scatter))


@pytest.mark.parametrize("grouping", GROUPINGS, ids=lambda g: f"{g.strategy}-{g.epsilon}-{g.fold}")
@pytest.mark.parametrize("mode", ["submanifold", "conv", "transposed"])
@pytest.mark.parametrize("chunk_rows", [1 << 17, 5])  # 5: many blocks, a block per output row or two
def test_segment_equals_index_add_forward_and_backward(grouping, mode: str, chunk_rows: int) -> None:
    kmap = _kmap(mode)
    feats = torch.randn(kmap.n_in, 7, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(kmap.volume, 7, 5, dtype=torch.float64, requires_grad=True)
    ref = _run(feats, weight, kmap, GroupingConfig(), "index_add")
    out = _run(feats, weight, kmap, grouping, "segment", chunk_rows)
    grad = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (feats, weight), grad)
    got = torch.autograd.grad(out, (feats, weight), grad)
    for a, b in zip((out, *got), (ref, *want)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_one_block_rounds_as_index_add() -> None:
    """One block, separate plan: the same GEMMs, summed per row in the same order -> the same fp32 bits."""
    kmap = _kmap("submanifold", n=2000, extent=16)
    feats, weight = torch.randn(kmap.n_in, 16), torch.randn(kmap.volume, 16, 16)
    ref = _run(feats, weight, kmap, GroupingConfig(), "index_add")
    assert torch.equal(_run(feats, weight, kmap, GroupingConfig(), "segment"), ref)


def test_cpu_plans_segment_and_reuse_the_cached_blocks() -> None:
    kmap = _kmap("submanifold")
    feats, weight = torch.randn(kmap.n_in, 8), torch.randn(kmap.volume, 8, 8)
    cpu = resolve_settings(torch.device("cpu"), backend="torch")
    assert plan_execution(kmap, weight, cpu, GroupingConfig()).scatter == "segment"
    cuda = resolve_settings(torch.device("cuda"), backend="torch")
    assert plan_execution(kmap, weight, cuda, GroupingConfig()).scatter == "index_add"
    first = sparse_conv(feats, weight, kmap, backend="torch")
    keys = [k for k in kmap.plans if k[0] == "torch-segments"]
    assert len(keys) == 1
    assert torch.equal(sparse_conv(feats, weight, kmap, backend="torch"), first)  # deterministic, cached
    assert [k for k in kmap.plans if k[0] == "torch-segments"] == keys
    with pytest.raises(ValueError, match="scatter"):
        ExecutionPlan("torch", plan_execution(kmap, weight, cpu, GroupingConfig()).groups, scatter="atomic")


def test_blocks_hold_their_budget_and_cover_every_row() -> None:
    kmap = _kmap("submanifold", n=2000, extent=16)
    groups = plan_groups(kmap.counts, GroupingConfig(), kmap.identity_offset, kmap.symmetric)
    blocks = segment_blocks(kmap, groups, False, 64)
    assert len(blocks) > 1 and blocks[0].start == 0 and blocks[-1].stop == kmap.n_out
    assert all(a.stop == b.start for a, b in zip(blocks, blocks[1:]))
    for b in blocks:
        cells = (b.stop - b.start) + b.gather.numel()
        assert cells <= 64 or b.stop - b.start == 1
        assert b.order.numel() == cells and b.offsets.numel() == b.stop - b.start
    assert sum(b.order.numel() for b in blocks) == kmap.in_idx.numel()
    assert block_cells(64, 64, torch.float32, 1 << 17) * 64 * 4 <= BLOCK_BYTES
    assert block_cells(4, 4, torch.float32, 1000) == 1000  # chunk_rows bounds it too


def test_reduced_precision_and_empty_maps() -> None:
    kmap = _kmap("conv")
    feats, weight = torch.randn(kmap.n_in, 8), torch.randn(kmap.volume, 8, 4)
    ref = _run(feats.double(), weight.double(), kmap, GroupingConfig(), "index_add")
    got = _run(feats.bfloat16(), weight.bfloat16(), kmap, GroupingConfig(), "segment")
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), ref, rtol=5e-2, atol=5e-2 * ref.abs().max().item())
    empty = torch.zeros(0, dtype=torch.long)
    pairs = MapPairs(empty, empty, (0,) * 27, 3, 4)
    out = _run(torch.randn(3, 2), torch.randn(27, 2, 5), pairs, GroupingConfig(), "segment")
    assert torch.equal(out, torch.zeros(4, 5))
    none = MapPairs(empty, empty, (0,) * 27, 0, 0)
    assert _run(torch.randn(0, 2), torch.randn(27, 2, 5), none, GroupingConfig(), "segment").shape == (0, 5)


def test_an_offset_listing_a_row_twice_is_refused() -> None:
    idx = torch.tensor([0, 1, 1])
    pairs = MapPairs(idx, torch.tensor([2, 2, 0]), (3,), 3, 3)
    with pytest.raises(ValueError, match="twice"):
        _run(torch.randn(3, 2), torch.randn(1, 2, 2), pairs, GroupingConfig(), "segment")


def test_workspace_persists_across_maps_and_outputs_never_alias_it() -> None:
    kmap = _kmap("submanifold", n=2000, extent=16)
    feats, weight = torch.randn(kmap.n_in, 8), torch.randn(kmap.volume, 8, 8)
    first = sparse_conv(feats, weight, kmap, backend="torch")
    kept = first.clone()
    ws = workspace()
    size = ws.nbytes()
    assert size > 0
    second = sparse_conv(feats * 2, weight, kmap, backend="torch")  # overwrites the workspace
    assert torch.equal(first, kept) and ws.nbytes() == size  # reused, not regrown; the first output untouched
    torch.testing.assert_close(second, 2 * kept)
    buffers = {b.untyped_storage().data_ptr() for b in ws._buffers.values()}
    assert second.untyped_storage().data_ptr() not in buffers
    other = _kmap("submanifold", n=1500, extent=16)  # a new map of no more cells writes into the same buffers
    sparse_conv(torch.randn(other.n_in, 8), weight, other, backend="torch")
    assert {b.untyped_storage().data_ptr() for b in ws._buffers.values()} == buffers
    results = []

    def on_a_thread() -> None:
        results.append((sparse_conv(feats, weight, kmap, backend="torch"), workspace()))

    thread = threading.Thread(target=on_a_thread)
    thread.start()
    thread.join()
    assert torch.equal(results[0][0], kept)
    assert results[0][1] is not ws and ws.nbytes() == size  # the other thread took its own buffers
    copy.deepcopy(kmap)  # a map holds no workspace: it still deep-copies


def test_the_pass_keeps_no_graph_on_the_workspace() -> None:
    """Run directly with grad enabled, the pass records no graph (it would point into reused buffers)."""
    kmap = _kmap("submanifold")
    feats = torch.randn(kmap.n_in, 4, requires_grad=True)
    groups = plan_groups(kmap.counts, GroupingConfig(), kmap.identity_offset, kmap.symmetric)
    out = run_segments(feats, torch.randn(kmap.volume, 4, 3, requires_grad=True), kmap, groups, False, 1 << 17)
    assert out.grad_fn is None and not out.requires_grad
