"""The sparse tensor: integer voxel coordinates, their features, a stride and a map cache."""

from __future__ import annotations

import operator
import warnings
from collections.abc import Sequence

import torch

from .kmap.cache import KernelMapCache
from .kmap.geometry import triple
from .kmap.keys import check_coords, check_coords_layout, pack
from .kmap.protocol import duplicate_error


def check_feats(feats: torch.Tensor, n: int | None = None, name: str = "feats") -> None:
    """Validate a feature matrix: floating [N, C], finite, ``N == n`` when given.

    In a traced graph (``torch.compile``, ``torch.export``) the values are not
    checked for NaN/Inf (a graph cannot branch on them); type and shape are.
    """
    if not isinstance(feats, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(feats).__name__}")
    if not feats.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got {feats.dtype}; cast with .float()")
    if feats.dim() != 2:
        raise ValueError(f"{name} must have shape [N, C], got {list(feats.shape)}")
    if n is not None and feats.shape[0] != n:
        raise ValueError(f"{name} has {feats.shape[0]} rows but coords has {n}; they must match one to one")
    if torch.compiler.is_compiling():
        return
    if feats.numel() and not bool(torch.isfinite(feats).all()):
        raise ValueError(f"{name} contains NaN or Inf values; clean the input features first")


def _checked_coords(coords: torch.Tensor) -> torch.Tensor:
    """``check_coords``; in a traced graph its layout checks only: the map-building ops check the values
    (ranges, duplicates) on the real tensors, with the same errors."""
    if not torch.compiler.is_compiling():
        return check_coords(coords, "coords")
    check_coords_layout(coords, "coords")
    return coords if coords.dtype == torch.int32 else coords.to(torch.int32)


def static_ints(values: object) -> object:
    """A sequence of ints as constants of a traced graph (unchanged in eager, and for non-sequences).

    ``torch.compile(dynamic=True)`` makes every int attribute of an input
    symbolic, strides and grid shapes included; ``operator.index`` makes
    Dynamo specialise them instead (they do not vary between scans, and a
    symbolic stride would cost graph nodes at every layer).
    """
    if not torch.compiler.is_compiling() or not isinstance(values, (tuple, list)):
        return values
    return tuple(operator.index(v) for v in values)


def check_unique(coords: torch.Tensor, name: str = "coords") -> None:
    """Raise ``ValueError`` naming one repeated row when [N, 4] range-checked ``coords`` has duplicates."""
    if coords.shape[0] < 2:
        return
    keys, counts = torch.unique(pack(coords), return_counts=True)
    if keys.shape[0] == coords.shape[0]:
        return
    raise duplicate_error(int(keys[counts > 1][0]), name)


