"""Grouping strategies for gather-GEMM-scatter: plans, the execution plan, the PyTorch executor and a tuner.

>>> plan = plan_groups(kmap.counts, GroupingConfig("adaptive", epsilon=0.3), kmap.identity_offset, kmap.symmetric)
>>> plan.work(cin, cout)   # real FLOPs, padded FLOPs, launches
"""

from .config import STRATEGIES, GroupingConfig, as_grouping
from .execution import EXECUTORS, SCATTERS, ExecutionPlan, default_scatter
from .plan import Group, GroupPlan, WorkReport, plan_groups
from .torch_exec import TorchConvFunction, group_indices, grouped_sparse_conv, scatter_offsets, torch_plan
from .tuner import GroupingTuner, LayerSignature, layer_signature

__all__ = [
    "EXECUTORS",
    "SCATTERS",
    "STRATEGIES",
    "ExecutionPlan",
    "Group",
    "GroupPlan",
    "GroupingConfig",
    "GroupingTuner",
    "LayerSignature",
    "TorchConvFunction",
    "WorkReport",
    "as_grouping",
    "default_scatter",
    "group_indices",
    "grouped_sparse_conv",
    "layer_signature",
    "plan_groups",
    "scatter_offsets",
    "torch_plan",
]
