"""State-dict conversion and loading for TorchSparse and spconv checkpoints.

TorchSparse names a conv weight ``kernel`` (shape ``[K, Cin, Cout]``, or
``[Cin, Cout]`` for a 1x1x1 conv); ours is ``weight`` ``[K, Cin, Cout]``.
TorchSparse enumerates the taps of an even kernel volume z fastest (ours: x
fastest), so converting such a kernel needs the layer's kernel size: the
converters take it from ``model`` and also check that each layer's padding is
one TorchSparse can have (:func:`~.weights.check_torchsparse_geometry`).
Batch-norm, bias and linear keys are identical in both.
spconv names it ``weight`` with shape ``[Cout, kx, ky, kz, Cin]`` (2.x).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from ..nn.conv import Conv3d
from .weights import (
    check_torchsparse_geometry,
    spconv_runs_as_matmul,
    spconv_to_weight,
    torchsparse_to_weight,
    weight_to_spconv,
    weight_to_torchsparse,
)

StateDict = dict[str, torch.Tensor]


def _split(key: str) -> tuple[str, str]:
    prefix, _, leaf = key.rpartition(".")
    return (prefix + "." if prefix else ""), leaf


def _conv_prefixes(model: nn.Module) -> dict[str, Conv3d]:
    return {(name + "." if name else ""): m for name, m in model.named_modules() if isinstance(m, Conv3d)}


def _checked_conv(convs: dict[str, Conv3d], prefix: str) -> Conv3d | None:
    """The model's conv at ``prefix`` (None when absent), its geometry checked against TorchSparse's."""
    conv = convs.get(prefix)
    if conv is not None:
        check_torchsparse_geometry(prefix[:-1], conv.kernel_size, conv.stride, conv.dilation, conv.padding)
    return conv


def from_torchsparse_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module | None = None
) -> StateDict:
    """TorchSparse state dict -> ours: every ``*.kernel`` becomes ``*.weight`` as ``[K, Cin, Cout]``, x fastest.

    Args:
        state_dict: the TorchSparse model's ``state_dict()`` (other keys pass through).
        model: our model the state dict is for; gives each conv's kernel size
            (needed to reorder kernels with an even number of taps, which
            raise ``ValueError`` without it) and checks each conv's padding.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    convs = _conv_prefixes(model) if model is not None else {}
    out: StateDict = {}
    for key, value in state_dict.items():
        prefix, leaf = _split(key)
        if leaf == "kernel":
            new = prefix + "weight"
            if new in state_dict:
                raise ValueError(f"state_dict has both {key!r} and {new!r}; it is not a TorchSparse conv checkpoint")
            conv = _checked_conv(convs, prefix)
            try:
                out[new] = torchsparse_to_weight(value, None if conv is None else conv.kernel_size)
            except ValueError as err:
                hint = ""
                if conv is None:
                    hint = " (pass model=)" if model is None else f" (the model has no Conv3d named {prefix[:-1]!r})"
                raise ValueError(f"state_dict[{key!r}]: {err}{hint}") from None
        else:
            out[key] = value
    return out


def to_torchsparse_state_dict(model: nn.Module) -> StateDict:
    """Our model's state dict in TorchSparse's naming and layout (``kernel``, tap order, ``[Cin, Cout]`` for 1x1x1)."""
    convs = _conv_prefixes(model)
    out: StateDict = {}
    for key, value in model.state_dict().items():
        prefix, leaf = _split(key)
        if prefix in convs and leaf == "weight":
            conv = _checked_conv(convs, prefix)
            out[prefix + "kernel"] = weight_to_torchsparse(value, conv.kernel_size, conv.stride)
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
            conv = convs.get(prefix)
            weight, ks = spconv_to_weight(value, layout, matmul_1x1=_matmul_1x1(key, value, conv, layout))
            if model is not None and conv is not None and conv.kernel_size != ks:
                raise ValueError(
                    f"state_dict[{key!r}] has kernel size {ks} but the model's layer has {conv.kernel_size}; "
                    "check the layout argument ('KRSC' for spconv 2.x, 'RSCK' for 1.x)"
                )
            out[key] = weight
        else:
            out[key] = value
    return out


def _matmul_1x1(key: str, value: torch.Tensor, conv: Conv3d | None, layout: str) -> bool:
    """Whether spconv ran this kernel-size-1 weight as a matmul (see ``spconv_to_weight``); needs the layer."""
    if layout != "KRSC" or tuple(value.shape[1:4]) != (1, 1, 1):
        return False
    if conv is None:
        raise ValueError(
            f"state_dict[{key!r}] is a kernel-size-1 spconv weight: spconv 2.x runs stride-1 and submanifold "
            "1x1x1 convs as features @ weight.view(Cin, Cout), so converting it needs the layer; pass model= "
            "(the native model whose Conv3d receives it)"
        )
    return spconv_runs_as_matmul(conv.kernel_size, conv.stride, conv.submanifold)


def to_spconv_state_dict(model: nn.Module, layout: str = "KRSC") -> StateDict:
    """Our model's state dict with conv weights in spconv's 5-D layout (``kernel_size`` from each layer)."""
    convs = _conv_prefixes(model)
    out: StateDict = {}
    for key, value in model.state_dict().items():
        prefix, leaf = _split(key)
        if prefix in convs and leaf == "weight":
            conv = convs[prefix]
            matmul = spconv_runs_as_matmul(conv.kernel_size, conv.stride, conv.submanifold)
            out[key] = weight_to_spconv(value, conv.kernel_size, layout, matmul_1x1=matmul)
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
    """Load a TorchSparse checkpoint (path or dict) into our ``model``; returns ``load_state_dict``'s result.

    Kernels are reordered to our tap order using the model's kernel sizes;
    a conv whose padding no TorchSparse conv of its shape has raises
    ``ValueError`` (see :func:`from_torchsparse_state_dict`).
    """
    return _load(model, from_torchsparse_state_dict(_read(checkpoint), model), strict, "TorchSparse")


def load_spconv_checkpoint(
    model: nn.Module,
    checkpoint: str | os.PathLike | Mapping[str, object],
    strict: bool = True,
    layout: str = "KRSC",
):
    """Load a spconv checkpoint (path or dict) into our ``model``; returns ``load_state_dict``'s result."""
    return _load(model, from_spconv_state_dict(_read(checkpoint), model, layout), strict, "spconv")
