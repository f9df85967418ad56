"""spconv 2.x's sparse convolutions (``SubMConv3d``, ``SparseConv3d``, …) on the native engine.

One :class:`~torchsparse_lite.kmap.geometry.ConvGeometry` per layer (taps at
``k * dilation - padding``, bounded by the input's spatial shape), maps from
the shared cache under spconv's ``indice_key`` rules (:mod:`.rules`), compute
by :func:`~torchsparse_lite.functional.conv.sparse_conv` (forward and
backward, any device, any thread count).

Weights keep spconv's layout and names: ``weight`` ``[Cout, *kernel_size, Cin]``
(KRSC), ``bias`` ``[Cout]``, and the ``max_num_voxels_during_training``
buffer when ``record_voxel_count=True``, so spconv ``state_dict``s load
strictly. Semantics kept from spconv 2.3.8 (checked numerically against it):

* submanifold convs ignore ``padding`` (and need odd kernels): the kernel is
  centred;
* strided/transposed convs use ``padding`` as given (default 0) and drop
  outputs outside ``floor((n + 2p - d(k-1) - 1) / s) + 1`` (conv) or
  ``(n - 1) s - 2p + k + output_padding`` (transposed);
* a kernel-size-1 conv (stride 1, or any subm) is ``features @ weight.view(Cin, Cout)``:
  spconv reads the KRSC weight's memory as ``[Cin, Cout]``, not as its transpose;
* an inverse conv returns the indices of the conv that stored its key, in their row order.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ...functional.conv import sparse_conv
from ...interop.weights import spconv_to_weight
from ...kmap.geometry import ConvGeometry
from .indices import check_ndim, expand_nd, from_native, pad3
from .modules import SparseModule, check_algo
from .rules import forward_map, inverse_map
from .tensor import SparseConvTensor

VOXEL_COUNT = "max_num_voxels_during_training"


def _check_act(act_type: object) -> None:
    if act_type is not None and getattr(act_type, "name", str(act_type)).split(".")[-1] != "None_":
        raise NotImplementedError(
            f"fused activations (act_type={act_type!r}) are not supported by torchsparse_lite; apply nn.ReLU "
            "(or another activation) after the conv"
        )


def _check_channels(in_channels: int, out_channels: int, groups: int) -> None:
    for arg, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{arg} must be an int, got {v!r}")
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"channel counts must be >= 1, got in_channels={in_channels}, out_channels={out_channels}")
    if groups != 1:
        raise NotImplementedError(
            f"groups={groups}: grouped convs (groups != 1) are not supported by torchsparse_lite (nor by spconv 2.x)"
        )


class SparseConvolution(SparseModule):
    """spconv 2.x's sparse convolution base (``spconv.pytorch.conv.SparseConvolution``).

    Args: as spconv's: ``ndim`` (1-3), channels, ``kernel_size``/``stride``/
    ``padding``/``dilation``/``output_padding`` (int or ``ndim`` ints),
    ``groups`` (must be 1), ``bias``, ``subm``/``transposed``/``inverse``,
    ``indice_key``; ``algo``, ``fp32_accum``, ``large_kernel_fast_algo`` are
    accepted and ignored; ``act_type`` must be None; ``record_voxel_count``
    keeps the running maximum output count in a buffer, as spconv does.

    Raises:
        NotImplementedError: 4-D layers, ``groups != 1``, fused activations,
            dilated transposed convs.
        ValueError: even kernels or ``stride != 1`` on a subm conv, non-zero
            ``padding`` on a kernel-size-1 stride-1 conv (spconv asserts it).
    """

    def __init__(
        self, ndim: int, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=0, dilation=1,
        groups: int = 1, bias: bool = True, subm: bool = False, output_padding=0, transposed: bool = False,
        inverse: bool = False, indice_key: str | None = None, algo=None, fp32_accum: bool | None = None,
        record_voxel_count: bool = False, act_type=None, act_alpha: float = 0, act_beta: float = 0,
        large_kernel_fast_algo: bool = False, name: str | None = None, device=None, dtype=None,
    ) -> None:  # fmt: skip
        super().__init__(name=name)
        check_ndim(ndim, f"{type(self).__name__}")
        _check_channels(in_channels, out_channels, groups)
        _check_act(act_type)
        self.ndim, self.in_channels, self.out_channels, self.groups = ndim, int(in_channels), int(out_channels), 1
        self.kernel_size = expand_nd(ndim, kernel_size, "kernel_size", 1)
        self.stride = expand_nd(ndim, stride, "stride", 1)
        self.padding = expand_nd(ndim, padding, "padding", 0)
        self.dilation = expand_nd(ndim, dilation, "dilation", 1)
        self.output_padding = expand_nd(ndim, output_padding, "output_padding", 0)
        self.subm, self.transposed, self.inverse = bool(subm), bool(transposed), bool(inverse)
        self.indice_key = indice_key
        self.algo = check_algo(algo)
        self.fp32_accum, self.large_kernel_fast_algo = fp32_accum, large_kernel_fast_algo
        self.act_type, self.act_alpha, self.act_beta = act_type, act_alpha, act_beta
        self.record_voxel_count = bool(record_voxel_count)
        kv = int(np.prod(self.kernel_size))
        self.conv1x1 = kv == 1 and (self.subm or int(np.prod(self.stride)) == 1)
        if self.conv1x1 and not self.subm and self.padding != [0] * ndim:
            raise ValueError(f"padding must be zero for a kernel-size-1 stride-1 conv, got {self.padding}")
        self.geometry = self._make_geometry()
        self.weight_shape = [self.out_channels, *self.kernel_size, self.in_channels]
        factory = {"device": device, "dtype": dtype}
        if self.record_voxel_count and not self.subm and not self.inverse:
            self.register_buffer(VOXEL_COUNT, torch.zeros(1, dtype=torch.int32, device=device))
        self.weight = nn.Parameter(torch.zeros(*self.weight_shape, **factory))
        if bias:
            self.bias = nn.Parameter(torch.zeros(self.out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()
        self.register_load_state_dict_pre_hook(_fill_voxel_count)

    def _make_geometry(self) -> ConvGeometry:
        """The layer's native geometry (no bound yet; the input's spatial shape bounds it)."""
        ks, st, dl = pad3(self.kernel_size, 1), pad3(self.stride, 1), pad3(self.dilation, 1)
        if self.subm:
            if any(k % 2 == 0 for k in self.kernel_size):
                raise ValueError(
                    f"a subm conv needs an odd kernel_size (spconv: 'subm only support odd ksize'), "
                    f"got {self.kernel_size}"
                )
            if self.stride != [1] * self.ndim:
                raise ValueError(
                    f"a subm conv has stride 1 (spconv silently ignores stride={self.stride}); "
                    "use SparseConv for a strided conv"
                )
            return ConvGeometry(ks, (1, 1, 1), dl, None, "submanifold")  # centred: spconv ignores padding
        if self.transposed and not self.inverse and self.dilation != [1] * self.ndim:
            raise NotImplementedError(
                f"a transposed conv with dilation {self.dilation} is not supported by torchsparse_lite "
                "(spconv sizes its output (n-1)s-2p+k+op, not as a dilated transposed conv)"
            )
        mode = "transposed" if self.transposed else "conv"
        return ConvGeometry(ks, st, dl, pad3(self.padding, 0), mode, "spconv",
                            output_padding=pad3(self.output_padding, 0))  # fmt: skip

    def reset_parameters(self) -> None:
        """spconv's init: weight and bias uniform in ``±1/sqrt(Cin * prod(kernel_size))``."""
        bound = 1.0 / math.sqrt(self.in_channels * int(np.prod(self.kernel_size)))
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if any(self.padding):
            s += f", padding={self.padding}"
        if self.dilation != [1] * self.ndim:
            s += f", dilation={self.dilation}"
        if any(self.output_padding):
            s += f", output_padding={self.output_padding}"
        if self.bias is None:
            s += ", bias=False"
        return s + (f", indice_key={self.indice_key!r}" if self.indice_key is not None else "")

    def get_max_num_voxels(self) -> torch.Tensor | None:
        return getattr(self, VOXEL_COUNT, None)

    def native_weight(self) -> torch.Tensor:
        """The weight in the engine's layout ``[K, Cin, Cout]`` (differentiable view of :attr:`weight`)."""
        w = self.weight.reshape(self.out_channels, *pad3(self.kernel_size, 1), self.in_channels)
        return spconv_to_weight(w)[0]

    @property
    def _kind(self) -> str:
        return "subm" if self.subm else ("transposed" if self.transposed else "conv")

    def _params(self) -> dict:
        return {"ksize": self.kernel_size, "stride": self.stride, "padding": self.padding,
                "dilation": self.dilation, "algo": self.algo}  # fmt: skip

    def _check_input(self, x: SparseConvTensor) -> None:
        if not isinstance(x, SparseConvTensor):
            raise TypeError(f"{type(self).__name__} expects a SparseConvTensor, got {type(x).__name__}")
        if x.ndim != self.ndim:
            raise ValueError(
                f"{type(self).__name__} is {self.ndim}-D but the input tensor is {x.ndim}-D "
                f"(spatial_shape {x.spatial_shape})"
            )
        if x.features.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}({self.in_channels}->{self.out_channels}): input features have "
                f"{x.features.shape[1]} channels; fix the previous layer's out_channels or this in_channels"
            )

    def forward(self, input: SparseConvTensor, add_input: SparseConvTensor | None = None) -> SparseConvTensor:
        """Apply the conv (plus ``add_input``'s features when given, as spconv's fused add)."""
        self._check_input(input)
        if self.conv1x1:
            out = self._forward_1x1(input)
        elif self.inverse:
            out = self._forward_inverse(input)
        else:
            out = self._forward_map(input)
        if add_input is not None:
            if not isinstance(add_input, SparseConvTensor) or add_input.features.shape != out.features.shape:
                got = list(add_input.features.shape) if isinstance(add_input, SparseConvTensor) else add_input
                raise ValueError(f"add_input must be a SparseConvTensor with features {list(out.features.shape)} "
                                 f"(this conv's output), got {got}")  # fmt: skip
            out = out.replace_feature(out.features + add_input.features)
        return out

    def _finish(self, feats: torch.Tensor) -> torch.Tensor:
        return feats + self.bias if self.bias is not None else feats

    def _forward_1x1(self, x: SparseConvTensor) -> SparseConvTensor:
        feats = self._finish(x.features @ self.weight.reshape(self.in_channels, self.out_channels))
        return x._derive(feats)

    def _forward_map(self, x: SparseConvTensor) -> SparseConvTensor:
        name = type(self).__name__
        kmap, shape, indice_dict = forward_map(x, self.geometry, self._kind, self.indice_key, self._params(), name)
        feats = self._finish(sparse_conv(x.features, self.native_weight(), kmap))
        if self.subm:
            return x._derive(feats, indice_dict=indice_dict)
        voxels = getattr(self, VOXEL_COUNT, None)
        if voxels is not None:
            voxels.clamp_(min=kmap.n_out)
        return x._derive(feats, from_native(kmap.out_coords, x.ndim), shape, indice_dict, kmap.out_coords)

    def _forward_inverse(self, x: SparseConvTensor) -> SparseConvTensor:
        if self.indice_key is None:
            raise ValueError(f"{type(self).__name__} needs the indice_key of the strided conv it inverts")
        kmap, data = inverse_map(x, self.indice_key, self.kernel_size, type(self).__name__)
        feats = self._finish(sparse_conv(x.features, self.native_weight(), kmap))
        return x._derive(feats, data.indices, data.spatial_shape, dict(x.indice_dict), kmap.out_coords)


def _fill_voxel_count(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """spconv's load hook: a checkpoint without the voxel-count buffer loads with zeros."""
    if getattr(module, VOXEL_COUNT, None) is not None and prefix + VOXEL_COUNT not in state_dict:
        state_dict[prefix + VOXEL_COUNT] = torch.zeros(1, dtype=torch.int32)


def is_sparse_conv(module: nn.Module) -> bool:
    return isinstance(module, SparseConvolution)
