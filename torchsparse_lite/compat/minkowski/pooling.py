"""ME's local and global pooling layers (``MinkowskiPooling.py``, ``local_pooling_cpu.cpp``,
``global_pooling_cpu.cpp``, ``pooling_avg_kernel.hpp``).

* Local pooling writes to the same output set as a convolution with the same
  kernel and stride (see :mod:`.maps`); with ``kernel_size == stride`` every
  input goes to ``floor(c / T) * T`` (ME's stride map). Sum adds the inputs of
  each output, average divides that by the number of *active* inputs (not the
  kernel volume), max takes the channel-wise max over the active inputs.
* ``MinkowskiPoolingTranspose`` writes like a transposed convolution and
  sums the contributions (ME's CPU and GPU kernels both call the average
  kernel with averaging off).
* Global pooling reduces each batch sample to one row at ``[b, 0, 0, 0]``
  (ME's origin map, tensor stride 0), rows sorted by batch index.
"""

from __future__ import annotations

import torch
from torch import nn

from ...kmap.kernel_map import KernelMap
from ...nn.pooling import zero_unreached
from .conv import check_input, target_key
from .enums import PoolingMode
from .kernel import KernelGenerator
from .manager import CoordinateMapKey, check_dimension
from .maps import layer_map
from .tensor import SparseTensor

_SUM = (PoolingMode.LOCAL_SUM_POOLING,) + tuple(
    PoolingMode[f"GLOBAL_SUM_POOLING_{s}"] for s in ("DEFAULT", "KERNEL", "PYTORCH_INDEX")
)
_AVG = (PoolingMode.LOCAL_AVG_POOLING,) + tuple(
    PoolingMode[f"GLOBAL_AVG_POOLING_{s}"] for s in ("DEFAULT", "KERNEL", "PYTORCH_INDEX")
)


def reduce_rows(
    feats: torch.Tensor, in_idx: torch.Tensor, out_idx: torch.Tensor, n_out: int, mode: PoolingMode
) -> torch.Tensor:
    """Reduce ``feats[in_idx]`` into ``n_out`` rows at ``out_idx`` by ``mode`` (sum / average / max).

    Rows that receive nothing are 0. Differentiable (index_add / scatter_reduce).
    """
    c = feats.shape[1]
    gathered = feats.index_select(0, in_idx)
    if mode in _SUM or mode in _AVG:
        out = feats.new_zeros(n_out, c).index_add(0, out_idx, gathered)
        if mode in _AVG:
            count = torch.bincount(out_idx, minlength=n_out).clamp(min=1).to(feats.dtype)
            out = out / count[:, None]
        return out
    out = feats.new_full((n_out, c), float("-inf"))
    out = out.scatter_reduce(0, out_idx[:, None].expand(-1, c), gathered, reduce="amax", include_self=False)
    hit = torch.zeros(n_out, dtype=torch.bool, device=feats.device)
    hit[out_idx] = True
    return zero_unreached(out, hit)


def _check_mode(mode: object, allowed: tuple[PoolingMode, ...], owner: str) -> PoolingMode:
    if mode not in allowed:
        raise ValueError(f"{owner}: pooling mode must be one of {[m.name for m in allowed]}, got {mode!r}")
    return mode  # type: ignore[return-value]


