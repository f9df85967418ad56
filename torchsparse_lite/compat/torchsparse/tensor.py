"""``torchsparse.SparseTensor`` (TorchSparse 2.1) over the native engine.

TorchSparse 2.1 lays coordinates out batch first, ``(batch, x, y, z)``, in
units of the tensor's own stride (a stride-2 conv halves them: "the range of
coordinates will shrink by s times", TorchSparse 2.1 changes page) -- exactly
the native layout, so no conversion happens at the boundary. TorchSparse 2.0
(batch last, coordinates in original voxel units) is not mirrored.

``spatial_range`` is TorchSparse's 4-tuple ``(batch_size, X, Y, Z)``.
Unlike TorchSparse, coordinates are validated when a tensor is built (or its
``coords`` set): integer dtype, ``[N, 3]`` (one sample, before collation) or
``[N, 4]``, non-negative, unique, inside ``spatial_range``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ...kmap.cache import KernelMapCache
from ...kmap.geometry import triple
from ...kmap.keys import check_coords
from ...tensor import SparseTensor as NativeSparseTensor
from ...tensor import check_unique

__all__ = [
    "SparseTensor",
    "TensorCache",
    "cat",
    "get_allow_negative_coordinates",
    "set_allow_negative_coordinates",
]


class TensorCache:
    """The ``_caches`` shared by the tensors of one forward pass.

    Attributes:
        cmaps: ``{stride: (coords, spatial_range)}`` as TorchSparse records
            them (the first tensor seen at each stride).
        maps: the native :class:`~torchsparse_lite.kmap.cache.KernelMapCache`.
    """

    def __init__(self, cmaps: dict | None = None, maps: KernelMapCache | None = None) -> None:
        self.cmaps: dict[tuple[int, int, int], tuple[torch.Tensor, tuple[int, ...] | None]] = (
            {} if cmaps is None else cmaps
        )
        self.maps = KernelMapCache() if maps is None else maps


def get_allow_negative_coordinates() -> bool:
    """Always False: negative coordinates are not supported (TorchSparse 2.1's default)."""
    return False


def set_allow_negative_coordinates(allow_negative_coordinates: bool) -> None:
    """Only ``False`` (the default) is supported; ``True`` raises ``NotImplementedError``."""
    if allow_negative_coordinates:
        raise NotImplementedError(
            "negative coordinates are not supported by torchsparse_lite; shift them to start at 0 "
            "(coords -= coords.min(0), as TorchSparse's own examples do)"
        )


def _as_tensor(value: object, name: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")
    return value


def _spatial_range(value: Sequence[int] | torch.Tensor | None) -> tuple[int, int, int, int] | None:
    if value is None:
        return None
    try:
        out = tuple(int(v) for v in (value.tolist() if isinstance(value, torch.Tensor) else value))
    except TypeError:
        raise TypeError(f"spatial_range must be 4 ints (batch_size, X, Y, Z), got {value!r}") from None
    if len(out) != 4 or min(out) < 1:
        raise ValueError(f"spatial_range must be 4 positive ints (batch_size, X, Y, Z), got {out}")
    return out  # type: ignore[return-value]


def _checked_coords(coords: object, spatial_range: tuple[int, ...] | None) -> torch.Tensor:
    """Validate ``[N, 3]`` or ``[N, 4]`` (batch, x, y, z) coordinates; returns them as int32."""
    c = _as_tensor(coords, "coords")
    if c.dim() != 2 or c.shape[1] not in (3, 4):
        raise ValueError(
            f"coords must have shape [N, 4] laid out (batch, x, y, z) -- TorchSparse 2.1 puts the batch index "
            f"first -- or [N, 3] (x, y, z) for one sample before sparse_collate, got {list(c.shape)}"
        )
    four = c if c.shape[1] == 4 else torch.cat([torch.zeros_like(c[:, :1]), c], dim=1)
    four = check_coords(four, "coords")
    if spatial_range is not None and c.shape[1] == 4 and len(four):
        hi = four.amax(0).tolist()
        if hi[0] >= spatial_range[0]:
            raise ValueError(f"coords has batch index {hi[0]} >= spatial_range[0] = {spatial_range[0]}, the batch size")
        if any(h >= r for h, r in zip(hi[1:], spatial_range[1:])):
            raise ValueError(
                f"coords reach {hi[1:]} on (x, y, z), outside spatial_range {list(spatial_range[1:])}; every "
                "coordinate must be < the spatial range on its axis"
            )
    check_unique(four, "coords")
    return four if c.shape[1] == 4 else four[:, 1:]


class SparseTensor:
    """TorchSparse 2.1's sparse tensor.

    Args:
        feats: [N, C] features (a 1-D [N] tensor of labels is accepted too,
            as TorchSparse data pipelines use it); numpy arrays are converted.
        coords: [N, 4] integer (batch, x, y, z) in units of ``stride``, or
            [N, 3] (x, y, z) for one sample before :func:`sparse_collate`.
        stride: tensor stride (int or 3 ints).
        spatial_range: optional ``(batch_size, X, Y, Z)``.

    Raises:
        TypeError: non-tensor inputs or non-integer coordinates.
        ValueError: wrong shapes, negative, duplicate or out-of-range
            coordinates, feats and coords of different lengths or devices.
    """

    def __init__(
        self,
        feats: torch.Tensor | np.ndarray,
        coords: torch.Tensor | np.ndarray,
        stride: int | Sequence[int] = 1,
        spatial_range: Sequence[int] | None = None,
    ) -> None:
        self.spatial_range = _spatial_range(spatial_range)
        self.coords = coords
        self.feats = _as_tensor(feats, "feats")
        if self.feats.dim() == 0 or self.feats.shape[0] != self._coords.shape[0]:
            raise ValueError(
                f"feats has shape {list(self.feats.shape)} but coords has {self._coords.shape[0]} rows; "
                "they must match one to one"
            )
        if self.feats.device != self._coords.device:
            raise ValueError(f"feats is on {self.feats.device} but coords on {self._coords.device}; move both")
        self.s = stride
        self._caches = TensorCache()

    @classmethod
    def _wrap(
        cls,
        feats: torch.Tensor,
        coords: torch.Tensor,
        stride: tuple[int, int, int],
        spatial_range: tuple[int, ...] | None,
        caches: TensorCache,
    ) -> SparseTensor:
        """A tensor derived by a layer from validated data (no checks)."""
        out = cls.__new__(cls)
        out.feats, out._coords, out.stride = feats, coords, stride
        out.spatial_range, out._caches = spatial_range, caches
        return out

    # ------------------------------------------------------------ fields
    @property
    def coords(self) -> torch.Tensor:
        return self._coords

    @coords.setter
    def coords(self, coords: torch.Tensor | np.ndarray) -> None:
        self._coords = _checked_coords(coords, self.spatial_range)

    F = property(lambda self: self.feats, lambda self, feats: setattr(self, "feats", _as_tensor(feats, "feats")))
    C = property(lambda self: self.coords, lambda self, coords: setattr(self, "coords", coords))

    @property
    def s(self) -> tuple[int, int, int]:
        return self.stride

    @s.setter
    def s(self, stride: int | Sequence[int]) -> None:
        self.stride = triple(stride, "stride")

    # ----------------------------------------------------------- devices
    def to(self, *args, non_blocking: bool = True, **kwargs) -> SparseTensor:
        """Move (and/or cast) in place, as TorchSparse does; returns ``self``. Dtypes apply to feats only."""
        feats = self.feats.to(*args, non_blocking=non_blocking, **kwargs)
        if feats.device != self._coords.device:
            self._coords = self._coords.to(feats.device, non_blocking=non_blocking)
            self._caches = TensorCache()
        self.feats = feats
        return self

    def cpu(self) -> SparseTensor:
        return self.to("cpu")

    def cuda(self, device: int | str | None = None) -> SparseTensor:
        return self.to(torch.device("cuda", device) if isinstance(device, int) else (device or "cuda"))

    def half(self) -> SparseTensor:
        self.feats = self.feats.half()
        return self

    def detach(self) -> SparseTensor:
        self.feats = self.feats.detach()
        return self

    # ------------------------------------------------------------- dense
    def dense(self) -> torch.Tensor:
        """Scatter into a dense ``[batch_size, X, Y, Z, C]`` tensor (channels last, as TorchSparse 2.1).

        Raises:
            ValueError: no ``spatial_range``, or ``coords`` without a batch column.
        """
        if self.spatial_range is None:
            raise ValueError("dense() needs spatial_range (batch_size, X, Y, Z); pass it to SparseTensor(...)")
        if self._coords.shape[1] != 4 or self.feats.dim() != 2:
            raise ValueError("dense() needs [N, 4] coords and [N, C] feats; collate single samples first")
        c = self._coords.long()
        out = self.feats.new_zeros((*self.spatial_range, self.feats.shape[1]))
        return out.index_put((c[:, 0], c[:, 1], c[:, 2], c[:, 3]), self.feats)

    # -------------------------------------------------------------- maths
    def _check_same(self, other: SparseTensor, op: str) -> None:
        if not isinstance(other, SparseTensor):
            raise TypeError(f"{op}: other must be a torchsparse SparseTensor, got {type(other).__name__}")
        if other.stride != self.stride:
            raise ValueError(f"{op}: strides differ ({self.stride} vs {other.stride})")
        if other.coords is not self.coords and not torch.equal(other.coords, self.coords):
            raise ValueError(
                f"{op}: the tensors have different coords ({len(self.coords)} vs {len(other.coords)} rows); "
                "they must hold the same voxels in the same order (e.g. outputs of submanifold layers on one input)"
            )

    def __add__(self, other: SparseTensor) -> SparseTensor:
        self._check_same(other, "add")
        return SparseTensor._wrap(self.feats + other.feats, self.coords, self.stride, self.spatial_range, self._caches)

    def _native(self, spatial_bound: Sequence[int] | None = None) -> NativeSparseTensor:
        """The native view of this tensor (same storage and map cache); needs [N, 4] coords."""
        if self._coords.shape[1] != 4:
            raise ValueError("this layer needs [N, 4] (batch, x, y, z) coords; collate single samples first")
        return NativeSparseTensor(
            self.feats, self._coords, self.stride, spatial_range=spatial_bound, cache=self._caches.maps, validate=False
        )

    def to_native(self) -> NativeSparseTensor:
        """This tensor as a native :class:`torchsparse_lite.SparseTensor` (same storage, layout and map cache).

        Coordinates are already in the native layout; ``spatial_range`` loses its batch entry.
        """
        return self._native(None if self.spatial_range is None else self.spatial_range[1:])

    def _with_feats(self, feats: torch.Tensor) -> SparseTensor:
        return SparseTensor._wrap(feats, self._coords, self.stride, self.spatial_range, self._caches)

    def __repr__(self) -> str:
        return (
            f"SparseTensor(n={len(self._coords)}, feats={list(self.feats.shape)}, stride={self.stride}, "
            f"spatial_range={self.spatial_range})"
        )


def cat(inputs: Sequence[SparseTensor]) -> SparseTensor:
    """``torchsparse.cat``: concatenate features along channels (same coords and stride required)."""
    if isinstance(inputs, SparseTensor) or not isinstance(inputs, Sequence) or not inputs:
        raise ValueError("cat: inputs must be a non-empty list of SparseTensors")
    first = inputs[0]
    if not isinstance(first, SparseTensor):
        raise TypeError(f"cat: inputs[0] must be a torchsparse SparseTensor, got {type(first).__name__}")
    for t in inputs[1:]:
        first._check_same(t, "cat")
    return first._with_feats(torch.cat([t.feats for t in inputs], dim=1))
