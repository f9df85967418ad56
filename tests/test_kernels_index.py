"""Triton hash / sort indexes and the maps built with them equal the PyTorch builders."""

from __future__ import annotations

import pytest
import torch
from reference import random_coords
from torchsparse_lite.kernels import TritonHashIndex, TritonSortIndex

from torchsparse_lite.kmap import HashIndex, SortIndex, build_kernel_map, pack

pytestmark = pytest.mark.triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _keys(n: int, seed: int) -> torch.Tensor:
    return pack(random_coords(n, 40, batch=3, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("cls", [TritonHashIndex, TritonSortIndex])
@pytest.mark.parametrize("n", [0, 1, 300])
def test_index_queries_match_torch(cls: type, n: int) -> None:
    keys = _keys(n, 0) if n > 1 else _keys(5, 0)[:n]
    queries = torch.cat([keys.flip(0), _keys(200, 1), torch.tensor([-1, -5], dtype=torch.int64)])
    expected = HashIndex(keys).query(queries)
    got = cls(keys.to(DEVICE)).query(queries.to(DEVICE)).cpu()
    assert torch.equal(got, expected)
    if n:
        assert torch.equal(got[: keys.numel()], torch.arange(keys.numel()).flip(0))


@pytest.mark.parametrize("cls", [TritonHashIndex, TritonSortIndex])
def test_duplicates_raise(cls: type) -> None:
    keys = _keys(50, 2)
    keys = torch.cat([keys, keys[7:8]])
    with pytest.raises(ValueError, match="duplicate"):
        cls(keys.to(DEVICE))


def test_colliding_keys_probe_on() -> None:
    """A full-ish table (load 0.5) of keys that differ only in z: probing must resolve every collision."""
    z = torch.arange(64, dtype=torch.int64)
    keys = pack(torch.stack([torch.zeros_like(z), z * 0 + 3, z * 0 + 5, z], 1))
    index = TritonHashIndex(keys.to(DEVICE))
    assert torch.equal(index.query(keys.to(DEVICE)).cpu(), torch.arange(64))


@pytest.mark.parametrize("builder", ["hash", "sort"])
@pytest.mark.parametrize("mode,stride", [("submanifold", (1, 1, 1)), ("conv", (2, 2, 2))])
def test_triton_built_maps_equal_torch_maps(builder: str, mode: str, stride: tuple[int, int, int]) -> None:
    coords = random_coords(80, 8, batch=2, generator=torch.Generator().manual_seed(3))
    ref = build_kernel_map(coords, (3, 3, 3), stride, mode=mode, builder=builder)
    if DEVICE == "cuda":  # make_index picks the Triton index for CUDA keys
        got = build_kernel_map(coords.cuda(), (3, 3, 3), stride, mode=mode, builder=builder).to("cpu")
    else:
        got = build_kernel_map(coords, (3, 3, 3), stride, mode=mode, builder=f"triton_{builder}")
    assert got.counts == ref.counts
    assert torch.equal(got.in_idx, ref.in_idx) and torch.equal(got.out_idx, ref.out_idx)
    assert torch.equal(got.out_coords, ref.out_coords)


def _count_launches(monkeypatch: pytest.MonkeyPatch, kernel) -> list[int]:
    """Patch ``kernel.run`` (what ``kernel[grid](...)`` calls) to count launches; returns the counter."""
    calls: list[int] = []
    original = kernel.run

    def run(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(kernel, "run", run)
    return calls


def test_sort_lookup_runs_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Map building calls ``index.lookup``: the Triton sort index must answer it with its kernel."""
    from torchsparse_lite.kernels import sort_index  # noqa: PLC0415

    calls = _count_launches(monkeypatch, sort_index.sorted_query_kernel)
    keys = _keys(300, 4).to(DEVICE)
    queries = torch.cat([keys[::3], _keys(100, 5).to(DEVICE)])
    hit, rows = TritonSortIndex(keys).lookup(queries)
    assert len(calls) == 1
    ref_hit, ref_rows = SortIndex(keys.cpu()).lookup(queries.cpu())
    assert torch.equal(hit.cpu(), ref_hit) and torch.equal(rows.cpu(), ref_rows)

    calls.clear()
    coords = random_coords(80, 8, batch=2, generator=torch.Generator().manual_seed(3))
    builder = "sort" if DEVICE == "cuda" else "triton_sort"
    got = build_kernel_map(coords.to(DEVICE), (3, 3, 3), mode="submanifold", builder=builder)
    assert len(calls) == 13, "a symmetric 3x3x3 map queries the 13 offsets before the centre"
    ref = build_kernel_map(coords, (3, 3, 3), mode="submanifold", builder="sort")
    assert got.counts == ref.counts and torch.equal(got.in_idx.cpu(), ref.in_idx)


def test_hash_index_builds_and_probes_with_its_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchsparse_lite.kernels import hash_index  # noqa: PLC0415

    inserts = _count_launches(monkeypatch, hash_index.hash_insert_kernel)
    queries = _count_launches(monkeypatch, hash_index.hash_query_kernel)
    coords = random_coords(80, 8, batch=2, generator=torch.Generator().manual_seed(3))
    builder = "hash" if DEVICE == "cuda" else "triton_hash"
    build_kernel_map(coords.to(DEVICE), (3, 3, 3), (2, 2, 2), mode="conv", builder=builder)
    assert len(inserts) == 1 and len(queries) == 27
