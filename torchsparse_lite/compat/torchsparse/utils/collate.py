"""``torchsparse.utils.collate`` (TorchSparse 2.1): batch single-sample tensors, batch index first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..tensor import SparseTensor

__all__ = ["sparse_collate", "sparse_collate_fn"]


def sparse_collate(inputs: Sequence[SparseTensor]) -> SparseTensor:
    """Stack single samples ([N, 3] coords) into one tensor with coords ``(batch, x, y, z)``.

    Raises:
        ValueError: an empty list, different strides, or coords that already carry a batch column.
        TypeError: an element that is not a torchsparse SparseTensor.
    """
    if isinstance(inputs, SparseTensor) or not isinstance(inputs, Sequence) or not inputs:
        raise ValueError("sparse_collate: inputs must be a non-empty list of SparseTensors")
    coords, feats = [], []
    for k, x in enumerate(inputs):
        if not isinstance(x, SparseTensor):
            raise TypeError(f"sparse_collate: inputs[{k}] is {type(x).__name__}, expected a torchsparse SparseTensor")
        if x.stride != inputs[0].stride:
            raise ValueError(f"sparse_collate: inputs[{k}] has stride {x.stride}, inputs[0] has {inputs[0].stride}")
        if x.coords.shape[1] != 3:
            raise ValueError(
                f"sparse_collate: inputs[{k}] has [N, {x.coords.shape[1]}] coords; collate single samples with "
                "[N, 3] (x, y, z) coords (the batch column is added here)"
            )
        batch = torch.full((x.coords.shape[0], 1), k, dtype=x.coords.dtype, device=x.coords.device)
        coords.append(torch.cat([batch, x.coords], dim=1))
        feats.append(x.feats)
    return SparseTensor(torch.cat(feats, dim=0), torch.cat(coords, dim=0), inputs[0].stride)


def sparse_collate_fn(inputs: list[Any]) -> Any:
    """A ``DataLoader`` ``collate_fn``: for a list of dicts, SparseTensors are collated, arrays and
    tensors stacked (numpy -> torch), nested dicts recursed, anything else listed; other inputs pass unchanged.
    """
    if not inputs or not isinstance(inputs[0], dict):
        return inputs
    output = {}
    for name, first in inputs[0].items():
        values = [item[name] for item in inputs]
        if isinstance(first, dict):
            output[name] = sparse_collate_fn(values)
        elif isinstance(first, np.ndarray):
            output[name] = torch.stack([torch.as_tensor(v) for v in values], dim=0)
        elif isinstance(first, torch.Tensor):
            output[name] = torch.stack(values, dim=0)
        elif isinstance(first, SparseTensor):
            output[name] = sparse_collate(values)
        else:
            output[name] = values
    return output
