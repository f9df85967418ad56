"""``torchsparse.nn.functional``: TorchSparse 2.1's conv-mode switches, without mutable globals.

TorchSparse keeps ``kmap_mode``, ``downsample_mode``, ``conv_mode`` and a
global conv config in module globals. Here ``downsample_mode`` is the engine
config's own field (:func:`torchsparse_lite.config.set_config`, a frozen
dataclass in a context variable) and the rest live in a frozen
:class:`Modes` held in another context variable, replaced (never mutated) by
the setters. Semantics:

* ``kmap_mode``: ``"hashmap_on_the_fly"`` (default) or ``"hashmap"``; they
  place strided-conv taps differently (see :mod:`.plan`).
* ``downsample_mode``: ``"spconv"`` (default) or ``"minkowski"``.
* ``conv_mode`` (0/1/2) and the config's ``dataflow``, ``ifsort``,
  ``split_mask_num*``, ``epsilon``, ``mm_thresh``, ``FOD_fusion`` only pick
  TorchSparse's CUDA kernels; they are accepted and recorded, and change no
  result.

Unknown modes and unknown config keys raise ``ValueError``.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from ....config import get_config, set_config

__all__ = [
    "ConvMode",
    "Dataflow",
    "clear_global_conv_config",
    "get_conv_mode",
    "get_default_conv_config",
    "get_downsample_mode",
    "get_global_conv_config",
    "get_kmap_mode",
    "set_conv_mode",
    "set_downsample_mode",
    "set_global_conv_config",
    "set_kmap_mode",
]

KMAP_MODES = ("hashmap_on_the_fly", "hashmap")
DOWNSAMPLE_MODES = ("spconv", "minkowski")


class ConvMode(Enum):
    mode0 = 0
    mode1 = 1
    mode2 = 2


class Dataflow(Enum):
    ImplicitGEMM = 0
    GatherScatter = 1
    FetchOnDemand = 2
    CodedCSR = 3


CONFIG_KEYS = (
    "dataflow", "ifsort", "kmap_mode", "downsample_mode", "split_mask_num", "split_mask_num_bwd",
    "epsilon", "mm_thresh", "FOD_fusion",
)  # fmt: skip


class AttributeDict(dict):
    """A dict whose keys read and write as attributes (TorchSparse's conv config type)."""

    def __getattr__(self, name: str) -> object:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: object) -> None:
        self[name] = value


@dataclass(frozen=True)
class Modes:
    """The TorchSparse switches that are not engine-config fields."""

    kmap_mode: str = "hashmap_on_the_fly"
    conv_mode: ConvMode = ConvMode.mode0
    global_config: Mapping[str, object] | None = None


_MODES: contextvars.ContextVar[Modes] = contextvars.ContextVar(
    "torchsparse_compat_modes",
    default=Modes(),  # noqa: B039 - frozen, hence immutable
)


def _choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"unsupported {name} {value!r}; TorchSparse 2.1 accepts {choices}")
    return value  # type: ignore[return-value]


def set_kmap_mode(kmap_mode: str) -> None:
    """Choose ``"hashmap_on_the_fly"`` or ``"hashmap"`` for the convs run after this call (in this context)."""
    _MODES.set(dataclasses.replace(_MODES.get(), kmap_mode=_choice("kmap_mode", kmap_mode, KMAP_MODES)))


def get_kmap_mode() -> str:
    return _MODES.get().kmap_mode


def set_downsample_mode(downsample_mode: str) -> None:
    """Choose ``"spconv"`` or ``"minkowski"``: sets the engine config's ``downsample_mode``."""
    set_config(downsample_mode=_choice("downsample_mode", downsample_mode, DOWNSAMPLE_MODES))


def get_downsample_mode() -> str:
    return get_config().downsample_mode


def set_conv_mode(conv_mode: int | ConvMode) -> None:
    """Record TorchSparse's CUDA kernel choice (0, 1, 2 or a :class:`ConvMode`); results do not depend on it."""
    if isinstance(conv_mode, bool) or not isinstance(conv_mode, (int, ConvMode)):
        raise TypeError(f"conv_mode must be 0, 1, 2 or a ConvMode, got {conv_mode!r}")
    if isinstance(conv_mode, int):
        if conv_mode not in (0, 1, 2):
            raise ValueError(f"undefined conv_mode {conv_mode}; TorchSparse 2.1 has 0, 1 and 2")
        conv_mode = ConvMode(conv_mode)
    _MODES.set(dataclasses.replace(_MODES.get(), conv_mode=conv_mode))


def get_conv_mode() -> ConvMode:
    return _MODES.get().conv_mode


def check_conv_config(config: Mapping[str, object], name: str = "config") -> dict[str, object]:
    """Validate a TorchSparse conv config (a mapping); returns a plain copy."""
    if not isinstance(config, Mapping):
        raise TypeError(f"{name} must be a mapping (e.g. get_default_conv_config()), got {type(config).__name__}")
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"{name} has unknown keys {unknown}; TorchSparse 2.1's conv config keys are {CONFIG_KEYS}")
    if "kmap_mode" in config:
        _choice("kmap_mode", config["kmap_mode"], KMAP_MODES)
    if "downsample_mode" in config:
        _choice("downsample_mode", config["downsample_mode"], DOWNSAMPLE_MODES)
    if "dataflow" in config and not isinstance(config["dataflow"], Dataflow):
        raise TypeError(f"{name}['dataflow'] must be a Dataflow, got {config['dataflow']!r}")
    return dict(config)


def get_default_conv_config(conv_mode: ConvMode = ConvMode.mode0, training: bool = False) -> AttributeDict:
    """A fresh copy of TorchSparse 2.1's default conv config (``training`` is accepted, as there)."""
    if not isinstance(conv_mode, ConvMode):
        raise TypeError(f"conv_mode must be a ConvMode, got {conv_mode!r}")
    return AttributeDict(
        dataflow=Dataflow.ImplicitGEMM, ifsort=conv_mode != ConvMode.mode0, kmap_mode="hashmap_on_the_fly",
        downsample_mode="spconv", split_mask_num=3 if conv_mode == ConvMode.mode2 else 1, split_mask_num_bwd=3,
        epsilon=0.0, mm_thresh=0, FOD_fusion=True,
    )  # fmt: skip


def set_global_conv_config(conv_config: Mapping[str, object]) -> None:
    """Use ``conv_config`` for every conv without its own ``config`` (a frozen copy is kept)."""
    frozen = MappingProxyType(check_conv_config(conv_config, "conv_config"))
    _MODES.set(dataclasses.replace(_MODES.get(), global_config=frozen))


def get_global_conv_config() -> AttributeDict | None:
    cfg = _MODES.get().global_config
    return None if cfg is None else AttributeDict(cfg)


def clear_global_conv_config() -> None:
    _MODES.set(dataclasses.replace(_MODES.get(), global_config=None))


def layer_modes(config: Mapping[str, object] | None) -> tuple[str, str]:
    """``(kmap_mode, downsample_mode)`` for a conv: its own config, else the global config, else the modes."""
    modes = _MODES.get()
    kmap_mode, downsample_mode = modes.kmap_mode, get_config().downsample_mode
    for cfg in (modes.global_config, config):
        if cfg is not None:
            kmap_mode = cfg.get("kmap_mode", kmap_mode)  # type: ignore[assignment]
            downsample_mode = cfg.get("downsample_mode", downsample_mode)  # type: ignore[assignment]
    return kmap_mode, downsample_mode
