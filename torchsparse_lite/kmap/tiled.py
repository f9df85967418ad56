"""The map of a conv whose windows tile the grid (kernel == stride, no padding or dilation), without a search.

In such a conv (MinkUNet's and SECOND's k2 s2 down-sampling) every input
``c`` lies in exactly one window: its output is ``c // s`` and its tap is
``c % s``. So the output coordinates, already a ``torch.unique`` of the
``c // s`` keys, come with the whole map through ``return_inverse``: the
pairs of tap ``k`` are the inputs whose remainder is ``k``, each meeting the
output row the inverse names. No index is built and nothing is searched,
where the general builder (:mod:`.pairs`) indexes the inputs and searches
every kernel column of every output.

Inputs in key order (as :func:`~torchsparse_lite.utils.sparse_quantize` and
every strided output give them) meet their outputs in increasing order within
one tap, since ``c // s`` is monotone in ``c`` for a fixed remainder; other
orders are sorted tap by tap. The map is identical to the searched one.
"""

from __future__ import annotations

import torch

from .geometry import ConvGeometry
from .keys import pack, unpack


def tiled_map(
    in_coords: torch.Tensor, geometry: ConvGeometry
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """``(out_coords, in_idx, out_idx, counts)`` of a tiling conv over validated [N, 4] ``in_coords``.

    Args:
        in_coords: [N, 4] int32 (batch, x, y, z), range-checked.
        geometry: a ``"conv"`` geometry with :attr:`ConvGeometry.tiles`.

    Returns:
        out_coords [M, 4] int32 sorted by key (as :func:`.outputs.output_coords`
        gives them), the pairs grouped by tap (x fastest), each tap's sorted by
        output row, and the pairs per tap.
    """
    if geometry.mode != "conv" or not geometry.tiles:
        raise ValueError(f"tiled_map needs a conv whose windows tile the grid, got {geometry}")
    c = in_coords.to(torch.int64)
    s = torch.tensor(geometry.stride, dtype=torch.int64, device=c.device)
    window = torch.div(c[:, 1:], s, rounding_mode="floor")
    rows = None
    if geometry.out_shape is not None:
        # Windows past a bounded grid's last full window have no output.
        inside = (window < torch.tensor(geometry.out_shape, device=c.device)).all(dim=1)
        if not bool(inside.all()):
            rows = torch.nonzero(inside).squeeze(1)
            c, window = c[rows], window[rows]
    out_keys, inverse = torch.unique(pack(torch.cat([c[:, :1], window], dim=1)), return_inverse=True)
    rem = c[:, 1:] - window * s
    kx, ky, _ = geometry.kernel_size
    tap = rem[:, 0] + kx * (rem[:, 1] + ky * rem[:, 2])
    ins, outs = [], []
    for k in range(geometry.volume):
        src = torch.nonzero(tap == k).squeeze(1)
        dst = inverse.index_select(0, src)
        if dst.numel() > 1 and bool((dst[1:] < dst[:-1]).any()):
            dst, by = torch.sort(dst)
            src = src[by]
        ins.append(src if rows is None else rows.index_select(0, src))
        outs.append(dst)
    counts = tuple(int(t.numel()) for t in ins)
    return unpack(out_keys), torch.cat(ins), torch.cat(outs), counts
