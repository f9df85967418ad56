"""Options of a pruning run (:class:`PruneConfig`), checked when the config is made."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

from ..models.minkunet import ENCODER_STAGES
from ..nn.voxel_drop import SCORERS
from .blocks import BLOCK_CRITERIA
from .cost import BUDGET_KINDS
from .importance import CRITERIA
from .select import NORMALIZERS
from .taps import TAP_CRITERIA, TAP_SCOPES

SCHEDULES = ("oneshot", "iterative", "netadapt", "amc", "autoslim")
SEARCH_SCHEDULES = ("netadapt", "amc", "autoslim")  # choose their own per-group ratios (``ratio`` unused)
# option dicts of the structural methods beside channels: key -> (default, allowed values or None for a fraction)
TAP_KEYS = {"ratio": (None, None), "criterion": ("magnitude", TAP_CRITERIA), "scope": ("global", TAP_SCOPES),
            "strided": (False, (False, True))}  # fmt: skip
VOXEL_KEYS = {"keep": 0.7, "scorer": "learned", "stages": list(ENCODER_STAGES), "budget_weight": 1.0}
BLOCK_KEYS = {"ratio": (None, None), "criterion": ("skip", BLOCK_CRITERIA), "layers": (False, (False, True))}
# training phases that remove channels themselves: key -> (default, kind); a default of None means required
# (but an ``nm`` kind's: no N:M set)
GROUP_LASSO_KEYS = {"strength": (0.5, "positive"), "steps": (100, "count"), "lr": (0.05, "positive"),
                    "threshold": (0.0, "threshold")}  # fmt: skip
L0_KEYS = {"ratio": (None, "fraction"), "strength": (10.0, "positive"), "steps": (100, "count"),
           "lr": (0.1, "positive")}  # fmt: skip
ADMM_KEYS = {"ratio": (None, "fraction"), "rho": (10.0, "positive"), "rho_growth": (1.3, "growth"),
             "steps": (100, "count"), "admm_every": (10, "count"), "lr": (0.005, "positive"),
             "nm": (None, "nm")}  # fmt: skip
SCP_KEYS = {"ratio": (None, "fraction"), "strength": (10.0, "positive"), "steps": (100, "count"),
            "lr": (0.05, "positive"), "temperature": (0.5, "positive")}  # fmt: skip
MODES = ("global", "local")
NM_KEYS = ("n", "m", "permute")


@dataclass
class PruneConfig:
    """Options of a pruning run (the CLI's ``--config`` JSON holds any of these keys).

    criterion: l1 l2 bn fpgm taylor apoz fisher random hessian thinet group_norm; ratio / mode / normalize /
    max_ratio / round_to: channel selection (:func:`~.select.select_channels`);
    ignore: modules whose output channels stay; schedule: oneshot, iterative
    (``steps`` cubic steps, ``rewind`` = lottery-ticket rewinding to the
    unpruned weights, or to a checkpoint path such as an early-training one)
    or netadapt (``netadapt_target``: fraction of the measured CPU time,
    ``netadapt_step``, ``netadapt_iters``), amc (:mod:`.amc`: a DDPG agent
    picks each group's keep fraction, >= ``amc_min_keep``, clipped to the
    budget ``amc_budget``: a fraction of the MACs, or with ``amc_budget_kind:
    "latency"`` of the measured CPU time as netadapt's; ``amc_episodes``, the
    first ``amc_warmup`` at random, seeded by ``amc_seed``; reward: the
    held-out metric after ``amc_finetune_steps`` of fine-tuning) or autoslim
    (:mod:`.autoslim`: a slimmable supernet trained ``autoslim_steps``
    sandwich steps with ``autoslim_n_random`` random widths and, with
    ``autoslim_distill``, in-place distillation, then slimmed greedily by
    ``autoslim_step_fraction`` of a group per step, not below
    ``autoslim_min_width``, to ``autoslim_budget`` of kind
    ``autoslim_budget_kind``; batch-norm statistics recomputed on
    ``importance_batches`` training batches); sensitivity: scan each group at
    ``sensitivity_ratios``, and with ``max_drop`` prune each group by the
    ratio derived from its curve (one-shot: at once; iterative: each group
    follows the cubic schedule up to its own ratio; netadapt, amc and
    autoslim choose their own ratios and refuse ``max_drop``); finetune_steps / lr:
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
    criterion ``hessian``: OBD with the Hutchinson Hessian diagonal
    (``hutchinson_samples`` probes, :mod:`.hessian`); ``thinet``: greedy
    selection by the next layers' reconstruction error on
    ``regression_samples`` output voxels per layer and batch (:mod:`.thinet`);
    ``group_norm``: norm of all the slices a channel owns. reconstruct:
    least-squares refit of the layers that lost inputs after one-shot channel
    pruning (:mod:`.reconstruct`; null = on for one-shot ``thinet``).
    group_lasso: ``{"strength": 0.5, "steps": 100, "lr": 0.05, "threshold":
    0.0}`` trains with the group-lasso penalty on every channel (proximal SGD,
    :mod:`.group_lasso`), then removes the channels whose norm is <=
    ``threshold`` (null: none; select with ``criterion: group_norm``);
    l0: ``{"ratio": 0.5, "strength": 10.0, "steps": 100, "lr": 0.1}`` trains
    hard-concrete gates (gate learning rate ``lr``; weights at ``lr`` of the
    config) toward removing ``ratio`` of the channels, folds them and removes
    the closed ones (:mod:`.l0`); admm: ``{"ratio": 0.5, "rho": 10.0,
    "rho_growth": 1.3, "steps": 100, "admm_every": 10, "lr": 0.005, "nm":
    null}`` trains by ADMM toward keeping ``1 - ratio`` of the channels (and
    with ``nm`` ``{"n": 2, "m": 4}`` N:M weights; Adam at ``lr``, a Z / U
    update every ``admm_every`` steps, ``rho`` times ``rho_growth`` at each),
    then projects and removes the zero channels (:mod:`.admm`; set the
    config's ``nm`` too to keep the N:M pattern through fine-tuning); scp:
    ``{"ratio": 0.5, "strength": 10.0, "steps": 100, "lr": 0.05,
    "temperature": 0.5}`` trains soft channel masks whose keep probability
    follows the batch norms (mask parameters at ``lr``, weights at the
    config's), closes the expected number and removes them (:mod:`.scp`).
    All four run after ``blocks``, in this order, and before the criterion's
    channel pruning, which then prunes ``ratio`` of what is left (``ratio:
    0`` for the phases alone).

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
    amc_budget: float = 0.5
    amc_budget_kind: str = "macs"
    amc_episodes: int = 30
    amc_warmup: int = 10
    amc_seed: int = 0
    amc_min_keep: float = 0.2
    amc_finetune_steps: int = 0
    autoslim_budget: float = 0.5
    autoslim_budget_kind: str = "macs"
    autoslim_steps: int = 100
    autoslim_n_random: int = 2
    autoslim_step_fraction: float = 0.1
    autoslim_min_width: float = 0.2
    autoslim_distill: bool = True
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
    hutchinson_samples: int = 4
    regression_samples: int = 512
    reconstruct: bool | None = None
    group_lasso: dict | None = None
    l0: dict | None = None
    admm: dict | None = None
    scp: dict | None = None

    def __post_init__(self) -> None:
        self.voxels = _voxel_options(self.voxels)
        self.blocks = _method_options("blocks", self.blocks, BLOCK_KEYS, upper=1.0)
        self.taps = _method_options("taps", self.taps, TAP_KEYS, upper=None)
        self.group_lasso = _phase_options("group_lasso", self.group_lasso, GROUP_LASSO_KEYS)
        self.l0 = _phase_options("l0", self.l0, L0_KEYS)
        self.admm = _phase_options("admm", self.admm, ADMM_KEYS)
        self.scp = _phase_options("scp", self.scp, SCP_KEYS)
        if self.admm and self.admm["admm_every"] > self.admm["steps"]:
            raise ValueError(f"config admm admm_every must be <= steps (a Z / U update at least), got {self.admm}")
        self._check_regression()
        self._check_names()
        self._check_numbers()
        self._check_search()
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

    def _check_search(self) -> None:
        """The amc_* and autoslim_* fields (like netadapt's: fractions in (0, 1), counts, a budget kind)."""
        for name in ("amc_budget", "amc_min_keep", "autoslim_budget", "autoslim_step_fraction", "autoslim_min_width"):
            _fraction(name, getattr(self, name), low_open=True)
        for name, low in (("amc_episodes", 1), ("amc_warmup", 0), ("amc_seed", 0), ("amc_finetune_steps", 0),
                          ("autoslim_steps", 0), ("autoslim_n_random", 0)):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
                raise ValueError(f"config {name} must be an integer >= {low}, got {value!r}")
        for name in ("amc_budget_kind", "autoslim_budget_kind"):
            if getattr(self, name) not in BUDGET_KINDS:
                raise ValueError(f"config {name} must be one of {list(BUDGET_KINDS)}, got {getattr(self, name)!r}")
        if not isinstance(self.autoslim_distill, bool):
            raise TypeError(f"config autoslim_distill must be true or false, got {self.autoslim_distill!r}")

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
        if self.schedule in SEARCH_SCHEDULES:
            raise ValueError(
                f"config max_drop cannot be used with schedule {self.schedule!r} (it picks the groups and ratios by "
                "its own search); use schedule 'oneshot' or 'iterative', or drop max_drop"
            )

    @property
    def reconstructs(self) -> bool:
        """Whether the layers that lost inputs are refit by least squares after channel pruning."""
        if self.reconstruct is None:
            return self.criterion == "thinet" and self.schedule == "oneshot"
        return self.reconstruct

    def _check_regression(self) -> None:
        for name in ("hutchinson_samples", "regression_samples"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"config {name} must be an integer >= 1, got {value!r}")
        if self.reconstruct is not None and not isinstance(self.reconstruct, bool):
            raise TypeError(f"config reconstruct must be true, false or null, got {self.reconstruct!r}")
        if self.reconstruct and self.schedule != "oneshot":
            raise ValueError(
                f"config reconstruct refits the layers after one-shot pruning; schedule {self.schedule!r} fine-tunes "
                "between its steps: use schedule 'oneshot' or set reconstruct false"
            )

    def _check_nm(self) -> None:
        if self.nm is None:
            return
        if not isinstance(self.nm, dict):
            raise TypeError(f"config nm must be a dict like {{'n': 2, 'm': 4, 'permute': true}}, got {self.nm!r}")
        unknown = sorted(set(self.nm) - set(NM_KEYS))
        if unknown:
            raise ValueError(f"config nm: unknown key(s) {unknown}; valid: {list(NM_KEYS)}")
        _nm_numbers("nm", self.nm.get("n", 2), self.nm.get("m", 4))


def _nm_numbers(name: str, n: object, m: object) -> None:
    """``n``, ``m`` of an N:M pattern are integers with ``0 < n <= m``, else a ValueError naming the field."""
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (n, m)) or not 0 < n <= m:
        raise ValueError(f"config {name} needs integers 0 < n <= m, got n={n!r}, m={m!r}")


def _check_keys(name: str, opts: object, keys: dict, example: str) -> None:
    """``opts`` is a dict of known ``keys``, else a TypeError / ValueError naming the field."""
    if not isinstance(opts, dict):
        raise TypeError(f"config {name} must be a dict like {example}, got {opts!r}")
    unknown = sorted(set(opts) - set(keys))
    if unknown:
        raise ValueError(f"config {name}: unknown key(s) {unknown}; valid: {list(keys)}")


def _method_options(name: str, opts: dict | None, keys: dict, upper: float | None) -> dict | None:
    """``opts`` with defaults filled in, every key checked (``ratio`` required: a fraction, ``upper`` inclusive)."""
    if opts is None:
        return None
    _check_keys(name, opts, keys, "{'ratio': 0.3}")
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


_KIND_CHECKS = {"fraction": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"), "positive": (lambda v: v > 0, "> 0"),
                "threshold": (lambda v: v >= 0, ">= 0 or null"), "growth": (lambda v: v >= 1, ">= 1")}  # fmt: skip


def _phase_value(name: str, key: str, value: object, kind: str) -> float | int | dict | None:
    """One option of a training phase, checked by ``kind`` (see :data:`GROUP_LASSO_KEYS`)."""
    if kind == "nm":
        if value is None:
            return None
        if not isinstance(value, dict) or set(value) - {"n", "m"}:
            raise TypeError(f"config {name} {key} must be null or a dict like {{'n': 2, 'm': 4}}, got {value!r}")
        _nm_numbers(f"{name} {key}", value.get("n", 2), value.get("m", 4))
        return {"n": int(value.get("n", 2)), "m": int(value.get("m", 4))}
    if kind == "count":
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"config {name} {key} must be an integer >= 1, got {value!r}")
        return int(value)
    if kind == "threshold" and value is None:
        return None
    check, want = _KIND_CHECKS[kind]
    if not _real(value) or not check(value):
        raise ValueError(f"config {name} {key} must be a number {want}, got {value!r}")
    return float(value)


def _phase_options(name: str, opts: dict | None, keys: dict) -> dict | None:
    """``opts`` of a training phase with defaults filled in and every key checked."""
    if opts is None:
        return None
    _check_keys(name, opts, keys, "{" + ", ".join(f"{k!r}: ..." for k in keys) + "}")
    missing = [k for k, (default, kind) in keys.items() if default is None and kind != "nm" and k not in opts]
    if missing:
        raise ValueError(f"config {name} needs {missing[0]!r}")
    return {k: _phase_value(name, k, opts.get(k, default), kind) for k, (default, kind) in keys.items()}


def _real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _fraction(name: str, value: object, low_open: bool = False) -> None:
    """``value`` in [0, 1) (or (0, 1) with ``low_open``), else a ValueError naming the field."""
    ok = _real(value) and (0.0 < value < 1.0 if low_open else 0.0 <= value < 1.0)
    if not ok:
        raise ValueError(f"config {name} must be a number in {'(0, 1)' if low_open else '[0, 1)'}, got {value!r}")
