"""The one checkpoint format of training, detection and pruning: config + structure + weights + state.

A checkpoint is a ``torch.save`` dict::

    format        "torchsparse_lite.checkpoint"
    version       2 (FORMAT_VERSION)
    task          "segmentation" | "detection"
    model_config  segmentation: model.config() (rebuilt by models.build_from_config);
                  detection: DetectorConfig.to_dict()
    structure     {kind: record} applied to the rebuilt network before its weights load
                  (prune.structure; first kind "channel_shapes": {layer: [in, out] | [channels]})
    state_dict    model weights and buffers
    data          segmentation: {"voxel_size", "class_names", "in_channels", "ignore_index", "source"};
                  detection: {"voxel_size", "point_range", "class_names"}; {} when unknown
    epoch         completed epochs; step: optimizer steps done
    optional      optimizer, scheduler (state_dicts), rng (for bit-exact resumption), history, args,
                  heldout scores, pruned_from / prune_config (pruned files), elapsed / cpu (detection)

Training writes ``checkpoint_last.pt`` (everything) every epoch and ``model.pt``
(no optimizer) at the end; ``detect train`` writes ``checkpoint.pt``; ``prune``
writes ``pruned.pt`` (structure of the pruned network, the source's data and
progress). :func:`load_checkpoint` also reads the files of earlier versions:
version-1 segmentation checkpoints (``"torchsparse_lite.segmentation/1"``),
untagged pruned files (``config`` + ``state_dict`` + ``channel_shapes``),
untagged detector checkpoints (``config`` + ``model``) and a whole pickled
``nn.Module`` (version 0).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models import build_from_config
from ..prune.structure import apply_structure, structure_of

FORMAT = "torchsparse_lite.checkpoint"
FORMAT_VERSION = 2
TASKS = ("segmentation", "detection")
REQUIRED = ("task", "model_config", "state_dict", "data", "epoch")
V1_FORMAT = "torchsparse_lite.segmentation/1"


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


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    data: dict,
    *,
    task: str = "segmentation",
    model_config: dict | None = None,
    **fields: Any,
) -> Path:
    """Write a checkpoint atomically (temp file + rename).

    Args:
        path: destination file.
        model: the network (DDP-wrapped is fine; pruned is fine: its structure is recorded).
        data: the data settings (see the module docstring).
        task: ``"segmentation"`` or ``"detection"``.
        model_config: what rebuilds the unpruned network; default ``model.config()``.
        fields: optimizer / scheduler state_dicts, epoch, step, history, args, rng, ...
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    net = unwrap(model)
    if model_config is None:
        if not hasattr(net, "config"):
            raise TypeError(f"model {type(net).__name__} has no config(); only models from torchsparse_lite.models")
        model_config = net.config()
    payload = {"format": FORMAT, "version": FORMAT_VERSION, "task": task, "model_config": model_config,
               "structure": structure_of(net), "state_dict": net.state_dict(), "data": dict(data)}  # fmt: skip
    payload.update(fields)
    payload.setdefault("epoch", 0)
    payload.setdefault("step", 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", task: str | None = None
) -> dict[str, Any]:
    """Read, upgrade (earlier versions) and validate a checkpoint.

    Args:
        path: the file.
        map_location: where its tensors go.
        task: the task the caller needs (None: any).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a checkpoint of this package, an unknown format version, missing keys, another task.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train one with `python -m torchsparse_lite train`")
    ckpt = _upgrade(torch.load(path, map_location=map_location, weights_only=False), path)
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {missing}; it is truncated or from another tool")
    if ckpt["task"] not in TASKS and "module" not in ckpt:  # a pickled module (version 0) has no known task
        raise ValueError(f"checkpoint {path}: unknown task {ckpt['task']!r}; known: {TASKS}")
    if task is not None and ckpt["task"] not in (task, None):
        raise ValueError(f"checkpoint {path} holds a {ckpt['task']} model; this command needs a {task} checkpoint")
    if not isinstance(ckpt.setdefault("structure", {}), dict) or not isinstance(ckpt["data"], dict):
        raise ValueError(f"checkpoint {path}: 'structure' and 'data' must be dicts")
    return ckpt


def _upgrade(raw: object, path: Path) -> dict[str, Any]:
    """The current layout of what ``torch.load`` returned (this version's, or an earlier one's)."""
    if isinstance(raw, nn.Module):  # version 0: a whole pickled module
        return {"format": FORMAT, "version": 0, "task": None, "module": raw, "model_config": None,
                "state_dict": raw.state_dict(), "data": {}, "epoch": 0}  # fmt: skip
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a torchsparse_lite checkpoint: it holds a {type(raw).__name__}")
    fmt = raw.get("format")
    if fmt == FORMAT:
        if raw.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path}: unknown checkpoint format version {raw.get('version')!r}; this "
                             f"torchsparse_lite reads version {FORMAT_VERSION} (upgrade it to read the file)")
        return dict(raw)
    if fmt == V1_FORMAT:
        return {**raw, "format": FORMAT, "version": 1, "task": "segmentation", "structure": {}}
    if isinstance(fmt, str) and fmt.startswith("torchsparse_lite."):
        raise ValueError(f"{path}: unknown checkpoint format {fmt!r}; this torchsparse_lite reads {FORMAT!r} "
                         f"version {FORMAT_VERSION} and {V1_FORMAT!r}")
    if fmt is not None:
        raise ValueError(f"{path} is not a torchsparse_lite checkpoint (format {fmt!r})")
    return _upgrade_untagged(raw, path)


def _upgrade_untagged(raw: dict, path: Path) -> dict[str, Any]:
    """Version 0: a pruned file (config + state_dict + channel_shapes) or a detector checkpoint (config + model)."""
    config = raw.get("config", raw.get("model_config"))
    state = raw.get("state_dict", raw.get("model", raw.get("model_state")))
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise ValueError(f"{path} is not a torchsparse_lite checkpoint: it needs 'format' (or, in an old file, "
                         f"'config' and 'state_dict'); found keys {sorted(raw)}")
    if "name" in config:
        task = "segmentation"
    elif "point_range" in config:
        task = "detection"
    else:
        raise ValueError(f"{path}: the model config names neither a segmentation model ('name') nor a detector "
                         f"('point_range'); keys {sorted(config)}")
    rest = {k: v for k, v in raw.items() if k not in ("config", "model", "model_state", "channel_shapes")}
    structure = {"channel_shapes": raw["channel_shapes"]} if "channel_shapes" in raw else {}
    return {**rest, "format": FORMAT, "version": 0, "task": task, "model_config": config, "state_dict": state,
            "structure": structure, "data": raw.get("data", {}), "epoch": raw.get("epoch", 0)}  # fmt: skip


def restore(model: nn.Module, ckpt: dict[str, Any]) -> nn.Module:
    """Reshape a freshly built ``model`` to the checkpoint's structure (in place) and load its weights."""
    net = apply_structure(unwrap(model), ckpt.get("structure", {}))
    net.load_state_dict(ckpt["state_dict"])
    return model


def load_model(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    task: str | None = "segmentation",
    build: Callable[[dict], nn.Module] = build_from_config,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network of a checkpoint with its weights (eval mode) -> (model, checkpoint dict).

    Args:
        task: the task required (None: any).
        build: model config -> unpruned network (default :func:`~torchsparse_lite.models.build_from_config`).
    """
    ckpt = load_checkpoint(path, map_location, task)
    model = ckpt["module"] if "module" in ckpt else restore(build(ckpt["model_config"]), ckpt)
    return model.to(map_location).eval(), ckpt


def require_data(ckpt: dict[str, Any], keys: tuple[str, ...], path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's data settings; ValueError naming what is missing (old pruned and foreign files)."""
    missing = [k for k in keys if k not in ckpt["data"]]
    if missing:
        raise ValueError(f"checkpoint {path} records no data setting(s) {missing} (an old pruned or foreign file); "
                         "prune or train again to write a file that does")
    return ckpt["data"]
