"""ME's convolution layers on the native ``sparse_conv``.

Parameters as ME 0.5.4 (``MinkowskiConvolution.py``): ``kernel`` of shape
``[K, Cin, Cout]`` (taps x fastest, see :mod:`.kernel`), or ``[Cin, Cout]``
when ``K == 1`` and every stride is 1 (ME then applies a plain matrix
product); ``bias`` of shape ``[1, Cout]``; both float32 at construction and
initialised uniform in ``±1/sqrt(fan)``, ``fan = Cin * K`` (``Cout * K`` for
transposed layers), as ME does.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...functional.conv import sparse_conv
from .enums import ConvolutionMode
from .kernel import KernelGenerator
from .manager import CoordinateMapKey, check_dimension
from .maps import layer_map
from .tensor import SparseTensor


def check_channels(in_channels: object, out_channels: object, owner: str) -> None:
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{owner}: {name} must be an int, got {value!r}")
        if value < 1:
            raise ValueError(f"{owner}: {name} must be >= 1, got {value}")


def target_key(input: SparseTensor, coordinates: object) -> CoordinateMapKey | None:
    """The output key named by a layer's ``coordinates=`` argument (a SparseTensor or a key), or None."""
    if coordinates is None:
        return None
    if isinstance(coordinates, SparseTensor):
        if coordinates.coordinate_manager is not input.coordinate_manager:
            raise ValueError("coordinates is a SparseTensor of another coordinate manager than the input's")
        return coordinates.coordinate_map_key
    if isinstance(coordinates, CoordinateMapKey):
        return coordinates
    raise NotImplementedError(
        "coordinates= must be a SparseTensor or a CoordinateMapKey of the input's manager; raw coordinate tensors "
        f"are not supported by torchsparse_lite's MinkowskiEngine layer (got {type(coordinates).__name__})"
    )


def check_input(layer: nn.Module, input: object, channels: int | None = None) -> SparseTensor:
    """Raise a clear error unless ``input`` is a 3D ME SparseTensor with ``channels`` feature columns."""
    name = type(layer).__name__
    if not isinstance(input, SparseTensor):
        raise TypeError(f"{name} expects a MinkowskiEngine SparseTensor, got {type(input).__name__}")
    if channels is not None and input.F.shape[1] != channels:
        raise ValueError(
            f"{name}: input has {input.F.shape[1]} feature channels but the layer expects in_channels={channels}"
        )
    return input


