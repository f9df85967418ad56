"""Conversion of one convolution weight between library layouts.

Ours: ``[K, Cin, Cout]`` with ``K = kx * ky * kz`` and the x tap varying
fastest, for coordinates laid out (batch, x, y, z).

TorchSparse (2.0 and 2.1) also stores ``[K, Cin, Cout]``, but its tap order
depends on the kernel *volume*: an odd volume enumerates x fastest (ours), an
even volume -- the k=2 down/up-sampling convs of every TorchSparse MinkUNet --
enumerates z fastest (``torchsparse/nn/utils/kernel.py::get_kernel_offsets``;
in 2.1 also the ``odd``/even branches of the map kernels in
``backend/others/sparsemapping_cuda.cu`` and ``backend/hashmap/hashmap_cuda.cu``).
:func:`torchsparse_tap_order` gives the permutation. A 1x1x1 conv is
``[Cin, Cout]`` (2.1 keeps ``[1, Cin, Cout]`` when its stride is not 1).
Offsets (which voxel a tap reads) are a property of the layer geometry, not of
the weight; see :func:`torchsparse_paddings`.

spconv 2.x (``KRSC``, verified numerically against spconv 2.3.8 for
SubMConv3d, SparseConv3d and SparseInverseConv3d with indices (b, x, y, z)):
``[Cout, kx, ky, kz, Cin]``. spconv 1.x (``RSCK``): ``[kx, ky, kz, Cin, Cout]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..kmap.geometry import triple

SPCONV_LAYOUTS = ("KRSC", "RSCK")

IntOr3 = int | Sequence[int]


def _check_tensor(weight: torch.Tensor, name: str, dims: Sequence[int]) -> None:
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(weight).__name__}")
    if not weight.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating point, got {weight.dtype}")
    if weight.dim() not in dims:
        raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dims, got shape {list(weight.shape)}")


def _check_layout(layout: str) -> None:
    if layout not in SPCONV_LAYOUTS:
        raise ValueError(f"layout must be one of {SPCONV_LAYOUTS} (spconv 2.x: 'KRSC', 1.x: 'RSCK'), got {layout!r}")


def spconv_to_weight(
    weight: torch.Tensor, layout: str = "KRSC", *, matmul_1x1: bool = False
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """spconv weight -> (ours ``[K, Cin, Cout]``, kernel_size ``(kx, ky, kz)``).

    Args:
        weight: ``[Cout, kx, ky, kz, Cin]`` (``"KRSC"``) or ``[kx, ky, kz, Cin, Cout]`` (``"RSCK"``).
        layout: spconv's saved weight layout.
        matmul_1x1: the weight belongs to a spconv 2.x conv that runs as a
            plain matmul — kernel size 1 with stride 1, or any submanifold
            conv of kernel size 1. spconv computes those as
            ``features @ weight.view(Cin, Cout)``, reading the KRSC memory as
            ``[Cin, Cout]`` rather than transposing it, so the conversion
            must do the same to keep the layer's meaning.
    """
    _check_tensor(weight, "weight", (5,))
    _check_layout(layout)
    if layout == "RSCK":
        weight = weight.permute(4, 0, 1, 2, 3)  # -> [Cout, kx, ky, kz, Cin]
    cout, kx, ky, kz, cin = weight.shape
    if matmul_1x1 and layout == "KRSC" and kx * ky * kz == 1:
        return weight.contiguous().reshape(1, cin, cout).clone(), (1, 1, 1)
    out = weight.permute(3, 2, 1, 4, 0).reshape(kx * ky * kz, cin, cout).contiguous()
    return out, (kx, ky, kz)


def weight_to_spconv(
    weight: torch.Tensor, kernel_size: int | Sequence[int], layout: str = "KRSC", *, matmul_1x1: bool = False
) -> torch.Tensor:
    """Ours ``[K, Cin, Cout]`` -> spconv ``[Cout, kx, ky, kz, Cin]`` (or ``RSCK``).

    ``matmul_1x1``: the inverse of :func:`spconv_to_weight`'s flag, for a
    kernel-size-1 layer that spconv runs as ``features @ weight.view(Cin, Cout)``.
    """
    _check_tensor(weight, "weight", (3,))
    _check_layout(layout)
    kx, ky, kz = triple(kernel_size, "kernel_size")
    k, cin, cout = weight.shape
    if k != kx * ky * kz:
        raise ValueError(f"weight has {k} taps but kernel_size {(kx, ky, kz)} has {kx * ky * kz}; pass the layer's")
    if matmul_1x1 and layout == "KRSC" and k == 1:
        return weight.contiguous().reshape(cout, 1, 1, 1, cin).clone()
    out = weight.reshape(kz, ky, kx, cin, cout).permute(4, 2, 1, 0, 3).contiguous()
    return out.permute(1, 2, 3, 4, 0).contiguous() if layout == "RSCK" else out


def spconv_runs_as_matmul(kernel_size: tuple[int, int, int], stride: tuple[int, int, int], submanifold: bool) -> bool:
    """True when spconv 2.x computes a conv of this geometry as ``features @ weight.view(Cin, Cout)``."""
    return kernel_size == (1, 1, 1) and (submanifold or stride == (1, 1, 1))


def torchsparse_tap_order(kernel_size: IntOr3) -> torch.Tensor:
    """TorchSparse's tap index of every native tap: ``W_ours[n] = W_torchsparse[order[n]]``.

    Native tap ``n = ux + kx * (uy + ky * uz)`` (per-axis tap indices ``u``,
    x fastest). TorchSparse uses the same index for an odd kernel volume and
    ``uz + kz * (uy + ky * ux)`` (z fastest) for an even one.

    Returns:
        [K] int64 permutation (the identity for an odd volume).
    """
    kx, ky, kz = triple(kernel_size, "kernel_size")
    n = torch.arange(kx * ky * kz, dtype=torch.int64)
    if n.numel() % 2:
        return n
    ux, uy, uz = n % kx, (n // kx) % ky, n // (kx * ky)
    return uz + kz * (uy + ky * ux)


def _checked_volume(weight: torch.Tensor, kernel_size: IntOr3 | None, name: str) -> tuple[int, int, int] | None:
    """The kernel size (validated against ``weight.shape[0]``), or None when not given."""
    if kernel_size is None:
        return None
    ks = triple(kernel_size, "kernel_size")
    if weight.shape[0] != ks[0] * ks[1] * ks[2]:
        raise ValueError(
            f"{name} has {weight.shape[0]} taps but kernel_size {ks} has {ks[0] * ks[1] * ks[2]}; pass the layer's"
        )
    return ks


def torchsparse_to_weight(weight: torch.Tensor, kernel_size: IntOr3 | None = None) -> torch.Tensor:
    """TorchSparse ``kernel`` -> ours ``[K, Cin, Cout]`` (taps reordered to x fastest).

    Args:
        weight: ``[K, Cin, Cout]`` in TorchSparse's tap order, or ``[Cin, Cout]`` (1x1x1).
        kernel_size: the layer's kernel size; required when ``K`` is even
            (then the taps are z-fastest and the order depends on the shape).
            An odd ``K`` is already in our order and is returned as is.
    """
    _check_tensor(weight, "weight", (2, 3))
    if weight.dim() == 2:
        weight = weight.unsqueeze(0)
    ks = _checked_volume(weight, kernel_size, "weight")
    if weight.shape[0] % 2 == 1:
        return weight
    if ks is None:
        raise ValueError(
            f"weight has {weight.shape[0]} taps, an even kernel volume, which TorchSparse orders z fastest; "
            "converting it needs the layer's kernel_size (or pass model= to the state-dict converters)"
        )
    return weight.index_select(0, torchsparse_tap_order(ks).to(weight.device))


def weight_to_torchsparse(
    weight: torch.Tensor, kernel_size: IntOr3 | None = None, stride: IntOr3 = 1
) -> torch.Tensor:
    """Ours ``[K, Cin, Cout]`` -> TorchSparse ``kernel`` (inverse of :func:`torchsparse_to_weight`).

    Args:
        weight: ``[K, Cin, Cout]``, x fastest.
        kernel_size: required when ``K`` is even (see :func:`torchsparse_to_weight`).
        stride: the layer's stride; a 1x1x1 conv becomes ``[Cin, Cout]`` when
            it is 1 and stays ``[1, Cin, Cout]`` otherwise (TorchSparse 2.1).
    """
    _check_tensor(weight, "weight", (3,))
    ks = _checked_volume(weight, kernel_size, "weight")
    if weight.shape[0] == 1:
        return weight[0] if triple(stride, "stride") == (1, 1, 1) else weight
    if weight.shape[0] % 2 == 1:
        return weight
    if ks is None:
        raise ValueError(
            f"weight has {weight.shape[0]} taps, an even kernel volume, which TorchSparse orders z fastest; "
            "converting it needs the layer's kernel_size"
        )
    order = torchsparse_tap_order(ks).to(weight.device)
    return weight.index_select(0, torch.argsort(order))


def torchsparse_paddings(
    kernel_size: IntOr3, stride: IntOr3 = 1, dilation: IntOr3 = 1
) -> list[tuple[int | None, int | None, int | None]]:
    """The paddings (in our sense: tap ``u`` at offset ``u * d - p``) TorchSparse can give a conv.

    * submanifold (stride 1): odd kernel volume -> centred ``d * ((k - 1) // 2)``
      in 2.0 and 2.1; even volume -> 0 on every axis in 2.1 (the default
      ``hashmap_on_the_fly`` map kernels use offsets ``0 .. k-1``) or
      ``d * ((k - 1) // 2)`` in 2.0 (``get_kernel_offsets``: ``-k//2+1 .. k//2``).
    * strided / transposed: an axis with odd ``k`` and stride 1 is centred
      (2.1's ``Conv3d`` forces that padding); any other axis takes the
      layer's own ``padding`` in 2.1 (``None`` here: every value can occur).

    Returns:
        the allowed per-axis paddings (one or two candidates).
    """
    ks, st, dl = triple(kernel_size, "kernel_size"), triple(stride, "stride"), triple(dilation, "dilation")
    centred = tuple(d * ((k - 1) // 2) for k, d in zip(ks, dl))
    if st == (1, 1, 1):
        if (ks[0] * ks[1] * ks[2]) % 2:
            return [centred]
        return [(0, 0, 0), centred] if centred != (0, 0, 0) else [centred]
    return [tuple(c if k % 2 and s == 1 else None for c, k, s in zip(centred, ks, st))]  # type: ignore[misc]


def check_torchsparse_geometry(
    name: str, kernel_size: IntOr3, stride: IntOr3, dilation: IntOr3, padding: IntOr3
) -> None:
    """Raise ``ValueError`` when a layer's padding puts its taps where no TorchSparse conv would.

    The weights of such a layer cannot be exchanged with TorchSparse: every
    tap would read a different neighbour.
    """
    pad = triple(padding, "padding", 0)
    allowed = torchsparse_paddings(kernel_size, stride, dilation)
    for cand in allowed:
        if all(c is None or c == p for c, p in zip(cand, pad)):
            return
    shown = " or ".join(str(tuple("any" if c is None else c for c in cand)) for cand in allowed)
    raise ValueError(
        f"layer {name!r} (kernel_size {triple(kernel_size, 'kernel_size')}, stride {triple(stride, 'stride')}) "
        f"has padding {pad}, but a TorchSparse conv of that shape has padding {shown} (taps at u * dilation - "
        "padding), so the weights would read other neighbours; build the layer with a TorchSparse padding"
    )
