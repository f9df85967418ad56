"""The architecture record of a (pruned) network that checkpoints store beside its config and weights.

A *structure* is ``{kind: record}``. The network is rebuilt from its model
config, then every record is applied to it in place, then its ``state_dict``
loads: no pickled module and no original class are needed. Kinds:

``channel_shapes``
    ``{layer name: [in, out]}`` (``Conv3d``, ``Linear``) or ``[channels]``
    (batch norms), from :func:`~.surgery.channel_shapes`.

*A new kind* (e.g. the kept kernel offsets of tap pruning) is one entry of
:data:`KINDS`: a function that reads the record off a model and one that
applies it to a freshly built one. A record of a kind not listed there is
refused with a ValueError (the file is from a newer torchsparse_lite).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .surgery import apply_channel_shapes, channel_shapes

Reader = Callable[[nn.Module], dict]
Applier = Callable[[nn.Module, dict], nn.Module]


def _changed_shapes(model: nn.Module, shapes: dict) -> nn.Module:
    """Resize only the layers whose channel counts differ from ``model``'s; unknown layer names are refused."""
    current = channel_shapes(model)
    unknown = sorted(set(shapes) - set(current))
    if unknown:
        raise ValueError(
            f"structure channel_shapes names layers the model lacks: {unknown[:5]}; "
            "the checkpoint's model config and its structure disagree"
        )
    changed = {name: list(s) for name, s in shapes.items() if list(s) != current[name]}
    return apply_channel_shapes(model, changed) if changed else model


KINDS: dict[str, tuple[Reader, Applier]] = {
    "channel_shapes": (channel_shapes, _changed_shapes),
}
"""Structure kind -> (read it off a model, apply it to a freshly built model in place)."""


def structure_of(model: nn.Module) -> dict[str, dict]:
    """Every kind's record of ``model`` (what a checkpoint stores as ``structure``)."""
    return {kind: read(model) for kind, (read, _) in KINDS.items()}


def apply_structure(model: nn.Module, structure: dict[str, dict]) -> nn.Module:
    """Reshape a freshly built ``model`` in place to a saved ``structure``; returns it.

    Raises:
        ValueError: a kind this version does not know, or a record that does not fit the model.
    """
    if not isinstance(structure, dict):
        raise ValueError(f"structure must be a dict of kind -> record, got {type(structure).__name__}")
    unknown = sorted(set(structure) - set(KINDS))
    if unknown:
        raise ValueError(
            f"checkpoint structure has unknown kind(s) {unknown}; this torchsparse_lite applies {sorted(KINDS)} "
            "(the file was written by a newer version)"
        )
    for kind, record in structure.items():
        model = KINDS[kind][1](model, record)
    return model
