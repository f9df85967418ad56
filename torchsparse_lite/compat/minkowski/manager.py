"""ME's ``CoordinateMapKey`` and ``CoordinateManager`` on top of the native engine.

MinkowskiEngine names every coordinate set by a key ``(tensor_stride,
string_id)`` inside a manager that all tensors derived from one input share;
convolutions look their output set up by key (``stride`` reuses the set at
``tensor_stride * stride``, a transposed conv the set at ``tensor_stride /
stride``). Here the manager holds, per key, the coordinates in the native
engine's form and wraps one native
:class:`~torchsparse_lite.kmap.cache.KernelMapCache`.

Coordinates. ME's are signed and in original voxel units (a stride-4 tensor's
coordinates are multiples of 4); the engine's are unsigned and in units of
the tensor's stride. At the boundary ``native = (me + SHIFT) / tensor_stride``
on the spatial axes (batch unchanged) and back ``me = native * tensor_stride
- SHIFT``. ``SHIFT`` must be a multiple of every tensor stride so that ME's
``floor(c / s) * s`` down-sampling equals the engine's ``c // s``; with
``SHIFT = 3 * 2**13`` the supported tensor strides are the divisors of 24576
(powers of two up to 8192 and three times those, as ME's ResNet example's
stride-3 ``conv5`` needs) and ME coordinates must lie in ``[-24576, 40959]``.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence

import torch

from ...kmap.cache import KernelMapCache
from ...kmap.geometry import ConvGeometry
from ...kmap.kernel_map import KernelMap
from ...kmap.keys import MAX_BATCH, MAX_COORD, pack
from ...kmap.outputs import output_coords
from .enums import SparseTensorOperationMode

SHIFT = 3 * 2**13
ORIGIN_STRIDE = (0, 0, 0)


def check_dimension(dimension: object, owner: str) -> int:
    """Return ``dimension`` (must be 3); raise a clear error for anything else."""
    if dimension is None or isinstance(dimension, bool) or not isinstance(dimension, int):
        raise TypeError(f"{owner}: dimension must be given as an int (dimension=3 for 3D data), got {dimension!r}")
    if dimension == 2:
        raise NotImplementedError(
            f"{owner}: dimension=2 is not supported by torchsparse_lite's MinkowskiEngine layer; only dimension=3 "
            "(coordinates (batch, x, y, z)) is"
        )
    if dimension != 3:
        raise ValueError(f"{owner}: dimension must be 3 (the native engine is 3D), got {dimension}")
    return 3


def int3(value: object, name: str, minimum: int = 1) -> tuple[int, int, int]:
    """An int, a 3-sequence or a 3-element tensor/array of ints ``>= minimum`` as a 3-tuple."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or 3 ints, got {value!r}")
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):
        value = value.tolist()  # numpy scalars and arrays
    try:
        if isinstance(value, int):
            out = (value, value, value)
        elif isinstance(value, Sequence) and len(value) == 3 and not any(isinstance(v, bool) for v in value):
            out = tuple(operator.index(v) for v in value)
        else:
            raise TypeError
    except TypeError:
        raise TypeError(f"{name} must be an int or 3 ints (x, y, z), got {value!r}") from None
    if min(out) < minimum:
        raise ValueError(f"{name} must be >= {minimum} on every axis, got {list(out)}")
    return out  # type: ignore[return-value]


def check_tensor_stride(ts: tuple[int, int, int]) -> None:
    """Raise when a tensor stride cannot be represented (it must divide :data:`SHIFT`)."""
    if any(SHIFT % t for t in ts):
        raise NotImplementedError(
            f"tensor_stride {list(ts)} is not supported: torchsparse_lite's MinkowskiEngine layer maps ME's signed "
            f"coordinates onto the engine's grid with an offset of {SHIFT}, which every tensor stride must divide "
            "(powers of two up to 8192 and three times those)"
        )


