"""Pruning of sparse-conv networks: channel (structured) pruning that shrinks the model, importance
criteria, unstructured / N:M masks, schedules, latency-driven search and reports.

Main entry points: :func:`prune_model` (trace -> score -> select -> shrink), :func:`prune_taps` (whole
kernel offsets, maps included), :func:`prune_blocks` (whole residual blocks), :func:`train_group_lasso`
(channels trained to zero), :func:`train_l0` (hard-concrete gates), :func:`train_admm` (ADMM toward a
channel / N:M set), :func:`train_scp` (soft masks from the batch norms), :func:`reconstruct_consumers`
(least-squares refit after pruning, with the ``thinet`` criterion), :func:`build_dependency_graph`,
:func:`apply_nm_sparsity` / :func:`remove_masks`, :func:`sensitivity_analysis`, :func:`iterative_prune`,
:func:`netadapt_search`, :func:`amc_search` (DDPG agent), :func:`autoslim_search` (slimmable supernet +
greedy slimming); CLI ``python -m torchsparse_lite prune``.
"""

from .admm import admm_project, constraint_mask, hard_prune, top_channels, train_admm
from .amc import AmcEnv, amc_search
from .autoslim import WidthSpace, autoslim_search, greedy_slim, recalibrate_bn, slice_widths, train_supernet
from .blocks import block_importance, prune_blocks, removable_blocks, remove_blocks, select_blocks
from .cost import ChannelCost, cpu_latency
from .ddpg import DDPG
from .graph import ChannelGroup, DependencyGraph, build_dependency_graph
from .group_lasso import (
    GroupNorm,
    channel_norms,
    channel_slices,
    channel_squares,
    group_lasso_penalty,
    proximal_step,
    train_group_lasso,
    zeroed_channels,
)
from .hessian import HessianOBD, hessian_vector_product, hutchinson_diagonal
from .importance import (
    FPGM,
    APoZ,
    BNScale,
    Fisher,
    Importance,
    Magnitude,
    RandomImportance,
    Taylor,
    bn_l1_penalty,
    get_criterion,
    register_criterion,
)
from .l0 import HardConcreteGates, attach_gates, closed_channels, expected_zeros, fold_gates, train_l0
from .masks import apply_nm_sparsity, apply_unstructured, is_nm_sparse, nm_mask, remove_masks, sparsity
from .netadapt import netadapt_search
from .permute import permute_for_nm, search_permutation
from .reconstruct import reconstruct_consumers
from .schedule import (
    compose_origin,
    cubic_sparsity,
    iterative_prune,
    plot_sensitivity,
    ratios_for_drop,
    rewind_weights,
    sensitivity_analysis,
)
from .scp import SoftChannelMasks, train_scp
from .select import select_channels
from .structured import ChannelPlan, masked_model, plan_pruning, prune_model
from .surgery import apply_channel_shapes, apply_selection, channel_shapes, mask_groups, prune_groups
from .taps import TapGroup, mask_taps, prune_taps, remove_taps, select_taps, tap_groups, tap_importance
from .thinet import ThiNet, contribution_grams, greedy_removal_order

__all__ = [
    "GroupNorm",
    "HardConcreteGates",
    "attach_gates",
    "channel_norms",
    "channel_slices",
    "channel_squares",
    "closed_channels",
    "expected_zeros",
    "fold_gates",
    "group_lasso_penalty",
    "proximal_step",
    "train_group_lasso",
    "train_l0",
    "SoftChannelMasks",
    "constraint_mask",
    "hard_prune",
    "admm_project",
    "top_channels",
    "train_admm",
    "train_scp",
    "zeroed_channels",
    "HessianOBD",
    "ThiNet",
    "contribution_grams",
    "greedy_removal_order",
    "hessian_vector_product",
    "hutchinson_diagonal",
    "reconstruct_consumers",
    "register_criterion",
    "TapGroup",
    "block_importance",
    "mask_taps",
    "prune_blocks",
    "prune_taps",
    "removable_blocks",
    "remove_blocks",
    "remove_taps",
    "select_blocks",
    "select_taps",
    "tap_groups",
    "tap_importance",
    "APoZ",
    "BNScale",
    "ChannelGroup",
    "ChannelPlan",
    "DependencyGraph",
    "FPGM",
    "Fisher",
    "Importance",
    "Magnitude",
    "RandomImportance",
    "Taylor",
    "apply_channel_shapes",
    "apply_nm_sparsity",
    "apply_selection",
    "apply_unstructured",
    "bn_l1_penalty",
    "build_dependency_graph",
    "channel_shapes",
    "compose_origin",
    "cubic_sparsity",
    "get_criterion",
    "is_nm_sparse",
    "iterative_prune",
    "mask_groups",
    "masked_model",
    "netadapt_search",
    "AmcEnv",
    "ChannelCost",
    "DDPG",
    "WidthSpace",
    "amc_search",
    "autoslim_search",
    "cpu_latency",
    "greedy_slim",
    "recalibrate_bn",
    "slice_widths",
    "train_supernet",
    "nm_mask",
    "permute_for_nm",
    "plan_pruning",
    "plot_sensitivity",
    "prune_groups",
    "prune_model",
    "ratios_for_drop",
    "remove_masks",
    "rewind_weights",
    "search_permutation",
    "select_channels",
    "sensitivity_analysis",
    "sparsity",
]
