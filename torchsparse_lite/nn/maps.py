"""The one place where a layer turns its geometry and its input into a kernel map and an output tensor."""

from __future__ import annotations

import torch

from ..config import resolve
from ..kmap.geometry import ConvGeometry
from ..kmap.kernel_map import KernelMap
from ..tensor import SparseTensor, static_ints


def layer_map(
    x: SparseTensor,
    geometry: ConvGeometry,
    *,
    kmap_builder: str | None = None,
    downsample_mode: str | None = None,
    key: str | None = None,
    generative: bool = False,
) -> KernelMap:
    """The (cached) kernel map of a layer with ``geometry`` on ``x``.

    The layer's ``downsample_mode`` (or the config's) and the tensor's
    ``spatial_range`` (as the geometry's bound) are filled in here, once.
    """
    rule, bound = resolve("downsample_mode", downsample_mode), static_ints(x.spatial_range)
    if (geometry.downsample_mode, geometry.bound) != (rule, bound):
        geometry = ConvGeometry(
            geometry.kernel_size, geometry.stride, geometry.dilation, geometry.padding, geometry.mode, rule, bound,
            geometry.output_padding, geometry.offsets_subset,
        )  # fmt: skip
    builder = resolve("kmap_builder", kmap_builder)
    return x.cache.get(x.coords, static_ints(x.stride), geometry, builder, key=key, generative=generative)


def output_stride(stride: tuple[int, int, int], geometry: ConvGeometry) -> tuple[int, int, int]:
    """Tensor stride of a layer's output for an input of tensor stride ``stride``.

    Multiplied by the conv's stride; divided for a transposed conv.
    """
    stride = static_ints(stride)  # type: ignore[assignment]
    if geometry.mode != "transposed":
        return tuple(t * s for t, s in zip(stride, geometry.stride))  # type: ignore[return-value]
    for t, s in zip(stride, geometry.stride):
        if t % s:
            raise ValueError(
                f"x.stride is {stride}, not divisible by this transposed conv's stride {geometry.stride}; "
                "a transposed conv must follow a down-sampling conv of the same stride"
            )
    return tuple(t // s for t, s in zip(stride, geometry.stride))  # type: ignore[return-value]


def layer_output(x: SparseTensor, feats: torch.Tensor, kmap: KernelMap, stride: tuple[int, int, int]) -> SparseTensor:
    """The SparseTensor at ``kmap``'s output coordinates, sharing ``x``'s map cache."""
    return SparseTensor(feats, kmap.out_coords, stride, spatial_range=kmap.out_shape, cache=x.cache, validate=False)
