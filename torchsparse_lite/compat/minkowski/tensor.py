"""``MinkowskiEngine.SparseTensor``: features on a coordinate set of a shared coordinate manager.

Coordinates are ``[N, 4]`` int32 ``(batch, x, y, z)``, batch first, in
original voxel units (a tensor of stride 2 has coordinates that are multiples
of 2), exactly as ME 0.5.4's. Building a tensor from coordinates removes
duplicates (``quantization_mode``; rows keep their first occurrence's input
order); tensors built by layers share their input's manager and name their
coordinates by ``coordinate_map_key``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ...kmap.keys import pack
from .enums import SparseTensorOperationMode, SparseTensorQuantizationMode
from .layout import check_coordinates, check_features, dense_grid, quantize_features
from .manager import CoordinateManager, CoordinateMapKey, _Global, int3, unique_first

MANAGER_DIFFERENT = (
    "SparseTensors must share the same coordinate manager for this operation: build the second tensor with "
    "coordinate_manager=first.coordinate_manager (layers do this), or use "
    "set_sparse_tensor_operation_mode(SparseTensorOperationMode.SHARE_COORDINATE_MANAGER)"
)


class SparseTensor:
    """A sparse tensor (ME 0.5.4's constructor and properties).

    Args:
        features: [N, C] floating-point features.
        coordinates: [N, 4] integer (batch, x, y, z) in original voxel units,
            multiples of ``tensor_stride``; or None with
            ``coordinate_map_key`` + ``coordinate_manager``.
        tensor_stride: int or 3 ints.
        coordinate_map_key, coordinate_manager: reuse a coordinate set.
        quantization_mode: how duplicate coordinates merge their features.
        allocator_type, minkowski_algorithm: accepted, ignored.
        requires_grad: set on the features.
        device: move features and coordinates there.
    """

    def __init__(
        self,
        features: torch.Tensor,
        coordinates: torch.Tensor | None = None,
        tensor_stride: int | Sequence[int] = 1,
        coordinate_map_key: CoordinateMapKey | None = None,
        coordinate_manager: CoordinateManager | None = None,
        quantization_mode: SparseTensorQuantizationMode = SparseTensorQuantizationMode.RANDOM_SUBSAMPLE,
        allocator_type: object = None,
        minkowski_algorithm: object = None,
        requires_grad: bool | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        features = check_features(features)
        if not isinstance(quantization_mode, SparseTensorQuantizationMode):
            raise TypeError(f"quantization_mode must be a SparseTensorQuantizationMode, got {quantization_mode!r}")
        if coordinate_manager is not None and not isinstance(coordinate_manager, CoordinateManager):
            raise TypeError(f"coordinate_manager must be a CoordinateManager, got {type(coordinate_manager).__name__}")
        if device is not None:
            features = features.to(device)
            coordinates = coordinates.to(device) if isinstance(coordinates, torch.Tensor) else coordinates
        self.quantization_mode = quantization_mode
        self._C: torch.Tensor | None = None
        self._D = 3
        if coordinate_map_key is not None:
            self._from_key(features, coordinates, coordinate_map_key, coordinate_manager)
        elif coordinates is None:
            raise ValueError("Either coordinates or the (coordinate_map_key, coordinate_manager) pair must be provided")
        else:
            self._from_coordinates(features, coordinates, tensor_stride, coordinate_manager)
        if requires_grad is not None:
            self._F.requires_grad_(requires_grad)

    def _from_key(self, features, coordinates, key, manager) -> None:
        if not isinstance(key, CoordinateMapKey):
            raise TypeError(f"coordinate_map_key must be a CoordinateMapKey, got {type(key).__name__}")
        if manager is None:
            raise ValueError("coordinate_manager must be provided together with coordinate_map_key")
        if coordinates is not None:
            raise ValueError("coordinates must not be given together with coordinate_map_key")
        if not manager.exists(key):
            raise ValueError(f"{key} is not a coordinate map of the given coordinate_manager")
        if manager.size(key) != features.shape[0]:
            raise ValueError(f"features has {features.shape[0]} rows but {key} holds {manager.size(key)} coordinates")
        self._F, self._manager, self.coordinate_map_key = features, manager, key
        self.unique_index = self.inverse_mapping = None

    def _from_coordinates(self, features, coordinates, tensor_stride, manager) -> None:
        coordinates = check_coordinates(coordinates, features.shape[0])
        if coordinates.device != features.device:
            raise ValueError(f"features are on {features.device} but coordinates on {coordinates.device}")
        ts = int3(tensor_stride, "tensor_stride")
        if manager is None:
            manager = _shared_or_new()
        key, (unique, inverse) = manager.insert_and_map(coordinates, ts)
        self._F = quantize_features(features, unique, inverse, self.quantization_mode)
        self._manager, self.coordinate_map_key = manager, key
        self.unique_index, self.inverse_mapping = unique, inverse

    # ------------------------------------------------------------ accessors
    @property
    def F(self) -> torch.Tensor:  # noqa: N802 - ME's name
        return self._F

    @property
    def features(self) -> torch.Tensor:
        return self._F

    @property
    def C(self) -> torch.Tensor:  # noqa: N802 - ME's name
        return self.coordinates

    @property
    def coordinates(self) -> torch.Tensor:
        """[N, 4] int32 (batch, x, y, z) in original voxel units."""
        if self._C is None:
            self._C = self._manager.get_coordinates(self.coordinate_map_key)
        return self._C

    @property
    def coordinate_manager(self) -> CoordinateManager:
        return self._manager

    @property
    def coordinate_key(self) -> CoordinateMapKey:
        return self.coordinate_map_key

    @property
    def tensor_stride(self) -> list[int]:
        return self.coordinate_map_key.get_tensor_stride()

    @property
    def D(self) -> int:  # noqa: N802 - ME's name
        return self._D

    dimension = D

    def __len__(self) -> int:
        return len(self._F)

    def size(self) -> torch.Size:
        return self._F.size()

    shape = property(lambda self: self._F.shape)
    device = property(lambda self: self._F.device)
    dtype = property(lambda self: self._F.dtype)
    requires_grad = property(lambda self: self._F.requires_grad)

    def requires_grad_(self, requires_grad: bool = True) -> SparseTensor:
        self._F.requires_grad_(requires_grad)
        return self

    def get_device(self) -> int:
        return self._F.get_device()

    # ------------------------------------------------- in-place conversions
    def float(self) -> SparseTensor:
        self._F = self._F.float()
        return self

    def double(self) -> SparseTensor:
        self._F = self._F.double()
        return self

    def detach(self) -> SparseTensor:
        self._F = self._F.detach()
        return self

    def to(self, *args: object, **kwargs: object) -> SparseTensor:
        """A tensor with features converted like ``Tensor.to``; a device move re-inserts the coordinates there.

        (ME 0.5.4 has no ``to``: there one rebuilds the tensor on the device.)
        """
        feats = self._F.to(*args, **kwargs)
        if feats.device == self._F.device:
            return SparseTensor(feats, coordinate_map_key=self.coordinate_map_key, coordinate_manager=self._manager)
        coords = self.coordinates.to(feats.device)
        return SparseTensor(feats, coords, tensor_stride=self.tensor_stride, coordinate_manager=CoordinateManager(3))

    def cpu(self) -> SparseTensor:
        return self.to("cpu")

    def cuda(self, device: int | str | None = None) -> SparseTensor:
        return self.to(torch.device("cuda", device) if isinstance(device, int) else (device or "cuda"))

    # ------------------------------------------------------ decomposition
    @property
    def decomposition_permutations(self) -> list[torch.Tensor]:
        """Rows of each batch index ``0 .. max`` (in row order)."""
        batch = self.coordinates[:, 0].long()
        n = int(batch.max()) + 1 if len(batch) else 0
        return [torch.nonzero(batch == b).flatten() for b in range(n)]

    @property
    def decomposed_coordinates(self) -> list[torch.Tensor]:
        return [self.coordinates[rows, 1:] for rows in self.decomposition_permutations]

    @property
    def decomposed_features(self) -> list[torch.Tensor]:
        return [self._F[rows] for rows in self.decomposition_permutations]

    @property
    def decomposed_coordinates_and_features(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        rows = self.decomposition_permutations
        return [self.coordinates[r, 1:] for r in rows], [self._F[r] for r in rows]

    def coordinates_at(self, batch_index: int) -> torch.Tensor:
        return self.coordinates[self.coordinates[:, 0] == batch_index, 1:]

    def features_at(self, batch_index: int) -> torch.Tensor:
        return self._F[self.coordinates[:, 0] == batch_index]

    def coordinates_and_features_at(self, batch_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.coordinates[:, 0] == batch_index
        return self.coordinates[rows, 1:], self._F[rows]

    # --------------------------------------------------------------- dense
    def dense(
        self,
        shape: torch.Size | None = None,
        min_coordinate: torch.Tensor | int | None = None,
        contract_stride: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | int, torch.Tensor]:
        """ME's ``dense``: ([B, C, X, Y, Z] grid, min_coordinate, tensor_stride).

        Grid index ``(c - min_coordinate) // tensor_stride`` (``contract_stride``);
        ``min_coordinate=None`` uses the coordinates as they are (they must be
        >= 0) and returns their minimum, as ME does.
        """
        return dense_grid(self.C, self._F, self.tensor_stride, shape, min_coordinate, contract_stride)

    # ---------------------------------------------------------- arithmetic
    def _same_key(self, other: object, op: str) -> SparseTensor:
        if not isinstance(other, SparseTensor):
            raise TypeError(f"{op}: other must be a SparseTensor, got {type(other).__name__}")
        if other._manager is not self._manager:
            raise ValueError(f"{op}: {MANAGER_DIFFERENT}")
        if other.coordinate_map_key != self.coordinate_map_key:
            raise ValueError(
                f"{op}: SparseTensors must have the same coordinate_map_key, got {self.coordinate_map_key} and "
                f"{other.coordinate_map_key}; use the out-of-place operator for a union of coordinate sets"
            )
        return other

    def _binary(self, other: object, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], op: str) -> SparseTensor:
        if isinstance(other, SparseTensor):
            if other._manager is not self._manager:
                raise ValueError(f"{op}: {MANAGER_DIFFERENT}")
            if other.coordinate_map_key == self.coordinate_map_key:
                return self._like(fn(self._F, other._F))
            return _union(self, other, fn)
        if not isinstance(other, (torch.Tensor, int, float)) or isinstance(other, bool):
            raise TypeError(
                f"{op}: other must be a SparseTensor, a torch.Tensor or a number, got {type(other).__name__}"
            )
        return self._like(fn(self._F, other))

    def _like(self, features: torch.Tensor) -> SparseTensor:
        return SparseTensor(features, coordinate_map_key=self.coordinate_map_key, coordinate_manager=self._manager)

    def __add__(self, other):
        return self._binary(other, torch.add, "add")

    def __sub__(self, other):
        return self._binary(other, torch.sub, "sub")

    def __mul__(self, other):
        return self._binary(other, torch.mul, "mul")

    def __truediv__(self, other):
        return self._binary(other, torch.div, "div")

    def __pow__(self, power):
        return self._like(self._F**power)

    def __neg__(self):
        return self._like(-self._F)

    def __iadd__(self, other):
        self._F = self._F + self._same_key(other, "+=")._F
        return self

    def __isub__(self, other):
        self._F = self._F - self._same_key(other, "-=")._F
        return self

    def __imul__(self, other):
        self._F = self._F * self._same_key(other, "*=")._F
        return self

    def __itruediv__(self, other):
        self._F = self._F / self._same_key(other, "/=")._F
        return self

    # ---------------------------------------------------- not supported here
    def _unsupported(self, name: str) -> None:
        raise NotImplementedError(
            f"SparseTensor.{name} (TensorField / interpolation) is not supported by torchsparse_lite's "
            "MinkowskiEngine layer"
        )

    def slice(self, X):  # noqa: N803 - ME's argument name
        self._unsupported("slice")

    def cat_slice(self, X):  # noqa: N803
        self._unsupported("cat_slice")

    def interpolate(self, X):  # noqa: N803
        self._unsupported("interpolate")

    def features_at_coordinates(self, query_coordinates):
        self._unsupported("features_at_coordinates")

    def sparse(self, *args, **kwargs):
        self._unsupported("sparse")

    def __repr__(self) -> str:
        return (
            f"SparseTensor(n={len(self)}, channels={self._F.shape[1]}, tensor_stride={self.tensor_stride}, "
            f"coordinate_map_key={self.coordinate_map_key}, dtype={self.dtype}, device={self.device})"
        )


def _shared_or_new() -> CoordinateManager:
    """The global manager in SHARE_COORDINATE_MANAGER mode (created on first use), else a new one."""
    if _Global.mode is SparseTensorOperationMode.SHARE_COORDINATE_MANAGER:
        if _Global.manager is None:
            _Global.manager = CoordinateManager(3)
        return _Global.manager
    return CoordinateManager(3)


def _union(a: SparseTensor, b: SparseTensor, fn: Callable) -> SparseTensor:
    """``fn`` on the union of two coordinate sets; a voxel missing from one side reads as 0 (ME's rule)."""
    manager = a._manager
    if a.coordinate_map_key.pair[0] != b.coordinate_map_key.pair[0]:
        raise ValueError(
            f"cannot combine tensors of tensor strides {a.tensor_stride} and {b.tensor_stride}; bring them to one "
            "stride first"
        )
    ca, cb = manager.native(a.coordinate_map_key), manager.native(b.coordinate_map_key)
    both = torch.cat([ca, cb])
    unique, inverse = unique_first(pack(both))
    ts = a.coordinate_map_key.pair[0]
    out_key = manager.register(both[unique], ts, "union")
    n_out = unique.shape[0]
    left = a._F.new_zeros(n_out, a._F.shape[1]).index_copy(0, inverse[: len(ca)], a._F)
    right = b._F.new_zeros(n_out, b._F.shape[1]).index_copy(0, inverse[len(ca) :], b._F)
    return SparseTensor(fn(left, right), coordinate_map_key=out_key, coordinate_manager=manager)