class MinkowskiConvolutionBase(nn.Module):
    """Shared body of the (transposed) convolutions; see :class:`MinkowskiConvolution`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: object = -1,
        stride: object = 1,
        dilation: object = 1,
        bias: bool = False,
        kernel_generator: KernelGenerator | None = None,
        is_transpose: bool = False,
        expand_coordinates: bool = False,
        convolution_mode: ConvolutionMode = ConvolutionMode.DEFAULT,
        dimension: int | None = -1,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.dimension = check_dimension(dimension, owner)
        check_channels(in_channels, out_channels, owner)
        if not isinstance(convolution_mode, ConvolutionMode):
            raise TypeError(f"{owner}: convolution_mode must be a ConvolutionMode, got {convolution_mode!r}")
        if kernel_generator is None:
            kernel_generator = KernelGenerator(
                kernel_size, stride, dilation, expand_coordinates=expand_coordinates, dimension=self.dimension
            )
        elif not isinstance(kernel_generator, KernelGenerator):
            raise TypeError(f"{owner}: kernel_generator must be a KernelGenerator, got {kernel_generator!r}")
        else:
            kernel_generator.expand_coordinates = bool(expand_coordinates)
        self.is_transpose = bool(is_transpose)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_generator = kernel_generator
        self.convolution_mode = convolution_mode
        self.use_mm = kernel_generator.kernel_volume == 1 and kernel_generator.requires_strided_coordinates
        shape = (
            (in_channels, out_channels) if self.use_mm else (kernel_generator.kernel_volume, in_channels, out_channels)
        )
        self.kernel = nn.Parameter(torch.empty(shape, dtype=torch.float32))
        self.bias = nn.Parameter(torch.empty(1, out_channels, dtype=torch.float32)) if bias else None
        self.reset_parameters(self.is_transpose)

    def reset_parameters(self, is_transpose: bool = False) -> None:
        fan = (self.out_channels if is_transpose else self.in_channels) * self.kernel_generator.kernel_volume
        bound = 1.0 / math.sqrt(fan)
        with torch.no_grad():
            self.kernel.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def forward(self, input: SparseTensor, coordinates: SparseTensor | CoordinateMapKey | None = None) -> SparseTensor:
        """Convolve ``input``; the output set follows ME's rules (see :mod:`.maps`).

        Args:
            input: SparseTensor with ``in_channels`` features.
            coordinates: optional output set (a SparseTensor or key of the same manager).
        """
        input = check_input(self, input, self.in_channels)
        target = target_key(input, coordinates)
        if self.use_mm and target is None:
            out_key, feats = input.coordinate_map_key, input.F.mm(self.kernel)
        else:
            kmap, out_key = layer_map(
                input.coordinate_manager,
                input.coordinate_map_key,
                self.kernel_generator,
                transpose=self.is_transpose,
                target=target,
            )
            weight = self.kernel.reshape(kmap.volume, self.in_channels, self.out_channels)
            feats = sparse_conv(input.F, weight, kmap)
        if self.bias is not None:
            feats = feats + self.bias
        return SparseTensor(feats, coordinate_map_key=out_key, coordinate_manager=input.coordinate_manager)

    def __repr__(self) -> str:
        kg = self.kernel_generator
        return (
            f"{type(self).__name__}(in={self.in_channels}, out={self.out_channels}, kernel_size={kg.kernel_size}, "
            f"stride={kg.kernel_stride}, dilation={kg.kernel_dilation})"
        )


class MinkowskiConvolution(MinkowskiConvolutionBase):
    """Sparse convolution: ``out[u] = sum_i W_i x[u + offset_i]`` over the input voxels.

    Stride 1 keeps the input's coordinates (submanifold) unless
    ``expand_coordinates=True``; stride ``s`` writes to
    ``unique(floor(c / (ts s)) * ts s)`` (shared with every other stride-``s``
    layer on the same input). Odd kernels are centred, even ones span
    ``0 .. K-1`` tensor-stride steps.

    Raises:
        TypeError/ValueError/NotImplementedError: dimension != 3, bad channel
            counts, a non-HYPER_CUBE kernel generator.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: object = -1,
        stride: object = 1,
        dilation: object = 1,
        bias: bool = False,
        kernel_generator: KernelGenerator | None = None,
        expand_coordinates: bool = False,
        convolution_mode: ConvolutionMode = ConvolutionMode.DEFAULT,
        dimension: int | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            dilation,
            bias,
            kernel_generator,
            False,
            expand_coordinates,
            convolution_mode,
            dimension,
        )


class MinkowskiConvolutionTranspose(MinkowskiConvolutionBase):
    """Transposed convolution (up-sampling by ``stride``).

    Writes to the coordinate set at ``tensor_stride / stride`` when the
    manager holds one (e.g. the input of the matching down-sampling conv: the
    output then has that set's rows in its order), otherwise — or with
    ``expand_coordinates=True`` — to new coordinates ``c + offset`` (generative).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: object = -1,
        stride: object = 1,
        dilation: object = 1,
        bias: bool = False,
        kernel_generator: KernelGenerator | None = None,
        expand_coordinates: bool = False,
        convolution_mode: ConvolutionMode = ConvolutionMode.DEFAULT,
        dimension: int | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            dilation,
            bias,
            kernel_generator,
            True,
            expand_coordinates,
            convolution_mode,
            dimension,
        )


class MinkowskiGenerativeConvolutionTranspose(MinkowskiConvolutionBase):
    """Transposed convolution that always generates new coordinates ``c + offset`` (GSDN's up-sampling)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: object = -1,
        stride: object = 1,
        dilation: object = 1,
        bias: bool = False,
        kernel_generator: KernelGenerator | None = None,
        convolution_mode: ConvolutionMode = ConvolutionMode.DEFAULT,
        dimension: int | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            dilation,
            bias,
            kernel_generator,
            True,
            True,
            convolution_mode,
            dimension,
        )


class MinkowskiChannelwiseConvolution(nn.Module):
    """Depth-wise convolution: not supported (raises on construction)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError(
            "MinkowskiChannelwiseConvolution (depth-wise convolution) is not supported by torchsparse_lite's "
            "MinkowskiEngine layer"
        )
