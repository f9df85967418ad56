"""Sparse 3D convolution module."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..config import resolve
from ..functional.conv import sparse_conv
from ..kmap.kmap import KernelMap
from ..kmap.offsets import triple
from ..tensor import SparseTensor


class Conv3d(nn.Module):
    """Sparse 3D convolution (submanifold, strided, generative or transposed).

    Args:
        in_channels, out_channels: channel counts.
        kernel_size, stride, dilation: int or 3 ints (x, y, z).
        bias: add a learnable bias.
        transposed: up-sampling conv; reuses the map of the matching
            down-sampling conv (its output coordinates are this layer's input)
            and returns the finer coordinates.
        submanifold: outputs = inputs. Default: True for stride 1 and not
            transposed (TorchSparse's behaviour); False with stride 1 gives a
            generative conv whose outputs grow by the kernel.
        kmap_builder, backend, grouping, downsample_mode: per-layer overrides
            of the engine config (None = use the config).

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
        submanifold: bool | None = None,
        kmap_builder: str | None = None,
        backend: str | None = None,
        grouping: str | None = None,
        downsample_mode: str | None = None,
    ) -> None:
        super().__init__()
        for arg, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{arg} must be an int, got {type(v).__name__}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channel counts must be >= 1, got in={in_channels}, out={out_channels}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = triple(kernel_size, "kernel_size")
        self.stride = triple(stride, "stride")
        self.dilation = triple(dilation, "dilation")
        self.transposed = bool(transposed)
        unit = self.stride == (1, 1, 1)
        if submanifold is None:
            submanifold = unit and not transposed
        if submanifold and (not unit or transposed):
            raise ValueError("submanifold=True needs stride 1 and transposed=False")
        self.submanifold = bool(submanifold)
        self.kmap_builder = kmap_builder
        self.backend = backend
        self.grouping = grouping
        self.downsample_mode = downsample_mode
        volume = math.prod(self.kernel_size)
        self.weight = nn.Parameter(torch.empty(volume, in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    @property
    def kernel_volume(self) -> int:
        return self.weight.shape[0]

    @property
    def mode(self) -> str:
        if self.transposed:
            return "transposed"
        return "submanifold" if self.submanifold else "conv"

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
        s += f", mode={self.mode}"
        return s + (", bias=True" if self.bias is not None else "")

    def output_stride(self, stride: tuple[int, int, int]) -> tuple[int, int, int]:
        if self.transposed:
            for t, s in zip(stride, self.stride):
                if t % s:
                    raise ValueError(
                        f"x.stride is {stride}, not divisible by this transposed conv's stride {self.stride}; "
                        "a transposed conv must follow a down-sampling conv of the same stride"
                    )
            return tuple(t // s for t, s in zip(stride, self.stride))  # type: ignore[return-value]
        return tuple(t * s for t, s in zip(stride, self.stride))  # type: ignore[return-value]

    def kernel_map(self, x: SparseTensor) -> KernelMap:
        """The (cached) kernel map this layer uses on ``x``."""
        return x.caches.get(
            x.coords,
            x.stride,
            self.kernel_size,
            self.stride,
            self.dilation,
            self.mode,
            resolve("kmap_builder", self.kmap_builder),
            resolve("downsample_mode", self.downsample_mode),
        )

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
        out_stride = self.output_stride(x.stride)
        kmap = self.kernel_map(x)
        feats = sparse_conv(x.feats, self.weight, kmap, backend=self.backend, grouping=self.grouping)
        if self.bias is not None:
            feats = feats + self.bias
        return SparseTensor(feats, kmap.out_coords, out_stride, caches=x.caches, validate=False)
