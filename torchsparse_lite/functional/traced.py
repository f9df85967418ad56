"""``sparse_conv`` in a traced graph (``torch.compile``, ``torch.export``): one custom op per conv.

The eager path plans groups from the map's per-offset counts and caches the
plan on the map; in a graph the counts are data, so the resolved
:class:`~torchsparse_lite.functional.plan.ExecutionSettings` and grouping go
to the backend's op (:mod:`torchsparse_lite.ops.conv`, :mod:`torchsparse_lite.ops.triton`)
as plain arguments, and the op plans at run time, exactly as eager would
for a grouping name or :class:`~torchsparse_lite.grouping.GroupingConfig`. A
:class:`~torchsparse_lite.grouping.GroupingTuner` cannot time candidates
inside a graph: its layers run ``"separate"``.
"""

from __future__ import annotations

import dataclasses

import torch

from ..config import resolve
from ..grouping import GroupingConfig, GroupingTuner, as_grouping
from ..kmap.kernel_map import KernelMap
from ..ops.conv import conv_torch, grouping_args
from ..ops.triton import conv_triton
from .plan import ExecutionSettings


def traced_grouping(grouping: object) -> GroupingConfig:
    """The grouping a traced conv runs: the argument or the config's, ``"separate"`` for a tuner."""
    grouping = resolve("grouping", grouping)
    return GroupingConfig() if isinstance(grouping, GroupingTuner) else as_grouping(grouping)


def traced_conv(
    feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, settings: ExecutionSettings, grouping: object
) -> torch.Tensor:
    """[n_in, Cin] -> [n_out, Cout] through the backend's conv op (differentiable in ``feats`` and ``weight``)."""
    counts = kmap.counts
    if not isinstance(counts, torch.Tensor):  # a map built eagerly, outside the graph
        counts = torch.tensor(counts, dtype=torch.int64, device=kmap.in_idx.device)
    identity = -1 if kmap.identity_offset is None else kmap.identity_offset
    head = (feats, weight, kmap.in_idx, kmap.out_idx, counts, kmap.n_out, identity, kmap.symmetric, False)
    cfg = grouping_args(traced_grouping(grouping))
    if settings.backend == "triton":
        flow = settings.dataflow or ("output_stationary" if settings.deterministic else "atomic")
        tiles = [] if settings.tiles is None else [int(v) for v in dataclasses.astuple(settings.tiles)]
        return conv_triton(*head, *cfg, flow, settings.tf32, tiles)
    ordered = settings.deterministic and settings.device_type == "cuda"
    return conv_torch(*head, *cfg, settings.chunk_rows, ordered)