class SparseTensor:
    """Features on the active voxels of a batch of 3D grids.

    Args:
        feats: [N, C] floating-point features.
        coords: [N, 4] integer coordinates (batch, x, y, z), unique, >= 0,
            in units of this tensor's stride (stride-2 coordinate 5 is the
            voxel spanning original voxels 10 and 11).
        stride: tensor stride relative to the original voxelization.
        spatial_range: optional grid size (X, Y, Z) used by :meth:`dense`.
        cache: the :class:`KernelMapCache` to share; a new one when None.
        caches: deprecated name of ``cache``.
        validate: check dtypes, shapes, devices, ranges, finiteness and
            uniqueness of the coordinates (layers that derive a tensor from a
            validated one skip it).
    """

    def __init__(
        self,
        feats: torch.Tensor,
        coords: torch.Tensor,
        stride: int | Sequence[int] = 1,
        *,
        spatial_range: Sequence[int] | None = None,
        cache: KernelMapCache | None = None,
        validate: bool = True,
        caches: KernelMapCache | None = None,
    ) -> None:
        if caches is not None:
            if cache is not None:
                raise ValueError("pass the kernel-map cache as cache= only (caches= is its deprecated name)")
            warnings.warn("SparseTensor(caches=) is deprecated; use cache=", DeprecationWarning, stacklevel=2)
            cache = caches
        if validate:
            coords = _checked_coords(coords)
            if isinstance(feats, torch.Tensor) and feats.device != coords.device:
                raise ValueError(
                    f"feats is on {feats.device} but coords on {coords.device}; move both to one device with .to()"
                )
            check_feats(feats, coords.shape[0], "feats")
            if not torch.compiler.is_compiling():
                check_unique(coords, "coords")
        stride, spatial_range = static_ints(stride), static_ints(spatial_range)
        if spatial_range is not None:
            spatial_range = triple(spatial_range, "spatial_range")
        self.feats = feats
        self.coords = coords
        self.stride = triple(stride, "stride")
        self.spatial_range = None if spatial_range is None else tuple(int(v) for v in spatial_range)
        self.cache = KernelMapCache() if cache is None else cache

    @property
    def caches(self) -> KernelMapCache:
        """Deprecated name of :attr:`cache`."""
        warnings.warn("SparseTensor.caches is deprecated; use .cache", DeprecationWarning, stacklevel=2)
        return self.cache

    # ----------------------------------------------------------------- basics
    @property
    def F(self) -> torch.Tensor:  # noqa: N802 - TorchSparse's short name
        return self.feats

    @property
    def C(self) -> torch.Tensor:  # noqa: N802
        return self.coords

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    @property
    def shape(self) -> torch.Size:
        return self.feats.shape

    def __len__(self) -> int:
        return self.coords.shape[0]  # no int(): a symbolic size in a traced graph stays symbolic

    @property
    def batch_size(self) -> int:
        """Number of samples: largest batch index + 1 (0 when empty).

        In a traced graph a captured scalar, declared >= 1 for a non-empty
        tensor (batch indices are >= 0; the ops check the values), so that
        layers after it (batch norm's "one value" test) need not branch on it.
        """
        if not len(self):
            return 0
        b = int(self.coords[:, 0].max()) + 1
        if torch.compiler.is_compiling():
            torch._check(b >= 1)
        return b

    def spatial_extent(self) -> tuple[int, int, int]:
        """Grid size (X, Y, Z): ``spatial_range`` if set, else max coordinate + 1."""
        if self.spatial_range is not None:
            return self.spatial_range  # type: ignore[return-value]
        if not len(self):
            return (0, 0, 0)
        return tuple(int(v) + 1 for v in self.coords[:, 1:].amax(0))  # type: ignore[return-value]

    def replace(self, feats: torch.Tensor) -> SparseTensor:
        """Same coordinates, stride and cache, new features (row count must match)."""
        if not isinstance(feats, torch.Tensor):
            raise TypeError(f"replace: feats must be a torch.Tensor, got {type(feats).__name__}")
        if feats.dim() != 2 or feats.shape[0] != self.coords.shape[0]:
            raise ValueError(
                f"replace: feats has shape {list(feats.shape)}, the tensor has {len(self)} rows; "
                "new features must be [N, C] with one row per coordinate"
            )
        # Coordinates, stride and grid are this tensor's, already checked and normalised: set them as
        # they are (no constructor normalisation per layer: cheaper, and less for Dynamo to trace).
        out = object.__new__(SparseTensor)
        out.feats, out.coords, out.stride, out.spatial_range, out.cache = (
            feats, self.coords, self.stride, self.spatial_range, self.cache
        )  # fmt: skip
        return out

    def to(self, *args, **kwargs) -> SparseTensor:
        """Like ``Tensor.to``: device and/or dtype (dtype applies to features only).

        Moving to another device starts a new map cache there.
        """
        feats = self.feats.to(*args, **kwargs)
        coords = self.coords.to(feats.device)
        cache = self.cache if feats.device == self.feats.device else None
        return SparseTensor(feats, coords, self.stride, spatial_range=self.spatial_range, cache=cache, validate=False)

    def cpu(self) -> SparseTensor:
        return self.to("cpu")

    def cuda(self, device: int | str | None = None) -> SparseTensor:
        if isinstance(device, int):
            return self.to(torch.device("cuda", device))
        return self.to(device or "cuda")

    def half(self) -> SparseTensor:
        return self.to(torch.float16)

    def float(self) -> SparseTensor:
        return self.to(torch.float32)

    def detach(self) -> SparseTensor:
        return self.replace(self.feats.detach())

    # ----------------------------------------------------------------- dense
    def dense(self, spatial_range: Sequence[int] | None = None) -> torch.Tensor:
        """Scatter into a dense [B, C, X, Y, Z] grid (zeros where inactive).

        Args:
            spatial_range: grid size; default :meth:`spatial_extent`.

        In a traced graph the range check is left to the scatter (an index
        error at run time): a graph cannot branch on the coordinates.
        """
        size = triple(spatial_range, "spatial_range") if spatial_range is not None else self.spatial_extent()
        c = self.coords.to(torch.int64)
        if not torch.compiler.is_compiling() and len(self) and any(int(c[:, i + 1].max()) >= size[i] for i in range(3)):
            raise ValueError(
                f"dense: coordinates reach {c[:, 1:].amax(0).tolist()}, outside spatial_range {size}; "
                "pass a spatial_range larger than the largest coordinate"
            )
        b = self.batch_size
        out = self.feats.new_zeros((b, *size, self.feats.shape[1]))
        out[c[:, 0], c[:, 1], c[:, 2], c[:, 3]] = self.feats
        return out.permute(0, 4, 1, 2, 3).contiguous()

    # ----------------------------------------------------------------- maths
    def _check_same_layout(self, other: SparseTensor, op: str, same_channels: bool = True) -> None:
        if not isinstance(other, SparseTensor):
            raise TypeError(f"{op}: other must be a SparseTensor, got {type(other).__name__}")
        if self.stride != other.stride:
            raise ValueError(
                f"{op}: other has stride {other.stride} but this tensor has {self.stride}; bring both to one "
                "stride (a strided or transposed Conv3d) before combining them"
            )
        if other.coords is not self.coords and not torch.equal(other.coords, self.coords):
            raise ValueError(
                f"{op}: other.coords differ from this tensor's coords ({len(other)} vs {len(self)} rows); both "
                "tensors must have the same coords in the same order (e.g. outputs of submanifold layers on one input)"
            )
        if same_channels and other.feats.shape[1] != self.feats.shape[1]:
            raise ValueError(
                f"{op}: other has {other.feats.shape[1]} channels, this tensor {self.feats.shape[1]}; "
                "use cat() to join channels"
            )
        if other.feats.device != self.feats.device:
            raise ValueError(f"{op}: other is on {other.feats.device}, this tensor on {self.feats.device}")

    def __add__(self, other: SparseTensor | torch.Tensor | float) -> SparseTensor:
        if isinstance(other, SparseTensor):
            self._check_same_layout(other, "add")
            return self.replace(self.feats + other.feats)
        return self.replace(self.feats + other)

    __radd__ = __add__

    def __mul__(self, other: torch.Tensor | float) -> SparseTensor:
        if isinstance(other, SparseTensor):
            self._check_same_layout(other, "mul")
            return self.replace(self.feats * other.feats)
        return self.replace(self.feats * other)

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return (
            f"SparseTensor(n={len(self)}, channels={self.feats.shape[1] if self.feats.dim() == 2 else '?'}, "
            f"stride={self.stride}, dtype={self.dtype}, device={self.device})"
        )


def cat(tensors: Sequence[SparseTensor]) -> SparseTensor:
    """Concatenate features along channels; all tensors must share coordinates and stride."""
    if isinstance(tensors, SparseTensor) or not tensors:
        raise ValueError("cat: tensors must be a non-empty sequence of SparseTensors")
    first = tensors[0]
    if not isinstance(first, SparseTensor):
        raise TypeError(f"cat: tensors[0] must be a SparseTensor, got {type(first).__name__}")
    for t in tensors[1:]:
        first._check_same_layout(t, "cat", same_channels=False)
    return first.replace(torch.cat([t.feats for t in tensors], dim=1))
