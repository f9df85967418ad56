"""``MinkowskiEngine.utils``: quantisation, batching and initialisation helpers (ME 0.5.4 signatures)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .manager import unique_first

Array = np.ndarray | torch.Tensor


def _discretize(coordinates: Array, quantization_size: object) -> torch.Tensor:
    """``floor(coordinates / quantization_size)`` as an int32 tensor (``None`` or 1: just floor)."""
    c = torch.as_tensor(coordinates)
    if c.dim() != 2:
        raise ValueError(f"coordinates must be a matrix [N, D], got shape {list(c.shape)}")
    if quantization_size is None or (np.isscalar(quantization_size) and quantization_size == 1):
        scaled = c
    elif np.isscalar(quantization_size) and not isinstance(quantization_size, (str, bytes, bool)):
        if not quantization_size > 0:
            raise ValueError(f"quantization_size must be > 0, got {quantization_size}")
        scaled = c.to(torch.float64) / float(quantization_size)
    elif isinstance(quantization_size, (Sequence, np.ndarray, torch.Tensor)):
        q = torch.as_tensor(np.asarray(quantization_size, dtype=np.float64))
        if q.numel() != c.shape[1] or not bool((q > 0).all()):
            raise ValueError(f"quantization_size needs {c.shape[1]} positive sizes, got {quantization_size!r}")
        scaled = c.to(torch.float64) / q.to(c.device)
    else:
        raise TypeError(f"quantization_size must be a number or a sequence of numbers, got {quantization_size!r}")
    if scaled.dtype.is_floating_point:
        if not bool(torch.isfinite(scaled).all()):
            raise ValueError("coordinates contain NaN or Inf")
        scaled = torch.floor(scaled)
    return scaled.to(torch.int32)


def _take(values: Array, index: torch.Tensor) -> Array:
    """``values[index]`` keeping the container (numpy stays numpy)."""
    if isinstance(values, np.ndarray):
        return values[index.cpu().numpy()]
    return values[index.to(values.device)]


def sparse_quantize(
    coordinates: Array,
    features: Array | None = None,
    labels: Array | None = None,
    ignore_label: int = -100,
    return_index: bool = False,
    return_inverse: bool = False,
    return_maps_only: bool = False,
    quantization_size: object = None,
    device: str = "cpu",
):
    """Voxelize: unique ``floor(coordinates / quantization_size)`` rows, first occurrence kept, input order.

    Args:
        coordinates: [N, D] numpy array or tensor (float or int).
        features, labels: optional [N, C] / [N] arrays gathered alongside.
        ignore_label: accepted (ME 0.5.4 no longer uses it).
        return_index, return_inverse: also return ``unique_map`` [M] and
            ``inverse_map`` [N] (int64 tensors); return_inverse needs return_index.
        return_maps_only: return only ``unique_map`` (and ``inverse_map``).
        quantization_size: voxel size (a number or one per column); None = 1.
        device: where the coordinates go (``"cpu"`` or ``"cuda"``).

    Returns:
        ``coords`` ([M, D] int32 tensor), then ``features[unique_map]``,
        ``labels[unique_map]``, ``unique_map``, ``inverse_map`` as requested
        (a single value is returned bare, several as a tuple).
    """
    if not isinstance(coordinates, (np.ndarray, torch.Tensor)):
        raise TypeError(f"coordinates must be a numpy array or a torch.Tensor, got {type(coordinates).__name__}")
    if return_inverse and not return_index:
        raise ValueError("return_inverse=True needs return_index=True (ME's rule)")
    n = coordinates.shape[0]
    for name, values in (("features", features), ("labels", labels)):
        if values is not None and len(values) != n:
            raise ValueError(f"{name} has {len(values)} rows but coordinates has {n}")
    if features is not None and features.ndim != 2:
        raise ValueError(f"features must be a matrix [N, C], got shape {list(features.shape)}")
    if not (device == "cpu" or str(device).startswith("cuda")):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    discrete = _discretize(coordinates, quantization_size).to(device)
    unique_map, inverse_map = unique_first(discrete)
    if return_maps_only:
        return (unique_map, inverse_map) if return_inverse else unique_map
    out: list = [discrete[unique_map]]
    if features is not None:
        out.append(_take(features, unique_map))
    if labels is not None:
        out.append(_take(labels, unique_map))
    if return_index:
        out.append(unique_map)
    if return_inverse:
        out.append(inverse_map)
    return out[0] if len(out) == 1 else tuple(out)


def _batch_rows(coords: Sequence[Array], dtype: torch.dtype, device: object, what: str) -> torch.Tensor:
    """[sum N_i, D + 1] rows ``(i, coords_i)`` of a sequence of [N_i, D] arrays."""
    if isinstance(coords, (np.ndarray, torch.Tensor)) or not isinstance(coords, Sequence):
        raise TypeError(f"{what}: coords must be a sequence (list/tuple) of [N_i, D] arrays, one per sample")
    if dtype not in (torch.int32, torch.float32):
        raise ValueError(f"{what}: dtype must be torch.int32 or torch.float32, got {dtype}")
    parts = [torch.as_tensor(c) for c in coords]
    dims = {p.shape[1] if p.dim() == 2 else None for p in parts}
    if None in dims or len(dims) != 1:
        raise ValueError(
            f"{what}: every coordinate array must be [N_i, D] with one D, got shapes {[list(p.shape) for p in parts]}"
        )
    device = device or (parts[0].device if parts else "cpu")
    rows = []
    for b, p in enumerate(parts):
        if dtype == torch.int32 and p.dtype.is_floating_point:
            p = torch.floor(p)
        p = p.to(device=device, dtype=dtype)
        rows.append(torch.cat([torch.full((p.shape[0], 1), b, dtype=dtype, device=device), p], dim=1))
    return torch.cat(rows) if rows else torch.zeros(0, 1, dtype=dtype)


def batched_coordinates(
    coords: Sequence[Array], dtype: torch.dtype = torch.int32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Batch a list of [N_i, D] coordinates into [sum N_i, D + 1] rows ``(batch, coords)`` (floats floored)."""
    return _batch_rows(coords, dtype, device, "batched_coordinates")