class CoordinateMapKey:
    """Name of one coordinate set in a manager: ``(tensor_stride, string_id)``.

    ``CoordinateMapKey(4)`` is ME's unset key of a 3D map;
    ``CoordinateMapKey([2, 2, 2], "")`` a set one.
    """

    __slots__ = ("_size", "_stride", "_id")

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], int):
            self._size, self._stride, self._id = int(args[0]), None, None
            return
        if len(args) == 2 and isinstance(args[1], str):
            stride, string_id = args
        elif len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], tuple) and len(args[1]) == 2:
            stride, string_id = args[1]
        else:
            raise TypeError(
                "CoordinateMapKey takes (coordinate_size) or (tensor_stride, string_id), e.g. "
                f"CoordinateMapKey([1, 1, 1], ''); got {args!r}"
            )
        ts = tuple(int(v) for v in stride)  # type: ignore[union-attr]
        self._size, self._stride, self._id = len(ts) + 1, ts, str(string_id)

    def is_key_set(self) -> bool:
        return self._stride is not None

    def _require(self) -> None:
        if self._stride is None:
            raise ValueError("this CoordinateMapKey is not set (it only holds a coordinate size)")

    def get_key(self) -> tuple[list[int], str]:
        self._require()
        return list(self._stride), self._id  # type: ignore[arg-type, return-value]

    def get_tensor_stride(self) -> list[int]:
        self._require()
        return list(self._stride)  # type: ignore[arg-type]

    def get_coordinate_size(self) -> int:
        return self._size

    @property
    def pair(self) -> tuple[tuple[int, ...], str]:
        self._require()
        return self._stride, self._id  # type: ignore[return-value]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CoordinateMapKey):
            return NotImplemented
        return (self._stride, self._id, self._size) == (other._stride, other._id, other._size)

    def __hash__(self) -> int:
        return hash((self._stride, self._id, self._size))

    def __repr__(self) -> str:
        if self._stride is None:
            return f"CoordinateMapKey(coordinate_size={self._size}, unset)"
        return f"coordinate map key:{list(self._stride)}:{self._id}"


