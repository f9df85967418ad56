"""Layer sets taken from the project's networks, and the inputs of one layer on a workload.

:func:`model_layers` runs a network once on a small synthetic input with
forward hooks on every ``nn.Conv3d`` and records each distinct conv geometry
(channels, kernel, stride, mode, tensor stride of its input). A benchmark
case then rebuilds that layer's input on a real workload: the voxel
coordinates at the layer's tensor stride, random features and weights, and
the kernel map built by our engine.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import asdict, dataclass

import torch

from ..kmap.kernel_map import KernelMap, build_kernel_map
from ..kmap.keys import pack, unpack
from .networks import NETWORKS, build_network

MODELS = NETWORKS  # the layer sets come from the same two networks


@dataclass(frozen=True)
class LayerSpec:
    """One conv layer's geometry.

    Attributes:
        name: ``"<model>.<module path>"`` of the first module with this geometry.
        cin, cout: channels.
        kernel_size, stride: conv geometry (3-tuples).
        mode: ``"submanifold"``, ``"conv"`` (down-sampling) or ``"transposed"``.
        tensor_stride: stride of the layer's INPUT tensor (per axis).
    """

    name: str
    cin: int
    cout: int
    kernel_size: tuple[int, int, int]
    stride: tuple[int, int, int]
    mode: str
    tensor_stride: tuple[int, int, int]

    @property
    def label(self) -> str:
        k = "x".join(map(str, self.kernel_size))
        tag = {"submanifold": "subm", "conv": "down", "transposed": "up"}[self.mode]
        st = self.stride
        s = "" if self.mode == "submanifold" else (f" s{st[0]}" if len(set(st)) == 1 else f" s{'x'.join(map(str, st))}")
        return f"{tag} k{k}{s} {self.cin}->{self.cout} @ts{self.tensor_stride[0]}"

    def as_dict(self) -> dict:
        return asdict(self)


def model_layers(model: str, *, representative: bool = False) -> list[LayerSpec]:
    """Distinct conv layers of ``model`` (kernel volume > 1) in execution order.

    Args:
        model: ``"minkunet"`` or ``"resnet"`` (SparseResNet-21 backbone).
        representative: keep one layer per (mode, kernel, stride, tensor
            stride): the first whose input has >= 16 channels (the stem's
            4-channel input conv is not typical), a smaller set that still
            spans 16 -> 256 channels.
    """
    tensor_mod = importlib.import_module("torchsparse_lite.tensor")
    conv_cls = importlib.import_module("torchsparse_lite.nn").Conv3d
    net = build_network(model).eval()
    found: dict[tuple, LayerSpec] = {}

    def hook(name):
        def fn(mod, inputs, _output):
            x = inputs[0]
            spec = LayerSpec(f"{model}.{name}", mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride,
                             mod.mode, tuple(x.stride))
            key = (spec.mode, spec.kernel_size, spec.stride, spec.tensor_stride)
            key = key if representative else (*key, spec.cin, spec.cout)
            old = found.get(key)
            if math.prod(spec.kernel_size) > 1 and (old is None or (old.cin < 16 <= spec.cin)):
                found[key] = spec  # a replaced entry keeps its first position
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in net.named_modules() if isinstance(m, conv_cls)]
    g = torch.Generator().manual_seed(0)
    coords = torch.unique(torch.randint(0, 48, (3000, 3), generator=g), dim=0).to(torch.int32)
    coords = torch.cat([torch.zeros_like(coords[:, :1]), coords], 1)
    x = tensor_mod.SparseTensor(torch.randn(coords.shape[0], 4, generator=g), coords)
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return list(found.values())


def coords_at_stride(coords: torch.Tensor, tensor_stride: tuple[int, int, int]) -> torch.Tensor:
    """Coordinates of a stride-``tensor_stride`` tensor over the voxels ``coords`` [N, 4] (unique ``c // s``)."""
    if tensor_stride == (1, 1, 1):
        return coords
    s = torch.tensor((1, *tensor_stride), dtype=torch.int64, device=coords.device)
    return unpack(torch.unique(pack(torch.div(coords.to(torch.int64), s, rounding_mode="floor"))))


@dataclass
class LayerCase:
    """Inputs of one layer on one workload.

    Attributes:
        spec: the layer.
        feats: [n_in, cin]; weight: [K, cin, cout] (our layout).
        kmap: our map (for ``"transposed"``: the down map swapped).
        in_coords: [n_in, 4]; fine_coords: the fine coords a transposed layer returns to (else None).
    """

    spec: LayerSpec
    feats: torch.Tensor
    weight: torch.Tensor
    kmap: KernelMap
    in_coords: torch.Tensor
    fine_coords: torch.Tensor | None


def build_map(coords: torch.Tensor, spec: LayerSpec, builder: str = "hash") -> tuple[KernelMap, torch.Tensor]:
    """Our kernel map of ``spec`` over the stride-1 voxels ``coords``; returns (map, fine coords or None)."""
    transposed = spec.mode == "transposed"
    stride = tuple(t // s for t, s in zip(spec.tensor_stride, spec.stride)) if transposed else spec.tensor_stride
    source = coords_at_stride(coords, stride)
    return map_over(source, spec, builder), source if transposed else None


def map_over(source: torch.Tensor, spec: LayerSpec, builder: str = "hash") -> KernelMap:
    """Our map of ``spec`` over its own coordinates (what a layer pays): the layer's input [N, 4], or
    for a transposed layer the fine coordinates [N_fine, 4] of the down-sampling map it swaps."""
    if spec.mode == "transposed":
        return build_kernel_map(source, spec.kernel_size, spec.stride, mode="conv", builder=builder).transpose()
    return build_kernel_map(source, spec.kernel_size, spec.stride, mode=spec.mode, builder=builder)


def make_case(coords: torch.Tensor, spec: LayerSpec, *, dtype: torch.dtype = torch.float32,
              device: torch.device | str = "cpu", seed: int = 0) -> LayerCase:
    """Random features/weights (fixed seed) and our map for ``spec`` on ``coords`` [N, 4]."""
    kmap, fine = build_map(coords.to(device), spec)
    g = torch.Generator().manual_seed(seed)
    vol = math.prod(spec.kernel_size)
    feats = torch.randn(kmap.n_in, spec.cin, generator=g)
    weight = torch.randn(vol, spec.cin, spec.cout, generator=g) / math.sqrt(vol * spec.cin)
    return LayerCase(spec, feats.to(device, dtype), weight.to(device, dtype), kmap, kmap.in_coords, fine)