def sparse_collate(
    coords: Sequence[Array],
    feats: Sequence[Array],
    labels: Sequence[Array] | None = None,
    dtype: torch.dtype = torch.int32,
    device: torch.device | str | None = None,
):
    """(batched coordinates, concatenated features[, concatenated labels]) of per-sample lists."""
    if isinstance(feats, (np.ndarray, torch.Tensor)) or not isinstance(feats, Sequence):
        raise TypeError("sparse_collate: feats must be a sequence of [N_i, C] arrays, one per sample")
    if len(feats) != len(coords) or any(len(c) != len(f) for c, f in zip(coords, feats)):
        raise ValueError("sparse_collate: coords and feats must have one array per sample with matching lengths")
    bcoords = _batch_rows(coords, dtype, device, "sparse_collate")
    feats_batch = torch.cat([torch.as_tensor(f) for f in feats], 0)
    if labels is None:
        return bcoords, feats_batch
    labels = [torch.as_tensor(v) if isinstance(v, np.ndarray) else v for v in labels]
    if isinstance(labels[0], torch.Tensor):
        labels = torch.cat(labels, 0)
    return bcoords, feats_batch, labels


def batch_sparse_collate(
    data: Sequence[tuple], dtype: torch.dtype = torch.int32, device: torch.device | str | None = None
):
    """``collate_fn`` for (coords, feats, labels) samples."""
    return sparse_collate(*list(zip(*data)), dtype=dtype, device=device)


class SparseCollation:
    """``collate_fn`` that stops adding samples once ``limit_numpoints`` points are reached (> 0)."""

    def __init__(
        self, limit_numpoints: int = -1, dtype: torch.dtype = torch.int32, device: torch.device | str | None = None
    ) -> None:
        self.limit_numpoints, self.dtype, self.device = limit_numpoints, dtype, device

    def __call__(self, list_data: Sequence[tuple]):
        coords, feats, labels = list(zip(*list_data))
        keep, total = 0, 0
        for c in coords:
            total += len(c)
            if self.limit_numpoints > 0 and total > self.limit_numpoints:
                break
            keep += 1
        return sparse_collate(list(coords[:keep]), list(feats[:keep]), list(labels[:keep]), self.dtype, self.device)


def ravel_hash_vec(arr: np.ndarray) -> np.ndarray:
    """[N] uint64 keys of [N, D] integer rows, raveled after subtracting the per-column minimum."""
    a = np.asarray(arr).astype(np.int64)
    a = (a - a.min(0)).astype(np.uint64)
    extent = a.max(0).astype(np.uint64) + np.uint64(1)
    keys = np.zeros(a.shape[0], dtype=np.uint64)
    for j in range(a.shape[1] - 1):
        keys = (keys + a[:, j]) * extent[j + 1]
    return keys + a[:, -1]


def fnv_hash_vec(arr: np.ndarray) -> np.ndarray:
    """[N] uint64 FNV-64 hashes of [N, D] integer rows (multiply by the prime, then xor each column)."""
    a = np.asarray(arr).astype(np.uint64)
    h = np.full(a.shape[0], np.uint64(14695981039346656037), dtype=np.uint64)
    for j in range(a.shape[1]):
        h = np.bitwise_xor(h * np.uint64(1099511628211), a[:, j])
    return h


def kaiming_normal_(
    tensor: torch.Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> torch.Tensor:
    """He-normal init as ME's: a ``[K, Cin, Cout]`` kernel has fan-in ``Cin * K`` and fan-out ``Cout * K``;
    a 2D tensor uses ``nn.Linear``'s convention (fan-in ``size(1)``, fan-out ``size(0)``), as ME does."""
    if tensor.dim() < 2:
        raise ValueError("fan in and fan out cannot be computed for a tensor with fewer than 2 dimensions")
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    if tensor.dim() == 2:
        fan_in, fan_out = tensor.shape[1], tensor.shape[0]
    else:
        fan_in, fan_out = tensor.shape[1] * tensor.shape[0], tensor.shape[2] * tensor.shape[0]
    std = torch.nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan_in if mode == "fan_in" else fan_out)
    with torch.no_grad():
        return tensor.normal_(0, std)
