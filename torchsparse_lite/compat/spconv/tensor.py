"""spconv 2.x's ``SparseConvTensor`` on the native engine.

The tensor keeps spconv's public attributes (``features``, ``indices``,
``spatial_shape``, ``batch_size``, ``indice_dict``, ``grid``, ``voxel_num``,
``benchmark``) and, privately, the native coordinates and the
:class:`~torchsparse_lite.kmap.cache.KernelMapCache` that every tensor derived
from it shares (so layers find each other's maps, by coordinates or by
``indice_key``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ...kmap.cache import KernelMapCache
from .indices import IndiceData, check_tensor_args, to_native

__all__ = ["IndiceData", "SparseConvTensor"]


class SparseConvTensor:
    """Features on the active sites of a batch of 1-D, 2-D or 3-D grids (spconv's layout).

    Args:
        features: [N, C] floating-point features.
        indices: [N, ndim + 1] integer (int32 kept, others converted) rows
            ``(batch, a0, .., a_{ndim-1})``, unique, ``0 <= a_i < spatial_shape[i]``,
            ``0 <= batch < batch_size``.
        spatial_shape: grid size per spatial axis (ndim values).
        batch_size: number of samples.
        grid, voxel_num, benchmark, permanent_thrust_allocator, enable_timer,
            force_algo: accepted for spconv compatibility; ``grid`` and
            ``voxel_num`` are stored, the others do not change the computation.
        indice_dict: maps of an earlier tensor (``other.indice_dict``), so
            ``indice_key`` lookups keep working on a rebuilt tensor.

    Raises:
        TypeError / ValueError: bad dtypes, shapes, devices, indices outside
            ``spatial_shape`` or batch indices outside ``[0, batch_size)``,
            duplicate rows (spconv would silently alias them).
    """

    def __init__(
        self,
        features: torch.Tensor,
        indices: torch.Tensor,
        spatial_shape: Sequence[int] | np.ndarray,
        batch_size: int,
        grid: torch.Tensor | None = None,
        voxel_num: torch.Tensor | None = None,
        indice_dict: dict | None = None,
        benchmark: bool = False,
        permanent_thrust_allocator: bool = False,
        enable_timer: bool = False,
        force_algo: object | None = None,
    ) -> None:
        indices, shape, batch_size = check_tensor_args(features, indices, spatial_shape, batch_size)
        cache = KernelMapCache()
        if indice_dict is None:
            indice_dict = {}
        elif not isinstance(indice_dict, dict) or not all(isinstance(v, IndiceData) for v in indice_dict.values()):
            raise TypeError(
                "indice_dict must be the indice_dict of a torchsparse_lite.compat.spconv SparseConvTensor "
                "(a dict of IndiceData); real spconv tensors' pairs cannot be reused here"
            )
        else:
            for data in indice_dict.values():
                cache.named[data.map_key] = data.kmap
        self._setup(features, indices, shape, batch_size, indice_dict, cache)
        self.grid = torch.Tensor() if grid is None else grid
        self.voxel_num = voxel_num
        self.benchmark = bool(benchmark)
        self.force_algo = force_algo

    # ------------------------------------------------------------ internals
    def _setup(
        self,
        features: torch.Tensor,
        indices: torch.Tensor,
        shape: list[int],
        batch_size: int,
        indice_dict: dict,
        cache: KernelMapCache,
        native: torch.Tensor | None = None,
    ) -> None:
        self._features = features
        self.indices = indices
        self.spatial_shape = [int(v) for v in shape]
        self.batch_size = int(batch_size)
        self.indice_dict = indice_dict
        self.benchmark_record: dict = {}
        self.thrust_allocator = None
        self.int8_scale = None
        self._cache = cache
        self._native_src = indices if native is not None else None
        self._native = native

    def _derive(
        self,
        features: torch.Tensor,
        indices: torch.Tensor | None = None,
        spatial_shape: Sequence[int] | None = None,
        indice_dict: dict | None = None,
        native: torch.Tensor | None = None,
    ) -> SparseConvTensor:
        """A tensor on this one's batch, grid buffer and map cache (no validation: layers' outputs)."""
        out = object.__new__(SparseConvTensor)
        same = indices is None
        out._setup(
            features,
            self.indices if same else indices,
            self.spatial_shape if spatial_shape is None else spatial_shape,
            self.batch_size,
            self.indice_dict if indice_dict is None else indice_dict,
            self._cache,
            self._native_coords() if same else native,
        )
        out.grid, out.voxel_num = self.grid, self.voxel_num
        out.benchmark, out.force_algo = self.benchmark, self.force_algo
        out.benchmark_record = self.benchmark_record
        return out

    def _native_coords(self) -> torch.Tensor:
        """[N, 4] int32 native coordinates (batch, x=a0, y=a1, z=a2) of :attr:`indices`."""
        if self._native_src is not self.indices:
            self._native = to_native(self.indices)
            self._native_src = self.indices
        return self._native

    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return len(self.spatial_shape)

    # --------------------------------------------------------------- spconv
    def __repr__(self) -> str:
        return f"SparseConvTensor[shape={self._features.shape}]"

    @property
    def features(self) -> torch.Tensor:
        return self._features

    @features.setter
    def features(self, value: torch.Tensor) -> None:
        raise ValueError(
            "you can't set features directly (as in spconv 2.x); use 'x = x.replace_feature(new_features)'"
        )

    @property
    def is_quantized(self) -> bool:
        return self._features.dtype == torch.qint8

    @property
    def spatial_size(self) -> int:
        """Number of sites of one sample's grid (``prod(spatial_shape)``)."""
        return int(np.prod(self.spatial_shape))

    def replace_feature(self, feature: torch.Tensor) -> SparseConvTensor:
        """Same indices, grid and maps, new features ``[N, C']``."""
        if not isinstance(feature, torch.Tensor):
            raise TypeError(f"replace_feature: feature must be a torch.Tensor, got {type(feature).__name__}")
        if feature.dim() != 2 or feature.shape[0] != self.indices.shape[0]:
            raise ValueError(
                f"replace_feature: feature has shape {list(feature.shape)} but the tensor has "
                f"{self.indices.shape[0]} indices; new features must be [N, C] with one row per index"
            )
        return self._derive(feature)

    def shadow_copy(self) -> SparseConvTensor:
        """A new tensor object sharing every member (features, indices, indice_dict, maps)."""
        return self._derive(self._features)

    def minus(self) -> SparseConvTensor:
        return self.replace_feature(-self._features)

    def select_by_index(self, valid_indices: torch.Tensor) -> SparseConvTensor:
        """The rows ``valid_indices`` (index or mask); the maps are dropped, as the rows changed."""
        indices = self.indices[valid_indices]
        out = self._derive(self._features[valid_indices], indices, indice_dict={}, native=None)
        out._cache = KernelMapCache()
        return out

    def find_indice_pair(self, key: str | None) -> IndiceData | None:
        """The :class:`IndiceData` stored under ``key`` in :attr:`indice_dict`, or None."""
        if key is None:
            return None
        return self.indice_dict.get(key)

    def dense(self, channels_first: bool = True) -> torch.Tensor:
        """Scatter into a dense ``[B, C, *spatial_shape]`` (``[B, *spatial_shape, C]`` if not channels_first)."""
        c = self._features.shape[1]
        idx = tuple(self.indices.to(self._features.device).long().t())
        if not channels_first:
            out = self._features.new_zeros([self.batch_size, *self.spatial_shape, c])
            out[idx] = self._features
            return out
        # Scatter straight into the channels-first grid through a channel-last view: no
        # full-grid permute copy (spconv's way), which costs more than the scatter itself.
        out = self._features.new_zeros([self.batch_size, c, *self.spatial_shape])
        out.permute(0, *range(2, self.ndim + 2), 1)[idx] = self._features
        return out

    @classmethod
    def from_dense(cls, x: torch.Tensor) -> SparseConvTensor:
        """From a channel-last dense ``[B, *spatial, C]`` tensor: sites whose C-vector is non-zero."""
        if not isinstance(x, torch.Tensor) or x.dim() < 3:
            raise ValueError("from_dense expects a channel-last dense tensor [B, *spatial, C] with 1-3 spatial axes")
        sp = x.to_sparse(x.dim() - 1).coalesce()
        return cls(sp.values(), sp.indices().t().contiguous().int(), list(x.shape[1:-1]), x.shape[0])

    def _operand(self, other: SparseConvTensor | torch.Tensor, op: str) -> torch.Tensor:
        if isinstance(other, SparseConvTensor):
            if other.indices is not self.indices and not torch.equal(other.indices, self.indices):
                raise ValueError(
                    f"{op}: the tensors' indices differ; '+' needs the same indices in the same order "
                    "(use torchsparse_lite.compat.spconv.functional.sparse_add for misaligned tensors)"
                )
            return other.features
        if isinstance(other, torch.Tensor):
            return other
        raise TypeError(f"{op}: other must be a SparseConvTensor or a torch.Tensor, got {type(other).__name__}")

    def __add__(self, other: SparseConvTensor | torch.Tensor) -> SparseConvTensor:
        return self.replace_feature(self._features + self._operand(other, "add"))

    __radd__ = __add__
    __iadd__ = __add__  # spconv's in-place add raises through its features setter; a new tensor is returned
