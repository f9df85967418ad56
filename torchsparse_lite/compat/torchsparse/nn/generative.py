"""TorchSparse 2.1's generative transposed conv (``transposed=True, generative=True``).

As ``nn/functional/conv/kmap/upsample.py::spupsample_generative`` and
``kmap/func/hashmap.py`` define it (``kmap_mode="hashmap"`` only, a
``spatial_range`` required):

* the inputs are placed at ``c * stride`` on the finer grid;
* the outputs are the unique ``clamp(c * stride + offset, 0, R - 1)`` over the
  kernel offsets ``u - (k - 1) // 2`` (``get_kernel_offsets``), with ``R``
  the output ``spatial_range`` TorchSparse computes with the down-sampling
  formula ``(n + 2p - (k-1) - 1) // s + 1``;
* output ``o`` gets, through tap ``u``, the input at ``c * stride == o + u - (k-1)//2``
  (a stride-1 conv on the finer grid; weight rows in TorchSparse's tap order);
* the output starts new kernel maps (TorchSparse clears ``kmaps``), keeping ``cmaps``.
"""

from __future__ import annotations

import torch

from ....config import resolve
from ....functional.conv import sparse_conv
from ....kmap.cache import KernelMapCache
from ....kmap.geometry import ConvGeometry
from ....kmap.kernel_map import build_map
from ....kmap.keys import check_coords
from ..tensor import SparseTensor, TensorCache
from .plan import Triple, out_spatial_range


def _checked(x: SparseTensor, kmap_mode: str, stride: Triple) -> tuple[int, int, int]:
    """Validate the input of a generative conv; returns the output stride."""
    if kmap_mode != "hashmap":
        raise ValueError(
            f"kmap_mode {kmap_mode!r} does not support a generative transposed conv (TorchSparse 2.1 refuses it "
            "too); call torchsparse.nn.functional.set_kmap_mode('hashmap') or pass config={'kmap_mode': 'hashmap'}"
        )
    if x.spatial_range is None:
        raise ValueError("a generative transposed conv needs the input's spatial_range (TorchSparse 2.1 requires it)")
    if any(t % s for t, s in zip(x.stride, stride)):
        raise ValueError(f"generative conv with stride {stride} on a tensor of stride {x.stride}: must divide it")
    return tuple(t // s for t, s in zip(x.stride, stride))  # type: ignore[return-value]


def generated_coords(
    coords: torch.Tensor, kernel_size: Triple, stride: Triple, spatial: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs on the finer grid [N, 4], unique clamped outputs [M, 4]), both int32."""
    if min(spatial[1:]) < 1:
        raise ValueError(f"the generative conv's output spatial_range {spatial} is empty; enlarge the input's")
    centred = tuple((k - 1) // 2 for k in kernel_size)
    offsets = ConvGeometry(kernel_size, padding=centred).offsets(coords.device)
    c = coords.to(torch.int64)
    scaled = torch.cat([c[:, :1], c[:, 1:] * torch.tensor(stride, device=c.device)], dim=1)
    hi = torch.tensor(spatial[1:], device=c.device) - 1
    cand = torch.minimum((scaled[:, None, 1:] + offsets[None]).clamp(min=0), hi)
    batch = scaled[:, None, :1].expand(-1, offsets.shape[0], 1)
    outs = torch.unique(torch.cat([batch, cand], dim=2).reshape(-1, 4), dim=0)
    return check_coords(scaled, "coords * stride"), check_coords(outs, "generated coords")


def generative_conv(
    x: SparseTensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    kernel_size: Triple,
    stride: Triple,
    padding: Triple,
    kmap_mode: str,
) -> SparseTensor:
    """Apply the generative transposed conv; ``weight`` is native ``[K, Cin, Cout]`` (x fastest).

    Returns:
        the output at the generated coordinates, stride ``x.stride / stride``.
    """
    out_stride = _checked(x, kmap_mode, stride)
    spatial = out_spatial_range(x.spatial_range, kernel_size, stride, padding)
    scaled, outs = generated_coords(x.coords, kernel_size, stride, spatial)  # type: ignore[arg-type]
    centred = tuple((k - 1) // 2 for k in kernel_size)
    geometry = ConvGeometry(kernel_size, (1, 1, 1), (1, 1, 1), centred, "conv")
    kmap = build_map(scaled, geometry, out_coords=outs, builder=resolve("kmap_builder", None))
    feats = sparse_conv(x.feats, weight, kmap)
    if bias is not None:
        feats = feats + bias
    caches = TensorCache(cmaps=x._caches.cmaps, maps=KernelMapCache())
    caches.cmaps[out_stride] = (outs, spatial)
    return SparseTensor._wrap(feats, outs, out_stride, spatial, caches)
