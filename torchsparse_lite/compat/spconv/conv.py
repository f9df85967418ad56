"""``spconv.pytorch.conv``: the conv base class and spconv's named layers (``SubMConv3d``, …).

Positional argument order follows spconv 2.3.8 exactly (e.g. an inverse
conv's fourth argument is ``indice_key``). The 4-D names exist so that
``spconv.SparseConv4d`` resolves, and raise ``NotImplementedError`` when built.
``SparseConvTranspose*d`` also take ``output_padding`` (spconv's base class
does; its named classes do not pass it on).
"""

from __future__ import annotations

from .convolution import VOXEL_COUNT, SparseConvolution, is_sparse_conv

__all__ = [
    "DEFAULT_SPARSE_CONV_TYPES", "VOXEL_COUNT", "SparseConv1d", "SparseConv2d", "SparseConv3d", "SparseConv4d",
    "SparseConvTranspose1d", "SparseConvTranspose2d", "SparseConvTranspose3d", "SparseConvTranspose4d",
    "SparseConvolution", "SparseInverseConv1d", "SparseInverseConv2d", "SparseInverseConv3d", "SparseInverseConv4d",
    "SubMConv1d", "SubMConv2d", "SubMConv3d", "SubMConv4d", "is_sparse_conv",
]  # fmt: skip


class _Conv(SparseConvolution):
    """Strided / generative conv: ``(in, out, kernel_size, stride=1, padding=0, dilation=1, groups=1, …)``."""

    NDIM = 3

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, indice_key=None, algo=None, fp32_accum=None, record_voxel_count=False,
                 large_kernel_fast_algo=False, name=None):  # fmt: skip
        super().__init__(self.NDIM, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, indice_key=indice_key, algo=algo, fp32_accum=fp32_accum,
                         record_voxel_count=record_voxel_count, large_kernel_fast_algo=large_kernel_fast_algo,
                         name=name)  # fmt: skip


class _ConvTranspose(SparseConvolution):
    """Transposed (generative up-sampling) conv; same signature as the conv, plus ``output_padding``."""

    NDIM = 3

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, indice_key=None, algo=None, fp32_accum=None, record_voxel_count=False,
                 large_kernel_fast_algo=False, name=None, output_padding=0):  # fmt: skip
        super().__init__(self.NDIM, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, output_padding=output_padding, transposed=True, indice_key=indice_key, algo=algo,
                         fp32_accum=fp32_accum, record_voxel_count=record_voxel_count,
                         large_kernel_fast_algo=large_kernel_fast_algo, name=name)  # fmt: skip


class _InverseConv(SparseConvolution):
    """Inverse conv: ``(in, out, kernel_size, indice_key, bias=True, …)``; undoes the conv under ``indice_key``."""

    NDIM = 3

    def __init__(self, in_channels, out_channels, kernel_size, indice_key, bias=True, algo=None, fp32_accum=None,
                 large_kernel_fast_algo=False, name=None):  # fmt: skip
        super().__init__(self.NDIM, in_channels, out_channels, kernel_size, bias=bias, inverse=True,
                         indice_key=indice_key, algo=algo, fp32_accum=fp32_accum,
                         large_kernel_fast_algo=large_kernel_fast_algo, name=name)  # fmt: skip


class _SubMConv(SparseConvolution):
    """Submanifold conv (outputs = inputs, centred kernel; ``padding`` is ignored as in spconv)."""

    NDIM = 3

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, indice_key=None, algo=None, fp32_accum=None, large_kernel_fast_algo=False,
                 name=None):  # fmt: skip
        super().__init__(self.NDIM, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, True, indice_key=indice_key, algo=algo, fp32_accum=fp32_accum,
                         large_kernel_fast_algo=large_kernel_fast_algo, name=name)  # fmt: skip


class SparseConv1d(_Conv):
    NDIM = 1


class SparseConv2d(_Conv):
    NDIM = 2


class SparseConv3d(_Conv):
    NDIM = 3


class SparseConv4d(_Conv):
    NDIM = 4


class SparseConvTranspose1d(_ConvTranspose):
    NDIM = 1


class SparseConvTranspose2d(_ConvTranspose):
    NDIM = 2


class SparseConvTranspose3d(_ConvTranspose):
    NDIM = 3


class SparseConvTranspose4d(_ConvTranspose):
    NDIM = 4


class SparseInverseConv1d(_InverseConv):
    NDIM = 1


class SparseInverseConv2d(_InverseConv):
    NDIM = 2


class SparseInverseConv3d(_InverseConv):
    NDIM = 3


class SparseInverseConv4d(_InverseConv):
    NDIM = 4


class SubMConv1d(_SubMConv):
    NDIM = 1


class SubMConv2d(_SubMConv):
    NDIM = 2


class SubMConv3d(_SubMConv):
    NDIM = 3


class SubMConv4d(_SubMConv):
    NDIM = 4


DEFAULT_SPARSE_CONV_TYPES = {
    SubMConv1d, SubMConv2d, SubMConv3d, SubMConv4d, SparseConv1d, SparseConv2d, SparseConv3d, SparseConv4d,
    SparseInverseConv1d, SparseInverseConv2d, SparseInverseConv3d, SparseInverseConv4d, SparseConvTranspose1d,
    SparseConvTranspose2d, SparseConvTranspose3d, SparseConvTranspose4d,
}  # fmt: skip
