"""Sparse networks: MinkUNet (segmentation), sparse ResNets, and their parameter / MAC counts."""

from __future__ import annotations

from torch import nn

from .blocks import ConvBlock, ResidualBlock, UpBlock, down_stage
from .minkunet import BASE_CHANNELS, DEPTHS, MinkUNet
from .resnet import RESNET_STAGES, SparseResNet, SparseResNetClassifier
from .stats import count_macs, count_macs_by_layer, count_parameters

MODEL_NAMES = ("minkunet", "minkunet18", "minkunet34", "resnet21", "resnet34")


def build_model(name: str, in_channels: int, num_classes: int, cr: float = 1.0, **kwargs: object) -> nn.Module:
    """Build a network by name.

    Args:
        name: ``"minkunet"`` (= ``"minkunet18"``), ``"minkunet34"`` (per-voxel
            logits [N, num_classes]) or ``"resnet21"`` / ``"resnet34"``
            (:class:`SparseResNetClassifier`, per-sample logits [B, num_classes]).
        in_channels: input feature channels.
        num_classes: output classes.
        cr: width multiplier of every layer.
        kwargs: extra constructor arguments (e.g. ``channels=`` for a pruned MinkUNet).
    """
    key = name.lower()
    if key in ("minkunet", "minkunet18"):
        return MinkUNet(in_channels, num_classes, cr=cr, depth=18, **kwargs)  # type: ignore[arg-type]
    if key == "minkunet34":
        return MinkUNet(in_channels, num_classes, cr=cr, depth=34, **kwargs)  # type: ignore[arg-type]
    if key in ("resnet21", "resnet34"):
        return SparseResNetClassifier(in_channels, num_classes, depth=int(key[-2:]), cr=cr, **kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown model {name!r}; choose one of {MODEL_NAMES}")


def build_from_config(config: dict) -> nn.Module:
    """Rebuild a network from its ``model.config()`` dict (as stored in checkpoints)."""
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"config must be a dict with a 'name' key (from model.config()), got {config!r}")
    kwargs = {k: v for k, v in config.items() if k not in ("name", "in_channels", "num_classes", "cr")}
    return build_model(config["name"], config["in_channels"], config["num_classes"], config.get("cr", 1.0), **kwargs)


__all__ = [
    "BASE_CHANNELS",
    "DEPTHS",
    "MODEL_NAMES",
    "RESNET_STAGES",
    "ConvBlock",
    "MinkUNet",
    "ResidualBlock",
    "SparseResNet",
    "SparseResNetClassifier",
    "UpBlock",
    "build_from_config",
    "build_model",
    "count_macs",
    "count_macs_by_layer",
    "count_parameters",
    "down_stage",
]
