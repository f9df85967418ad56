"""Checkpoints of segmentation training: model config + weights + optimizer + progress.

A checkpoint is a ``torch.save`` dict::

    format        "torchsparse_lite.segmentation/1"
    model_config  model.config() -> rebuilt with models.build_from_config
    state_dict    model weights and buffers
    data          {"voxel_size", "class_names", "in_channels", "ignore_index", "source"}
    optimizer, scheduler   their state_dicts (None in an inference-only file)
    epoch         number of completed epochs; step: optimizer steps done
    history       per-step losses and per-epoch metrics so far
    rng           torch / numpy / python RNG states (for bit-exact resumption)
    args          the training command's arguments

Training writes ``checkpoint_last.pt`` (all of the above, every epoch) and, at
the end, ``model.pt`` (model_config, state_dict, data, epoch, step, held-out
scores: enough for eval / predict / prune).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models import build_from_config

FORMAT = "torchsparse_lite.segmentation/1"
REQUIRED = ("model_config", "state_dict", "data", "epoch")


def rng_state() -> dict[str, Any]:
    """Current torch (CPU and CUDA), numpy and python RNG states."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    state["python"] = random.getstate()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper."""
    return model.module if hasattr(model, "module") else model


def save_checkpoint(path: str | os.PathLike, model: nn.Module, data: dict, **fields: Any) -> Path:
    """Write a checkpoint atomically (temp file + rename).

    Args:
        path: destination file.
        model: the network (DDP-wrapped is fine); must have ``config()``.
        data: ``{"voxel_size", "class_names", "in_channels", "ignore_index", "source"}``.
        fields: optimizer / scheduler state_dicts, epoch, step, history, args, rng.
    """
    net = unwrap(model)
    if not hasattr(net, "config"):
        raise TypeError(f"model {type(net).__name__} has no config(); only models from torchsparse_lite.models")
    payload = {"format": FORMAT, "model_config": net.config(), "state_dict": net.state_dict(), "data": dict(data)}
    payload.update(fields)
    payload.setdefault("epoch", 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train one with `python -m torchsparse_lite train`")
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a torchsparse_lite segmentation checkpoint (format {FORMAT!r})")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {missing}; it is truncated or from another tool")
    return ckpt


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network of a checkpoint with its weights (eval mode) -> (model, checkpoint dict)."""
    ckpt = load_checkpoint(path, map_location)
    model = build_from_config(ckpt["model_config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(map_location).eval(), ckpt
