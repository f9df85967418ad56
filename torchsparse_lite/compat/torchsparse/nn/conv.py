"""``torchsparse.nn.Conv3d`` (TorchSparse 2.1) as one native geometry, the shared map cache and ``sparse_conv``.

The module keeps TorchSparse's parameters -- ``kernel`` ``[K, Cin, Cout]``
in TorchSparse's tap order (``[Cin, Cout]`` for a 1x1x1 stride-1 conv) and
``bias`` ``[Cout]`` -- so a TorchSparse checkpoint loads with
``load_state_dict(strict=True)``; the forward pass reorders the taps to the
native order with an ``index_select`` (autograd flows through it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ....functional.conv import sparse_conv
from ....interop.weights import torchsparse_tap_order
from ....kmap.geometry import ConvGeometry, triple
from ....nn.maps import layer_map
from ..tensor import SparseTensor
from .functional import check_conv_config, layer_modes
from .generative import generative_conv
from .plan import map_key, module_padding, out_spatial_range, plan_conv

__all__ = ["Conv3d"]


class Conv3d(nn.Module):
    """TorchSparse 2.1 sparse conv: ``Conv3d(in, out, kernel_size=3, stride=1, padding=0, dilation=1, bias=False,
    transposed=False, generative=False, config=None)``.

    Semantics (see :mod:`.plan`): stride 1 is submanifold; a strided conv
    makes coarser coordinates (divided by the stride); ``transposed=True``
    reuses the map of the strided conv with the same kernel and stride that
    made its input and returns that conv's input coordinates;
    ``generative=True`` (with ``transposed``, ``kmap_mode="hashmap"`` and a
    ``spatial_range``) grows new coordinates (:mod:`.generative`).

    Raises:
        NotImplementedError: ``dilation != 1`` (TorchSparse 2.1's map kernels
            ignore dilation, so there is no behaviour to mirror).
        ValueError / TypeError: bad channel counts, kernel, stride, padding
            or config.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        dilation: int = 1,
        bias: bool = False,
        transposed: bool = False,
        generative: bool = False,
        config: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__()
        for arg, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{arg} must be a positive int, got {v!r}")
        if dilation != 1:
            raise NotImplementedError(
                f"dilation={dilation!r}: TorchSparse 2.1 ignores dilation in its kernel maps, so torchsparse_lite's "
                "TorchSparse layer refuses it; use torchsparse_lite.nn.Conv3d(..., dilation=d) for a dilated conv"
            )
        if generative and not transposed:
            raise ValueError("generative=True needs transposed=True (TorchSparse's generative transposed conv)")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = triple(kernel_size, "kernel_size")
        self.stride = triple(stride, "stride")
        self.dilation = 1
        self.padding = module_padding(self.kernel_size, self.stride, padding)
        self.transposed, self.generative = bool(transposed), bool(generative)
        self._config = None if config is None else check_conv_config(config)
        self.kernel_volume = math.prod(self.kernel_size)
        shape = (in_channels, out_channels)
        if self.kernel_volume > 1 or self.stride != (1, 1, 1):
            shape = (self.kernel_volume, *shape)
        self.kernel = nn.Parameter(torch.zeros(shape))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        order = torchsparse_tap_order(self.kernel_size)
        identity = bool(torch.equal(order, torch.arange(self.kernel_volume)))
        self.register_buffer("_tap_order", None if identity else order, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = 1 / math.sqrt((self.out_channels if self.transposed else self.in_channels) * self.kernel_volume)
        nn.init.uniform_(self.kernel, -std, std)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -std, std)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != (1, 1, 1):
            s += f", stride={self.stride}"
        if self.bias is None:
            s += ", bias=False"
        return s + (", transposed=True" if self.transposed else "") + (", generative=True" if self.generative else "")

    def native_weight(self) -> torch.Tensor:
        """``kernel`` as the native ``[K, Cin, Cout]``, x fastest (differentiable)."""
        kernel = self.kernel if self.kernel.dim() == 3 else self.kernel.unsqueeze(0)
        return kernel if self._tap_order is None else kernel.index_select(0, self._tap_order)

    def _check_input(self, x: SparseTensor) -> None:
        if not isinstance(x, SparseTensor):
            raise TypeError(f"Conv3d expects a torchsparse SparseTensor, got {type(x).__name__}")
        if x.feats.dim() != 2 or x.feats.shape[1] != self.in_channels:
            raise ValueError(
                f"input feats have shape {list(x.feats.shape)} but Conv3d({self.in_channels}, {self.out_channels}) "
                f"expects [N, {self.in_channels}]"
            )
        if not x.feats.dtype.is_floating_point:
            raise TypeError(f"input feats must be floating point, got {x.feats.dtype}; cast with .float()")
        if x.coords.shape[1] != 4:
            raise ValueError("Conv3d needs [N, 4] (batch, x, y, z) coords; collate single samples with sparse_collate")

    def forward(self, input: SparseTensor) -> SparseTensor:
        """Apply the conv; the output shares ``input``'s caches (a generative conv starts new maps)."""
        self._check_input(input)
        kmap_mode, downsample_mode = layer_modes(self._config)
        weight = self.native_weight()
        if self.kernel_size == (1, 1, 1) and self.stride == (1, 1, 1):
            feats = input.feats.matmul(weight[0])
            out = input._with_feats(feats if self.bias is None else feats + self.bias)
        elif self.transposed and self.generative:
            out = generative_conv(input, weight, self.bias, self.kernel_size, self.stride, self.padding, kmap_mode)
        else:
            out = self._sparse_forward(input, weight, kmap_mode, downsample_mode)
        out._caches.cmaps.setdefault(input.stride, (input.coords, input.spatial_range))
        out._caches.cmaps.setdefault(out.stride, (out.coords, out.spatial_range))
        return out

    def _sparse_forward(self, x: SparseTensor, weight: torch.Tensor, kmap_mode: str, downsample_mode: str):
        """Strided, submanifold or (map-reusing) transposed conv through the native cache."""
        if self.transposed:
            geometry, key, out_stride = self._transposed_geometry(x)
            native, spatial = x._native(), x._caches.cmaps.get(out_stride, (None, None))[1]
            kmap = layer_map(native, geometry, downsample_mode=geometry.downsample_mode, key=key)
        else:
            plan = plan_conv(self.kernel_size, self.stride, self.padding, kmap_mode, downsample_mode)
            if plan.geometry.mode == "submanifold" and self.kernel_volume % 2 == 0 and x.spatial_range is not None:
                raise NotImplementedError(
                    f"an even submanifold kernel {self.kernel_size} on a tensor with spatial_range: TorchSparse 2.1 "
                    "then shrinks the range and skips neighbours near its end; drop spatial_range or use an odd kernel"
                )
            key = None if plan.geometry.mode == "submanifold" else map_key(x.stride, self.kernel_size, self.stride)
            geometry = self._cached_geometry(x, key) or plan.geometry
            native = x._native(self._bound(x) if plan.bounded else None)
            kmap = layer_map(native, geometry, downsample_mode=geometry.downsample_mode, key=key)
            out_stride = tuple(t * s for t, s in zip(x.stride, self.stride))
            spatial = out_spatial_range(x.spatial_range, self.kernel_size, self.stride, self.padding)
        feats = sparse_conv(x.feats, weight, kmap)
        if self.bias is not None:
            feats = feats + self.bias
        return SparseTensor._wrap(feats, kmap.out_coords, out_stride, spatial, x._caches)  # type: ignore[arg-type]

    @staticmethod
    def _bound(x: SparseTensor) -> tuple[int, int, int] | None:
        """The input grid a bounded conv sees: ``spatial_range`` or the per-axis maximum coordinate + 1."""
        if x.spatial_range is not None:
            return x.spatial_range[1:]  # type: ignore[return-value]
        if not len(x.coords):
            return None
        return tuple(int(v) + 1 for v in x.coords[:, 1:].amax(0).tolist())  # type: ignore[return-value]

    @staticmethod
    def _cached_geometry(x: SparseTensor, key: str | None) -> ConvGeometry | None:
        """The geometry of the map already cached under ``key`` (TorchSparse reuses it whatever the padding)."""
        down = None if key is None else x._caches.maps.named.get(key)
        return (
            None
            if down is None
            else ConvGeometry(
                down.kernel_size, down.stride, down.dilation, down.padding, down.mode, down.geometry.downsample_mode
            )
        )

    def _transposed_geometry(self, x: SparseTensor) -> tuple[ConvGeometry, str, tuple[int, int, int]]:
        """The geometry of the strided conv whose map this transposed conv reuses, its key and output stride."""
        if any(t % s for t, s in zip(x.stride, self.stride)):
            raise ValueError(
                f"transposed Conv3d with stride {self.stride} on a tensor of stride {x.stride}: the tensor stride "
                "must be divisible by the conv's (it undoes a strided conv)"
            )
        out_stride = tuple(t // s for t, s in zip(x.stride, self.stride))
        key = map_key(out_stride, self.kernel_size, self.stride)  # type: ignore[arg-type]
        down = x._caches.maps.named.get(key)
        if down is None:
            raise ValueError(
                f"transposed Conv3d(kernel_size={self.kernel_size}, stride={self.stride}) at tensor stride "
                f"{x.stride}: no strided conv with that kernel and stride ran at tensor stride {out_stride} on this "
                "tensor's caches, so the finer coordinates are unknown (TorchSparse reuses that conv's map); apply "
                "it to the output of the matching strided conv, or use generative=True"
            )
        g = down.geometry
        geometry = ConvGeometry(g.kernel_size, g.stride, g.dilation, g.padding, "transposed", g.downsample_mode)
        return geometry, key, out_stride  # type: ignore[return-value]
