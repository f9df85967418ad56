"""Sparse 3D convolution module."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..functional.conv import sparse_conv
from ..grouping import GroupingConfig, GroupingTuner
from ..kmap.geometry import ConvGeometry, default_padding, kernel_taps, triple
from ..kmap.kernel_map import KernelMap
from ..tensor import SparseTensor
from .maps import layer_map, layer_output, output_stride


class Conv3d(nn.Module):
    """Sparse 3D convolution (submanifold, strided, generative or transposed).

    Args:
        in_channels, out_channels: channel counts.
        kernel_size, stride, dilation: int or 3 ints (x, y, z).
        bias: add a learnable bias.
        transposed: up-sampling conv; reuses the map of the matching
            down-sampling conv (same kernel, stride, dilation and padding; its
            output coordinates are this layer's input, found by value, or by
            ``map_key``) and returns the finer coordinates in their original
            row order. Raises ``ValueError`` when there is no such map, unless
            ``generative=True``.
        padding: int or 3 ints, the padding of the equivalent dense conv: tap
            ``k`` sits at offset ``k * dilation - padding``. Default
            ``dilation * (k // 2)`` for odd ``k`` (centred), 0 for even ``k``
            (offsets ``0 .. k-1``: a k=2 s=2 conv sees exactly its window).
        submanifold: outputs = inputs. Default: True for stride 1 and not
            transposed (TorchSparse's behaviour); False with stride 1 gives a
            generative conv whose outputs grow by the kernel.
        generative: with ``transposed=True``, build the map from this layer's
            input (outputs ``c * stride + offset``) instead of reusing a
            down-sampling conv's.
        map_key: optional name under which a conv stores its map in the
            tensor's cache, and under which a transposed conv finds its
            down-sampling map (as spconv's ``indice_key``).
        taps: the kernel's shape: ``"box"`` (every tap, the default),
            ``"cross"`` / ``"star"`` (see :func:`~torchsparse_lite.kmap.geometry.kernel_taps`)
            or a sequence of full-box tap indices (x fastest). Only the kept
            taps get weights (``weight`` is [len(taps), Cin, Cout], in
            ascending tap order) and maps: each dropped tap saves its map
            search, its gather-GEMM-scatter and its weights. Tap pruning
            (:mod:`torchsparse_lite.prune.taps`) produces such layers.
        kmap_builder, backend, grouping, downsample_mode: per-layer overrides
            of the engine config (None = use the config).

    Bounds: when the input tensor has a ``spatial_range``, outputs outside the
    dense conv's output shape are dropped and the output carries that shape.

    Weight layout: [K, Cin, Cout] with K = kx * ky * kz and x varying fastest,
    as TorchSparse stores it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        dilation: int | Sequence[int] = 1,
        bias: bool = False,
        transposed: bool = False,
        *,
        padding: int | Sequence[int] | None = None,
        submanifold: bool | None = None,
        generative: bool = False,
        map_key: str | None = None,
        taps: str | Sequence[int] | None = None,
        kmap_builder: str | None = None,
        backend: str | None = None,
        grouping: str | GroupingConfig | GroupingTuner | None = None,
        downsample_mode: str | None = None,
    ) -> None:
        super().__init__()
        for arg, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{arg} must be an int, got {type(v).__name__}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channel counts must be >= 1, got in={in_channels}, out={out_channels}")
        if generative and not transposed:
            raise ValueError("generative=True is for transposed convs; a strided or stride-1 conv with "
                             "submanifold=False is already generative")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        stride3 = triple(stride, "stride")
        unit = stride3 == (1, 1, 1)
        if submanifold is None:
            submanifold = unit and not transposed
        if submanifold and (not unit or transposed):
            raise ValueError("submanifold=True needs stride 1 and transposed=False")
        mode = "transposed" if transposed else ("submanifold" if submanifold else "conv")
        kernel3 = triple(kernel_size, "kernel_size")
        subset = kernel_taps(kernel3, taps) if isinstance(taps, str) else taps
        self.geometry = ConvGeometry(kernel3, stride3, triple(dilation, "dilation"), padding, mode,
                                     offsets_subset=None if subset is None else tuple(subset))  # fmt: skip
        self.generative = bool(generative)
        self.map_key = map_key
        self.kmap_builder = kmap_builder
        self.backend = backend
        self.grouping = grouping
        self.downsample_mode = downsample_mode
        self.weight = nn.Parameter(torch.empty(self.geometry.volume, in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    kernel_size = property(lambda self: self.geometry.kernel_size)
    stride = property(lambda self: self.geometry.stride)
    dilation = property(lambda self: self.geometry.dilation)
    padding = property(lambda self: self.geometry.padding)
    mode = property(lambda self: self.geometry.mode)
    transposed = property(lambda self: self.geometry.mode == "transposed")
    submanifold = property(lambda self: self.geometry.mode == "submanifold")
    taps = property(lambda self: self.geometry.offsets_subset, doc="kept full-box tap indices, or None (every tap)")

    @property
    def kernel_volume(self) -> int:
        return self.weight.shape[0]

    def reset_parameters(self) -> None:
        fan = (self.out_channels if self.transposed else self.in_channels) * self.kernel_volume
        bound = 1.0 / math.sqrt(fan)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.dilation != (1, 1, 1):
            s += f", dilation={self.dilation}"
        if self.padding != default_padding(self.kernel_size, self.dilation):
            s += f", padding={self.padding}"
        if self.taps is not None:
            s += f", taps={len(self.taps)}/{math.prod(self.kernel_size)}"
        s += f", mode={self.mode}" + (", generative" if self.generative else "")
        return s + (", bias=True" if self.bias is not None else "")

    def output_stride(self, stride: tuple[int, int, int]) -> tuple[int, int, int]:
        """Tensor stride of the output for an input of tensor stride ``stride``."""
        return output_stride(stride, self.geometry)

    def kernel_map(self, x: SparseTensor) -> KernelMap:
        """The (cached) kernel map this layer uses on ``x``."""
        return layer_map(
            x, self.geometry, kmap_builder=self.kmap_builder, downsample_mode=self.downsample_mode,
            key=self.map_key, generative=self.generative,
        )  # fmt: skip

    def forward(self, x: SparseTensor) -> SparseTensor:
        """Apply the conv; returns a SparseTensor at the output coordinates and stride (see class doc)."""
        if not isinstance(x, SparseTensor):
            raise TypeError(f"Conv3d expects x to be a SparseTensor, got {type(x).__name__}")
        if x.feats.dim() != 2 or x.feats.shape[1] != self.in_channels:
            raise ValueError(
                f"x.feats has shape {list(x.feats.shape)} but Conv3d({self.in_channels}->{self.out_channels}) "
                f"expects [N, {self.in_channels}] (in_channels={self.in_channels}); fix the previous layer's "
                "out_channels or this layer's in_channels"
            )
        out_stride = output_stride(x.stride, self.geometry)
        kmap = self.kernel_map(x)
        feats = sparse_conv(x.feats, self.weight, kmap, backend=self.backend, grouping=self.grouping)
        if self.bias is not None:
            feats = feats + self.bias
        return layer_output(x, feats, kmap, out_stride)