def to_native(coords: torch.Tensor, ts: tuple[int, int, int], name: str = "coordinates") -> torch.Tensor:
    """[N, 4] ME coordinates (integer, batch first) at tensor stride ``ts`` -> native int32 coordinates."""
    check_tensor_stride(ts)
    c = coords.to(torch.int64)
    if not c.shape[0]:
        return c.to(torch.int32)
    step = torch.tensor(ts, dtype=torch.int64, device=c.device)
    off = c[:, 1:] % step
    if bool(off.any()):
        row = int(off.any(1).nonzero()[0])
        raise ValueError(
            f"{name} row {row} is {c[row].tolist()}, not a multiple of tensor_stride {list(ts)}: ME coordinates are "
            "in original voxel units, so a tensor of stride s has coordinates divisible by s"
        )
    lo, hi = int(c[:, 0].min()), int(c[:, 0].max())
    if lo < 0 or hi > MAX_BATCH:
        raise ValueError(f"{name} has batch indices in [{lo}, {hi}]; they must lie in [0, {MAX_BATCH}]")
    shifted = c[:, 1:] + SHIFT
    lo_s, hi_s = int(c[:, 1:].min()), int(c[:, 1:].max())
    if lo_s < -SHIFT or int((shifted // step).max()) > MAX_COORD:
        raise ValueError(
            f"{name} spans [{lo_s}, {hi_s}]; torchsparse_lite's MinkowskiEngine layer holds coordinates in "
            f"[{-SHIFT}, {MAX_COORD - SHIFT}] (at tensor stride 1): crop the scene or use a larger voxel size"
        )
    return torch.cat([c[:, :1], shifted // step], dim=1).to(torch.int32)


def to_me(native: torch.Tensor, ts: tuple[int, ...]) -> torch.Tensor:
    """Native coordinates at tensor stride ``ts`` -> [N, 4] int32 ME coordinates (the origin map: zeros)."""
    if tuple(ts) == ORIGIN_STRIDE:
        return torch.cat([native[:, :1], torch.zeros_like(native[:, 1:])], dim=1)
    step = torch.tensor(ts, dtype=torch.int32, device=native.device)
    return torch.cat([native[:, :1], native[:, 1:] * step - SHIFT], dim=1)


def unique_first(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique [N] values (or [N, D] rows) of ``keys`` in first-occurrence order.

    Returns:
        (unique_index [M], inverse [N]) int64: ``keys[unique_index]`` are the
        unique entries in the order they first occur, ``inverse`` maps every
        entry to its row among them.
    """
    n = keys.shape[0]
    if not n:
        empty = torch.empty(0, dtype=torch.int64, device=keys.device)
        return empty, empty
    uniq, inverse = torch.unique(keys, return_inverse=True, dim=0 if keys.dim() == 2 else None)
    first = torch.full((uniq.shape[0],), n, dtype=torch.int64, device=keys.device)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=keys.device), reduce="amin")
    order = torch.argsort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.shape[0], device=keys.device)
    return first[order], rank[inverse]


class CoordinateManager:
    """The coordinate sets (by key) and kernel maps of one family of tensors.

    Args:
        D: spatial dimension; must be 3.
        num_threads, coordinate_map_type, allocator_type, minkowski_algorithm:
            ME's implementation knobs, accepted and ignored.
    """

    def __init__(
        self,
        D: int = 3,
        num_threads: int = -1,
        coordinate_map_type: object = None,
        allocator_type: object = None,
        minkowski_algorithm: object = None,
    ) -> None:
        self.D = check_dimension(D, "CoordinateManager")
        self.minkowski_algorithm = minkowski_algorithm
        self.cache = KernelMapCache()
        self._coords: dict[tuple[tuple[int, ...], str], torch.Tensor] = {}
        self.kernel_maps: dict[tuple, KernelMap] = {}
        self._ids = itertools.count()

    # ------------------------------------------------------------ registry
    def exists(self, key: CoordinateMapKey) -> bool:
        return key.is_key_set() and key.pair in self._coords

    def native(self, key: CoordinateMapKey) -> torch.Tensor:
        """[N, 4] int32 native coordinates of ``key`` (in units of its tensor stride, shifted)."""
        if not self.exists(key):
            raise ValueError(f"{key} is not a coordinate map of this coordinate manager (known: {self.keys()})")
        return self._coords[key.pair]

    def keys(self) -> list[CoordinateMapKey]:
        return [CoordinateMapKey(list(ts), sid) for ts, sid in self._coords]

    def register(self, native: torch.Tensor, ts: tuple[int, ...], string_id: str = "") -> CoordinateMapKey:
        """Store ``native`` coordinates under ``(ts, string_id)``, or a fresh id when that key is taken."""
        pair = (tuple(int(v) for v in ts), string_id)
        while pair in self._coords:
            pair = (pair[0], f"{string_id}#{next(self._ids)}")
        self._coords[pair] = native
        return CoordinateMapKey(list(pair[0]), pair[1])

    def get_unique_coordinate_map_key(self, tensor_stride: int | Sequence[int]) -> CoordinateMapKey:
        """A key at ``tensor_stride`` that no coordinate set of this manager uses yet."""
        ts = int3(tensor_stride, "tensor_stride")
        pair = (ts, f"#{next(self._ids)}")
        while pair in self._coords:
            pair = (ts, f"#{next(self._ids)}")
        return CoordinateMapKey(list(ts), pair[1])

    # -------------------------------------------------------------- ME API
    def insert_and_map(
        self, coordinates: torch.Tensor, tensor_stride: int | Sequence[int] = 1, string_id: str = ""
    ) -> tuple[CoordinateMapKey, tuple[torch.Tensor, torch.Tensor]]:
        """Insert [N, 4] ME coordinates; returns (key, (unique_index [M], inverse_mapping [N])).

        Duplicates keep their first occurrence, in input order (ME's CPU map).
        """
        ts = int3(tensor_stride, "tensor_stride")
        native = to_native(coordinates, ts)
        unique_index, inverse = unique_first(pack(native))
        key = self.register(native[unique_index], ts, string_id)
        return key, (unique_index, inverse)

    def size(self, key: CoordinateMapKey) -> int:
        return int(self.native(key).shape[0])

    def get_coordinates(self, key_or_tensor_stride: CoordinateMapKey | int | Sequence[int]) -> torch.Tensor:
        """[N, 4] int32 ME coordinates of a key (or of the first set at a tensor stride)."""
        key = key_or_tensor_stride
        if not isinstance(key, CoordinateMapKey):
            ts = int3(key, "tensor_stride")
            found = [k for k in self.keys() if tuple(k.get_tensor_stride()) == ts]
            if not found:
                raise ValueError(f"no coordinate map at tensor stride {list(ts)} (known: {self.keys()})")
            key = found[0]
        return to_me(self.native(key), key.pair[0])

    def stride(self, key: CoordinateMapKey, stride: int | Sequence[int], string_id: str = "") -> CoordinateMapKey:
        """Key of ``floor(c / (ts * stride)) * (ts * stride)`` of ``key``'s set (created when absent), as ME's."""
        ts, sid = self.native_key(key)
        s = int3(stride, "stride")
        out_ts = tuple(t * v for t, v in zip(ts, s))
        check_tensor_stride(out_ts)
        pair = (out_ts, string_id or sid)
        if pair not in self._coords:
            geometry = ConvGeometry((1, 1, 1), s, mode="conv", downsample_mode="minkowski")
            self._coords[pair] = output_coords(self.native(key), geometry)
        return CoordinateMapKey(list(out_ts), pair[1])

    def origin(self) -> CoordinateMapKey:
        """Key of the origin map ``[b, 0, 0, 0]`` (one row per batch index, sorted), tensor stride 0."""
        pair = (ORIGIN_STRIDE, "")
        if pair not in self._coords:
            if not self._coords:
                raise ValueError("the coordinate manager holds no coordinates yet")
            batches = torch.unique(torch.cat([c[:, 0] for c in self._coords.values()]))
            zeros = torch.zeros(batches.shape[0], 3, dtype=torch.int32, device=batches.device)
            self._coords[pair] = torch.cat([batches[:, None].to(torch.int32), zeros], dim=1)
        return CoordinateMapKey(list(ORIGIN_STRIDE), "")

    def number_of_unique_batch_indices(self) -> int:
        return self.size(self.origin())

    def native_key(self, key: CoordinateMapKey) -> tuple[tuple[int, ...], str]:
        """``key.pair`` after checking the key belongs to this manager."""
        self.native(key)
        return key.pair

    def __repr__(self) -> str:
        sets = ", ".join(f"{k}: {self.size(k)}" for k in self.keys())
        return f"CoordinateManager(D=3, maps={{{sets}}}, kernel_maps={len(self.kernel_maps)})"


class _Global:
    """ME's process-wide operation mode and shared manager (ME's API is global by design)."""

    mode: SparseTensorOperationMode | None = None
    manager: CoordinateManager | None = None


def set_sparse_tensor_operation_mode(operation_mode: SparseTensorOperationMode) -> None:
    """SHARE_COORDINATE_MANAGER: tensors built from coordinates share one global manager (clear it per batch)."""
    if not isinstance(operation_mode, SparseTensorOperationMode):
        raise TypeError(f"operation_mode must be a SparseTensorOperationMode, got {operation_mode!r}")
    _Global.mode = operation_mode


def sparse_tensor_operation_mode() -> SparseTensorOperationMode:
    return _Global.mode or SparseTensorOperationMode.SEPARATE_COORDINATE_MANAGER


def global_coordinate_manager() -> CoordinateManager | None:
    return _Global.manager


def set_global_coordinate_manager(coordinate_manager: CoordinateManager | None) -> None:
    if coordinate_manager is not None and not isinstance(coordinate_manager, CoordinateManager):
        raise TypeError(f"expected a CoordinateManager, got {type(coordinate_manager).__name__}")
    _Global.manager = coordinate_manager


def clear_global_coordinate_manager() -> None:
    _Global.manager = None
