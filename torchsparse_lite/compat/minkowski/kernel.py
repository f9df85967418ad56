"""ME's ``KernelGenerator`` and its mapping onto one native :class:`ConvGeometry`.

ME's kernel (``src/kernel_region.hpp``, ``kernel_region::coordinate_at``):
tap ``k`` decomposes with x fastest (``k % kx`` is the x index, then y, then
z), and on an axis of size ``K`` the offset of index ``i`` is
``(i - K // 2) * dilation * tensor_stride`` for odd ``K`` (centred) and
``i * dilation * tensor_stride`` for even ``K`` (``0 .. K-1``). In the
engine's units (coordinates divided by the input's tensor stride) that is
exactly a native geometry with the default padding ``d * (K // 2)`` / 0 and
its x-fastest tap order, so ME's kernel ``[K, Cin, Cout]`` is the native
weight as is (no tap permutation).

A pooling layer with ``kernel_size == stride`` uses ME's stride map instead
(every input goes to ``floor(c / T) * T``), i.e. offsets ``0 .. K-1``
whatever the parity: padding 0.
"""

from __future__ import annotations

from functools import reduce

from ...kmap.geometry import ConvGeometry
from .enums import RegionType
from .manager import check_dimension, int3


class KernelGenerator:
    """The kernel of a convolution or pooling layer (ME's ``HYPER_CUBE`` kernels only).

    Args:
        kernel_size, stride, dilation: int or 3 ints.
        is_transpose: accepted for ME compatibility (the layer decides).
        region_type: must be ``RegionType.HYPER_CUBE``.
        region_offsets, axis_types: custom/hybrid kernels; not supported.
        expand_coordinates: generate new output coordinates (generative conv).
        dimension: must be 3.

    Raises:
        NotImplementedError: another region type, custom offsets or axis types.
    """

    def __init__(
        self,
        kernel_size: object = -1,
        stride: object = 1,
        dilation: object = 1,
        is_transpose: bool = False,
        region_type: RegionType = RegionType.HYPER_CUBE,
        region_offsets: object = None,
        expand_coordinates: bool = False,
        axis_types: object = None,
        dimension: int = -1,
    ) -> None:
        self.dimension = check_dimension(dimension, "KernelGenerator")
        if not isinstance(region_type, RegionType):
            raise TypeError(f"region_type must be a MinkowskiEngine RegionType, got {region_type!r}")
        if region_type is not RegionType.HYPER_CUBE:
            raise NotImplementedError(
                f"region_type={region_type} is not supported by torchsparse_lite's MinkowskiEngine layer; only "
                "RegionType.HYPER_CUBE kernels (the kernel_size box) are"
            )
        if region_offsets is not None or axis_types is not None:
            raise NotImplementedError(
                "custom region_offsets / axis_types kernels are not supported by torchsparse_lite's "
                "MinkowskiEngine layer; only RegionType.HYPER_CUBE kernels are"
            )
        if isinstance(kernel_size, int) and not isinstance(kernel_size, bool) and kernel_size < 1:
            raise ValueError(f"kernel_size must be a positive int or 3 positive ints, got {kernel_size}")
        self.kernel_size = list(int3(kernel_size, "kernel_size"))
        self.kernel_stride = list(int3(stride, "stride"))
        self.kernel_dilation = list(int3(dilation, "dilation"))
        self.region_type = region_type
        self.region_offsets = None
        self.axis_types = None
        self.expand_coordinates = bool(expand_coordinates)
        self.kernel_volume = reduce(lambda a, b: a * b, self.kernel_size)
        # ME's (oddly named) flag: True when every stride is 1.
        self.requires_strided_coordinates = all(s == 1 for s in self.kernel_stride)

    def geometry(self, mode: str, is_pool: bool = False) -> ConvGeometry:
        """The native geometry of this kernel in ``mode`` (``submanifold``/``conv``/``transposed``)."""
        ks, st, dl = tuple(self.kernel_size), tuple(self.kernel_stride), tuple(self.kernel_dilation)
        padding = None
        if is_pool and ks == st:
            padding, dl = (0, 0, 0), (1, 1, 1)
        if mode == "submanifold":
            st = (1, 1, 1)
        return ConvGeometry(ks, st, dl, padding, mode, "minkowski")  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return (
            f"KernelGenerator(kernel_size={self.kernel_size}, kernel_stride={self.kernel_stride}, "
            f"kernel_dilation={self.kernel_dilation}, region_type={self.region_type}, "
            f"expand_coordinates={self.expand_coordinates}, dimension={self.dimension})"
        )


def get_kernel_volume(
    region_type: RegionType, kernel_size: object, region_offset: object, axis_types: object, dimension: int
) -> int:
    """Number of taps of a ``HYPER_CUBE`` kernel (ME's helper of the same name)."""
    return KernelGenerator(
        kernel_size, 1, 1, False, region_type, region_offset, False, axis_types, dimension
    ).kernel_volume
