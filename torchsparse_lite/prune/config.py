"""Options of a pruning run (:class:`PruneConfig`), checked when the config is made."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

from ..models.minkunet import ENCODER_STAGES
from ..nn.voxel_drop import SCORERS
from .blocks import BLOCK_CRITERIA
from .importance import CRITERIA
from .select import NORMALIZERS
from .taps import TAP_CRITERIA, TAP_SCOPES

SCHEDULES = ("oneshot", "iterative", "netadapt")
# option dicts of the structural methods beside channels: key -> (default, allowed values or None for a fraction)
TAP_KEYS = {"ratio": (None, None), "criterion": ("magnitude", TAP_CRITERIA), "scope": ("global", TAP_SCOPES),
            "strided": (False, (False, True))}
VOXEL_KEYS = {"keep": 0.7, "scorer": "learned", "stages": list(ENCODER_STAGES), "budget_weight": 1.0}
BLOCK_KEYS = {"ratio": (None, None), "criterion": ("skip", BLOCK_CRITERIA), "layers": (False, (False, True))}
MODES = ("global", "local")
NM_KEYS = ("n", "m", "permute")


@dataclass
class PruneConfig:
    """Options of a pruning run (the CLI's ``--config`` JSON holds any of these keys).

    criterion: l1 l2 bn fpgm taylor apoz fisher random; ratio / mode / normalize /
    max_ratio / round_to: channel selection (:func:`~.select.select_channels`);
    ignore: modules whose output channels stay; schedule: oneshot, iterative
    (``steps`` cubic steps, ``rewind`` = lottery-ticket rewinding to the
    unpruned weights, or to a checkpoint path such as an early-training one)
    or netadapt (``netadapt_target``: fraction of the measured CPU time,
    ``netadapt_step``, ``netadapt_iters``); sensitivity: scan each group at
    ``sensitivity_ratios``, and with ``max_drop`` prune each group by the
    ratio derived from its curve (one-shot: at once; iterative: each group
    follows the cubic schedule up to its own ratio; netadapt chooses its own
    ratios by latency and refuses ``max_drop``); finetune_steps / lr:
    fine-tune after pruning (split over the iterative steps); nm:
    ``{"n": 2, "m": 4, "permute": true}`` adds N:M masks after channel pruning
    (kept through fine-tuning, then baked); slimming_steps / bn_penalty: train
    with an L1 penalty on BN gammas before scoring (Network Slimming);
    latency_repeats; importance_batches: batches fed to data-driven criteria.
    blocks: ``{"ratio": 0.5, "criterion": "skip"|"bn", "layers": false}``
    removes that fraction of the removable residual blocks (and with
    ``layers`` shape-preserving conv layers) first (:mod:`.blocks`); taps:
    ``{"ratio": 0.3, "criterion": "magnitude"|"taylor"|"contribution",
    "scope": "global"|"layer", "strided": false}`` removes that fraction of the map work as
    whole kernel offsets after the channels (:mod:`.taps`); voxels:
    ``{"keep": 0.7, "scorer": "learned"|"norm", "stages": [...],
    "budget_weight": 1.0}`` wires dynamic voxel drops into a MinkUNet last
    (:mod:`.voxels`; a learned scorer is fine-tuned with the budget loss).
    ``ratio: 0`` with ``blocks``, ``taps`` or ``voxels`` prunes no channels.

    Raises:
        ValueError / TypeError naming the field when a value is out of range,
        unknown, or combined with a schedule that cannot use it.
    """

    criterion: str = "l1"
    ratio: float = 0.5
    mode: str = "global"
    ignore: list[str] = field(default_factory=lambda: ["stem.0.conv"])
    normalize: str = "mean"
    max_ratio: float = 0.9
    round_to: int = 1
    schedule: str = "oneshot"
    steps: int = 3
    rewind: bool | str = False
    sensitivity: bool = False
    sensitivity_ratios: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    max_drop: float | None = None
    netadapt_target: float = 0.6
    netadapt_step: float = 0.25
    netadapt_iters: int = 10
    finetune_steps: int = 50
    lr: float = 0.005
    nm: dict | None = None
    latency_repeats: int = 3
    bn_penalty: float = 0.0
    slimming_steps: int = 0
    importance_batches: int = 2
    blocks: dict | None = None
    taps: dict | None = None
    voxels: dict | None = None

    def __post_init__(self) -> None:
        self.voxels = _voxel_options(self.voxels)
        self.blocks = _method_options("blocks", self.blocks, BLOCK_KEYS, upper=1.0)
        self.taps = _method_options("taps", self.taps, TAP_KEYS, upper=None)
        self._check_names()
        self._check_numbers()
        self._check_sensitivity()
        self._check_nm()
        if not isinstance(self.rewind, bool | str):
            raise TypeError(f"config rewind must be true/false or a checkpoint path, got {self.rewind!r}")
        if self.rewind and self.schedule != "iterative":
            raise ValueError(f"config rewind applies to schedule 'iterative' only, got schedule {self.schedule!r}")

    @classmethod
    def from_dict(cls, d: dict) -> PruneConfig:
        """A config from a JSON dict; ``"data"`` (the CLI's data options) is allowed and ignored here."""
        if not isinstance(d, dict):
            raise TypeError(f"config must be a JSON object, got {type(d).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known - {"data"})
        if unknown:
            raise ValueError(f"config: unknown key(s) {unknown}; valid keys: {sorted(known | {'data'})}")
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def nm_pattern(self) -> tuple[int, int] | None:
        """``(n, m)`` of the N:M masks, or None without ``nm``."""
        if not self.nm:
            return None
        return int(self.nm.get("n", 2)), int(self.nm.get("m", 4))

    def _check_names(self) -> None:
        for name, valid in (("criterion", CRITERIA), ("schedule", SCHEDULES), ("mode", MODES),
                            ("normalize", NORMALIZERS)):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, str) or value not in valid:
                raise ValueError(f"config {name} must be one of {sorted(valid)}, got {value!r}")
        if not isinstance(self.ignore, list | tuple) or not all(isinstance(s, str) for s in self.ignore):
            raise TypeError(f"config ignore must be a list of module names, got {self.ignore!r}")

    def _check_numbers(self) -> None:
        _fraction("ratio", self.ratio)
        _fraction("max_ratio", self.max_ratio)
        _fraction("netadapt_target", self.netadapt_target, low_open=True)
        _fraction("netadapt_step", self.netadapt_step, low_open=True)
        for name, low in (("round_to", 1), ("steps", 1), ("netadapt_iters", 1), ("finetune_steps", 0),
                          ("latency_repeats", 1), ("slimming_steps", 0), ("importance_batches", 1)):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
                raise ValueError(f"config {name} must be an integer >= {low}, got {value!r}")
        for name in ("lr", "bn_penalty"):
            value = getattr(self, name)
            if not _real(value) or value < 0 or (name == "lr" and value == 0):
                raise ValueError(f"config {name} must be a number {'> 0' if name == 'lr' else '>= 0'}, got {value!r}")

    def _check_sensitivity(self) -> None:
        ratios = self.sensitivity_ratios
        if not isinstance(ratios, list | tuple) or not ratios:
            raise ValueError(f"config sensitivity_ratios must be a non-empty list, got {ratios!r}")
        for r in ratios:
            _fraction("sensitivity_ratios", r)
        if any(b <= a for a, b in zip(ratios, ratios[1:])):
            raise ValueError(f"config sensitivity_ratios must increase, got {list(ratios)}")
        if self.max_drop is None:
            return
        if not _real(self.max_drop) or self.max_drop < 0:
            raise ValueError(f"config max_drop must be a number >= 0 (metric points), got {self.max_drop!r}")
        if not self.sensitivity:
            raise ValueError("config max_drop derives per-group ratios from the sensitivity scan: set sensitivity")
        if self.schedule == "netadapt":
            raise ValueError(
                "config max_drop cannot be used with schedule 'netadapt' (it picks the groups and ratios by measured "
                "latency); use schedule 'oneshot' or 'iterative', or drop max_drop"
            )

    def _check_nm(self) -> None:
        if self.nm is None:
            return
        if not isinstance(self.nm, dict):
            raise TypeError(f"config nm must be a dict like {{'n': 2, 'm': 4, 'permute': true}}, got {self.nm!r}")
        unknown = sorted(set(self.nm) - set(NM_KEYS))
        if unknown:
            raise ValueError(f"config nm: unknown key(s) {unknown}; valid: {list(NM_KEYS)}")
        n, m = self.nm.get("n", 2), self.nm.get("m", 4)
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (n, m)) or not 0 < n <= m:
            raise ValueError(f"config nm needs integers 0 < n <= m, got n={n!r}, m={m!r}")


def _method_options(name: str, opts: dict | None, keys: dict, upper: float | None) -> dict | None:
    """``opts`` with defaults filled in, every key checked (``ratio`` required: a fraction, ``upper`` inclusive)."""
    if opts is None:
        return None
    if not isinstance(opts, dict):
        raise TypeError(f"config {name} must be a dict like {{'ratio': 0.3}}, got {opts!r}")
    unknown = sorted(set(opts) - set(keys))
    if unknown:
        raise ValueError(f"config {name}: unknown key(s) {unknown}; valid: {list(keys)}")
    if "ratio" not in opts:
        raise ValueError(f"config {name} needs a ratio")
    ratio = opts["ratio"]
    if upper is not None:
        if not _real(ratio) or not 0.0 <= ratio <= upper:
            raise ValueError(f"config {name} ratio must be a number in [0, {upper}], got {ratio!r}")
    else:
        _fraction(f"{name} ratio", ratio)
    out = {"ratio": float(ratio)}
    for key, (default, allowed) in keys.items():
        if key == "ratio":
            continue
        value = opts.get(key, default)
        if value not in allowed or type(value) is not type(default):
            raise ValueError(f"config {name} {key} must be one of {list(allowed)}, got {value!r}")
        out[key] = value
    return out


def _voxel_options(opts: dict | None) -> dict | None:
    """``voxels`` with defaults filled in: keep in (0, 1], scorer, encoder stages, budget weight >= 0."""
    if opts is None:
        return None
    if not isinstance(opts, dict):
        raise TypeError(f"config voxels must be a dict like {{'keep': 0.7, 'scorer': 'learned'}}, got {opts!r}")
    unknown = sorted(set(opts) - set(VOXEL_KEYS))
    if unknown:
        raise ValueError(f"config voxels: unknown key(s) {unknown}; valid: {list(VOXEL_KEYS)}")
    out = {k: opts.get(k, v) for k, v in VOXEL_KEYS.items()}
    if not _real(out["keep"]) or not 0.0 < out["keep"] <= 1.0:
        raise ValueError(f"config voxels keep must be a number in (0, 1], got {out['keep']!r}")
    if out["scorer"] not in SCORERS:
        raise ValueError(f"config voxels scorer must be one of {list(SCORERS)}, got {out['scorer']!r}")
    stages = out["stages"]
    if not isinstance(stages, list | tuple) or not stages or any(s not in ENCODER_STAGES for s in stages):
        raise ValueError(f"config voxels stages must be a non-empty list from {list(ENCODER_STAGES)}, got {stages!r}")
    if not _real(out["budget_weight"]) or out["budget_weight"] < 0:
        raise ValueError(f"config voxels budget_weight must be a number >= 0, got {out['budget_weight']!r}")
    out["stages"] = list(stages)
    return out


def _real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _fraction(name: str, value: object, low_open: bool = False) -> None:
    """``value`` in [0, 1) (or (0, 1) with ``low_open``), else a ValueError naming the field."""
    ok = _real(value) and (0.0 < value < 1.0 if low_open else 0.0 <= value < 1.0)
    if not ok:
        raise ValueError(f"config {name} must be a number in {'(0, 1)' if low_open else '[0, 1)'}, got {value!r}")
