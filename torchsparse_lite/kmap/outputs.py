"""Output coordinates of a sparse conv: which sites of the dense conv's output are active.

* submanifold: the inputs themselves.
* conv, ``"spconv"`` rule: every output site ``o`` (inside the output shape
  when the geometry is bounded, else ``o >= 0``) with an input at
  ``o * stride + offset`` for some tap — a dense ``conv3d`` with the
  geometry's padding, restricted to its active outputs.
* conv, ``"minkowski"`` rule: unique ``c // stride``.
* transposed (generative; no cached down-sampling map): every
  ``c * stride + offset`` inside the output grid.
"""

from __future__ import annotations

import torch

from .candidates import enumerates, output_keys
from .geometry import ConvGeometry
from .keys import pack, unpack
from .numpy_ops import unique_keys


def check_bound(coords: torch.Tensor, bound: tuple[int, int, int] | None, name: str) -> None:
    """Raise ``ValueError`` when range-checked [N, 4] ``coords`` reach outside the spatial ``bound``."""
    if bound is None or not coords.shape[0]:
        return
    hi = coords[:, 1:].amax(0).tolist()
    if any(h >= b for h, b in zip(hi, bound)):
        raise ValueError(
            f"{name} reach {hi} on the spatial axes, outside the grid of spatial shape {list(bound)}; "
            "every coordinate must be < the spatial shape on its axis (enlarge spatial_shape or crop the points)"
        )


def _unique_coords(
    batch: torch.Tensor, spatial: torch.Tensor, out_shape: tuple[int, int, int] | None
) -> torch.Tensor:
    """Unique (batch, spatial) rows of non-negative, packable sites, inside ``out_shape`` when set, in key order."""
    if out_shape is not None:
        keep = (spatial < torch.tensor(out_shape, dtype=spatial.dtype, device=spatial.device)).all(dim=1)
        batch, spatial = batch[keep], spatial[keep]
    return unpack(unique_keys(pack(torch.cat([batch[:, None], spatial], dim=1))))


def output_coords(in_coords: torch.Tensor, geometry: ConvGeometry) -> torch.Tensor:
    """Output coordinates of the conv ``geometry`` over ``in_coords`` (see the module doc).

    Args:
        in_coords: [N, 4] int32 (batch, x, y, z), range-checked.
        geometry: the conv.

    Returns:
        [n_out, 4] int32, sorted by (batch, x, y, z) except for submanifold.
    """
    if geometry.mode == "submanifold":
        return in_coords
    if enumerates(geometry):
        return unpack(output_keys(in_coords, geometry))
    # Minkowski's rule on a conv whose windows overlap.
    c = in_coords.to(torch.int64)
    s = torch.tensor(geometry.stride, dtype=torch.int64, device=c.device)
    return _unique_coords(c[:, 0], torch.div(c[:, 1:], s, rounding_mode="floor"), geometry.out_shape)
