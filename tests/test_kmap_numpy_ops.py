"""The NumPy-backed sorts and nonzero return exactly what their PyTorch counterparts return."""

from __future__ import annotations

import pytest
import torch

from torchsparse_lite.kmap.numpy_ops import flat_nonzero, sort_distinct, stable_argsort, unique_inverse, unique_keys


@pytest.mark.parametrize("n", [0, 1, 2, 1000])
@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.int64])
def test_sorts_match_torch(n: int, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(n)
    hi = 50 if dtype == torch.int16 else 1 << 30
    values = torch.randint(0, hi, (n,), generator=g).to(dtype)
    assert torch.equal(unique_keys(values), torch.unique(values))
    uniq, inverse, order = unique_inverse(values)
    ref_uniq, ref_inverse = torch.unique(values, return_inverse=True)
    assert torch.equal(uniq, ref_uniq) and torch.equal(inverse, ref_inverse)
    assert torch.equal(values[order], torch.sort(values).values)
    assert torch.equal(stable_argsort(values), torch.argsort(values, stable=True))
    distinct = torch.randperm(n, generator=g).to(dtype) * 3
    ref = torch.sort(distinct)
    got = sort_distinct(distinct)
    assert torch.equal(got[0], ref.values) and torch.equal(got[1], ref.indices)


@pytest.mark.parametrize("shape", [(0,), (7,), (40, 9)])
def test_flat_nonzero_matches_torch(shape) -> None:
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(len(shape))) < 0.4
    assert torch.equal(flat_nonzero(mask), torch.nonzero(mask.reshape(-1)).squeeze(1))
