"""Validation, de-duplication and densification behind ``SparseTensor`` (ME 0.5.4's rules)."""

from __future__ import annotations

import torch

from .enums import SparseTensorQuantizationMode


def check_features(features: object) -> torch.Tensor:
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
    if features.dim() != 2:
        raise ValueError(f"features must be a matrix [N, C], got shape {list(features.shape)}")
    if not features.dtype.is_floating_point:
        raise TypeError(f"features must be a floating-point tensor, got {features.dtype}; cast with .float()")
    return features


def check_coordinates(coordinates: object, n: int) -> torch.Tensor:
    if not isinstance(coordinates, torch.Tensor):
        raise TypeError(f"coordinates must be a torch.Tensor (int32, [N, 4]), got {type(coordinates).__name__}")
    if coordinates.dtype.is_floating_point or coordinates.dtype.is_complex or coordinates.dtype == torch.bool:
        raise TypeError(
            f"coordinates must be an integer tensor (torch.int32), got {coordinates.dtype}; quantize points first "
            "with MinkowskiEngine.utils.sparse_quantize (or floor them and call .int())"
        )
    if coordinates.dim() != 2:
        raise ValueError(f"coordinates must be a matrix [N, 4] (batch, x, y, z), got {list(coordinates.shape)}")
    if coordinates.shape[1] != 4:
        raise NotImplementedError(
            f"coordinates have {coordinates.shape[1]} columns (dimension {coordinates.shape[1] - 1}); "
            "torchsparse_lite's MinkowskiEngine layer supports 3D only: [N, 4] laid out (batch, x, y, z)"
        )
    if coordinates.shape[0] != n:
        raise ValueError(f"features has {n} rows but coordinates has {coordinates.shape[0]}; they must match")
    return coordinates


def quantize_features(
    features: torch.Tensor, unique: torch.Tensor, inverse: torch.Tensor, mode: SparseTensorQuantizationMode
) -> torch.Tensor:
    """Merge the features of duplicate coordinates as ``mode`` says."""
    m, c = unique.shape[0], features.shape[1]
    if m == features.shape[0]:
        return features
    if mode is SparseTensorQuantizationMode.RANDOM_SUBSAMPLE:
        return features[unique]
    if mode in (SparseTensorQuantizationMode.UNWEIGHTED_SUM, SparseTensorQuantizationMode.UNWEIGHTED_AVERAGE):
        out = features.new_zeros(m, c).index_add(0, inverse, features)
        if mode is SparseTensorQuantizationMode.UNWEIGHTED_AVERAGE:
            out = out / torch.bincount(inverse, minlength=m).to(features.dtype)[:, None]
        return out
    if mode is SparseTensorQuantizationMode.MAX_POOL:
        init = features.new_full((m, c), float("-inf"))
        return init.scatter_reduce(0, inverse[:, None].expand(-1, c), features, reduce="amax", include_self=False)
    if mode is SparseTensorQuantizationMode.NO_QUANTIZATION:
        raise ValueError("coordinates hold duplicates but quantization_mode is NO_QUANTIZATION")
    raise NotImplementedError(f"quantization_mode {mode} is not supported by torchsparse_lite's MinkowskiEngine layer")


def dense_grid(
    coordinates: torch.Tensor,
    features: torch.Tensor,
    tensor_stride: list[int],
    shape: torch.Size | None,
    min_coordinate: torch.Tensor | int | None,
    contract_stride: bool,
) -> tuple[torch.Tensor, torch.Tensor | int, torch.Tensor]:
    """ME's ``SparseTensor.dense`` on [N, 4] ``coordinates`` and [N, C] ``features`` (see there)."""
    if 0 in tensor_stride:
        raise ValueError("a global pooling output (tensor stride 0) has no spatial grid to densify; use its .F")
    ts = torch.tensor(tensor_stride, dtype=torch.int32, device=coordinates.device)
    coords, batch, n = coordinates[:, 1:], coordinates[:, 0].long(), coordinates.shape[0]
    if min_coordinate is None:
        min_coordinate = coords.min(0, keepdim=True)[0] if n else torch.zeros(1, 3, dtype=torch.int32)
        if not bool((min_coordinate >= 0).all()):
            raise ValueError(f"coordinates have negative values (min {min_coordinate.tolist()}); pass min_coordinate")
    elif isinstance(min_coordinate, int) and min_coordinate == 0:
        pass
    else:
        if not isinstance(min_coordinate, torch.Tensor) or min_coordinate.numel() != 3:
            raise TypeError("min_coordinate must be a 3-element int tensor, 0 or None")
        min_coordinate = min_coordinate.reshape(1, 3).to(coords.device, torch.int32)
        coords = coords - min_coordinate
        if bool(((min_coordinate % ts) != 0).any()):
            raise ValueError(f"min_coordinate {min_coordinate.tolist()} must be divisible by the tensor stride")
    if contract_stride:
        coords = torch.div(coords, ts, rounding_mode="floor")
    if bool((coords < 0).any()):
        raise ValueError("coordinates lie below min_coordinate; pass a smaller min_coordinate")
    nch = features.shape[1]
    if shape is None:
        size = (coords.max(0)[0] + 1).tolist() if n else [0, 0, 0]
        shape = torch.Size([int(batch.max()) + 1 if n else 0, nch, *size])
    else:
        shape = torch.Size([shape[0], nch, *shape[2:]])
        if len(shape) != 5:
            raise ValueError(f"shape must be [B, C, X, Y, Z], got {list(shape)}")
        if n and (
            int(batch.max()) >= shape[0]
            or bool((coords.max(0)[0] >= torch.tensor(shape[2:], device=coords.device)).any())
        ):
            raise ValueError(f"coordinates fall outside the requested dense shape {list(shape)}")
    out = torch.zeros(shape, dtype=features.dtype, device=features.device)
    c = coords.long()
    out[batch, :, c[:, 0], c[:, 1], c[:, 2]] = features
    return out, min_coordinate, torch.IntTensor(tensor_stride)