class MinkowskiPoolingBase(nn.Module):
    """Local pooling over a kernel window (see the module doc)."""

    def __init__(
        self,
        kernel_size: object,
        stride: object = 1,
        dilation: object = 1,
        kernel_generator: KernelGenerator | None = None,
        is_transpose: bool = False,
        pooling_mode: PoolingMode = PoolingMode.LOCAL_AVG_POOLING,
        dimension: int | None = -1,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.dimension = check_dimension(dimension, owner)
        local = (PoolingMode.LOCAL_SUM_POOLING, PoolingMode.LOCAL_AVG_POOLING, PoolingMode.LOCAL_MAX_POOLING)
        self.pooling_mode = _check_mode(pooling_mode, local, owner)
        if kernel_generator is None:
            kernel_generator = KernelGenerator(kernel_size, stride, dilation, dimension=self.dimension)
        elif not isinstance(kernel_generator, KernelGenerator):
            raise TypeError(f"{owner}: kernel_generator must be a KernelGenerator, got {kernel_generator!r}")
        self.kernel_generator = kernel_generator
        self.is_transpose = bool(is_transpose)

    def kernel_map(self, input: SparseTensor, coordinates: object = None) -> tuple[KernelMap, CoordinateMapKey]:
        return layer_map(
            input.coordinate_manager,
            input.coordinate_map_key,
            self.kernel_generator,
            transpose=self.is_transpose,
            is_pool=True,
            target=target_key(input, coordinates),
        )

    def forward(self, input: SparseTensor, coordinates: SparseTensor | CoordinateMapKey | None = None) -> SparseTensor:
        input = check_input(self, input)
        kmap, out_key = self.kernel_map(input, coordinates)
        mode = PoolingMode.LOCAL_SUM_POOLING if self.is_transpose else self.pooling_mode
        feats = reduce_rows(input.F, kmap.in_idx, kmap.out_idx, kmap.n_out, mode)
        return SparseTensor(feats, coordinate_map_key=out_key, coordinate_manager=input.coordinate_manager)

    def __repr__(self) -> str:
        kg = self.kernel_generator
        return (
            f"{type(self).__name__}(kernel_size={kg.kernel_size}, stride={kg.kernel_stride}, "
            f"dilation={kg.kernel_dilation})"
        )


class MinkowskiAvgPooling(MinkowskiPoolingBase):
    """Average of the active inputs in each output's window (divides by their number, not the volume)."""

    def __init__(
        self,
        kernel_size: object = -1,
        stride: object = 1,
        dilation: object = 1,
        kernel_generator: KernelGenerator | None = None,
        dimension: int | None = None,
    ) -> None:
        super().__init__(
            kernel_size, stride, dilation, kernel_generator, False, PoolingMode.LOCAL_AVG_POOLING, dimension
        )


class MinkowskiSumPooling(MinkowskiPoolingBase):
    """Sum of the active inputs in each output's window."""

    def __init__(
        self,
        kernel_size: object,
        stride: object = 1,
        dilation: object = 1,
        kernel_generator: KernelGenerator | None = None,
        dimension: int | None = None,
    ) -> None:
        super().__init__(
            kernel_size, stride, dilation, kernel_generator, False, PoolingMode.LOCAL_SUM_POOLING, dimension
        )


class MinkowskiMaxPooling(MinkowskiPoolingBase):
    """Channel-wise max over the active inputs in each output's window."""

    def __init__(
        self,
        kernel_size: object,
        stride: object = 1,
        dilation: object = 1,
        kernel_generator: KernelGenerator | None = None,
        dimension: int | None = None,
    ) -> None:
        super().__init__(
            kernel_size, stride, dilation, kernel_generator, False, PoolingMode.LOCAL_MAX_POOLING, dimension
        )


class MinkowskiPoolingTranspose(MinkowskiPoolingBase):
    """Un-pooling: copies (sums) each input onto the outputs of its transposed window."""

    def __init__(
        self,
        kernel_size: object,
        stride: object,
        dilation: object = 1,
        kernel_generator: KernelGenerator | None = None,
        expand_coordinates: bool = False,
        dimension: int | None = None,
    ) -> None:
        if kernel_generator is None:
            kernel_generator = KernelGenerator(
                kernel_size,
                stride,
                dilation,
                expand_coordinates=expand_coordinates,
                dimension=check_dimension(dimension, "MinkowskiPoolingTranspose"),
            )
        super().__init__(
            kernel_size, stride, dilation, kernel_generator, True, PoolingMode.LOCAL_AVG_POOLING, dimension
        )


class MinkowskiGlobalPooling(nn.Module):
    """Reduce every batch sample to one row at ``[b, 0, 0, 0]`` (tensor stride 0, rows by batch index)."""

    def __init__(self, mode: PoolingMode = PoolingMode.GLOBAL_AVG_POOLING_PYTORCH_INDEX) -> None:
        super().__init__()
        allowed = tuple(m for m in PoolingMode if m.name.startswith("GLOBAL_"))
        self.pooling_mode = _check_mode(mode, allowed, type(self).__name__)

    def forward(self, input: SparseTensor, coordinates: object = None) -> SparseTensor:
        input = check_input(self, input)
        if coordinates is not None:
            raise NotImplementedError("global pooling onto given coordinates is not supported")
        manager = input.coordinate_manager
        out_key = manager.origin()
        batches = manager.native(out_key)[:, 0].contiguous()
        in_batch = manager.native(input.coordinate_map_key)[:, 0].contiguous()
        rows = torch.searchsorted(batches, in_batch).clamp(max=max(batches.shape[0] - 1, 0))
        if len(input) and not bool((batches[rows] == in_batch).all()):
            raise ValueError("the manager's origin map lacks batch indices of this tensor (coordinates added later?)")
        idx = torch.arange(len(input), device=input.device)
        feats = reduce_rows(input.F, idx, rows, batches.shape[0], self.pooling_mode)
        return SparseTensor(feats, coordinate_map_key=out_key, coordinate_manager=manager)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.pooling_mode})"


class MinkowskiGlobalSumPooling(MinkowskiGlobalPooling):
    def __init__(self, mode: PoolingMode = PoolingMode.GLOBAL_SUM_POOLING_PYTORCH_INDEX) -> None:
        super().__init__(mode)


class MinkowskiGlobalAvgPooling(MinkowskiGlobalPooling):
    def __init__(self, mode: PoolingMode = PoolingMode.GLOBAL_AVG_POOLING_PYTORCH_INDEX) -> None:
        super().__init__(mode)


class MinkowskiGlobalMaxPooling(MinkowskiGlobalPooling):
    def __init__(self, mode: PoolingMode = PoolingMode.GLOBAL_MAX_POOLING_PYTORCH_INDEX) -> None:
        super().__init__(mode)
