"""State-dict conversion and loading for TorchSparse and spconv checkpoints.

TorchSparse names a conv weight ``kernel`` (shape ``[K, Cin, Cout]``, or
``[Cin, Cout]`` for a 1x1x1 conv); ours is ``weight`` ``[K, Cin, Cout]``.
Batch-norm, bias and linear keys are identical in both.
spconv names it ``weight`` with shape ``[Cout, kx, ky, kz, Cin]`` (2.x).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from ..nn.conv import Conv3d
from .weights import spconv_to_weight, torchsparse_to_weight, weight_to_spconv, weight_to_torchsparse

StateDict = dict[str, torch.Tensor]


def _split(key: str) -> tuple[str, str]:
    prefix, _, leaf = key.rpartition(".")
    return (prefix + "." if prefix else ""), leaf


def _conv_prefixes(model: nn.Module) -> dict[str, Conv3d]:
    return {(name + "." if name else ""): m for name, m in model.named_modules() if isinstance(m, Conv3d)}


def from_torchsparse_state_dict(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """TorchSparse state dict -> ours: every ``*.kernel`` becomes ``*.weight`` as ``[K, Cin, Cout]``.

    Args:
        state_dict: the TorchSparse model's ``state_dict()`` (other keys pass through).
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    out: StateDict = {}
    for key, value in state_dict.items():
        prefix, leaf = _split(key)
        if leaf == "kernel":
            new = prefix + "weight"
            if new in state_dict:
                raise ValueError(f"state_dict has both {key!r} and {new!r}; it is not a TorchSparse conv checkpoint")
            out[new] = torchsparse_to_weight(value)
        else:
            out[key] = value
    return out


def to_torchsparse_state_dict(model: nn.Module) -> StateDict:
    """Our model's state dict in TorchSparse's naming and layout (``kernel``, ``[Cin, Cout]`` when K == 1)."""
    convs = _conv_prefixes(model)
    out: StateDict = {}
    for key, value in model.state_dict().items():
        prefix, leaf = _split(key)
        if prefix in convs and leaf == "weight":
            out[prefix + "kernel"] = weight_to_torchsparse(value)
        else:
            out[key] = value
    return out


def from_spconv_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module | None = None, layout: str = "KRSC"
) -> StateDict:
    """spconv state dict -> ours: every 5-D ``*.weight`` becomes ``[K, Cin, Cout]``.

    Args:
        state_dict: the spconv model's ``state_dict()``.
        model: when given, each converted kernel size must equal the matching
            :class:`Conv3d`'s ``kernel_size`` (catches anisotropic mix-ups).
        layout: ``"KRSC"`` (spconv 2.x) or ``"RSCK"`` (spconv 1.x).
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    convs = _conv_prefixes(model) if model is not None else {}
    out: StateDict = {}
    for key, value in state_dict.items():
        prefix, leaf = _split(key)
        if leaf == "weight" and isinstance(value, torch.Tensor) and value.dim() == 5:
            weight, ks = spconv_to_weight(value, layout)
            conv = convs.get(prefix)
            if model is not None and conv is not None and conv.kernel_size != ks:
                raise ValueError(
                    f"state_dict[{key!r}] has kernel size {ks} but the model's layer has {conv.kernel_size}; "
                    "check the layout argument ('KRSC' for spconv 2.x, 'RSCK' for 1.x)"
                )
            out[key] = weight
        else:
            out[key] = value
    return out


def to_spconv_state_dict(model: nn.Module, layout: str = "KRSC") -> StateDict:
    """Our model's state dict with conv weights in spconv's 5-D layout (``kernel_size`` from each layer)."""
    convs = _conv_prefixes(model)
    out: StateDict = {}
    for key, value in model.state_dict().items():
        prefix, leaf = _split(key)
        if prefix in convs and leaf == "weight":
            out[key] = weight_to_spconv(value, convs[prefix].kernel_size, layout)
        else:
            out[key] = value
    return out


def _read(checkpoint: str | os.PathLike | Mapping[str, object]) -> Mapping[str, torch.Tensor]:
    """A path or an in-memory checkpoint -> its state dict (unwraps ``state_dict`` / ``model``)."""
    if isinstance(checkpoint, (str, os.PathLike)):
        if not os.path.exists(checkpoint):
            raise ValueError(f"checkpoint file {os.fspath(checkpoint)!r} does not exist")
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"checkpoint must be a path or a mapping, got {type(checkpoint).__name__}")
    for wrapper in ("state_dict", "model"):
        inner = checkpoint.get(wrapper)
        if isinstance(inner, Mapping):
            return inner  # type: ignore[return-value]
    return checkpoint  # type: ignore[return-value]


def _load(model: nn.Module, state: StateDict, strict: bool, source: str):
    own = model.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(
                f"{source} checkpoint entry {key!r} has shape {list(value.shape)} after conversion, the model "
                f"expects {list(own[key].shape)}; the checkpoint is for a different architecture"
            )
    return model.load_state_dict(state, strict=strict)


def load_torchsparse_checkpoint(
    model: nn.Module, checkpoint: str | os.PathLike | Mapping[str, object], strict: bool = True
):
    """Load a TorchSparse checkpoint (path or dict) into our ``model``; returns ``load_state_dict``'s result."""
    return _load(model, from_torchsparse_state_dict(_read(checkpoint)), strict, "TorchSparse")


def load_spconv_checkpoint(
    model: nn.Module,
    checkpoint: str | os.PathLike | Mapping[str, object],
    strict: bool = True,
    layout: str = "KRSC",
):
    """Load a spconv checkpoint (path or dict) into our ``model``; returns ``load_state_dict``'s result."""
    return _load(model, from_spconv_state_dict(_read(checkpoint), model, layout), strict, "spconv")
