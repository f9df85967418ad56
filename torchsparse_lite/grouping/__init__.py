"""Grouping strategies for gather-GEMM-scatter: plans, a PyTorch executor and a tuner.

>>> plan = plan_groups(kmap.counts, GroupingConfig("adaptive", epsilon=0.3), kmap.identity_offset, kmap.symmetric)
>>> plan.work(cin, cout)   # real FLOPs, padded FLOPs, launches
"""

from .config import STRATEGIES, GroupingConfig, as_grouping
from .plan import Group, GroupPlan, WorkReport, plan_groups
from .torch_exec import GroupedConvFunction, group_indices, grouped_sparse_conv
from .tuner import GroupingTuner, LayerSignature, layer_signature

__all__ = [
    "STRATEGIES",
    "Group",
    "GroupPlan",
    "GroupedConvFunction",
    "GroupingConfig",
    "GroupingTuner",
    "LayerSignature",
    "WorkReport",
    "as_grouping",
    "group_indices",
    "grouped_sparse_conv",
    "layer_signature",
    "plan_groups",
]
