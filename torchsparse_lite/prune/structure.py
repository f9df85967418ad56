"""The architecture record of a (pruned) network that checkpoints store beside its config and weights.

A *structure* is ``{kind: record}``. The network is rebuilt from its model
config, then every record is applied to it in place, then its ``state_dict``
loads: no pickled module and no original class are needed. Kinds:

``voxel_drop``
    ``{encoder stage: {"keep", "scorer", "tau"}}``: MinkUNet's dynamic voxel
    drops (:mod:`.voxels`); applied first, so that the learned keep heads exist
    when the channel record resizes them.
``channel_shapes``
    ``{layer name: [in, out]}`` (``Conv3d``, ``Linear``) or ``[channels]``
    (batch norms), from :func:`~.surgery.channel_shapes`.
``taps``
    ``{conv name: [kept full-box tap indices]}`` of convs holding a tap
    subset (tap pruning, :mod:`.taps`; cross / star kernels).

``blocks``
    ``[block name]``: residual blocks / layers replaced by ``nn.Identity``
    (block pruning, :mod:`.blocks`).

Records are applied in the order of :data:`KINDS` (channels before taps:
resizing a conv keeps its taps, and the tap record then slices its weight;
blocks last: the other records do not name the convs of removed blocks).

*A new kind* (e.g. the kept kernel offsets of tap pruning) is one entry of
:data:`KINDS`: a function that reads the record off a model and one that
applies it to a freshly built one. A record of a kind not listed there is
refused with a ValueError (the file is from a newer torchsparse_lite).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .blocks import apply_removed_blocks, removed_blocks
from .surgery import apply_channel_shapes, channel_shapes
from .taps import apply_tap_structure, tap_structure
from .voxels import apply_voxel_drop_record, voxel_drop_record

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
    "voxel_drop": (voxel_drop_record, apply_voxel_drop_record),
    "channel_shapes": (channel_shapes, _changed_shapes),
    "taps": (tap_structure, apply_tap_structure),
    "blocks": (removed_blocks, apply_removed_blocks),
}
"""Structure kind -> (read it off a model, apply it to a freshly built model in place)."""


def structure_of(model: nn.Module) -> dict[str, dict]:
    """Every non-empty record of ``model`` (what a checkpoint stores as ``structure``)."""
    records = {kind: read(model) for kind, (read, _) in KINDS.items()}
    return {kind: rec for kind, rec in records.items() if rec}  # an empty record changes nothing


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
    for kind, (_, apply) in KINDS.items():
        if kind in structure:
            model = apply(model, structure[kind])
    return model
