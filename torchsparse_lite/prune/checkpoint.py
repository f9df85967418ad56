"""Model files of pruning: rebuild a network from a checkpoint, write a pruned one.

Read: a training checkpoint (``model_config`` + ``state_dict``, see
:mod:`torchsparse_lite.train.checkpoint`), a pruned file written by
:func:`save_pruned` (``config`` + ``state_dict`` + ``channel_shapes``), or a
whole pickled ``nn.Module``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..models import build_from_config
from .surgery import apply_channel_shapes, channel_shapes


def read_checkpoint(path: str | os.PathLike) -> object:
    """The raw object saved at ``path`` (CPU tensors); FileNotFoundError naming ``path`` when it is absent."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=False)


def load_checkpoint(path: str | os.PathLike) -> nn.Module:
    """Rebuild a model from a checkpoint dict: ``config`` (or ``model_config``) + ``state_dict`` (or ``model``).

    A pruned checkpoint's ``channel_shapes`` are applied before loading.

    Returns:
        The model in eval mode (or the saved module itself when a whole ``nn.Module`` was saved).
    """
    ck = read_checkpoint(path)
    if isinstance(ck, nn.Module):
        return ck
    if not isinstance(ck, dict):
        raise ValueError(f"--checkpoint {path}: expected a dict or an nn.Module, got {type(ck).__name__}")
    config = ck.get("config", ck.get("model_config"))
    state = ck.get("state_dict", ck.get("model", ck.get("model_state")))
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise ValueError(
            f"--checkpoint {path}: needs 'config' (model.config()) and 'state_dict'; found keys {sorted(ck)}"
        )
    model = build_from_config(config)
    if "channel_shapes" in ck:
        apply_channel_shapes(model, ck["channel_shapes"])
    model.load_state_dict(state)
    return model.eval()


def checkpoint_voxel_size(path: str | os.PathLike) -> float | None:
    """The voxel size a training checkpoint records under ``data`` (None when it records none)."""
    saved = read_checkpoint(path)
    if isinstance(saved, dict) and isinstance(saved.get("data"), dict) and "voxel_size" in saved["data"]:
        return float(saved["data"]["voxel_size"])
    return None


def save_pruned(path: str | os.PathLike, pruned: nn.Module, original: nn.Module) -> dict:
    """Write ``pruned`` as state dict + channel shapes + the original's ``config()`` (when it has one).

    :func:`load_checkpoint` rebuilds the original architecture, shrinks it to
    the channel shapes and loads the weights. Returns the saved dict.
    """
    ckpt = {"state_dict": pruned.state_dict(), "channel_shapes": channel_shapes(pruned)}
    if hasattr(original, "config"):
        ckpt["config"] = original.config()
    torch.save(ckpt, Path(path))
    return ckpt
